"""Dagster resources: frozen config plus private runtime state."""
