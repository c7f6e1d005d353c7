"""The workloads in tinygrad on its OpenCL device ("tinygrad CL"): tensors on "CL", each step
one `TinyJit` function (gradients from `Tensor.gradient`, then the SGD update), outputs
realized inside it and read back with `.numpy()`, which waits for the device.

OpenCL through PoCL without system changes: tinygrad opens libOpenCL through its `DLL`
helper, which takes a file named by $OPENCL_PATH first. pyopencl's wheel ships an ICD loader
(pyopencl/.libs/libOpenCL-*.so*) and the PoCL it finds, but that loader works only in a
process that has imported pyopencl (loaded cold it crashed in clGetPlatformIDs here, and with
only pyopencl's PYOPENCL_HOME set it found no platform). So `_use_pyopencl_loader` imports
pyopencl first and points $OPENCL_PATH at that same file, which dlopen then hands back as
the copy already loaded: graphc's OpenCL backend and tinygrad share one loader and one PoCL.

Each builder returns a function with the hand-written NumPy version's signature: NumPy
arrays in (copied to the device each call, as graphc's OpenCL backend does), NumPy out.
TinyJit runs its first call plainly (the check call in benchmarks/timing.py) and captures the
kernels on the second (the warm-up call), so every timed call replays them; --quick skips
the warm-up, so its one timed call is the capture.
"""
from __future__ import annotations

import glob
import os

from benchmarks.passes import LR, mlp_forward

DEVICE = "CL"


def _use_pyopencl_loader():
    if os.environ.get("OPENCL_PATH"):
        return  # the user's choice wins
    try:
        import pyopencl
    except ImportError:
        return  # tinygrad then looks for a system libOpenCL
    found = sorted(glob.glob(os.path.join(os.path.dirname(pyopencl.__file__), ".libs",
                                          "libOpenCL*.so*")))
    if found:
        os.environ["OPENCL_PATH"] = found[0]


def _tinygrad():
    _use_pyopencl_loader()
    import tinygrad
    dev = tinygrad.Device[DEVICE]  # opens the OpenCL device, or raises
    return tinygrad, dev


def device_name() -> str:
    _, dev = _tinygrad()
    return f"{DEVICE}: {dev.device_name}"


def _ce(z, onehot):
    return -(onehot * z.log_softmax(axis=1)).sum() / z.shape[0]


def _mlp(p, x):
    return mlp_forward(p, x, lambda h: h.relu())


def _cnn_loss(p, x, y):
    h = x.conv2d(p["K1"], p["c1"], padding=2).relu().max_pool2d((2, 2))
    h = h.conv2d(p["K2"], p["c2"]).relu().max_pool2d((2, 2))
    h = (h.reshape(h.shape[0], -1) @ p["W1"] + p["b1"]).relu()
    return _ce(h @ p["W2"] + p["b2"], y)


def _lstm_loss(p, x, y):
    H = p["Wh"].shape[0]
    h = c = None
    for t in range(x.shape[0]):  # unrolled, like graphc's trace of the Python loop
        a = x[t] @ p["Wx"] + p["b"]
        if h is not None:
            a = a + h @ p["Wh"]
        i, f = a[:, :H].sigmoid(), a[:, H:2 * H].sigmoid()
        g, o = a[:, 2 * H:3 * H].tanh(), a[:, 3 * H:].sigmoid()
        c = i * g if c is None else f * c + i * g
        h = o * c.tanh()
    return _ce(h @ p["W"] + p["bW"], y)


def _tensors(tg, arrays):
    return [tg.Tensor(a, device=DEVICE) for a in arrays]  # the JIT realizes them in one batch


def _train(tg, loss_fn, keys):
    @tg.TinyJit
    def step(*ts):
        p = dict(zip(keys, ts[:len(keys)]))
        loss = loss_fn(p, *ts[len(keys):])
        grads = loss.gradient(*p.values())
        return loss.realize(), [(v - LR * g).realize() for v, g in zip(p.values(), grads)]

    def run(p, *data):
        loss, new = step(*_tensors(tg, [p[k] for k in keys] + list(data)))
        assert loss.device == DEVICE, loss.device
        return loss.numpy(), {k: v.numpy() for k, v in zip(keys, new)}
    return run


def _infer(tg, fn, keys=None):
    @tg.TinyJit
    def jitted(*ts):
        if keys is None:
            return fn(*ts).realize()
        return fn(dict(zip(keys, ts[:len(keys)])), *ts[len(keys):]).realize()

    def run(*args):
        arrays = list(args) if keys is None else [args[0][k] for k in keys] + list(args[1:])
        out = jitted(*_tensors(tg, arrays))
        assert out.device == DEVICE, out.device
        return out.numpy()
    return run


def build(problem):
    tg, _ = _tinygrad()
    kind, first = problem.kind, problem.args[0]
    keys = sorted(first) if isinstance(first, dict) else None
    if kind in ("mlp", "cnn", "lstm"):
        loss = {"mlp": lambda p, x, y: _ce(_mlp(p, x), y), "cnn": _cnn_loss,
                "lstm": _lstm_loss}[kind]
        fn = _train(tg, loss, keys)
    elif kind == "chain":
        fn = _infer(tg, lambda x: (x * 0.5 + 1.0).tanh() * (-(x * x)).exp() + x.abs().sqrt())
    elif kind == "softmax":
        fn = _infer(tg, lambda x: x.softmax(axis=1))
    elif kind == "infer":
        fn = _infer(tg, _mlp, keys)
    elif kind == "gemm":
        fn = _infer(tg, lambda a, b: a @ b)
    else:
        raise ValueError(f"no tinygrad version of {kind!r}")
    return fn

