"""The answer's computations: what each arm trains on, the metrics on real held-out images, the
scaling fit, the cost, the leakage count and the distillation table (the report is `ops/report`)."""
