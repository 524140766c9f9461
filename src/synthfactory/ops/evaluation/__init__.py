"""The answer: what each arm trains on, the metrics on real held-out images, and the report."""
