"""graphc.nn.init: torch names and formulas, statistics on large arrays, in-place filling,
seeds and generators."""
import doctest
import math

import numpy as np
import pytest

from graphc.nn import init
from graphc.frontends.nn import init as init_module

BIG = (1000, 500)   # fan_in 500, fan_out 1000, 5e5 samples: std estimates within ~0.3 %


def test_calculate_gain_matches_torch():
    assert init.calculate_gain("linear") == 1.0
    assert init.calculate_gain("conv2d") == 1.0
    assert init.calculate_gain("sigmoid") == 1.0
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01 ** 2)))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert init.calculate_gain("leaky_relu", 0) == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError):
        init.calculate_gain("swish")


def test_fans():
    assert init.calculate_fan_in_and_fan_out(np.empty((7, 3))) == (3, 7)            # Linear (out, in)
    assert init._calculate_fan_in_and_fan_out(np.empty((8, 3, 5, 5))) == (75, 200)  # C_in·kH·kW
    assert init.calculate_fan_in_and_fan_out((4, 2, 3)) == (6, 12)
    with pytest.raises(ValueError):
        init.calculate_fan_in_and_fan_out(np.empty(5))


def test_fills_in_place_and_returns_the_array():
    w = np.full((30, 20), np.nan, np.float32)
    for f in (init.uniform_, init.normal_, init.xavier_uniform_, init.xavier_normal_,
              init.kaiming_uniform_, init.kaiming_normal_, init.lecun_uniform_,
              init.lecun_normal_, init.orthogonal_, init.trunc_normal_, init.zeros_, init.ones_,
              init.eye_):
        w[...] = np.nan
        assert f(w, seed=3) is w, f.__name__
        assert w.dtype == np.float32 and np.isfinite(w).all(), f.__name__
    assert init.constant_(w, 0.25) is w and (w == 0.25).all()
    new = init.kaiming_normal_((64, 32), seed=0)                     # a shape: a new float32 array
    assert new.shape == (64, 32) and new.dtype == np.float32
    assert init.uniform_((10,), dtype=np.float64, seed=0).dtype == np.float64


def _std(w):
    return float(np.std(w.astype(np.float64)))


def test_uniform_and_normal():
    w = init.uniform_(np.empty(BIG), -2.0, 3.0, seed=0)
    assert w.min() >= -2 and w.max() < 3
    assert w.mean() == pytest.approx(0.5, abs=0.01)
    assert _std(w) == pytest.approx(5 / math.sqrt(12), rel=0.005)
    w = init.normal_(np.empty(BIG), 1.0, 0.01, seed=0)               # lectures' small init
    assert w.mean() == pytest.approx(1.0, abs=1e-4)
    assert _std(w) == pytest.approx(0.01, rel=0.005)


def test_trunc_normal_bounds():
    w = init.trunc_normal_(np.empty(BIG), 0.0, 1.0, -2.0, 2.0, seed=0)
    assert w.min() >= -2 and w.max() <= 2
    # variance of N(0,1) truncated to ±2: 1 − 2·2φ(2)/(2Φ(2) − 1)
    phi = math.exp(-2) / math.sqrt(2 * math.pi)
    Phi = 0.5 * (1 + math.erf(2 / math.sqrt(2)))
    assert _std(w) == pytest.approx(math.sqrt(1 - 4 * phi / (2 * Phi - 1)), rel=0.005)


def test_xavier():
    fan_in, fan_out = BIG[1], BIG[0]
    w = init.xavier_uniform_(np.empty(BIG), gain=2.0, seed=0)
    bound = 2.0 * math.sqrt(6 / (fan_in + fan_out))
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert _std(w) == pytest.approx(bound / math.sqrt(3), rel=0.005)
    w = init.xavier_normal_(np.empty(BIG), seed=0)
    assert _std(w) == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.005)
    assert abs(w.mean()) < 3e-4


