"""Lecture items (see docs/lectures.md) shown by exact or Monte-Carlo identities and by the
--quick runs of their examples: 6.16 greedy layer-wise pretraining, 7.11 the L2 analysis
(effective parameters), 7.19 dropout as a geometric-mean ensemble, 7.21 DropConnect,
7.26 input noise = L2, 9.23 minibatch m = 2, 9.26 bias-variance, 9.27 ReLU vs tanh speed."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import graphc as gc
from graphc.nn import functional as F

from test_examples_part1 import _run


# ---- 7.11 L2 analysis: w~ = (H + aI)^-1 H w* = Q (L + aI)^-1 L Q^T w* --------------------------
def test_l2_training_converges_to_effective_parameter_closed_form():
    rng = np.random.default_rng(0)
    n, alpha = 5, 0.1
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.array([10.0, 3.0, 1.0, 0.01, 0.001])          # two directions with lambda << alpha
    H = q @ np.diag(lam) @ q.T
    w_star = rng.standard_normal(n)

    def objective(w):                                      # quadratic around w*, plus L2
        d = w - w_star
        return 0.5 * gc.sum(d * gc.matmul(H, d)) + 0.5 * alpha * gc.sum(w * w)

    grad = gc.compile(gc.grad(objective), backend="numpy")
    w, lr = np.zeros(n), 1.0 / (lam.max() + alpha)
    for _ in range(3000):                                  # gradient descent to convergence
        w = w - lr * np.asarray(grad(w))
    closed = np.linalg.solve(H + alpha * np.eye(n), H @ w_star)
    np.testing.assert_allclose(w, closed, atol=1e-8)
    evals, Q = np.linalg.eigh(H)                           # host eigendecomposition
    ratio = (Q.T @ w) / (Q.T @ w_star)                     # per-eigendirection scaling
    np.testing.assert_allclose(ratio, evals / (evals + alpha), atol=1e-7)
    small, large = evals < 0.1 * alpha, evals > 10 * alpha
    assert np.all(np.abs(ratio[small]) < 0.1) and np.all(ratio[large] > 0.9)
    effective = float(np.sum(evals / (evals + alpha)))
    assert 2.5 < effective < 3.0 < n                       # "Effective parameters < n"


# ---- 7.19 dropout as an ensemble: NGM over all masks = weight scaling -------------------------
def _masks(n):
    return np.array(list(itertools.product([0.0, 1.0], repeat=n)))


def test_weight_scaling_equals_normalised_geometric_mean_softmax():
    rng = np.random.default_rng(1)
    n, k = 4, 3                                            # 2^4 = 16 sub-networks
    x, W, b = rng.standard_normal(n), rng.standard_normal((k, n)), rng.standard_normal(k)
    masks = _masks(n)
    probs = np.stack([F.softmax(F.linear((m * x)[None], W, b), dim=-1)[0] for m in masks])
    geo = np.exp(np.mean(np.log(probs), axis=0))           # geometric mean over the 2^n models
    ngm = geo / geo.sum()                                  # renormalised
    scaled = F.softmax(F.linear(x[None], W * 0.5, b), dim=-1)[0]   # weights divided by two
    np.testing.assert_allclose(ngm, scaled, rtol=1e-12)
    arithmetic = probs.mean(0)                             # the plain average differs
    assert np.abs(arithmetic - scaled).max() > 1e-3


def test_ngm_of_one_sigmoid_unit_is_sigmoid_of_mean_input():
    rng = np.random.default_rng(2)
    n = 5
    x, w = rng.standard_normal(n), rng.standard_normal(n)
    zs = np.array([np.dot(w, m * x) for m in _masks(n)])
    o = F.sigmoid(zs)
    G, G_ = np.exp(np.mean(np.log(o))), np.exp(np.mean(np.log(1 - o)))
    np.testing.assert_allclose(G / (G + G_), F.sigmoid(zs.mean()), rtol=1e-12)
    np.testing.assert_allclose(zs.mean(), np.dot(w / 2, x), rtol=1e-12)


# ---- 7.21 DropConnect --------------------------------------------------------------------------
def test_dropconnect_mask_statistics_scaling_and_eval_identity():
    W = np.full((200, 100), 2.0, np.float32)
    p = 0.3
    out = np.asarray(F.dropconnect(W, p, True, 7))
    kept = out != 0
    assert abs(1 - kept.mean() - p) < 0.01                 # ~p of the weights dropped
    np.testing.assert_allclose(out[kept], 2.0 / (1 - p), rtol=1e-6)   # inverted scaling
    assert abs(out.mean() - 2.0) < 0.03                    # E[W'] = W
    np.testing.assert_array_equal(F.dropconnect(W, p, True, 7), out)  # same key, same mask
    assert not np.array_equal(F.dropconnect(W, p, True, 8), out)
    np.testing.assert_array_equal(F.dropconnect(W, p, False), W)   # eval: identity, no key
    np.testing.assert_array_equal(F.dropconnect(W, 0.0, True, 1), W)
    with pytest.raises(gc.GraphcError):
        F.dropconnect(W, p, True)                          # training needs a key


def test_dropconnect_in_a_compiled_linear_layer_masks_edges():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    W = rng.standard_normal((5, 6)).astype(np.float32)

    def layer(x, W, key):
        return F.linear(x, F.dropconnect(W, 0.5, True, key))

    y = gc.compile(layer, backend="numpy")(x, W, np.int64(11))
    mask = np.asarray(F.dropconnect(np.ones_like(W), 0.5, True, 11)) != 0
    np.testing.assert_allclose(y, x @ (W * mask * 2).T, rtol=1e-5, atol=1e-6)
    # one mask per weight, shared by the batch: not expressible as a mask on x or on y
    g = gc.grad(lambda W: gc.sum(layer(x, W, np.int64(11))))(W)
    np.testing.assert_array_equal(np.asarray(g) == 0, ~mask)


# ---- 7.26 input noise = L2 ----------------------------------------------------------------------
def test_gaussian_input_noise_trains_to_ridge_regression():
    rng = np.random.default_rng(4)
    N, d, sigma = 50, 3, 0.5
    X = rng.standard_normal((N, d))
    t = X @ np.array([1.5, -2.0, 0.5]) + 0.3 * rng.standard_normal(N)

    def loss(w, Xn):                                       # sum of squared errors on noisy x
        return gc.sum((gc.matmul(Xn, w) - t) ** 2)

    grad = gc.compile(gc.grad(loss), backend="numpy")
    w, avg, lr, steps = np.zeros(d), np.zeros(d), 2e-3, 6000
    for s in range(steps):                                 # fresh noise every step
        w = w - lr * np.asarray(grad(w, X + sigma * rng.standard_normal((N, d))))
        if s >= steps // 3:
            avg += w / (steps - steps // 3)                # iterate average
    lam = N * sigma ** 2                                   # E[SSE(noisy)] = SSE + N s^2 |w|^2
    ridge = np.linalg.solve(X.T @ X + lam * np.eye(d), X.T @ t)
    ols = np.linalg.lstsq(X, t, rcond=None)[0]
    assert np.linalg.norm(avg - ridge) < 0.15 * np.linalg.norm(ols - ridge)
    assert np.linalg.norm(avg) < np.linalg.norm(ols)       # shrunk, like weight decay
    # the identity itself, Monte-Carlo: E[(y_noisy - t)^2] = (y - t)^2 + sum w_i^2 s_i^2
    eps = sigma * rng.standard_normal((200_000, d))
    x0, t0 = X[0], t[0]
    mc = np.mean(((x0 + eps) @ ridge - t0) ** 2)
    exact = (x0 @ ridge - t0) ** 2 + sigma ** 2 * np.sum(ridge ** 2)
    assert abs(mc - exact) < 0.02 * exact


# ---- examples ----------------------------------------------------------------------------------
def test_layerwise_pretraining(tmp_path):
    m = _run("layerwise_pretraining", tmp_path)              # lecture 6.16
    for i, (first, last) in enumerate(m["pretrain_mse"]):
        assert last < first, i                               # each autoencoder learned
    assert m["pretrained_accuracy"] > 0.9 and m["pretrained_accuracy"] > m["scratch_accuracy"]


def test_minibatch_oscillation(tmp_path):
    m = _run("minibatch_oscillation", tmp_path)              # lecture 9.23
    v = m["loss_std"]
    assert v["full"] < v["2"] < v["1"]


def test_bias_variance(tmp_path):
    m = _run("bias_variance", tmp_path)                      # lecture 9.26
    rows = m["rows"]                                         # prior from tight to loose
    assert rows[0]["bias2"] > rows[-1]["bias2"] and rows[0]["variance"] < rows[-1]["variance"]
    assert m["max_gd_vs_closed_form"] < 1e-3


def test_relu_vs_tanh(tmp_path):
    m = _run("relu_vs_tanh", tmp_path)                       # lecture 9.27
    assert m["relu_steps"] is not None and m["tanh_steps"] is not None
