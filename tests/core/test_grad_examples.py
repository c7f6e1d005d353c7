"""The lecture examples: small functions whose derivatives are known by hand, a 2-layer MLP
checked against a hand-written NumPy backward pass, and a logistic-regression Hessian."""
from __future__ import annotations

import math

import numpy as np
import pytest

import graphc as gc


@pytest.mark.parametrize("x", [-1.3, 0.0, 0.5, 2.0])
def test_sin_of_square(x):
    g = gc.grad(lambda x: gc.sin(x ** 2))(x)
    assert float(g) == pytest.approx(math.cos(x ** 2) * 2 * x, rel=1e-14, abs=1e-15)


def test_sin_of_square_on_arrays_elementwise():
    x = np.linspace(-2, 2, 9)
    g = gc.grad(lambda x: gc.sum(gc.sin(x ** 2)))(x)
    np.testing.assert_allclose(g, np.cos(x ** 2) * 2 * x, rtol=1e-14, atol=1e-15)


def test_product_gradient_is_swapped_inputs():
    x1, x2 = 3.0, -2.5
    g1, g2 = gc.grad(lambda a, b: a * b, argnums=(0, 1))(x1, x2)
    assert (float(g1), float(g2)) == (x2, x1)
    # the same with a vector argument x = [x1, x2]
    g = gc.grad(lambda x: x[0] * x[1])(np.array([x1, x2]))
    np.testing.assert_array_equal(g, [x2, x1])


def test_the_graph_example_a_plus_b_times_b_plus_one():
    def f(a, b):
        return (a + b) * (b + 1)

    value, (da, db) = gc.value_and_grad(f, argnums=(0, 1))(2.0, 1.0)
    assert float(value) == 6.0
    assert float(da) == 2.0   # b + 1
    assert float(db) == 5.0   # (b + 1) + (a + b)
    # compiled, in float32
    fc = gc.compile(gc.value_and_grad(f, argnums=(0, 1)), backend="numpy")
    v, (da, db) = fc(np.float32(2), np.float32(1))
    assert v.dtype == np.float32 and da.dtype == np.float32
    assert (float(v), float(da), float(db)) == (6.0, 2.0, 5.0)


# ---- a 2-layer MLP with softmax cross-entropy --------------------------------------------------
N, D, H, C = 8, 5, 7, 4


def mlp_loss(W1, b1, W2, b2, X, Y):
    h = gc.tanh(X @ W1 + b1)
    logits = h @ W2 + b2
    m = gc.max(logits, axis=1, keepdims=True)
    z = logits - m
    logp = z - gc.log(gc.sum(gc.exp(z), axis=1, keepdims=True))
    return -gc.sum(Y * logp) / X.shape[0]


def mlp_numpy(W1, b1, W2, b2, X, Y):
    """Forward and the hand-written backward pass."""
    n = X.shape[0]
    a1 = X @ W1 + b1
    h = np.tanh(a1)
    logits = h @ W2 + b2
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    loss = -np.sum(Y * np.log(p)) / n
    dlogits = (p - Y) / n
    dW2 = h.T @ dlogits
    db2 = dlogits.sum(axis=0)
    dh = dlogits @ W2.T
    da1 = dh * (1 - h ** 2)
    dW1 = X.T @ da1
    db1 = da1.sum(axis=0)
    return loss, (dW1, db1, dW2, db2)


def mlp_data(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    W1 = rng.standard_normal((D, H)) * 0.5
    b1 = rng.standard_normal(H) * 0.1
    W2 = rng.standard_normal((H, C)) * 0.5
    b2 = rng.standard_normal(C) * 0.1
    X = rng.standard_normal((N, D))
    labels = rng.integers(0, C, N)
    Y = np.eye(C)[labels]
    return tuple(a.astype(dtype) for a in (W1, b1, W2, b2, X, Y))


def test_mlp_gradients_match_handwritten_backward_float64():
    args = mlp_data(np.float64)
    want_loss, want = mlp_numpy(*args)
    loss, grads = gc.value_and_grad(mlp_loss, argnums=(0, 1, 2, 3))(*args)
    assert isinstance(grads, tuple) and len(grads) == 4
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12, atol=1e-12)
    for name, g, w, p in zip(["W1", "b1", "W2", "b2"], grads, want, args):
        assert g.shape == p.shape and g.dtype == np.float64, name
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-10, err_msg=name)


def test_mlp_compiled_numpy_backend_float32():
    args64 = mlp_data(np.float64, seed=1)
    want_loss, want = mlp_numpy(*args64)
    f = gc.compile(gc.value_and_grad(mlp_loss, argnums=(0, 1, 2, 3)), backend="numpy")
    loss, grads = f(*(a.astype(np.float32) for a in args64))
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-5)
    for name, g, w in zip(["W1", "b1", "W2", "b2"], grads, want):
        assert g.dtype == np.float32, name
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=name)
    # the backward stage really ran and left no grad marker
    assert "backward" in f.stages
    assert all(n.op is not gc.Op.GRAD for n in f.graph("optimized").nodes)


def test_mlp_gradient_descent_lowers_the_loss():
    args = list(mlp_data(np.float64, seed=2))
    step = gc.compile(gc.value_and_grad(mlp_loss, argnums=(0, 1, 2, 3)), backend="numpy")
    first, _ = step(*args)
    for _ in range(20):
        loss, grads = step(*args)
        for i, g in enumerate(grads):
            args[i] = args[i] - 0.5 * g
    assert float(loss) < 0.8 * float(first)


# ---- logistic regression: the Hessian of a 1-parameter NLL -------------------------------------
def test_logistic_regression_hessian():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(20)
    y = (rng.random(20) < 1 / (1 + np.exp(-1.5 * x))).astype(np.float64)

    def nll(w):
        z = w * x
        return gc.sum(gc.log(1.0 + gc.exp(z)) - y * z)

    sigma = lambda t: 1 / (1 + np.exp(-t))  # noqa: E731
    for w in (-0.7, 0.0, 0.9):
        s = sigma(w * x)
        g = gc.grad(nll)(w)
        np.testing.assert_allclose(g, np.sum((s - y) * x), rtol=1e-12, atol=1e-12)
        hess = gc.grad(gc.grad(nll))(w)
        np.testing.assert_allclose(hess, np.sum(s * (1 - s) * x ** 2), rtol=1e-12)
    # and compiled
    h = gc.compile(gc.grad(gc.grad(nll)), backend="numpy")
    s = sigma(0.25 * x)
    np.testing.assert_allclose(h(0.25), np.sum(s * (1 - s) * x ** 2), rtol=1e-12)