def test_kaiming():
    fan_in, fan_out = BIG[1], BIG[0]
    w = init.kaiming_uniform_(np.empty(BIG), seed=0)                 # leaky_relu a=0: √(6/fan_in)
    assert np.abs(w).max() <= math.sqrt(6 / fan_in)
    assert _std(w) == pytest.approx(math.sqrt(2 / fan_in), rel=0.005)
    w = init.kaiming_uniform_(np.empty(BIG), a=math.sqrt(5), seed=0)  # Linear default: 1/√fan_in
    assert np.abs(w).max() <= 1 / math.sqrt(fan_in) and np.abs(w).max() > 0.99 / math.sqrt(fan_in)
    w = init.kaiming_normal_(np.empty(BIG), mode="fan_out", nonlinearity="relu", seed=0)
    assert _std(w) == pytest.approx(math.sqrt(2 / fan_out), rel=0.005)
    a = 0.2                                                           # lectures 6.10: 2/((1+a²)n)
    w = init.kaiming_normal_(np.empty(BIG), a=a, seed=0)
    assert _std(w) ** 2 == pytest.approx(2 / ((1 + a * a) * fan_in), rel=0.01)
    conv = init.kaiming_normal_(np.empty((256, 16, 5, 5)), nonlinearity="relu", seed=0)
    assert _std(conv) == pytest.approx(math.sqrt(2 / (16 * 25)), rel=0.01)
    with pytest.raises(ValueError):
        init.kaiming_normal_(np.empty((3, 3)), mode="fan_avg")


def test_lecun():
    fan_in = BIG[1]
    w = init.lecun_normal_(np.empty(BIG), seed=0)
    assert _std(w) == pytest.approx(1 / math.sqrt(fan_in), rel=0.005)
    w = init.lecun_uniform_(np.empty(BIG), seed=0)
    assert np.abs(w).max() <= math.sqrt(3 / fan_in)
    assert _std(w) == pytest.approx(1 / math.sqrt(fan_in), rel=0.005)


@pytest.mark.parametrize("shape", [(50, 50), (20, 60), (60, 20), (8, 4, 3, 3)])
def test_orthogonal(shape):
    w = init.orthogonal_(np.empty(shape), gain=1.5, seed=0)
    m = w.reshape(shape[0], -1)
    rows, cols = m.shape
    gram = m @ m.T if rows <= cols else m.T @ m
    np.testing.assert_allclose(gram, 1.5 ** 2 * np.eye(min(rows, cols)), atol=1e-10)


def test_orthogonal_is_sign_corrected_haar():
    # a raw Householder QR biases Q's diagonal (mean |0.4| here); corrected by sign(diag R),
    # Q is Haar-distributed and each diagonal entry averages ~0 over many draws
    diag = np.array([np.diag(init.orthogonal_(np.empty((4, 4)), seed=s)) for s in range(400)])
    assert np.abs(diag.mean(axis=0)).max() < 0.12


def test_identity_eye_dirac():
    np.testing.assert_array_equal(init.eye_(np.empty((3, 4))), np.eye(3, 4))
    np.testing.assert_array_equal(init.identity_(np.empty((3, 3)), gain=0.5), 0.5 * np.eye(3))
    with pytest.raises(ValueError):
        init.eye_(np.empty((2, 2, 2)))
    w = init.dirac_(np.empty((4, 2, 3, 3)))
    x = np.random.default_rng(0).normal(size=(2, 5, 5))
    # a 'same' cross-correlation with w copies channel i to output i for i < 2
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    out = np.array([[[np.sum(w[o] * xp[:, i:i + 3, j:j + 3]) for j in range(5)] for i in range(5)]
                    for o in range(4)])
    np.testing.assert_allclose(out[:2], x)
    assert (out[2:] == 0).all()


def test_seeds_generators_and_default():
    a = init.xavier_uniform_((5, 7), seed=42)
    b = init.xavier_uniform_((5, 7), seed=42)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, init.xavier_uniform_((5, 7), seed=43))
    r1, r2 = np.random.default_rng(7), np.random.default_rng(7)
    x1, y1 = init.normal_((3,), rng=r1), init.normal_((3,), rng=r1)  # a Generator advances
    assert not np.array_equal(x1, y1)
    np.testing.assert_array_equal(x1, init.normal_((3,), generator=r2))   # torch's keyword
    init.manual_seed(5)
    d1 = init.kaiming_uniform_((4, 4))
    init.manual_seed(5)
    np.testing.assert_array_equal(d1, init.kaiming_uniform_((4, 4)))
    # the seed fixes the values whatever the dtype (drawn in float64, then cast)
    np.testing.assert_allclose(init.normal_((6,), dtype=np.float32, seed=1),
                               init.normal_((6,), dtype=np.float64, seed=1), rtol=1e-6)
    with pytest.raises(ValueError):
        init.normal_((3,), seed=1, rng=np.random.default_rng(1))
    with pytest.raises(TypeError):
        init.normal_((3,), rng=np.random.RandomState(0))


def test_module_docstring_example_runs():
    res = doctest.testmod(init_module, verbose=False)
    assert res.failed == 0 and res.attempted > 3


def test_all_is_exported():
    import graphc.nn.init as public
    for name in init_module.__all__:
        assert hasattr(public, name), name
