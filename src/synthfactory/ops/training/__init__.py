"""Classifiers: the architectures, their augmentation and the seeded training loop, shared by
the judge, distillation and every evaluation arm."""

# The files of a classifier directory: `seed-<k>.safetensors` and this history (an evaluation
# arm's classifiers, the distillation table's networks).
HISTORY_JSON = "history.json"
