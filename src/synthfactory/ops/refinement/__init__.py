"""The weak-class loop: the plan read from validation results, the prompts it adds, the refined
and uniform arms' data and their evaluation, and the loop's summary for metrics.json."""
