"""Lowering shapes the LLVM backend relies on for speed: a root concat along axis > 0 is one
loop nest per part (no select over all parts), checked against numpy and the kernel-IR
oracle (graphc.kernel.evaluate)."""
import numpy as np
import pytest

import graphc as gc
from graphc import kernel as K

pytest.importorskip("graphc.backends.llvm")


@pytest.mark.parametrize("axis", [1, 2, -1])
def test_root_concat_per_part(axis):
    rng = np.random.default_rng(axis + 5)
    a = rng.standard_normal((3, 4, 5)).astype(np.float32)
    b = rng.standard_normal((3, 4, 5)).astype(np.float32)

    def f(a, b):
        parts = [a * 2.0, gc.exp(b), a[:, :, :0] if axis in (2, -1) else a[:, :0], a + b]
        return gc.concatenate(parts, axis=axis)
    fc = gc.compile(f, backend="llvm")
    want = np.concatenate([a * 2, np.exp(b), a[:, :, :0] if axis in (2, -1) else a[:, :0],
                           a + b], axis=axis)
    np.testing.assert_allclose(fc(a, b), want, rtol=1e-6)
    prog = fc.lower(a, b).program
    (k,) = [k for k in prog.kernels if k.body and "concat" in str(k)]
    assert "?" not in str(k).split("{", 1)[1]  # no select chain in the body
    np.testing.assert_allclose(K.evaluate(k, a, b), want, rtol=1e-6)
