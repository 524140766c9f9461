"""The plumbing every stage writes through: atomic publishing, WebDataset shards and their
sidecars, the object-store mirror, training checkpoints and DVC's content digests. It imports
no other stage."""

# The small JSON summary an asset writes beside its data (filtered_set, distilled_set).
SUMMARY_JSON = "summary.json"
