"""Device-resident arrays on the OpenCL backend: `device_outputs=True` results stay on the
device as OpenCLArrays, go back in without a host round trip, donated ones are consumed and
their buffers reused; a TrainStep keeps its state there and moves only the batch, the
learning rate and the key up and the loss down (counted in opencl.TRANSFERS)."""
from __future__ import annotations

import copy as copy_module
import pickle

import numpy as np
import pytest

import graphc as gc
from graphc import nn
import graphc.nn.functional as F
from graphc.device import DeviceArray
from graphc.errors import GraphcError
from graphc.frontends.pytree import flatten

opencl = pytest.importorskip("graphc.backends.opencl")
pytest.importorskip("pyopencl")
BE = opencl.OpenCLBackend()
if not BE.available()[0]:
    pytest.skip(f"no OpenCL device: {BE.available()[1]}", allow_module_level=True)


def _moved(fn):
    """(result of fn(), host->device bytes, device->host bytes) during the call."""
    before = dict(opencl.TRANSFERS)
    out = fn()
    return out, (opencl.TRANSFERS["h2d_bytes"] - before["h2d_bytes"],
                 opencl.TRANSFERS["d2h_bytes"] - before["d2h_bytes"])


def _model():
    # no bias right before the BatchNorm: its gradient is rounding noise, which Adam would
    # amplify
    return nn.Sequential(nn.Linear(12, 10, seed=0), nn.ReLU(), nn.BatchNorm1d(10),
                         nn.Linear(10, 3, seed=1))


def _batch(seed, n=16):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 12)).astype(np.float32), rng.integers(0, 3, n)


