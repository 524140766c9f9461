"""Scoring and filtering synthetic images: the judges (a ConvNet trained on real images, or
CLIP) and the filters that decide, per sample, what is kept and why."""

# The files of the `judge` and `filtered_set` directories.
JUDGE_JSON = "judge.json"
JUDGE_WEIGHTS = "judge.safetensors"
FILTER_MANIFEST = "manifest.jsonl"
# One uint8 keep mask per shard (in the shard's sample order), for readers that stream the shards.
FILTER_KEEP = "keep.safetensors"
