"""The computations, with no Dagster import: one package per stage of the asset graph (data,
generation, training, curation, distillation, evaluation, refinement, report) and the plumbing
they share (storage). At the top: seeds, tensor conversions and the data-quality checks."""
