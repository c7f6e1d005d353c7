"""The workloads in JAX ("jax jit"): each step is one `jax.jit` of `value_and_grad` of the
same math plus the SGD update, on the CPU.

Each builder returns a function with the hand-written NumPy version's signature and result
structure: NumPy arrays in (jit transfers them), NumPy arrays out (`np.asarray` waits for
the result, so the time is the real one).
"""
from __future__ import annotations

import os

import numpy as np

from benchmarks.passes import LR, mlp_forward


def _jax():
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # no probing for accelerators
    import jax
    return jax


def _ce(jax, z, onehot):
    return -(onehot * jax.nn.log_softmax(z, axis=1)).sum() / z.shape[0]


def _mlp(jax, p, x):
    return mlp_forward(p, x, jax.nn.relu)


def _pool(h):
    N, C, H, W = h.shape
    return h.reshape(N, C, H // 2, 2, W // 2, 2).max(axis=(3, 5))


def _conv(jax, x, K, c, pad):
    y = jax.lax.conv_general_dilated(x, K, (1, 1), [(pad, pad)] * 2,
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return y + c[None, :, None, None]


def _lstm_loss(jax, p, x, onehot):
    jnp = jax.numpy
    H = p["Wh"].shape[0]
    sig = jax.nn.sigmoid

    def cell(carry, xt):
        h, c = carry
        a = xt @ p["Wx"] + p["b"] + h @ p["Wh"]
        i, f = sig(a[:, :H]), sig(a[:, H:2 * H])
        g, o = jnp.tanh(a[:, 2 * H:3 * H]), sig(a[:, 3 * H:])
        c = f * c + i * g
        return (o * jnp.tanh(c), c), None

    zero = jnp.zeros((x.shape[1], H), x.dtype)
    (h, _), _ = jax.lax.scan(cell, (zero, zero), x)
    return _ce(jax, h @ p["W"] + p["bW"], onehot)


def _train(jax, loss):
    @jax.jit
    def step(p, *data):
        value, g = jax.value_and_grad(loss)(p, *data)
        return value, jax.tree_util.tree_map(lambda a, b: a - LR * b, p, g)
    return lambda *args: jax.tree_util.tree_map(np.asarray, step(*args))


def _infer(jax, fn):
    f = jax.jit(fn)
    return lambda *args: np.asarray(f(*args))


def build(problem):
    jax = _jax()
    jnp = jax.numpy
    kind = problem.kind
    if kind == "mlp":
        return _train(jax, lambda p, x, y: _ce(jax, _mlp(jax, p, x), y))
    if kind == "cnn":
        def cnn_loss(p, x, y):
            h = _pool(jax.nn.relu(_conv(jax, x, p["K1"], p["c1"], 2)))
            h = _pool(jax.nn.relu(_conv(jax, h, p["K2"], p["c2"], 0)))
            h = jax.nn.relu(h.reshape(h.shape[0], -1) @ p["W1"] + p["b1"])
            return _ce(jax, h @ p["W2"] + p["b2"], y)
        return _train(jax, cnn_loss)
    if kind == "lstm":
        return _train(jax, lambda p, x, y: _lstm_loss(jax, p, x, y))
    if kind == "chain":
        return _infer(jax, lambda x: jnp.tanh(x * 0.5 + 1.0) * jnp.exp(-(x * x))
                      + jnp.sqrt(jnp.abs(x)))
    if kind == "softmax":
        return _infer(jax, lambda x: jax.nn.softmax(x, axis=1))
    if kind == "infer":
        return _infer(jax, lambda p, x: _mlp(jax, p, x))
    if kind == "gemm":
        return _infer(jax, jnp.matmul)
    raise ValueError(f"no jax version of {kind!r}")
