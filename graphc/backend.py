"""The backend protocol the pipeline talks to, and the reference backend (the interpreter).

A backend is render + compile + run: `compile(graph)` returns a Program whose `source` is
the generated code and which is called with numpy arrays. Backends are registered by name
in `graphc.backends` and imported lazily there; the core never imports one.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from graphc.interpret import interpret
from graphc.ir import Graph


class Program(Protocol):
    """A compiled graph: called with the graph's inputs, returns its outputs. A program
    with memory of its own (opencl) also sets `device_memory = True`: it then accepts
    `graphc.device.DeviceArray` inputs where they are, and `program(*arrays,
    device_outputs=True)` leaves its results there as device arrays. A program may also
    have `call_exact(arrays)`, which skips its own argument checks: a caller uses it only
    for arguments it has already checked to be exactly the program's inputs (numpy arrays
    of their shapes and dtypes, C-contiguous)."""
    source: str

    def __call__(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]: ...


class Backend(Protocol):
    name: str

    def compile(self, graph: Graph) -> Program: ...


class ReferenceProgram:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.source = str(graph)

    def __call__(self, *arrays):
        return interpret(self.graph, *arrays)


class ReferenceBackend:
    """Runs graphs with the reference interpreter; what eager `gc.grad(f)(x)` uses."""
    name = "reference"

    def compile(self, graph: Graph) -> ReferenceProgram:
        return ReferenceProgram(graph)
