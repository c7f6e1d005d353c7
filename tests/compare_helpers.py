"""Pytest helpers over graphc.compare: assert that a backend agrees with the reference
interpreter, and explain where it does not (the compare table and the divergence report:
the first kernel and op outside tolerance, with the user's line).

    from compare_helpers import BACKENDS, assert_agrees

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_something(backend):
        assert_agrees(fn, args, backend)                    # forward values
        assert_agrees(fn, args, backend, grad=True)         # and gradients

BACKENDS is every registered backend (graphc.backends.names()), so a backend added to the
registry is tested by every suite that uses it without any change.
"""
from __future__ import annotations

import numpy as np
import pytest

from graphc import backends
from graphc import compare as C

BACKENDS = backends.names()


def skip_without_float64(fn, args, backend):
    """Skip (visibly) when the backend declares it has no float64 (e.g. an OpenCL device
    without cl_khr_fp64) and the function computes in float64. Only a declared capability
    skips: a backend that fails on float64 without saying so fails the test."""
    (choice,) = C.resolve_backends([backend])
    if choice.available and not C.supports_float64(choice.backend):
        import graphc as gc
        g = gc.trace(fn, *args)
        if any(n.dtype.name == "float64" for n in g.nodes):
            pytest.skip(f"backend {choice.name!r} declares no float64")


def assert_agrees(fn, args, backend, *, tol=None, grad: bool = False, argnums=None,
                  passes=None, context: str = ""):
    """Compare fn(*args) on `backend` (a name or object) with the reference; with grad=True
    also gc.value_and_grad(fn) (a non-scalar fn is projected to a scalar). `tol`: None (each
    output's class from the ops it depends on), a class name or a Tol. Fails with the table
    and the divergence report. Returns the list of Comparisons."""
    args = tuple(args)
    skip_without_float64(fn, args, backend)
    if grad:
        vg, nums, _ = C.grad_function(fn, args, argnums)
        results = [C.compare_function(vg, args, [backend], tol=tol, repeat=1, passes=passes,
                                      argnums=nums, title="gradients")]
    else:
        results = [C.compare_function(fn, args, [backend], tol=tol, repeat=1, passes=passes,
                                      title="forward")]
    bad = [c for c in results if not c.ok]
    for c in results:
        for r in c.runs:
            if not r.available:
                pytest.fail(f"backend {r.backend!r} is registered but not available: {r.why}")
    if bad:
        lines = [context] if context else []
        for c in bad:
            lines.append(c.table())
            for r in c.failures():
                if r.error:
                    lines.append(f"backend {r.backend!r} failed: {r.error}")
                    continue
                d = C.find_divergence(c.fn, args, c.backends[r.backend], passes=passes, tol=tol)
                lines.append(d.report() if d is not None else
                             "(no single kernel diverges; see the table)")
        pytest.fail("\n".join(lines), pytrace=False)
    return results


def mlp_steps_match_numpy(backend, steps: int = 5):
    """Chained SGD steps of examples/mlp.py on `backend` (each step's parameters feed the
    next, so errors would compound) equal the numpy backend's."""
    from pathlib import Path

    import numpy as np

    import graphc as gc
    from graphc.cli import load_module
    mlp = load_module(Path(__file__).resolve().parents[1] / "examples" / "mlp.py")
    params, (x, y) = mlp.init_params(), mlp.make_data()
    step_b = gc.compile(mlp.train_step, backend=backend)
    step_n = gc.compile(mlp.train_step, backend="numpy")
    pb, pn = params, params
    for _ in range(steps):
        vb, pb = step_b(pb, x, y)
        vn, pn = step_n(pn, x, y)
        np.testing.assert_allclose(vb, vn, rtol=1e-5)
    for k in params:
        np.testing.assert_allclose(pb[k], pn[k], rtol=1e-4, atol=1e-5)


# ---- argument makers for op case tables: maker(rng, dtype) -> array --------------------------------
def maker_r(*shape, normal=False):
    """Random values (integers in [-4, 4] for integer dtypes; floats uniform in [-2, 2), or
    standard normal)."""
    def make(rng, dt):
        if np.dtype(dt).kind in "iu":
            return rng.integers(-4, 5, shape).astype(dt)
        return (rng.standard_normal(shape) if normal else rng.uniform(-2, 2, shape)).astype(dt)
    return make


def pos(*shape):
    """Positive values in [0.5, 2) (log, sqrt)."""
    return lambda rng, dt: rng.uniform(0.5, 2.0, shape).astype(dt)


def nz(*shape):
    """Values away from zero, either sign (division)."""
    return lambda rng, dt: (rng.uniform(0.5, 2, shape) * rng.choice([-1, 1], shape)).astype(dt)


def b(*shape):
    """Random booleans."""
    return lambda rng, dt: rng.random(shape) < 0.5


def key(v):
    """A fixed int64 random key."""
    return lambda rng, dt: np.int64(v)
