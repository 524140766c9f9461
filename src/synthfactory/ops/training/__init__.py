"""Classifiers: the architectures, their augmentation and the seeded training loop, shared by
the judge, distillation and every evaluation arm."""