def test_train_step_on_the_device_trains_like_numpy():
    steps = {be: gc.train.TrainStep(_model(), F.cross_entropy, gc.optim.Adam(lr=0.05),
                                    backend=be) for be in ("numpy", BE)}
    for i in range(6):
        x, y = _batch(i)
        ref, got = (steps[be](x, y) for be in ("numpy", BE))
        assert abs(got.loss - ref.loss) <= 1e-5 * max(1.0, abs(ref.loss))
        np.testing.assert_allclose(got.output, ref.output, rtol=1e-4, atol=1e-5)
    dev = steps[BE]
    assert all(isinstance(v, DeviceArray) for v in dev._params.values())  # kept there
    for name in ("params", "buffers"):
        want, have = getattr(steps["numpy"], name), getattr(dev, name)
        assert set(want) == set(have)
        for k in want:
            assert isinstance(have[k], np.ndarray)
            np.testing.assert_allclose(have[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
    assert float(dev.opt_state["step"]) == 6.0
    x, _ = _batch(99)
    np.testing.assert_allclose(dev.evaluate(x), steps["numpy"].evaluate(x), rtol=1e-4, atol=1e-5)
    w = dev.sync()[0].weight  # back into the model as numpy arrays
    np.testing.assert_allclose(np.asarray(w), dev.params["0.weight"])


def test_a_step_moves_only_the_batch_and_scalars_up_and_the_loss_down():
    step = gc.train.TrainStep(_model(), F.cross_entropy, gc.optim.SGD(lr=0.1, momentum=0.9),
                              backend=BE)
    x, y = _batch(0)
    step(x, y)  # the first call uploads the state
    state_buffers = None
    for i in range(1, 4):
        x, y = _batch(i)
        r, (up, down) = _moved(lambda: step(x, y))
        assert up == x.nbytes + y.nbytes + 8 + 8   # batch, lr (f64), key (i64)
        assert down == 4                            # the f32 loss
        _, (_, down) = _moved(lambda: r.output)
        assert down == r.output.nbytes              # the output only when read
        state = flatten((step._params, step._buffers, step._opt_state))[0]
        ptrs = {v.buffer.int_ptr for v in state}
        if i == 1:
            state_buffers = ptrs
        elif i == 3:  # calls 1 and 3 write the same buffers: donation swaps, not allocates
            assert ptrs == state_buffers


def test_fit_with_early_stopping_and_best_checkpoint_matches_numpy():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((96, 12)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    hist = {}
    for be in ("numpy", BE):
        step = gc.train.TrainStep(_model(), F.cross_entropy, gc.optim.SGD(lr=0.5), backend=be)
        hist[be] = (gc.train.fit(step, x[:64], y[:64], epochs=6, batch_size=16,
                                 val=(x[64:], y[64:]), patience=1, progress=False), step)
    (h_ref, s_ref), (h, s) = hist["numpy"], hist[BE]
    assert (h.best_epoch, h.stopped_early) == (h_ref.best_epoch, h_ref.stopped_early)
    np.testing.assert_allclose(h.train_loss, h_ref.train_loss, rtol=1e-4)
    np.testing.assert_allclose(h.val_acc, h_ref.val_acc)
    for k in s_ref.params:  # the restored best state
        np.testing.assert_allclose(s.params[k], s_ref.params[k], rtol=1e-4, atol=1e-5)


def test_device_arrays_round_trip_through_numpy():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    d, (up, _) = _moved(lambda: opencl.to_device(a, BE))
    assert up == a.nbytes and isinstance(d, DeviceArray)
    assert (d.shape, d.dtype, d.ndim, d.size, len(d)) == ((3, 4), np.float32, 2, 12, 3)
    h, (_, down) = _moved(lambda: np.asarray(d))
    np.testing.assert_array_equal(h, a)
    assert down == a.nbytes and not h.flags.writeable
    _, (_, down) = _moved(lambda: (np.asarray(d), d.numpy(), repr(d)))
    assert down == 0  # kept after the first copy
    copy = np.array(d)
    copy[0, 0] = 7  # np.array gives a writable copy of its own
    assert float(np.asarray(d)[0, 0]) == 0.0 and "OpenCLArray" in repr(d)
    s = gc.compile(lambda v: v.sum(), backend=BE, device_outputs=True)(d)
    assert isinstance(s, DeviceArray) and float(s) == 66.0 and int(s) == 66
    empty = opencl.to_device(np.zeros((0, 3), np.int32), BE)
    assert np.asarray(empty).shape == (0, 3)
    for c in (copy_module.deepcopy(d), pickle.loads(pickle.dumps(d))):  # as numpy arrays
        assert type(c) is np.ndarray and c.flags.writeable
        np.testing.assert_array_equal(c, a)


def test_device_outputs_feed_the_next_call_without_host_traffic():
    f = gc.compile(lambda w, g: (w - 0.5 * g, (w * g).sum()), backend=BE, device_outputs=True)
    w, g = np.arange(6, dtype=np.float32), np.ones(6, np.float32)
    w1, _ = f(w, g)
    gd = opencl.to_device(g, BE)
    (w2, s), (up, down) = _moved(lambda: f(w1, gd))
    assert (up, down) == (0, 0)
    np.testing.assert_allclose(np.asarray(w2), w - 1.0)
    assert float(s) == float(((w - 0.5) * g).sum())
    assert not w1.is_deleted()  # not donated: still usable
    np.testing.assert_allclose(np.asarray(w1), w - 0.5)


def test_a_donated_device_array_is_consumed_and_using_it_again_raises():
    f = gc.compile(lambda w, g: w - g, backend=BE, donate_argnums=(0,), device_outputs=True)
    w, g = opencl.to_device(np.ones(5, np.float32), BE), np.ones(5, np.float32)
    out = f(w, g)
    assert w.is_deleted() and "deleted" in repr(w)
    np.testing.assert_array_equal(np.asarray(out), 0.0)
    with pytest.raises(GraphcError, match="argument 'w' .* was donated"):
        f(w, g)
    for use in (np.asarray, float, gc.compile(lambda v: v * 2, backend="numpy")):
        with pytest.raises(GraphcError, match="was donated"):
            use(w)
    # a donated array also passed as a second argument: read by the call, consumed after it
    out2 = f(out, out)
    assert out.is_deleted()
    np.testing.assert_array_equal(np.asarray(out2), 0.0)


def test_mixing_host_device_and_foreign_arrays():
    def f(a, b, c):
        return a @ b + c, a, 2.0 * c, 2.0 * c, np.arange(3, dtype=np.float32)
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal(s).astype(np.float32) for s in ((4, 5), (5, 3), (3,)))
    want = (a @ b + c, a, 2 * c, 2 * c, np.arange(3))
    other = opencl.OpenCLBackend()  # a second context: its arrays go through the host
    other.device
    args = (opencl.to_device(a, BE), b, opencl.to_device(c, other))
    for device_outputs in (False, True):
        got = gc.compile(f, backend=BE, device_outputs=device_outputs)(*args)
        kinds = {type(o) for o in got}
        assert kinds == ({opencl.OpenCLArray} if device_outputs else {np.ndarray})
        for g, w in zip(got, want):
            np.testing.assert_allclose(np.asarray(g), w, rtol=1e-5, atol=1e-6)
        if device_outputs:  # the input returned as is and the repeated result are copies
            assert len({o.buffer.int_ptr for o in got}) == len(want)
            assert got[1].buffer.int_ptr != args[0].buffer.int_ptr


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_backends_without_device_memory_ignore_device_outputs(backend):
    f = gc.compile(lambda w, g: (w * g, (w + g).sum()), backend=backend, device_outputs=True)
    w, g = np.arange(4, dtype=np.float32), np.full(4, 2.0, np.float32)
    out, s = f(opencl.to_device(w, BE), g)  # a device array argument is copied down
    assert type(out) is np.ndarray and type(s) is np.ndarray
    np.testing.assert_array_equal(out, w * g)
    assert float(s) == float((w + g).sum())
