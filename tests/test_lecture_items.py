"""Single lecture-checklist items (/work/shared/lectures.md) reproduced with graphc: the
generalised logistic (2.3), the analytic identities (3.10), the DenseNet block (4.13), the
unbiased stochastic gradient (5.4), gradient noise (5.25), threshold harshness (9.7), the
3-4-1 forward pass (9.8), sparse-connectivity (9.13) and parameter counts (9.14)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import graphc as gc
from graphc import nn, optim
from graphc.nn import functional as F


def _fd_grad(f, x, eps=1e-6):
    """Central finite differences of a scalar numpy function, float64."""
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        g[i] = (f(x + d) - f(x - d)) / (2 * eps)
    return g


# ---- 2.3 generalised logistic ----------------------------------------------------------------
def generalised_logistic(x, c=1.0, lam=1.0):
    """Lecture 2.3: σ(x) = 1/(1 + c·e^{−λx}), c ≥ 0 (c = λ = 1: the logistic sigmoid)."""
    return 1.0 / (1.0 + c * gc.exp(-lam * x))


@pytest.mark.parametrize("c,lam", [(1.0, 1.0), (0.5, 2.0), (3.0, 0.7), (0.0, 1.5)])
def test_generalised_logistic_value_identity_and_gradient(c, lam):
    x = np.linspace(-4, 4, 17)
    s = np.asarray(gc.compile(lambda v: generalised_logistic(v, c, lam))(x))
    np.testing.assert_allclose(s, 1 / (1 + c * np.exp(-lam * x)), rtol=1e-12)
    # the identity used in the dropout NGM proof: (1 − σ)/σ = c·e^{−λx}
    np.testing.assert_allclose((1 - s) / s, c * np.exp(-lam * x), rtol=1e-9, atol=1e-15)
    if c == 1.0 and lam == 1.0:
        np.testing.assert_allclose(s, np.asarray(F.sigmoid(x)), rtol=1e-12)
    # gradient: λσ(1 − σ), and central finite differences
    g = np.asarray(gc.compile(gc.grad(lambda v: gc.sum(generalised_logistic(v, c, lam))))(x))
    np.testing.assert_allclose(g, lam * s * (1 - s), rtol=1e-9, atol=1e-15)
    fd = _fd_grad(lambda v: np.sum(1 / (1 + c * np.exp(-lam * v))), x)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


# ---- 3.10 analytic identities ----------------------------------------------------------------
def test_bias_variance_decomposition_exact_on_the_sample():
    """E_D[(y − f_D(x))²] = (y − E_D f_D(x))² + Var_D f_D(x) (+ noise when y is noisy): exact
    for the empirical distribution over D. f_D: least-squares lines fitted to D data sets."""
    rng = np.random.default_rng(0)
    x0, y0 = 0.7, math.sin(0.7 * 3)
    preds = []
    for _ in range(50):                                   # 50 training sets D
        x = rng.uniform(-1, 1, 12)
        y = np.sin(3 * x) + 0.3 * rng.standard_normal(12)
        w = np.polyfit(x, y, 1)
        preds.append(np.polyval(w, x0))
    f = np.asarray(preds)

    def expected_error(f, y):
        return gc.mean((y - f) ** 2)

    def bias2_plus_var(f, y):
        return (y - gc.mean(f)) ** 2 + gc.var(f)

    lhs = float(gc.compile(expected_error)(f, y0))
    rhs = float(gc.compile(bias2_plus_var)(f, y0))
    assert lhs == pytest.approx(rhs, rel=1e-12)
    # and their gradients (w.r.t. every prediction and w.r.t. y) agree too
    for argnums in (0, 1):
        ga = gc.compile(gc.grad(expected_error, argnums=argnums))(f, np.float64(y0))
        gb = gc.compile(gc.grad(bias2_plus_var, argnums=argnums))(f, np.float64(y0))
        np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), rtol=1e-10, atol=1e-14)
    # with noisy targets y = y0 + ε, the noise variance adds: E[(y − f)²] = bias² + var + σ²
    eps = rng.standard_normal(len(f)) * 0.3
    fc = f - f.mean()
    eps -= eps.mean()                                     # mean 0 and uncorrelated with f
    eps -= eps.dot(fc) / fc.dot(fc) * fc                  # on the sample
    noisy = float(np.mean((y0 + eps - f) ** 2))
    assert noisy == pytest.approx(rhs + np.var(eps), rel=1e-10)


def test_ensemble_error_v_over_k_plus_covariance():
    """Lecture 3.10 / 7.29: k models with errors ε_i, E[ε_i²] = V, E[ε_iε_j] = C (i ≠ j):
    the ensemble's squared error E[(Σε_i/k)²] = V/k + (k − 1)C/k. Exact on the sample, with
    V and C the sample moments; independent errors (C = 0) give V/k."""
    rng = np.random.default_rng(1)
    k, n = 5, 4000
    for rho in (0.0, 0.3, 1.0):
        cov = 1.5 * (rho * np.ones((k, k)) + (1 - rho) * np.eye(k))
        eps = rng.multivariate_normal(np.zeros(k), cov, size=n)          # (n, k)

        def ensemble_mse(e):
            return gc.mean(gc.mean(e, axis=1) ** 2)

        second = eps.T @ eps / n
        v = np.trace(second) / k
        c = (second.sum() - np.trace(second)) / (k * (k - 1))
        got = float(gc.compile(ensemble_mse)(eps))
        assert got == pytest.approx(v / k + (k - 1) * c / k, rel=1e-10)
        assert got == pytest.approx(1.5 / k + (k - 1) * 1.5 * rho / k, rel=0.1)


def test_input_noise_equals_l2_penalty_for_a_linear_model():
    """Lecture 3.10 / 7.26: for a linear model, Gaussian input noise of variance σ² adds
    σ²‖w‖² to the expected squared error: E_ε[(wᵀ(x + ε) − y)²] = (wᵀx − y)² + σ²‖w‖². With
    noise samples whitened to mean 0 and covariance σ²I the identity is exact, and the gradients
    w.r.t. w (gc.grad) agree: noise injection trains like an L2 penalty."""
    rng = np.random.default_rng(2)
    d, m, sigma = 4, 64, 0.5
    x = rng.standard_normal(d)
    y = 0.3
    w = rng.standard_normal(d)
    e = rng.standard_normal((m, d))
    e -= e.mean(0)
    L = np.linalg.cholesky(e.T @ e / m)
    e = sigma * np.linalg.solve(L, e.T).T                 # exact mean 0, covariance σ²I

    def noisy(w):
        return gc.mean(((x + e) @ w - y) ** 2)

    def penalised(w):
        return (gc.sum(x * w) - y) ** 2 + sigma ** 2 * gc.sum(w * w)

    assert float(gc.compile(noisy)(w)) == pytest.approx(float(gc.compile(penalised)(w)),
                                                        rel=1e-10)
    np.testing.assert_allclose(np.asarray(gc.compile(gc.grad(noisy))(w)),
                               np.asarray(gc.compile(gc.grad(penalised))(w)), rtol=1e-9)


# ---- 4.13 DenseNet -----------------------------------------------------------------------------
def test_dense_block_concatenates_and_has_gradients():
    block = nn.DenseBlock(num_layers=3, num_input_features=4, bn_size=2, growth_rate=3, seed=0)
    from graphc.frontends import nn as frontend_nn
    assert {"DenseBlock", "DenseLayer"} <= set(frontend_nn.__all__)
    names = [n for n, _ in block.named_parameters()]
    assert names[:3] == ["denselayer1.norm1.weight", "denselayer1.norm1.bias",
                         "denselayer1.conv1.weight"]
    shapes = dict(block.named_parameters())
    assert shapes["denselayer2.conv1.weight"].shape == (6, 7, 1, 1)   # input 4 + 1·3 channels
    assert shapes["denselayer3.conv2.weight"].shape == (3, 6, 3, 3)
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 5)).astype(np.float32)
    block.eval()
    out = np.asarray(block(x))
    assert out.shape == (2, 4 + 3 * 3, 5, 5)
    np.testing.assert_array_equal(out[:, :4], x)           # the input passes through unchanged
    # the first layer's new channels are the DenseLayer applied to the input alone
    np.testing.assert_allclose(out[:, 4:7], np.asarray(block.denselayer1(x)), rtol=1e-6)
    # gradient w.r.t. the parameters, in training mode (batch statistics), vs finite differences
    params = {k: np.asarray(v, np.float64) for k, v in block.param_dict().items()}
    x64 = x.astype(np.float64)
    coef = np.random.default_rng(1).standard_normal(out.shape)

    def loss(p):
        y = nn.functional_call(block, p, x64, training=True, return_buffers=False)
        return gc.sum(y * coef)

    grads = gc.compile(gc.grad(loss))(params)
    assert set(grads) == set(params)
    name = "denselayer2.conv1.weight"

    def loss_np(wv):
        return float(gc.compile(loss)({**params, name: wv}))

    w = params[name]
    idx = [(0, 0, 0, 0), (3, 5, 0, 0), (5, 6, 0, 0)]
    for i in idx:
        d = np.zeros_like(w)
        d[i] = 1e-6
        fd = (loss_np(w + d) - loss_np(w - d)) / 2e-6
        assert np.asarray(grads[name])[i] == pytest.approx(fd, rel=1e-4, abs=1e-6)


# ---- 5.4 unbiased stochastic gradient ----------------------------------------------------------
def test_minibatch_gradients_are_unbiased():
    """g̃ = (N/M) Σ_{m∈batch} g_m: over one epoch's partition into minibatches, the mean of the
    estimates is the full-batch gradient exactly (sum losses are additive); over random
    minibatches the average converges to it (error ~ 1/√T)."""
    rng = np.random.default_rng(3)
    n, d, m = 64, 5, 8
    x = rng.standard_normal((n, d))
    y = rng.standard_normal(n)
    w = rng.standard_normal(d)

    def sum_loss(w, x, y):
        return gc.sum((gc.tanh(x @ w) - y) ** 2)

    g = gc.compile(gc.grad(sum_loss))
    full = np.asarray(g(w, x, y))
    perm = rng.permutation(n)
    estimates = [(n / m) * np.asarray(g(w, x[b], y[b])) for b in perm.reshape(-1, m)]
    np.testing.assert_allclose(np.mean(estimates, 0), full, rtol=1e-10, atol=1e-12)
    errors = {}
    for t in (10, 1000):
        est = np.mean([(n / m) * np.asarray(g(w, x[b], y[b]))
                       for b in (rng.choice(n, m, replace=False) for _ in range(t))], 0)
        errors[t] = np.linalg.norm(est - full) / np.linalg.norm(full)
    assert errors[1000] < 0.1 and errors[1000] < errors[10] / 3


# ---- 5.25 gradient noise -----------------------------------------------------------------------
def test_add_gradient_noise_statistics_and_schedule():
    from graphc.frontends import optim as frontend_optim
    assert "add_gradient_noise" in frontend_optim.__all__ and gc.optim.add_gradient_noise
    grads = {"w": np.full((200, 100), 0.25, np.float32), "b": np.zeros(5000, np.float32)}
    eta, gamma = 0.3, 0.55
    for t in (0, 10, 1000):
        noisy = optim.add_gradient_noise(grads, 7, eta=eta, gamma=gamma, step=t)
        sigma = math.sqrt(eta / (1 + t) ** gamma)
        z = np.concatenate([(np.asarray(noisy["w"]) - 0.25).ravel(), np.asarray(noisy["b"])])
        assert np.asarray(noisy["w"]).dtype == np.float32
        assert abs(z.mean()) < 4 * sigma / math.sqrt(z.size)
        assert z.std() == pytest.approx(sigma, rel=0.02)
        kurt = np.mean((z / z.std()) ** 4)
        assert kurt == pytest.approx(3.0, abs=0.15)           # Gaussian, not uniform (1.8)
    # the leaves' noises are independent; the same key gives the same noise, compiled or not
    a = optim.add_gradient_noise(grads, 7, eta=eta, step=3)
    wn, bn = np.asarray(a["w"]).ravel()[:5000] - 0.25, np.asarray(a["b"])
    assert abs(np.corrcoef(wn, bn)[0, 1]) < 0.05
    f = gc.compile(lambda g, k, t: optim.add_gradient_noise(g, k, eta=eta, step=t))
    b = f(grads, np.int64(7), np.float32(3.0))                # key and step traced
    np.testing.assert_allclose(np.asarray(b["w"]), np.asarray(a["w"]), rtol=1e-5, atol=1e-6)
    c = optim.add_gradient_noise(grads, 8, eta=eta, step=3)
    assert not np.allclose(np.asarray(c["w"]), np.asarray(a["w"]))


# ---- 9.7 threshold harshness -------------------------------------------------------------------
def test_threshold_harshness_049_vs_051():
    """Lecture 9.7: with −w₀ = 0.5, the step neuron gives 0.49 and 0.51 different labels; the
    sigmoid neuron gives nearby outputs, and its gradient is not zero (the step's is)."""
    w0 = -0.5

    def step(v):
        return gc.where(v + w0 >= 0, 1.0, 0.0)

    def sigmoid_neuron(v):
        return F.sigmoid(10.0 * (v + w0))

    v = np.array([0.49, 0.51])
    labels = np.asarray(gc.compile(step)(v))
    np.testing.assert_array_equal(labels, [0.0, 1.0])
    s = np.asarray(gc.compile(sigmoid_neuron)(v))
    assert abs(s[1] - s[0]) < 0.06 and s[0] < 0.5 < s[1]
    assert np.all(np.asarray(gc.compile(gc.grad(lambda v: gc.sum(step(v))))(v)) == 0)
    assert np.all(np.asarray(gc.compile(gc.grad(lambda v: gc.sum(sigmoid_neuron(v))))(v)) > 2)


# ---- 9.8 worked 3-4-1 forward pass -------------------------------------------------------------
def test_worked_3_4_1_forward_pass():
    """Lecture 9.8's network: 3 inputs, 4 sigmoid hidden units (weights (4, 3), the (out, in)
    layout of nn.Linear, B.1), one sigmoid output f_out = σ(uᵀz_out + c), evaluated by hand
    (scalar sums, float64) and by graphc's nn.Linear + nn.Sigmoid."""
    x = np.array([1.0, 0.5, -1.0])
    W = np.array([[0.2, -0.4, 0.1], [0.5, 0.3, -0.2], [-0.3, 0.8, 0.6], [0.7, -0.1, 0.4]])
    b = np.array([0.1, -0.2, 0.05, 0.0])
    u = np.array([0.6, -0.5, 0.9, 0.3])
    c = -0.1
    # by hand: each hidden pre-activation as a weighted sum plus bias, then σ
    sig = lambda t: 1.0 / (1.0 + math.exp(-t))             # noqa: E731
    z_in = [sum(W[j, i] * x[i] for i in range(3)) + b[j] for j in range(4)]
    z_out = [sig(t) for t in z_in]
    f_in = sum(u[j] * z_out[j] for j in range(4)) + c
    f_out = sig(f_in)
    hidden, out = nn.Linear(3, 4, dtype=np.float64), nn.Linear(4, 1, dtype=np.float64)
    hidden.weight, hidden.bias = W, b
    out.weight, out.bias = u[None, :], np.array([c])
    model = nn.Sequential(hidden, nn.Sigmoid(), out, nn.Sigmoid())
    np.testing.assert_allclose(np.asarray(nn.Sequential(hidden, nn.Sigmoid())(x[None])),
                               [z_out], rtol=1e-14)
    got = gc.compile(lambda v: model(v))(x[None])
    assert float(np.asarray(got).ravel()[0]) == pytest.approx(f_out, rel=1e-14)
    # ⚠ of the item: the output from activations rounded to 2 decimals differs slightly
    rounded = sig(sum(u[j] * round(z_out[j], 2) for j in range(4)) + c)
    assert rounded == pytest.approx(f_out, abs=5e-3) and rounded != f_out


# ---- 9.13 sparse connectivity ------------------------------------------------------------------
def _connections(fn, x):
    """How many (output, input) pairs are connected: the nonzeros of the Jacobian, one gc.grad
    per output unit."""
    n_out = int(np.asarray(fn(x)).size)
    count = 0
    for k in range(n_out):
        sel = np.zeros(n_out)
        sel[k] = 1.0
        g = gc.grad(lambda v: gc.sum(gc.reshape(fn(v), (-1,)) * sel))(x)
        count += int(np.count_nonzero(np.asarray(g)))
    return count


def test_sparse_connectivity_counts():
    """Lecture 9.13: 3×3 input, 2×2 filter, 2×2 output: 16 connections vs 36 dense; each output
    sees 4 inputs vs 9; 4 weights vs 9·4 = 36."""
    rng = np.random.default_rng(4)
    conv = nn.Conv2d(1, 1, 2, bias=False, dtype=np.float64)
    conv.weight = rng.uniform(0.5, 1.0, (1, 1, 2, 2))
    dense = nn.Linear(9, 4, bias=False, dtype=np.float64)
    dense.weight = rng.uniform(0.5, 1.0, (4, 9))
    x = rng.uniform(0.5, 1.0, (1, 1, 3, 3))
    assert np.asarray(conv(x)).shape == (1, 1, 2, 2)
    assert _connections(conv, x) == 16
    assert _connections(lambda v: dense(gc.reshape(v, (1, 9))), x) == 36
    g = np.asarray(gc.grad(lambda v: gc.sum(conv(v)[0, 0, 0, 0]))(x))
    assert np.count_nonzero(g) == 4                        # receptive field: 4 vs 9
    assert np.count_nonzero(np.asarray(gc.grad(
        lambda v: gc.sum(dense(gc.reshape(v, (1, 9)))[0, 0]))(x))) == 9
    n_conv = sum(p.size for _, p in conv.named_parameters())
    n_dense = sum(p.size for _, p in dense.named_parameters())
    assert (n_conv, n_dense) == (4, 36) and n_dense == 9 * n_conv


# ---- 9.14 parameter count ----------------------------------------------------------------------
def test_parameter_count_75_vs_300_million():
    """Lecture 9.14: a 100×100 colour image, one feature map, 5×5 filter, same padding: 75
    weights (bias ignored); the dense layer between the same input and output has
    (100²·3)·100² = 300 000 000. The dense count is taken from nn.Linear's weight-shape rule
    (out, in), checked on a small image, rather than by allocating 300M floats."""
    conv = nn.Conv2d(3, 1, 5, padding=2, bias=False)
    assert sum(p.size for _, p in conv.named_parameters()) == 5 * 5 * 3 == 75
    y = gc.trace(lambda v: conv(v), np.zeros((1, 3, 100, 100), np.float32))
    assert tuple(y.outputs[0].shape) == (1, 1, 100, 100)   # same padding keeps 100×100

    def dense_params(h, w, channels):
        lin = nn.Linear(h * w * channels, h * w, bias=False)
        return sum(p.size for _, p in lin.named_parameters())

    def dense_rule(h, w, channels):                         # nn.Linear: weight (out, in)
        return (h * w) * (h * w * channels)

    for side in (4, 10, 12):
        assert dense_params(side, side, 3) == dense_rule(side, side, 3)
    assert dense_rule(100, 100, 3) == 300_000_000
    assert dense_rule(100, 100, 3) // 75 == 4_000_000
