"""Every VJP rule against central finite differences, in float64 on random inputs.

For a case fn(*xs) with output y, a random cotangent c defines the scalar L = <c, fn(xs)>;
gc.grad(L) must give, for random directions v, <v, grad> = <c, (fn(x+eps v) - fn(x-eps v))/2eps>,
and for small inputs every component of grad must equal the central difference of L.
Gradients must come back with the input's shape and dtype (broadcasting is undone).
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import graphc as gc
from graphc.ops import Op
from graphc.passes.autodiff import VJP


# ---- input makers -----------------------------------------------------------------------------
def N(*shape):
    return lambda rng: rng.standard_normal(shape)


def Pos(*shape):
    return lambda rng: rng.uniform(0.5, 2.0, shape)


def NZ(*shape):
    return lambda rng: rng.uniform(0.3, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


def fd_check(fn, args, *, seed=0, eps=1e-6, rtol=1e-6, atol=1e-8, full_max=48, directions=2):
    """Check gc.grad of <c, fn> against central differences; returns the gradients."""
    args = tuple(np.asarray(a, dtype=np.float64) for a in args)
    fwd = gc.compile(fn, backend="reference")
    out = np.asarray(fwd(*args))
    assert out.dtype == np.float64
    rng = np.random.default_rng(seed)
    c = rng.standard_normal(out.shape)

    def L(*xs):
        return gc.sum(fn(*xs) * c)

    grads = gc.grad(L, argnums=tuple(range(len(args))))(*args)
    assert isinstance(grads, tuple) and len(grads) == len(args)
    for g, a in zip(grads, args):
        assert isinstance(g, np.ndarray)
        assert g.shape == a.shape, f"gradient shape {g.shape} != input shape {a.shape}"
        assert g.dtype == a.dtype
        assert np.all(np.isfinite(g))

    def Lnum(*xs):
        return float(np.vdot(c, np.asarray(fwd(*xs))))

    for _ in range(directions):
        vs = [rng.standard_normal(a.shape) for a in args]
        lhs = sum(float(np.vdot(v, g)) for v, g in zip(vs, grads))
        plus = Lnum(*(a + eps * v for a, v in zip(args, vs)))
        minus = Lnum(*(a - eps * v for a, v in zip(args, vs)))
        rhs = (plus - minus) / (2 * eps)
        assert abs(lhs - rhs) <= rtol * max(abs(lhs), abs(rhs)) + atol, (lhs, rhs)

    if sum(a.size for a in args) <= full_max:
        for k, (a, g) in enumerate(zip(args, grads)):
            num = np.zeros_like(a)
            for idx in np.ndindex(a.shape):
                e = np.zeros_like(a)
                e[idx] = eps
                xp = list(args); xp[k] = a + e
                xm = list(args); xm[k] = a - e
                num[idx] = (Lnum(*xp) - Lnum(*xm)) / (2 * eps)
            np.testing.assert_allclose(g, num, rtol=rtol * 10, atol=atol * 10,
                                       err_msg=f"argument {k}")
    return grads


# ---- one or more cases per op with a VJP rule ---------------------------------------------------
def _binary(fn, left=N, right=N):
    return [(f"{'x'.join(map(str, a)) or 's'}_{'x'.join(map(str, b)) or 's'}", fn, (left(*a), right(*b)))
            for a, b in [((3, 4), (3, 4)), ((3, 1), (4,)), ((), (2, 3)), ((2, 1, 4), (3, 1))]] + [
        ("pyscalar", lambda x: fn(x, 1.7), (left(2, 3),)),
        ("pyscalar_left", lambda x: fn(1.3, x), (right(2, 3),)),
    ]


def _where_by(cmp):
    return lambda x: gc.where(cmp(x, 0.3), x * x, gc.sin(x) * 3.0)


CASES = {
    Op.NEG: [("neg", lambda x: -x, (N(3, 4),))],
    Op.EXP: [("exp", gc.exp, (N(3, 4),)), ("exp_scalar", gc.exp, (N(),))],
    Op.LOG: [("log", gc.log, (Pos(3, 4),))],
    Op.SQRT: [("sqrt", gc.sqrt, (Pos(3, 4),))],
    Op.SIN: [("sin", gc.sin, (N(3, 4),))],
    Op.COS: [("cos", gc.cos, (N(3, 4),))],
    Op.TANH: [("tanh", gc.tanh, (N(3, 4),))],
    Op.ABS: [("abs", gc.abs, (NZ(3, 4),))],
    Op.SIGN: [("sign_times_x", lambda x: gc.sign(x) * x * x, (NZ(3, 4),))],
    Op.RECIP: [("reciprocal", gc.reciprocal, (NZ(3, 4),))],
    # zero derivative by definition: checked where that is exact, the shift of a logsumexp
    Op.STOP_GRADIENT: [("logsumexp_shift", lambda x: gc.log(gc.exp(
        x - gc.stop_gradient(x.max(axis=1, keepdims=True))).sum(axis=1))
        + gc.stop_gradient(x.max(axis=1)), (N(3, 4),))],
    Op.CAST: [
        ("f64_f32_f64", lambda x: x.astype(np.float32).astype(np.float64) * 2.0, (N(3, 4),),
         dict(eps=1e-3, rtol=1e-4, atol=1e-5)),
        ("through_int", lambda x: x * (3 * x).astype(np.int64), (N(3, 4),)),
    ],
    Op.ADD: _binary(gc.add),
    Op.SUB: _binary(gc.subtract),
    Op.MUL: _binary(gc.multiply),
    Op.DIV: _binary(gc.divide, N, NZ) + [("pyscalar_num", lambda x: 2.0 / x, (NZ(3),))],
    Op.POW: _binary(gc.power, Pos, N) + [("float_exponent", lambda x: x ** 2.5, (Pos(3, 2),)),
                                         ("scalar_base", lambda x: 1.7 ** x, (N(4),))],
    Op.MAXIMUM: _binary(gc.maximum) + [("relu", lambda x: gc.maximum(x, 0.0), (NZ(3, 4),))],
    Op.MINIMUM: _binary(gc.minimum) + [("clip", lambda x: gc.clip(x, -0.5, 0.5) * x, (N(4, 4),))],
    Op.LT: [("where_lt", _where_by(lambda a, b: a < b), (N(3, 4),))],
    Op.LE: [("where_le", _where_by(lambda a, b: a <= b), (N(3, 4),))],
    Op.GT: [("where_gt", _where_by(lambda a, b: a > b), (N(3, 4),))],
    Op.GE: [("where_ge", _where_by(lambda a, b: a >= b), (N(3, 4),))],
    Op.EQ: [("where_eq", lambda x: gc.where(gc.sign(x) == 1.0, x * x, 3.0 * x), (NZ(3, 4),))],
    Op.NE: [("where_ne", lambda x: gc.where(gc.sign(x) != 1.0, x * x, 3.0 * x), (NZ(3, 4),))],
    Op.WHERE: [
        ("broadcast_branches", lambda a, b: gc.where(np.array([[True], [False], [True]]), a, b),
         (N(4), N())),
        ("broadcast_cond", lambda a, b: gc.where(np.array([True, False, False, True]), a, b),
         (N(3, 1), N(3, 4))),
        ("scalar_branch", lambda x: gc.where(x > 0.2, x, 0.0), (N(2, 5),)),
    ],
    Op.SUM: [
        ("all", gc.sum, (N(2, 3, 4),)),
        ("axis1", lambda x: gc.sum(x, axis=1), (N(2, 3, 4),)),
        ("axes02", lambda x: gc.sum(x, axis=(0, 2)), (N(2, 3, 4),)),
        ("axes02_keep", lambda x: gc.sum(x, axis=(0, 2), keepdims=True), (N(2, 3, 4),)),
        ("axis_neg_keep", lambda x: gc.sum(x, axis=-1, keepdims=True), (N(2, 3, 4),)),
        ("all_keep", lambda x: gc.sum(x, keepdims=True), (N(2, 3),)),
        ("mean", lambda x: gc.mean(x, axis=0), (N(4, 3),)),
        ("var", lambda x: gc.var(x, axis=1), (N(3, 5),)),
    ],
    Op.MAX: [
        ("all", gc.max, (N(2, 3, 4),)),
        ("axis1", lambda x: gc.max(x, axis=1), (N(2, 3, 4),)),
        ("axes01_keep", lambda x: gc.max(x, axis=(0, 1), keepdims=True), (N(2, 3, 4),)),
        ("axis2_keep", lambda x: gc.max(x, axis=2, keepdims=True), (N(2, 3, 4),)),
        ("min", lambda x: gc.min(x, axis=0), (N(4, 3),)),
        ("logsumexp", lambda x: gc.log(gc.sum(gc.exp(x - gc.max(x, axis=1, keepdims=True)), axis=1))
         + gc.max(x, axis=1), (N(3, 4),)),
    ],
    Op.RESHAPE: [("reshape", lambda x: gc.reshape(x, (4, 3)) * np.arange(12.0).reshape(4, 3),
                  (N(3, 4),)),
                 ("flatten_expand_dims", lambda x: gc.expand_dims(x.flatten(), 0), (N(2, 3),))],
    Op.PERMUTE: [("transpose", gc.transpose, (N(2, 3, 4),)),
                 ("perm", lambda x: gc.transpose(x, (1, 2, 0)), (N(2, 3, 4),)),
                 ("dotT", lambda x: x.T @ x, (N(3, 2),))],
    Op.EXPAND: [("3x1_to_2x3x4", lambda x: gc.broadcast_to(x, (2, 3, 4)), (N(3, 1),)),
                ("scalar", lambda x: gc.broadcast_to(x, (2, 3)), (N(),)),
                ("row", lambda x: gc.broadcast_to(x, (3, 4)), (N(1, 4),))],
    Op.SLICE: [
        ("steps", lambda x: x[1:6:2, ::3], (N(8, 7),)),
        ("step2", lambda x: x[::2], (N(7, 2),)),
        ("index_and_step", lambda x: x[1:, 2], (N(4, 5),)),
        ("ellipsis_step", lambda x: x[..., 1:4:2], (N(2, 3, 5),)),
        ("last", lambda x: x[-1], (N(3, 4),)),
        ("stop_before_end", lambda x: x[0:5:3], (N(9,),)),
    ],
    Op.PAD: [("pad", lambda x: gc.pad(x, ((1, 2), (0, 3))), (N(2, 3),)),
             ("pad_value", lambda x: gc.pad(x, 1, constant_values=3.0) ** 2, (N(3,),))],
    Op.CONCAT: [("axis1_three", lambda a, b, c: gc.concatenate([a, b, c], axis=1),
                 (N(2, 1), N(2, 3), N(2, 2))),
                ("axis0_reuse", lambda a, b: gc.concatenate([a, b, a]), (N(2, 3), N(1, 3))),
                ("stack", lambda a, b: gc.stack([a, b], axis=-1), (N(3,), N(3,)))],
    Op.MATMUL: [
        ("2d", gc.matmul, (N(3, 4), N(4, 5))),
        ("batched", gc.matmul, (N(2, 3, 4), N(2, 4, 5))),
        ("broadcast_batch", gc.matmul, (N(2, 1, 3, 4), N(5, 4, 2))),
        ("batch_times_matrix", gc.matmul, (N(3, 2, 4), N(4, 3))),
        ("vec_mat", gc.matmul, (N(4), N(4, 5))),
        ("mat_vec", gc.matmul, (N(3, 4), N(4))),
        ("vec_vec", gc.matmul, (N(4), N(4))),
        ("vec_batched", gc.matmul, (N(4), N(2, 4, 5))),
    ],
    # a traced integer key (derived from x, so the RAND node stays in the graph)
    Op.RAND: [("noise", lambda x: x * gc.random_uniform((gc.sum(x) * 0.0).astype(np.int64) + 3,
                                                        x.shape, dtype="float64"), (N(3, 4),))],
}


def _params():
    out = []
    for op, cases in CASES.items():
        for case in cases:
            name, fn, makers = case[:3]
            kw = case[3] if len(case) > 3 else {}
            out.append(pytest.param(op, fn, makers, kw, id=f"{op.name}-{name}"))
    assert len({p.id for p in out}) == len(out)
    return out


def test_cases_cover_every_vjp_rule():
    assert set(CASES) == set(VJP)


@pytest.mark.parametrize("op,fn,makers,kw", _params())
def test_vjp_against_finite_differences(op, fn, makers, kw, request):
    seed = zlib.crc32(request.node.callspec.id.encode())
    rng = np.random.default_rng(seed)
    args = tuple(m(rng) for m in makers)
    # the case must really exercise the rule it is filed under
    assert op in {n.op for n in gc.trace(fn, *args).nodes}
    fd_check(fn, args, seed=seed, **kw)


# ---- broadcasting, with shapes drawn by hypothesis ---------------------------------------------
_BINARY = {"add": gc.add, "sub": gc.subtract, "mul": gc.multiply, "div": gc.divide,
           "pow": gc.power, "maximum": gc.maximum, "minimum": gc.minimum,
           "where": lambda a, b: gc.where(a > b, a * b, b - a)}


@settings(max_examples=40, deadline=None, derandomize=True)
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
       name=st.sampled_from(sorted(_BINARY)), seed=st.integers(0, 2 ** 16))
def test_binary_broadcasting_gradients(shapes, name, seed):
    rng = np.random.default_rng(seed)
    (sa, sb), _ = shapes
    a = rng.uniform(0.5, 2.0, sa) if name == "pow" else rng.standard_normal(sa)
    b = NZ(*sb)(rng) if name == "div" else rng.standard_normal(sb)
    fd_check(_BINARY[name], (a, b), seed=seed, full_max=0, directions=1)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(shape=st.lists(st.integers(1, 3), min_size=1, max_size=3),
       data=st.data(), keepdims=st.booleans(), red=st.sampled_from(["sum", "max"]))
def test_reduction_gradients(shape, data, keepdims, red):
    ndim = len(shape)
    axes = data.draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    rng = np.random.default_rng(len(shape) * 7 + sum(axes))
    x = rng.standard_normal(shape)
    f = gc.sum if red == "sum" else gc.max
    fd_check(lambda x: f(x, axis=tuple(axes), keepdims=keepdims), (x,), full_max=0)


# ---- the driver: fan-out, unused inputs, ints, pytrees, dtypes -----------------------------------
def test_fan_out_cotangents_are_summed():
    x = np.array([0.5, -1.5, 2.0])
    g = gc.grad(lambda x: gc.sum(x * x + gc.sin(x) * x + x))(x)
    np.testing.assert_allclose(g, 2 * x + np.cos(x) * x + np.sin(x) + 1, rtol=1e-14)


def test_unused_argument_gets_zero_gradient_of_its_shape():
    gx, gy = gc.grad(lambda x, y: gc.sum(x * 3.0), argnums=(0, 1))(np.ones((2, 2)), np.ones(3))
    np.testing.assert_array_equal(gx, np.full((2, 2), 3.0))
    assert gy.shape == (3,) and gy.dtype == np.float64
    np.testing.assert_array_equal(gy, np.zeros(3))


def test_gradient_keeps_float32_dtype():
    x = np.array([1.0, 2.0, 3.0], np.float32)
    g = gc.grad(lambda x: gc.sum(x.astype(np.float64) ** 2))(x)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, 2 * x, rtol=1e-6)
    g2 = gc.grad(lambda x: gc.sum(gc.tanh(x)))(x)
    assert g2.dtype == np.float32
    np.testing.assert_allclose(g2, 1 - np.tanh(x) ** 2, rtol=1e-5)


def test_int_operand_gets_no_gradient_but_float_does():
    k = np.array([1, 2, 3])
    g = gc.grad(lambda x, k: gc.sum(x * k))(np.ones(3), k)
    np.testing.assert_array_equal(g, [1.0, 2.0, 3.0])


def test_grad_of_pytree_argument():
    params = {"w": np.array([[1.0, 2.0], [3.0, 4.0]]), "b": np.array([0.5, -0.5])}
    x = np.array([1.0, -1.0])

    def loss(p, x):
        return gc.sum(gc.tanh(p["w"] @ x + p["b"]))

    g = gc.grad(loss)(params, x)
    assert set(g) == {"w", "b"}
    z = params["w"] @ x + params["b"]
    dz = 1 - np.tanh(z) ** 2
    np.testing.assert_allclose(g["b"], dz, rtol=1e-14)
    np.testing.assert_allclose(g["w"], np.outer(dz, x), rtol=1e-14)


def test_value_and_grad_value_equals_function():
    f = lambda x: gc.sum(gc.exp(x) * x)  # noqa: E731
    x = np.array([0.1, 0.7, -0.4])
    v, g = gc.value_and_grad(f)(x)
    np.testing.assert_allclose(v, np.sum(np.exp(x) * x), rtol=1e-14)
    np.testing.assert_allclose(g, np.exp(x) * (x + 1), rtol=1e-14)


def test_maximum_ties_split_the_cotangent():
    gx, gy = gc.grad(lambda x, y: gc.sum(gc.maximum(x, y)), argnums=(0, 1))(
        np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 5.0]))
    np.testing.assert_array_equal(gx, [0.5, 1.0, 0.0])
    np.testing.assert_array_equal(gy, [0.5, 0.0, 1.0])


def test_reduce_max_ties_share_the_cotangent():
    g = gc.grad(lambda x: gc.max(x))(np.array([1.0, 3.0, 3.0, 2.0]))
    np.testing.assert_array_equal(g, [0.0, 0.5, 0.5, 0.0])


# ---- second (and third) derivatives ----------------------------------------------------------
SECOND = [
    ("cube", lambda x: x ** 3, lambda x: 6 * x),
    ("pow_2_5", lambda x: x ** 2.5, lambda x: 2.5 * 1.5 * x ** 0.5),
    ("sin", gc.sin, lambda x: -math.sin(x)),
    ("cos", gc.cos, lambda x: -math.cos(x)),
    ("tanh", gc.tanh, lambda x: -2 * math.tanh(x) * (1 - math.tanh(x) ** 2)),
    ("exp", gc.exp, math.exp),
    ("log", gc.log, lambda x: -1 / x ** 2),
    ("sqrt", gc.sqrt, lambda x: -0.25 * x ** -1.5),
    ("reciprocal", gc.reciprocal, lambda x: 2 / x ** 3),
    ("sin_x2", lambda x: gc.sin(x * x), lambda x: 2 * math.cos(x * x) - 4 * x * x * math.sin(x * x)),
    ("div", lambda x: 1.0 / (1.0 + x * x), lambda x: (6 * x * x - 2) / (1 + x * x) ** 3),
]


@pytest.mark.parametrize("name,f,d2", SECOND, ids=[s[0] for s in SECOND])
@pytest.mark.parametrize("x", [0.7, 1.9])
def test_second_derivative(name, f, d2, x):
    got = gc.grad(gc.grad(f))(x)
    assert np.shape(got) == ()
    np.testing.assert_allclose(float(got), d2(x), rtol=1e-12, atol=1e-12)


def test_third_derivative_of_sin():
    x = 0.4
    np.testing.assert_allclose(float(gc.grad(gc.grad(gc.grad(gc.sin)))(x)), -math.cos(x), rtol=1e-13)


def test_hessian_vector_product_via_nested_grad():
    x = np.array([0.5, -1.0, 2.0])
    v = np.array([1.0, 2.0, -1.0])

    def f(x):
        return gc.sum(x ** 3) + gc.sum(x) ** 2

    hvp = gc.grad(lambda x: gc.sum(gc.grad(f)(x) * v))(x)
    # H = diag(6x) + 2 * ones
    np.testing.assert_allclose(hvp, 6 * x * v + 2 * v.sum(), rtol=1e-13)


def test_second_derivative_compiles_with_numpy_backend():
    d2 = gc.compile(gc.grad(gc.grad(lambda x: gc.tanh(x) * x)), backend="numpy")
    x = 0.3
    t = math.tanh(x)
    want = 2 * (1 - t * t) - 2 * x * t * (1 - t * t)
    np.testing.assert_allclose(float(d2(x)), want, rtol=1e-12)
