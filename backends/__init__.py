"""Backends, registered by name and imported lazily (so `import graphc` stays light).

>>> from graphc import backends
>>> backends.names()
['numpy', 'llvm', 'opencl']
"""
from __future__ import annotations

import importlib

from graphc.errors import BackendError

# name -> "module:Class", imported on first use (so `import graphc` loads no llvmlite/pyopencl)
REGISTRY = {
    "numpy": "graphc.backends.numpy:NumpyBackend",
    "llvm": "graphc.backends.llvm:LLVMBackend",
    "opencl": "graphc.backends.opencl:OpenCLBackend",
}
_instances: dict[str, object] = {}


def names() -> list[str]:
    return list(REGISTRY)


def get(name: str):
    """The backend object for `name`; a clear error lists the registered names."""
    if name not in REGISTRY:
        raise BackendError(f"unknown backend {name!r}; available: {', '.join(REGISTRY)}",
                           stage="compile")
    if name not in _instances:
        module, cls = REGISTRY[name].split(":")
        backend = getattr(importlib.import_module(module), cls)()
        ok, why = backend.available()
        if not ok:
            raise BackendError(f"backend {name!r} is not available: {why}", stage="compile")
        _instances[name] = backend
    return _instances[name]


def available() -> dict[str, tuple[bool, str]]:
    """{name: (usable?, reason)} for every registered backend, without raising."""
    out = {}
    for name, path in REGISTRY.items():
        module, cls = path.split(":")
        try:
            out[name] = getattr(importlib.import_module(module), cls)().available()
        except Exception as e:  # a missing dependency is an answer here, not a crash
            out[name] = (False, f"{type(e).__name__}: {e}")
    return out
