"""Reducing a set to a few images per class: coresets that select existing samples (random,
herding, k-center) and methods that learn new images (distribution matching)."""
