"""The inputs of the graph: the real images (one module per source, the splits and the store
layout they are written in) and the prompt records (with the bundled `prompt_tables/`)."""
