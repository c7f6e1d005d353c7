"""Graph-to-graph passes. Each takes a Graph and returns a new one; the pipeline
(`graphc/pipeline.py`) lists them as named stages."""
