"""The implementations `benchmarks.workloads` times besides NumPy by hand: graphc's backends
and, where installed, PyTorch, JAX and tinygrad (optional: they are not graphc dependencies).

`build(impl, problem)` returns a function with the hand-written NumPy version's signature and
result structure (NumPy arrays in, NumPy arrays out), or raises `Unavailable` with the row's
note: "not installed" for a framework that does not import, "unavailable: ..." for a graphc
backend or device that cannot run here. Nothing else is caught: a framework that imports but
fails on a workload is a bug in this benchmark and stops the run.
"""
from __future__ import annotations

import importlib

import graphc as gc

IMPLS = {  # --impl name -> row label, in table order
    "numpy": "graphc numpy",
    "llvm": "graphc llvm",
    "opencl": "graphc opencl",
    "torch": "torch eager",
    "jax": "jax jit",
    "tinygrad": "tinygrad CL",
}
# the frameworks: --impl name -> the module that writes the workloads in it
FRAMEWORKS = {
    "torch": "benchmarks.others_torch",
    "jax": "benchmarks.others_jax",
    "tinygrad": "benchmarks.others_tinygrad",
}
PACKAGES = {"torch": "torch", "jax": "jax", "tinygrad": "tinygrad"}  # import and distribution name
_status: dict[str, str | None] = {}  # impl -> None (usable) or why not, checked once


class Unavailable(Exception):
    """This implementation cannot run here; str() is the table row's note."""


def parse(spec: str) -> list[str]:
    """"llvm,opencl,torch" -> those names in table order; "" or "all" -> every one."""
    if spec.strip() in ("", "all"):
        return list(IMPLS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in IMPLS]
    if unknown:
        raise ValueError(f"unknown implementation(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(IMPLS)}")
    return [n for n in IMPLS if n in names]


def status(impl: str) -> str | None:
    """None when `impl` can run here, else why not (the row's note)."""
    if impl not in _status:
        _status[impl] = _probe(impl)
    return _status[impl]


def _probe(impl: str) -> str | None:
    if impl not in FRAMEWORKS:
        from graphc import backends
        from graphc.errors import BackendError
        try:
            backends.get(impl)
        except BackendError as e:
            return f"unavailable: {e}"
        return None
    try:
        importlib.import_module(PACKAGES[impl])
    except ImportError as e:
        return f"not installed ({e})"
    if impl == "tinygrad":
        try:
            importlib.import_module(FRAMEWORKS[impl]).device_name()
        except Exception as e:  # no OpenCL library or device: an answer, not a crash
            return f"unavailable: tinygrad's CL device: {type(e).__name__}: {e}"
    return None


def describe(impl: str) -> str:
    """A version or device line for the table's footer."""
    why = status(impl)
    if why is not None:
        return f"{IMPLS[impl]}: {why}"
    if impl not in FRAMEWORKS:
        from graphc import backends
        return f"{IMPLS[impl]}: {backends.get(impl).available()[1]}"
    from importlib import metadata
    text = f"{IMPLS[impl]}: {impl} {metadata.version(PACKAGES[impl])}"
    if impl == "tinygrad":
        text += f" on {importlib.import_module(FRAMEWORKS[impl]).device_name()}"
    return text


def build(impl: str, problem):
    why = status(impl)
    if why is not None:
        raise Unavailable(why)
    if impl in FRAMEWORKS:
        return importlib.import_module(FRAMEWORKS[impl]).build(problem)
    return gc.compile(problem.step, backend=impl)
