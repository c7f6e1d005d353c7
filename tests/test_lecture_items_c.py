"""Lecture items (see docs/lectures.md) reproduced with graphc: 1.20 the Sobel kernel as an
outer product and separable convolution, 5.10 Newton's method on logistic regression (Hessian
from nested gc.grad) against gradient descent, 7.31 the polynomial-order overfitting example,
8.2 why the negative gradient, 8.6 the numerator-layout Jacobian built row by row from VJPs,
9.10 the separability of the Sobel kernels, 9.16 the 2×2 Hadamard example."""
from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.nn import functional as F


# ---- 1.20 / 9.10 Sobel S_x = [1 2 1]^T [-1 0 1], separable convolution -------------------------
def test_sobel_kernel_is_an_outer_product_and_separable_conv_equals_2d_conv():
    avg, diff = np.array([1.0, 2.0, 1.0]), np.array([-1.0, 0.0, 1.0])
    s_x = np.asarray(gc.matmul(avg[:, None], diff[None, :]))          # (3,1) @ (1,3)
    s_y = np.asarray(gc.matmul(diff[:, None], avg[None, :]))
    np.testing.assert_array_equal(s_x, [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    np.testing.assert_array_equal(s_y, [[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
    assert np.linalg.matrix_rank(s_x) == 1

    img = np.random.default_rng(0).uniform(0, 255, (1, 1, 9, 11))
    for k, col, row in ((s_x, avg, diff), (s_y, diff, avg)):
        full = np.asarray(F.conv2d(img, k[None, None]))                    # one 3x3 pass
        vert = F.conv2d(img, col[None, None, :, None])                     # 3x1 pass
        sep = np.asarray(F.conv2d(vert, row[None, None, None, :]))         # then 1x3
        assert full.shape == sep.shape == (1, 1, 7, 9)                     # o = i - k + 1
        np.testing.assert_allclose(sep, full, rtol=1e-12, atol=1e-9)
    # and compiled: the separable pipeline on the numpy backend
    f = gc.compile(lambda x: F.conv2d(F.conv2d(x, avg[None, None, :, None]),
                                      diff[None, None, None, :]), backend="numpy")
    np.testing.assert_allclose(np.asarray(f(img)), np.asarray(F.conv2d(img, s_x[None, None])),
                               rtol=1e-12, atol=1e-9)


# ---- 5.10 Newton's method: dw = -H^-1 g, H from nested gc.grad ----------------------------------
def _logistic_data():
    rng = np.random.default_rng(5)
    n, d = 200, 3
    X = np.concatenate([rng.standard_normal((n, d - 1)), np.ones((n, 1))], axis=1)   # + bias
    w_true = np.array([1.5, -2.0, 0.5])
    y = (rng.random(n) < 1 / (1 + np.exp(-X @ w_true))).astype(np.float64)    # not separable
    return X, y


def test_newton_steps_on_logistic_regression_converge_fast_gradient_descent_slowly():
    X, y = _logistic_data()
    n, d = X.shape

    def nll(w):
        z = gc.matmul(X, w)
        return gc.sum(gc.log(1.0 + gc.exp(z)) - y * z) / n

    grad = gc.grad(nll)

    def hessian(w):                 # row i = gradient of the i-th gradient component
        return np.stack([np.asarray(gc.grad(lambda v, i=i: grad(v)[i])(w)) for i in range(d)])

    w = np.zeros(d)
    s = 1 / (1 + np.exp(-X @ w))    # the closed form X^T diag(s(1-s)) X / n (lecture 8.12)
    np.testing.assert_allclose(hessian(w), X.T @ (X * (s * (1 - s))[:, None]) / n, rtol=1e-12)

    gnorm = []
    for _ in range(7):                                       # Newton: w <- w - H^-1 g
        g = np.asarray(grad(w))
        gnorm.append(np.linalg.norm(g))
        w = w - np.linalg.solve(hessian(w), g)               # host-side solve
    w_newton = w
    assert np.linalg.norm(np.asarray(grad(w_newton))) < 1e-12
    assert gnorm[6] < 1e-11 * gnorm[0]
    assert all(gnorm[k + 1] < 20 * gnorm[k] ** 2 for k in (3, 4, 5))   # quadratic convergence

    step = gc.compile(gc.grad(nll), backend="numpy")         # gradient descent (H ~ I)
    w = np.zeros(d)
    for _ in range(7):
        w = w - 1.0 * np.asarray(step(w))
    assert np.linalg.norm(np.asarray(grad(w))) > 1e-3        # far from converged after 7
    for _ in range(3000):
        w = w - 1.0 * np.asarray(step(w))
    np.testing.assert_allclose(w, w_newton, atol=1e-6)       # same optimum, ~400x the steps


# ---- 7.31 polynomial order: high orders fit the data perfectly but fail on test data -----------
def test_high_polynomial_order_interpolates_training_data_but_fails_on_test_data():
    rng = np.random.default_rng(7)
    n = 10
    x = np.sort(rng.uniform(-1, 1, n))
    t = np.sin(np.pi * x) + 0.2 * rng.standard_normal(n)
    xt = np.linspace(-0.95, 0.95, 200)
    tt = np.sin(np.pi * xt)
    errors = {}
    for order in (1, 3, n - 1):
        A = np.polynomial.legendre.legvander(x, order)
        # least squares is quadratic, so one Newton step from w = 0 lands on the minimiser
        loss = lambda w: 0.5 * gc.sum((gc.matmul(A, w) - t) ** 2)  # noqa: E731
        g0 = np.asarray(gc.grad(loss)(np.zeros(order + 1)))
        w = -np.linalg.solve(A.T @ A, g0)                    # Hessian A^T A
        train = float(np.mean((np.asarray(gc.matmul(A, w)) - t) ** 2))
        At = np.polynomial.legendre.legvander(xt, order)
        test = float(np.mean((np.asarray(gc.matmul(At, w)) - tt) ** 2))
        errors[order] = (train, test)
    (tr1, te1), (tr3, te3), (tr9, te9) = errors[1], errors[3], errors[n - 1]
    assert tr9 < 1e-12 < tr3 < tr1                           # order n-1: a perfect fit
    assert te3 < te1 and te3 < te9 and te9 > 5 * te3         # ...that fails on test data


# ---- 8.2 why the negative gradient ----------------------------------------------------------------
def test_small_step_against_the_sign_of_the_derivative_decreases_f():
    f = lambda x: x * x                                      # noqa: E731  the lecture's f(x)=x^2
    df = gc.grad(f)
    for x in (-2.0, -0.3, 0.1, 1.7):
        for p in (1e-3, 1e-2, 0.1):
            assert f(x - p * np.sign(float(df(x)))) < f(x)
    assert f(0.1 - 0.5 * np.sign(float(df(0.1)))) > f(0.1)   # "small" matters: p = 0.5 overshoots


def test_steepest_descent_direction_is_minus_the_normalised_gradient():
    rng = np.random.default_rng(8)
    W = rng.standard_normal((4, 6))
    t = rng.standard_normal(4)
    loss = lambda w: gc.sum(gc.tanh(gc.matmul(W, w)) - t) ** 2  # noqa: E731
    w = rng.standard_normal(6)
    g = np.asarray(gc.grad(loss)(w))
    best = -g / np.linalg.norm(g)
    u = rng.standard_normal((5000, 6))
    u /= np.linalg.norm(u, axis=1, keepdims=True)            # random unit directions
    slopes = u @ g                                            # u^T grad L = |grad L| cos(beta)
    assert slopes.min() >= -np.linalg.norm(g) - 1e-12
    np.testing.assert_allclose(best @ g, -np.linalg.norm(g), rtol=1e-12)   # beta = 180 deg
    assert slopes.min() > best @ g
    eps = 1e-4                                                # and the actual decrease
    lw = float(loss(w))
    drops = [float(loss(w + eps * v)) - lw for v in u[:200]]
    assert float(loss(w + eps * best)) - lw < min(drops)


# ---- 8.6 numerator-layout Jacobian (M x N) built row by row from VJPs ---------------------------
def _jacobian(f, x, m):
    """Row i = gc.grad of y[i] (a VJP with the one-hot cotangent e_i): shape (M, N)."""
    return np.stack([np.asarray(gc.grad(lambda v, i=i: f(v)[i])(x)) for i in range(m)])


def test_jacobian_rows_from_vjps_numerator_layout():
    rng = np.random.default_rng(9)
    M, N = 3, 5
    x = rng.standard_normal(N)
    W = rng.standard_normal((M, N))
    J = _jacobian(lambda v: gc.matmul(W, v), x, M)           # y = Wx: dy/dx = W, M x N
    assert J.shape == (M, N)
    np.testing.assert_allclose(J, W, rtol=1e-13)
    V = rng.standard_normal((N, M))
    J2 = _jacobian(lambda v: gc.matmul(v, V), x, M)          # y = x^T V: dy/dx = V^T, M x N
    assert J2.shape == (M, N)
    np.testing.assert_allclose(J2, V.T, rtol=1e-13)
    # chain rule dy/dx = (dphi/dpsi)(dpsi/dx) for y = tanh(Wx)
    Jc = _jacobian(lambda v: gc.tanh(gc.matmul(W, v)), x, M)
    np.testing.assert_allclose(Jc, np.diag(1 - np.tanh(W @ x) ** 2) @ W, rtol=1e-12)


# ---- 9.16 Hadamard example ---------------------------------------------------------------------
def test_hadamard_example():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    b = np.array([[5.0, 6.0], [7.0, 8.0]])
    np.testing.assert_array_equal(np.asarray(gc.multiply(a, b)), [[5, 12], [21, 32]])
    np.testing.assert_array_equal(np.asarray(gc.compile(gc.multiply, backend="numpy")(a, b)),
                                  [[5, 12], [21, 32]])
    assert not np.array_equal(np.asarray(gc.multiply(a, b)), a @ b)   # not the matrix product
    ga = np.asarray(gc.grad(lambda p: gc.sum(gc.multiply(p, b)))(a))   # d(sum a⊙b)/da = b
    np.testing.assert_array_equal(ga, b)
