"""The weak-class loop: its rounds' plans and the results the report reads."""
