"""Thin Dagster assets: read config, call ops/, publish through the store, report metadata."""
