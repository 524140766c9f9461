"""Making synthetic images: the embedded DDPM, pretrained text-to-image pipelines (resolved from
local directories or the hub cache, safetensors only), the sampler table both share, and the
generation loop that turns prompt records into shard samples."""

# The record a `generator` directory holds, whatever its backend (written last).
GENERATOR_JSON = "generator.json"
# The record of a `generator_adapter` directory (LoRA fine-tuned on the real images).
ADAPTER_JSON = "adapter.json"
