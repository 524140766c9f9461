"""The report: what eval_report assembles (metrics.json, the image grids) from every stage's
results."""
