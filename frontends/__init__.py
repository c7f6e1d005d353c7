"""Frontends: the tracer tensor, NumPy-named functions, trace/grad/compile (installed as
graphc.frontends)."""
