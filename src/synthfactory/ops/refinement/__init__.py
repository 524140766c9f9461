"""The weak-class loop: the plan read from validation results, the prompts it adds, the refined
and uniform arms' data and their evaluation, its rounds' records, and the loop's results and
summary for metrics.json."""
