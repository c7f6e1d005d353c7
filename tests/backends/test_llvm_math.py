"""float32 exp/log/tanh of the LLVM backend (backends/llvm_math.py): max ulp error against
numpy over a sweep (random bit patterns over the whole finite range, a dense grid, special
values), and the loops vectorise (<8 x float>-style vector code, no libm call left)."""
import numpy as np
import pytest

import graphc as gc

L = pytest.importorskip("graphc.backends.llvm")
MAX_ULP = {"exp": 3, "log": 3, "tanh": 2}  # measured: exp 3, log 3, tanh 1 (see module doc)


def _ulp(a, b):
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    ia, ib = (v.view(np.int32).astype(np.int64) for v in (a, b))
    ia = np.where(ia < 0, -(ia & 0x7FFFFFFF), ia)
    ib = np.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
    d = np.abs(ia - ib)
    d[same] = 0
    return d


def _sweep():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2 ** 32, 300_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1.1754942e-38, 1.17549435e-38,
               88.72, 88.73, -87.33, -103.9, -104.0, -110.0, 1.0, 2.0, 0.625, -0.625, 9.0,
               -9.0, 20.0, -20.0, 3.4e38, -3.4e38]
    return np.concatenate([bits[np.isfinite(bits)], np.float32(special),
                           np.linspace(-30, 30, 60001, dtype=np.float32),
                           np.exp(np.linspace(-100, 88, 20001)).astype(np.float32)])


@pytest.mark.parametrize("op", sorted(MAX_ULP))
def test_f32_math_ulp_against_numpy(op):
    x = _sweep()
    f = gc.compile(getattr(gc, op), backend="llvm")
    with np.errstate(all="ignore"):
        got, want = f(x), getattr(np, op)(x)
    assert got.dtype == np.float32
    d = _ulp(got, want)
    assert d.max() <= MAX_ULP[op], (op, x[d.argmax()], got[d.argmax()], want[d.argmax()])
    assert np.array_equal(np.signbit(got), np.signbit(want)) or op == "log"


@pytest.mark.parametrize("op", sorted(MAX_ULP))
def test_f32_math_vectorises(op):
    x = np.ones(4096, np.float32)
    prog = gc.compile(getattr(gc, op), backend="llvm").lower(x).program
    ir = L.optimized_ir(prog.module_text)
    if ir is None:  # loaded from the disk cache in another process: recompile in memory
        L.clear_memory_cache()
        import os
        os.environ["GRAPHC_CACHE_DIR"] = "off"
        try:
            prog = gc.compile(getattr(gc, op), backend="llvm").lower(x).program
        finally:
            del os.environ["GRAPHC_CACHE_DIR"]
        ir = L.optimized_ir(prog.module_text)
    assert "x float>" in ir
    assert "call float @" + op not in ir and "@llvm.exp" not in ir and "@llvm.log" not in ir


def test_f64_math_stays_exact():
    x = np.linspace(-5, 5, 101)
    f = gc.compile(lambda x: gc.tanh(x) + gc.exp(x) + gc.log(gc.abs(x) + 1), backend="llvm")
    np.testing.assert_allclose(f(x), np.tanh(x) + np.exp(x) + np.log(np.abs(x) + 1), rtol=1e-14)
