"""The OpenCL backend's tiled matmuls (backends/opencl_matmul.py) and vector elementwise kernels
(backends/opencl_vector.py) against the reference interpreter: odd sizes, batches, transposed
and strided operands, epilogues (bias, ReLU, where, the SGD update), float32 and float64, both
blockings ("registers", the CPU default, and "local", the GPU default, forced here on PoCL),
devices with small work-groups or little local memory, and vector widths that do and do not
divide the innermost extent."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from compare_helpers import mlp_steps_match_numpy
from graphc import kernel as K
from graphc.cli import load_module
from graphc.interpret import interpret
from graphc.pipeline import run_pipeline
from graphc.types import DType

opencl = pytest.importorskip("graphc.backends.opencl")
pytest.importorskip("pyopencl")
from graphc.backends import opencl_ir as IR  # noqa: E402
from graphc.backends import opencl_matmul as MM  # noqa: E402
from graphc.backends import opencl_vector as VEC  # noqa: E402
from graphc.backends.opencl_render import Limits  # noqa: E402

if not opencl.OpenCLBackend().available()[0]:
    pytest.skip("no OpenCL device", allow_module_level=True)
ROOT = Path(__file__).resolve().parents[2]
TILED = ("register-blocked matmul", "a tiled matmul")   # the kernels' own comments


def _backend(matmul=None, vectors=True, **limits):
    be = opencl.OpenCLBackend()
    be.matmul, be.vectors, be.limit_overrides = matmul, vectors, limits or None
    return be


def _tiled_count(source: str) -> int:
    return sum(source.count(t) for t in TILED)


def _close(got, want, dt):
    assert got.shape == want.shape and got.dtype == want.dtype
    tol = 2e-5 if dt == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 10)


def _check(fn, args, be, dt):
    fc = gc.compile(fn, backend=be)
    got = fc(*args)
    want = interpret(gc.trace(fn, *args), *args)
    for g, w in zip(got, want):
        _close(g, w, dt)
    return fc.source


# (M, K, N): ones, primes, a 100 that no block size divides
SHAPES = [(1, 1, 1), (3, 17, 33), (17, 33, 100), (100, 3, 17), (33, 100, 1), (1, 100, 3),
          (100, 1, 33), (2, 0, 3)]


def _pairs(rng, dt):
    return [a for m, k, n in SHAPES for a in (rng.standard_normal((m, k)).astype(dt),
                                              rng.standard_normal((k, n)).astype(dt))]


def _products(*xs):
    return tuple(xs[i] @ xs[i + 1] for i in range(0, len(xs), 2))


F32, F64 = np.float32, np.float64


def _ids(p):
    return p if isinstance(p, str) else np.dtype(p).name


# PoCL takes 0.5-3 s to build each kernel, so not every combination runs everywhere: "local"
# in float64 runs in test_small_device_limits_still_give_correct_kernels
@pytest.mark.parametrize("mode, dt", [("registers", F32), ("registers", F64), ("local", F32),
                                      ("per-element", F32)], ids=_ids)
def test_odd_shapes_match_the_interpreter(mode, dt):
    src = _check(_products, _pairs(np.random.default_rng(1), dt), _backend(mode), dt)
    assert _tiled_count(src) == (0 if mode == "per-element" else len(SHAPES))
    assert ("reqd_work_group_size" in src) == (mode == "local")


def _views_and_epilogues(a, b, w, bias, x, xt, wt, big, v, mask, w2, w3):
    relu = gc.maximum(x @ w + bias, 0.0)
    return (a @ b,                          # batched, batch axes broadcast
            a @ w,                          # a matrix broadcast over the batch
            relu,                           # bias + ReLU epilogue
            gc.transpose(xt) @ w,           # A transposed
            x @ gc.transpose(wt),           # B transposed
            gc.transpose(xt) @ gc.transpose(wt),
            big[::2, 1::2] @ v,             # strided views
            gc.where(mask, x @ w2, 0.0),    # where epilogue (the ReLU backward)
            gc.tanh(x @ w3) * 2.0 - bias,   # a longer epilogue
            gc.transpose(xt) @ w3 > bias,   # a bool result
            w - 0.05 * (gc.transpose(x) @ relu))   # the SGD update: W - lr * X^T dZ


def _views_args(rng, dt):
    r = lambda *s: rng.standard_normal(s).astype(dt)  # noqa: E731
    return (r(2, 3, 17, 5), r(3, 5, 33), r(5, 33), r(33), r(17, 5), r(5, 17), r(33, 5),
            r(40, 12), r(6, 9), rng.random((17, 33)) > 0.5, r(5, 33), r(5, 33))


@pytest.mark.parametrize("mode, dt", [("registers", F32), ("registers", F64)], ids=_ids)
def test_batches_views_and_epilogues(mode, dt):
    """("local" runs these in test_small_device_limits_still_give_correct_kernels)"""
    args = _views_args(np.random.default_rng(2), dt)
    src = _check(_views_and_epilogues, args, _backend(mode), dt)
    assert _tiled_count(src) == 11
    assert "_row(" in src and "from:" in src and "test_opencl_tiled.py:" in src


def test_mlp_train_step_matches_numpy_with_local_tiles():
    """examples/mlp.py's chained steps (in-place parameter updates) with the GPU blocking; the
    CPU's runs in test_parity.py's test_mlp_training_steps_match_numpy."""
    be = _backend("local")
    mlp_steps_match_numpy(be)
    mlp = load_module(ROOT / "examples" / "mlp.py")
    step = gc.compile(mlp.train_step, backend=be)
    step(mlp.init_params(), *mlp.make_data())
    assert step.source.count(TILED[1]) >= 3


def _local_bytes(source: str) -> list[int]:
    """Bytes of __local memory per tiled kernel (its two tile declarations)."""
    sizes = {"float": 4, "double": 8}
    out = []
    for kernel in source.split("__kernel")[1:]:
        tiles = re.findall(r"__local (float|double) gc_[AB]s\[(\d+)\]\[(\d+)\];", kernel)
        if tiles:
            out.append(sum(sizes[t] * int(a) * int(b) for t, a, b in tiles))
    return out


def test_small_device_limits_still_give_correct_kernels():
    """A device with 8-item work-groups and 512 bytes of local memory: smaller work-groups and
    tiles (float64: the tiles take twice the bytes); with 16 bytes no tile fits and the kernel
    falls back to the register blocking."""
    args = _views_args(np.random.default_rng(3), F64)
    src = _check(_views_and_epilogues, args,
                 _backend("local", max_work_group_size=8, local_mem_size=512), F64)
    groups = [int(a) * int(b) for a, b in
              re.findall(r"reqd_work_group_size\((\d+), (\d+), 1\)", src)]
    assert len(groups) == 11 and max(groups) <= 8
    assert len(_local_bytes(src)) == 11 and max(_local_bytes(src)) <= 512
    src = _check(_products, _pairs(np.random.default_rng(3), F32)[2:4],
                 _backend("local", local_mem_size=16), F32)
    assert "reqd_work_group_size" not in src and src.count(TILED[0]) == 1


def test_tile_plans_respect_limits():
    """Every plan fits the device it was made for, for many shapes and limits."""
    rng = np.random.default_rng(4)
    tiled = 0
    for _ in range(60):
        m, k, n = (int(x) for x in rng.integers(1, 300, 3))
        dt = [np.float32, np.float64][int(rng.integers(2))]
        kernel = _kernel_of(lambda a, b: a @ b, np.ones((m, k), dt), np.ones((k, n), dt))
        parts = MM.match(kernel)
        assert parts is not None and (parts.rows.extent, parts.cols.extent) == (m, n)
        wg, lm = int(2 ** rng.integers(0, 11)), int(2 ** rng.integers(4, 17))
        lim = Limits(gpu=True, max_work_group_size=wg, local_mem_size=lm)
        t = MM.plan_tiles(parts, lim, local=True)
        if t is not None:
            tiled += 1
            assert t.lx * t.ly <= wg and t.local_bytes(DType.of(np.ones(1, dt))) <= lm
            assert t.wm <= m and t.vw <= n
        t = MM.plan_tiles(parts, lim, local=False)
        assert t.wm <= m and t.wn <= n and not t.local
    assert 20 < tiled < 60   # some fit, some do not


def _kernel_of(fn, *args):
    """The OpenCL backend's kernel IR for fn's (one) matmul kernel; no device build."""
    graph = run_pipeline(gc.trace(fn, *args))["optimized"]
    return [k for k in _backend().lower(graph)[2] if k.kind == "matmul"][0]


def test_integer_matmuls_keep_one_work_item_per_element():
    rng = np.random.default_rng(5)
    a, b = rng.integers(-50, 50, (17, 33)), rng.integers(-50, 50, (33, 5))
    f = lambda a, b: (a @ b, a.astype(np.int32) @ b.astype(np.int32))  # noqa: E731
    fc = gc.compile(f, backend=_backend("registers"))
    got = fc(a, b)
    np.testing.assert_array_equal(got[0], a @ b)
    np.testing.assert_array_equal(got[1], (a @ b).astype(np.int32))
    assert _tiled_count(fc.source) == 0


def test_match_names_the_operands():
    """A is the operand without the column variable, B the one without the row variable, even
    when both read one buffer (x @ x.T binds both loads to Lets first)."""
    k = _kernel_of(lambda x: x @ gc.transpose(x), np.ones((3, 5), np.float32))
    parts = MM.match(k)
    assert str(parts.a) == f"in0[{parts.red.var} + {parts.rows.var}*5]"
    assert str(parts.b) == f"in0[{parts.red.var} + {parts.cols.var}*5]"
    assert IR.unit_stride(parts.a, parts.red.var) and not IR.unit_stride(parts.a, parts.rows.var)
    assert K.stride(parts.a.index, parts.rows.var) == 5


# ---- vector elementwise kernels -----------------------------------------------------------------
def _chain(x):
    return gc.tanh(x * 0.5 + 1.0) * gc.exp(-(x * x)) + gc.sqrt(gc.abs(x))


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_vector_elementwise_kernels_for_sizes_that_divide_and_do_not(dt):
    be = _backend()
    w = VEC.width(be.limits, DType.of(np.ones(1, dt)))
    rng = np.random.default_rng(6)
    for n in (w, 125 * w, 125 * w + 1, w - 1, 3):
        x = rng.standard_normal(n).astype(dt)
        src = _check(lambda x: (_chain(x),), (x,), be, dt)
        vt = f"{'float' if dt == np.float32 else 'double'}{w}"
        assert (f"as {vt} */" in src) == (n % w == 0), n


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_vector_kernels_broadcast_gather_and_propagate_nan(dt):
    """Row operands (the same for every lane), transposed operands (a gather), maximum and
    minimum with NaN (numpy's: NaN wins), pow, and kernels that must stay scalar."""
    be = _backend()
    w = VEC.width(be.limits, DType.of(np.ones(1, dt)))
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 4 * w)).astype(dt)
    x[1, 3] = x[4, w] = np.nan
    m, s = x.max(axis=1, keepdims=True), rng.random((5, 1)).astype(dt) + 1
    t = rng.standard_normal((4 * w, 5)).astype(dt)

    def f(x, m, s, t):
        return (gc.exp(x - m) / s,                          # row operands
                x + gc.transpose(t) * 2.0,                   # a gather along the rows of t
                gc.maximum(x, 0.0), gc.minimum(x, s),        # NaN propagates
                gc.abs(x) ** s, 1.0 / (x * x + 1.0),
                gc.where(x > 0, x, 0.0))                     # a compare: stays scalar
    src = _check(f, (x, m, s, t), be, dt)
    assert src.count(f"{w} consecutive elements per work-item") == 6
    got = gc.compile(f, backend=be)(x, m, s, t)
    assert np.isnan(got[2][1, 3]) and np.isnan(got[3][4, w])
    off = _check(f, (x, m, s, t), _backend(vectors=False), dt)
    assert "consecutive elements per work-item" not in off
