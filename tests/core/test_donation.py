"""Donated arguments (memory-plan rule M5): the optimizer update writes into the parameter
arrays the caller handed over, and results stay those of the reference."""
import sys
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.backends.numpy import NumpyBackend
from graphc.ops import Op

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import mlp  # noqa: E402


def _run(backend, donate):
    step = gc.compile(mlp.train_step, backend=backend, donate_argnums=donate)
    params = mlp.init_params()
    ids = {k: id(v) for k, v in params.items()}
    loss, new = step(params, *mlp.EXAMPLES["train_step"][1:])
    return step, ids, loss, new


@pytest.mark.parametrize("backend", ["numpy", NumpyBackend(poison=True)], ids=["numpy", "poison"])
def test_sgd_updates_the_donated_parameters_in_place(backend):
    step, ids, loss, new = _run(backend, (0,))
    ref_loss, ref = gc.compile(mlp.train_step, backend="reference")(
        mlp.init_params(), *mlp.EXAMPLES["train_step"][1:])
    assert all(id(new[k]) == ids[k] for k in new), "every update went into its argument"
    for k in new:
        np.testing.assert_array_equal(new[k], ref[k])
    np.testing.assert_array_equal(loss, ref_loss)
    donated = [n for n in step.graph("scheduled").nodes if n.op is Op.FUSED and "donated" in n.attrs]
    assert len(donated) == 4 and "@into-input" in str(step.graph("scheduled"))


def test_without_donation_the_arguments_are_untouched():
    params = mlp.init_params()
    before = {k: v.copy() for k, v in params.items()}
    _, new = gc.compile(mlp.train_step)(params, *mlp.EXAMPLES["train_step"][1:])
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])
        assert new[k] is not params[k]


def test_a_read_only_or_repeated_donated_argument_is_copied_not_written():
    step = gc.compile(lambda w, g: w - 0.5 * g, donate_argnums=(0,))
    w = np.ones(4, np.float32)
    w.setflags(write=False)
    out = step(w, np.ones(4, np.float32))
    np.testing.assert_array_equal(out, 0.5) and np.testing.assert_array_equal(w, 1.0)
    a = np.ones(4, np.float32)
    out = step(a, a)  # the same array as parameter and gradient: must not be clobbered
    np.testing.assert_array_equal(out, 0.5)
    np.testing.assert_array_equal(a, 1.0)


def test_donation_never_applies_when_the_input_is_read_later():
    # w is read by the output kernel and again by a later one: it must not be overwritten
    f = gc.compile(lambda w, g: (w - g, (w * w).sum()), donate_argnums=(0,))
    w, g = np.arange(4, dtype=np.float32), np.ones(4, np.float32)
    a, b = f(w.copy(), g)
    np.testing.assert_array_equal(a, w - g)
    assert float(b) == float((w * w).sum())
