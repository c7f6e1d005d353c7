"""Forward semantics of every primitive op, against NumPy called directly.

CASES is keyed by Op (one or more cases per primitive); each case is run
  * through the tracer: gc.trace(fn) then the reference interpreter on the traced graph
    (and the traced graph must really contain the op the case is filed under), and
  * eagerly: the same gc.* function called on numpy arrays (which evaluates at once),
for float32 and float64 (and ints where meaningful). Results must match NumPy's in value,
shape and dtype.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import graphc as gc
from graphc.interpret import interpret
from graphc.ir import Graph, apply, input_node
from graphc.ops import Op
from graphc.types import DType

F32, F64, I32, I64 = np.float32, np.float64, np.int32, np.int64
FLOATS = (F32, F64)
INTS = (I32, I64)


# ---- input makers: (rng, dtype) -> array -------------------------------------------------------
def randn(*shape):
    def make(rng, dt):
        if np.dtype(dt).kind in "iu":
            return rng.integers(-5, 6, shape).astype(dt)
        return np.asarray(rng.standard_normal(shape), dtype=dt)
    return make


def positive(*shape):
    return lambda rng, dt: np.asarray(rng.uniform(0.5, 2.0, shape), dtype=dt)


def nonzero(*shape):
    def make(rng, dt):
        x = rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
        return np.asarray(x, dtype=dt)
    return make


def with_zeros(*shape):
    def make(rng, dt):
        x = randn(*shape)(rng, dt)
        x[rng.random(shape) < 0.3] = 0
        return x
    return make


def small_ints(*shape):
    return lambda rng, dt: np.asarray(rng.integers(-2, 3, shape), dtype=dt)


def fixed(value):
    return lambda rng, dt: np.asarray(value)


def boolean(*shape):
    return lambda rng, dt: rng.random(shape) < 0.5


@dataclass
class Case:
    name: str
    fn: Callable                       # the graphc version
    ref: Callable                      # the numpy version
    args: tuple                        # input makers
    dtypes: tuple = FLOATS
    eager: bool = True                 # fn uses only gc.* functions (meaningful on arrays)
    also: tuple = ()                   # other ops expected in the traced graph


def unary_cases(gfn, nfn, maker=randn, dtypes=FLOATS):
    return [Case("matrix", gfn, nfn, (maker(3, 4),), dtypes),
            Case("scalar", gfn, nfn, (maker(),), dtypes),
            Case("rank3", gfn, nfn, (maker(2, 1, 3),), dtypes)]


BCAST_SHAPES = [((3, 4), (3, 4)), ((3, 1), (4,)), ((), (2, 3)), ((2, 1, 4), (3, 1)),
                ((1,), (2, 3))]


def binary_cases(gfn, nfn, maker=randn, dtypes=FLOATS, rmaker=None):
    rmaker = rmaker or maker
    cases = [Case(f"{'x'.join(map(str, a)) or 's'}_{'x'.join(map(str, b)) or 's'}",
                  gfn, nfn, (maker(*a), rmaker(*b)), dtypes)
             for a, b in BCAST_SHAPES]
    # Python scalars are weak: they take the array's dtype, as in NumPy 2
    cases.append(Case("pyscalar_right", lambda x: gfn(x, 1.5), lambda x: nfn(x, 1.5),
                      (maker(3, 2),), dtypes))
    cases.append(Case("pyscalar_left", lambda x: gfn(1.5, x), lambda x: nfn(1.5, x),
                      (maker(3, 2),), dtypes))
    return cases


def rand_reference(key: int, shape, dtype) -> np.ndarray:
    """Graphc's counter-based generator written out independently with Python ints."""
    M = 0xFFFFFFFF

    def fmix(h):
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & M
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & M
        return h ^ (h >> 16)

    k = key & 0xFFFFFFFFFFFFFFFF
    lo, hi = k & M, k >> 32
    seed = fmix(fmix((hi + 0x9E3779B9) & M) ^ lo)
    n = math.prod(shape)
    bits = [fmix((fmix(i ^ seed) + 0x6A09E667) & M) for i in range(n)]
    return (np.array([b >> 8 for b in bits], dtype=np.float64) * 2.0 ** -24).astype(dtype).reshape(shape)


def _rand_ref_from_array(k, shape, dtype):
    return rand_reference(int(k), shape, dtype)


CASES: dict[Op, list[Case]] = {
    Op.NEG: unary_cases(gc.negative, np.negative, dtypes=FLOATS + INTS)
    + [Case("operator", lambda x: -x, lambda x: -x, (randn(2, 3),), FLOATS + INTS, eager=False)],
    Op.EXP: unary_cases(gc.exp, np.exp)
    + [Case("int_input_promotes", gc.exp, np.exp, (small_ints(4),), INTS, also=(Op.CAST,))],
    Op.LOG: unary_cases(gc.log, np.log, positive),
    Op.SQRT: unary_cases(gc.sqrt, np.sqrt, positive),
    Op.SIN: unary_cases(gc.sin, np.sin),
    Op.COS: unary_cases(gc.cos, np.cos),
    Op.TANH: unary_cases(gc.tanh, np.tanh),
    Op.ABS: unary_cases(gc.abs, np.abs, dtypes=FLOATS + INTS),
    Op.SIGN: unary_cases(gc.sign, np.sign, with_zeros, dtypes=FLOATS + INTS),
    Op.RECIP: unary_cases(gc.reciprocal, np.reciprocal, nonzero),
    Op.STOP_GRADIENT: unary_cases(gc.stop_gradient, lambda x: x, dtypes=FLOATS + INTS),
    Op.CAST: [
        Case("to_int32", lambda x: x.astype(np.int32), lambda x: x.astype(np.int32),
             (lambda rng, dt: np.asarray(rng.uniform(-9, 9, (3, 4)), dt),), eager=False),
        Case("to_other_float", lambda x: x.astype(np.float64 if x.dtype == np.float32 else np.float32),
             lambda x: x.astype(np.float64 if x.dtype == np.float32 else np.float32),
             (randn(3, 4),), eager=False),
        Case("to_bool", lambda x: x.astype(bool), lambda x: x.astype(bool), (with_zeros(5,),),
             eager=False),
        Case("int_to_float32", lambda x: x.astype(np.float32), lambda x: x.astype(np.float32),
             (small_ints(2, 3),), INTS, eager=False),
        Case("bool_to_float", lambda b: b.astype(np.float64), lambda b: b.astype(np.float64),
             (boolean(2, 3),), (np.bool_,), eager=False),
        Case("mixed_add_promotes", gc.add, np.add,
             (lambda r, d: small_ints(3)(r, I32), lambda r, d: randn(3)(r, F32)), (F32,),
             also=(Op.ADD,)),
    ],
    Op.ADD: binary_cases(gc.add, np.add, dtypes=FLOATS + INTS)
    + [Case("operator", lambda a, b: a + b, lambda a, b: a + b, (randn(3, 1), randn(4)),
            eager=False)],
    Op.SUB: binary_cases(gc.subtract, np.subtract, dtypes=FLOATS + INTS)
    + [Case("rsub_operator", lambda a: 2.0 - a, lambda a: 2.0 - a, (randn(3),), eager=False)],
    Op.MUL: binary_cases(gc.multiply, np.multiply, dtypes=FLOATS + INTS),
    Op.DIV: binary_cases(gc.divide, np.divide, rmaker=nonzero)
    + [Case("int_true_divide", gc.divide, np.divide, (small_ints(3, 2), lambda r, d: np.asarray(
        r.integers(1, 4, (3, 2)), d)), INTS, also=(Op.CAST,)),
       Case("operator", lambda a, b: a / b, lambda a, b: a / b, (randn(3, 1), nonzero(4)),
            eager=False)],
    Op.POW: binary_cases(gc.power, np.power, maker=positive, rmaker=randn)
    + [Case("float_exponent", lambda x: x ** 2.5, lambda x: x ** 2.5, (positive(3, 2),),
            eager=False),
       Case("scalar_base", lambda x: 2.0 ** x, lambda x: 2.0 ** x, (randn(4),), eager=False)],
    Op.MAXIMUM: binary_cases(gc.maximum, np.maximum, dtypes=FLOATS + INTS)
    + [Case("relu", lambda x: gc.maximum(x, 0.0), lambda x: np.maximum(x, 0.0), (randn(5),))],
    Op.MINIMUM: binary_cases(gc.minimum, np.minimum, dtypes=FLOATS + INTS),
    Op.LT: binary_cases(gc.less, np.less, small_ints, FLOATS + INTS),
    Op.LE: binary_cases(gc.less_equal, np.less_equal, small_ints, FLOATS + INTS),
    Op.GT: binary_cases(gc.greater, np.greater, small_ints, FLOATS + INTS)
    + [Case("operator", lambda a, b: a > b, lambda a, b: a > b, (small_ints(3, 1), small_ints(4)),
            eager=False)],
    Op.GE: binary_cases(gc.greater_equal, np.greater_equal, small_ints, FLOATS + INTS),
    Op.EQ: binary_cases(gc.equal, np.equal, small_ints, FLOATS + INTS)
    + [Case("bool", gc.equal, np.equal, (boolean(3, 1), boolean(4)), (np.bool_,))],
    Op.NE: binary_cases(gc.not_equal, np.not_equal, small_ints, FLOATS + INTS),
    Op.WHERE: [
        Case("same_shape", gc.where, np.where, (boolean(3, 4), randn(3, 4), randn(3, 4))),
        Case("broadcast", gc.where, np.where, (boolean(3, 1), randn(4), randn())),
        Case("broadcast_cond", gc.where, np.where, (boolean(2, 1, 4), randn(3, 1), randn(1, 4))),
        Case("scalars", lambda c, x: gc.where(c, x, 0.0), lambda c, x: np.where(c, x, 0.0),
             (boolean(2, 3), randn(2, 3))),
        Case("computed_cond", lambda x: gc.where(x > 0, x, -2 * x),
             lambda x: np.where(x > 0, x, -2 * x), (randn(5, 2),), eager=False, also=(Op.GT,)),
        Case("int", gc.where, np.where, (boolean(3, 2), randn(3, 2), randn(2)), INTS),
    ],
    Op.SUM: [
        Case("all", gc.sum, np.sum, (randn(2, 3, 4),), FLOATS + INTS),
        Case("axis_int", lambda x: gc.sum(x, axis=1), lambda x: np.sum(x, axis=1), (randn(2, 3),),
             INTS),
        Case("axis0", lambda x: gc.sum(x, axis=0), lambda x: np.sum(x, axis=0), (randn(2, 3, 4),)),
        Case("axes02", lambda x: gc.sum(x, axis=(0, 2)), lambda x: np.sum(x, axis=(0, 2)),
             (randn(2, 3, 4),)),
        Case("axes02_keep", lambda x: gc.sum(x, axis=(0, 2), keepdims=True),
             lambda x: np.sum(x, axis=(0, 2), keepdims=True), (randn(2, 3, 4),)),
        Case("neg_axes_keep", lambda x: gc.sum(x, axis=(-1, -2), keepdims=True),
             lambda x: np.sum(x, axis=(-1, -2), keepdims=True), (randn(2, 3, 4),)),
        Case("all_keep", lambda x: gc.sum(x, keepdims=True),
             lambda x: np.sum(x, keepdims=True), (randn(2, 3),)),
        Case("bool_counts", gc.sum, np.sum, (boolean(4, 5),), (np.bool_,), also=(Op.CAST,)),
        Case("mean", lambda x: gc.mean(x, axis=1), lambda x: np.mean(x, axis=1), (randn(3, 4),),
             also=(Op.DIV,)),
        Case("method", lambda x: x.sum(axis=1, keepdims=True),
             lambda x: x.sum(axis=1, keepdims=True), (randn(3, 4),), eager=False),
    ],
    Op.MAX: [
        Case("all", gc.max, np.max, (randn(2, 3, 4),), FLOATS + INTS),
        Case("axis1", lambda x: gc.max(x, axis=1), lambda x: np.max(x, axis=1), (randn(2, 3, 4),)),
        Case("axes01_keep", lambda x: gc.max(x, axis=(0, 1), keepdims=True),
             lambda x: np.max(x, axis=(0, 1), keepdims=True), (randn(2, 3, 4),)),
        Case("axes12", lambda x: gc.max(x, axis=(1, 2)), lambda x: np.max(x, axis=(1, 2)),
             (randn(2, 3, 4),)),
        Case("min", lambda x: gc.min(x, axis=0), lambda x: np.min(x, axis=0), (randn(3, 4),),
             FLOATS + INTS),
    ],
    Op.RESHAPE: [
        Case("2d", lambda x: gc.reshape(x, (4, 3)), lambda x: np.reshape(x, (4, 3)), (randn(3, 4),),
             FLOATS + INTS),
        Case("infer", lambda x: gc.reshape(x, (-1, 2)), lambda x: np.reshape(x, (-1, 2)),
             (randn(3, 4),)),
        Case("flatten", lambda x: gc.reshape(x, 24), lambda x: np.reshape(x, 24), (randn(2, 3, 4),)),
        Case("scalar_to_1x1", lambda x: gc.reshape(x, (1, 1)), lambda x: np.reshape(x, (1, 1)),
             (randn(),)),
        Case("expand_dims", lambda x: gc.expand_dims(x, 1), lambda x: np.expand_dims(x, 1),
             (randn(3, 4),)),
        Case("squeeze", gc.squeeze, np.squeeze, (randn(3, 1, 4, 1),)),
    ],
    Op.PERMUTE: [
        Case("reverse", gc.transpose, np.transpose, (randn(2, 3, 4),), FLOATS + INTS),
        Case("perm", lambda x: gc.transpose(x, (1, 0, 2)), lambda x: np.transpose(x, (1, 0, 2)),
             (randn(2, 3, 4),)),
        Case("neg_axes", lambda x: gc.transpose(x, (-1, 0, 1)),
             lambda x: np.transpose(x, (-1, 0, 1)), (randn(2, 3, 4),)),
        Case("dotT", lambda x: x.T, lambda x: x.T, (randn(3, 5),), eager=False),
    ],
    Op.EXPAND: [
        Case("3x1_to_2x3x4", lambda x: gc.broadcast_to(x, (2, 3, 4)),
             lambda x: np.broadcast_to(x, (2, 3, 4)), (randn(3, 1),), FLOATS + INTS),
        Case("scalar", lambda x: gc.broadcast_to(x, (2, 3)), lambda x: np.broadcast_to(x, (2, 3)),
             (randn(),)),
        Case("vector", lambda x: gc.broadcast_to(x, (5, 4)), lambda x: np.broadcast_to(x, (5, 4)),
             (randn(4),)),
        Case("ones_like", lambda x: gc.ones_like(x) + x, lambda x: np.ones_like(x) + x,
             (randn(2, 2),), also=(Op.ADD,)),
    ],
    Op.SLICE: [
        Case("range", lambda x: x[1:3], lambda x: x[1:3], (randn(5, 4),), FLOATS + INTS, eager=False),
        Case("step2", lambda x: x[::2], lambda x: x[::2], (randn(7, 3),), eager=False),
        Case("steps_2d", lambda x: x[1::3, ::2], lambda x: x[1::3, ::2], (randn(8, 5),), eager=False),
        Case("step_stop", lambda x: x[1:6:2, 2:], lambda x: x[1:6:2, 2:], (randn(8, 5),),
             eager=False),
        Case("int_index", lambda x: x[:, 1], lambda x: x[:, 1], (randn(3, 4),), eager=False,
             also=(Op.RESHAPE,)),
        Case("negative_index", lambda x: x[-1], lambda x: x[-1], (randn(3, 4),), eager=False),
        Case("ellipsis_none", lambda x: x[..., None, 0:3:2], lambda x: x[..., None, 0:3:2],
             (randn(2, 3, 4),), eager=False),
        Case("negative_bounds", lambda x: x[-3:-1], lambda x: x[-3:-1], (randn(5),), eager=False),
    ],
    Op.PAD: [
        Case("pairs", lambda x: gc.pad(x, ((1, 2), (0, 3))),
             lambda x: np.pad(x, ((1, 2), (0, 3))), (randn(2, 3),), FLOATS + INTS),
        Case("int_width", lambda x: gc.pad(x, 1), lambda x: np.pad(x, 1), (randn(2, 3, 2),)),
        Case("value", lambda x: gc.pad(x, ((2, 0),), constant_values=2.5),
             lambda x: np.pad(x, ((2, 0),), constant_values=2.5), (randn(3),)),
    ],
    Op.CONCAT: [
        Case("axis0", lambda a, b: gc.concatenate([a, b]), lambda a, b: np.concatenate([a, b]),
             (randn(2, 3), randn(4, 3)), FLOATS + INTS),
        Case("axis1_three", lambda a, b, c: gc.concatenate([a, b, c], axis=1),
             lambda a, b, c: np.concatenate([a, b, c], axis=1),
             (randn(2, 1), randn(2, 3), randn(2, 2))),
        Case("axis_neg", lambda a, b: gc.concatenate((a, b), axis=-1),
             lambda a, b: np.concatenate((a, b), axis=-1), (randn(2, 2, 1), randn(2, 2, 3))),
        Case("stack", lambda a, b: gc.stack([a, b], axis=1), lambda a, b: np.stack([a, b], axis=1),
             (randn(3, 2), randn(3, 2)), also=(Op.RESHAPE,)),
    ],
    Op.MATMUL: [
        Case("2d", gc.matmul, np.matmul, (randn(3, 4), randn(4, 5)), FLOATS + INTS),
        Case("batched", gc.matmul, np.matmul, (randn(2, 3, 4), randn(2, 4, 5))),
        Case("broadcast_batch", gc.matmul, np.matmul, (randn(2, 1, 3, 4), randn(5, 4, 6))),
        Case("batch_with_matrix", gc.matmul, np.matmul, (randn(3, 2, 4), randn(4, 3))),
        Case("vec_mat", gc.matmul, np.matmul, (randn(4), randn(4, 5)), also=(Op.RESHAPE,)),
        Case("mat_vec", gc.matmul, np.matmul, (randn(3, 4), randn(4)), also=(Op.RESHAPE,)),
        Case("vec_vec", gc.matmul, np.matmul, (randn(4), randn(4)), also=(Op.RESHAPE,)),
        Case("vec_batched", gc.matmul, np.matmul, (randn(4), randn(2, 4, 5))),
        Case("batched_vec", gc.matmul, np.matmul, (randn(2, 3, 4), randn(4))),
        Case("operator", lambda a, b: a @ b, lambda a, b: a @ b, (randn(3, 4), randn(4, 2)),
             eager=False),
        Case("dot", gc.dot, np.dot, (randn(3, 4), randn(4, 2))),
    ],
    Op.RAND: [
        Case("key_input", lambda k: gc.random_uniform(k, (4, 5)),
             lambda k: _rand_ref_from_array(k, (4, 5), np.float32), (fixed(np.int64(1234)),),
             (I64,)),
        Case("key_input_f64", lambda k: gc.random_uniform(k, (3, 2), dtype="float64"),
             lambda k: _rand_ref_from_array(k, (3, 2), np.float64), (fixed(np.int64(2**40 + 7)),),
             (I64,)),
        Case("key_int32", lambda k: gc.random_uniform(k, (6,)),
             lambda k: _rand_ref_from_array(k, (6,), np.float32), (fixed(np.int32(-3)),), (I32,)),
    ],
}

# leaves and the grad marker are not computations; FUSED wraps a body graph (tested below)
NOT_PRIMITIVE_CASES = {Op.INPUT, Op.CONST, Op.GRAD, Op.FUSED}


def _params():
    out = []
    for op, cases in CASES.items():
        for case in cases:
            for dt in case.dtypes:
                out.append(pytest.param(op, case, dt, id=f"{op.name}-{case.name}-{np.dtype(dt).name}"))
    return out


PARAMS = _params()


def _seed(op, case) -> int:
    return zlib.crc32(f"{op.name}/{case.name}".encode())


def _args(case: Case, dt, seed: int):
    rng = np.random.default_rng(seed)
    return tuple(m(rng, dt) for m in case.args)


def _check_same(got, want, dt):
    want = np.asarray(want)
    got = np.asarray(got)
    assert isinstance(got, np.ndarray)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    if want.dtype.kind in "fc":
        tol = 2e-6 if want.dtype == np.float32 else 1e-13
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    else:
        np.testing.assert_array_equal(got, want)


def test_table_covers_every_primitive():
    assert set(CASES) == set(Op) - NOT_PRIMITIVE_CASES
    assert all(CASES[op] for op in CASES)


def test_every_dtype_appears():
    dts = {np.dtype(dt) for _, case, dt in (p.values for p in PARAMS)}
    assert {np.dtype(d) for d in (F32, F64, I32, I64, np.bool_)} <= dts


@pytest.mark.parametrize("op,case,dt", PARAMS)
def test_traced_then_interpreted(op, case, dt):
    args = _args(case, dt, seed=_seed(op, case))
    graph = gc.trace(case.fn, *args)
    ops = {n.op for n in graph.nodes}
    assert op in ops, f"the traced graph has no {op.value} node:\n{graph}"
    for extra in case.also:
        assert extra in ops, f"the traced graph has no {extra.value} node:\n{graph}"
    (got,) = interpret(graph, *args)
    _check_same(got, case.ref(*args), dt)


@pytest.mark.parametrize("op,case,dt", [p for p in PARAMS if p.values[1].eager])
def test_eager_gc_function(op, case, dt):
    args = _args(case, dt, seed=_seed(op, case) + 1)
    got = case.fn(*args)
    _check_same(got, case.ref(*args), dt)


# ---- primitives built directly (no frontend), e.g. what the frontend never emits -------------
def _prim(op, arrays, **attrs):
    ins = [input_node(f"x{i}", a.shape, DType.of(a)) for i, a in enumerate(arrays)]
    n = apply(op, *ins, **attrs)
    return interpret(Graph(tuple(ins), (n,)), *arrays)[0]


@pytest.mark.parametrize("dt", INTS)
def test_integer_div_truncates_toward_zero(dt):
    a = np.array([7, -7, 7, -7, 0, 5, -1, 6], dt)
    b = np.array([2, 2, -2, -2, 3, 5, 3, -4], dt)
    got = _prim(Op.DIV, [a, b])
    assert got.dtype == dt
    np.testing.assert_array_equal(got, np.trunc(a / b).astype(dt))
    np.testing.assert_array_equal(got, [3, -3, -3, 3, 0, 1, 0, -1])


def test_primitive_reduce_and_movement_attrs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4))
    np.testing.assert_allclose(_prim(Op.SUM, [x], axes=(0, 2), keepdims=True),
                               x.sum(axis=(0, 2), keepdims=True), rtol=1e-14)
    np.testing.assert_array_equal(_prim(Op.MAX, [x], axes=(1,), keepdims=False), x.max(axis=1))
    np.testing.assert_array_equal(_prim(Op.SLICE, [x], starts=(1, 0, 1), stops=(2, 3, 4),
                                        steps=(1, 2, 2)), x[1:2, 0:3:2, 1:4:2])
    np.testing.assert_array_equal(_prim(Op.PAD, [x], pads=((0, 1), (2, 0), (1, 1)), value=-1.0),
                                  np.pad(x, ((0, 1), (2, 0), (1, 1)), constant_values=-1.0))
    np.testing.assert_array_equal(_prim(Op.EXPAND, [x[:, :1, :]], shape=(5, 2, 3, 4)),
                                  np.broadcast_to(x[:, :1, :], (5, 2, 3, 4)))
    np.testing.assert_array_equal(_prim(Op.PERMUTE, [x], perm=(2, 0, 1)), x.transpose(2, 0, 1))
    np.testing.assert_array_equal(_prim(Op.CONCAT, [x, x[:, :1]], axis=1),
                                  np.concatenate([x, x[:, :1]], axis=1))
    np.testing.assert_array_equal(_prim(Op.RESHAPE, [x], shape=(4, 6)), x.reshape(4, 6))
    np.testing.assert_array_equal(_prim(Op.CAST, [x], dtype=DType.int32), x.astype(np.int32))


def test_pad_int_with_float_value_keeps_int_dtype():
    x = np.arange(4, dtype=np.int32).reshape(2, 2)
    got = _prim(Op.PAD, [x], pads=((1, 0), (0, 1)), value=3.0)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, np.pad(x, ((1, 0), (0, 1)), constant_values=3))


# ---- dtype promotion, as NumPy 2 (NEP 50) -----------------------------------------------------
@pytest.mark.parametrize("a,b", [
    (np.ones(2, F32), 2.0), (np.ones(2, F32), 2), (np.ones(2, I32), 2), (np.ones(2, I32), 2.5),
    (np.ones(2, I32), np.ones(2, I64)), (np.ones(2, F32), np.ones(2, F64)),
    (np.ones(2, I32), np.ones(2, F32)), (np.ones(2, bool), 1), (np.ones(2, I64), np.float32(1)),
])
def test_promotion_matches_numpy(a, b):
    for gfn, nfn in ((gc.add, np.add), (gc.multiply, np.multiply), (gc.maximum, np.maximum)):
        if a.dtype == bool and gfn is not gc.add:
            continue
        want = nfn(a, b)
        got = gfn(a, b)
        assert got.dtype == want.dtype, (gfn.__name__, a.dtype, type(b), got.dtype, want.dtype)
        np.testing.assert_array_equal(got, want)
        graph = gc.trace(lambda x: gfn(x, b), a)
        assert interpret(graph, a)[0].dtype == want.dtype


def test_int32_sum_does_not_overflow_like_numpy():
    x = np.array([2 ** 31 - 1, 1], np.int32)
    for got in (gc.sum(x), interpret(gc.trace(gc.sum, x), x)[0]):
        assert got.dtype == np.sum(x).dtype
        assert int(got) == 2 ** 31


def test_eager_and_traced_small_integer_power_agree():
    x = np.arange(-2, 3, dtype=np.int32)
    eager = gc.power(x, 2)
    traced = interpret(gc.trace(lambda x: x ** 2, x), x)[0]
    for got in (eager, traced):
        assert got.dtype == (x ** 2).dtype
        np.testing.assert_array_equal(got, x ** 2)


def test_true_divide_of_ints_is_float64():
    a, b = np.array([1, 2, 3], I32), np.array([2, 2, 2], I32)
    got = gc.divide(a, b)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, a / b)


def test_small_integer_powers_are_multiplications():
    g = gc.trace(lambda x: x ** 3, np.ones(3, F32))
    assert Op.POW not in {n.op for n in g.nodes}
    x = np.array([1.5, -2.0, 0.5], F32)
    np.testing.assert_allclose(interpret(g, x)[0], x ** 3, rtol=1e-6)
    g0 = gc.trace(lambda x: x ** 0, np.ones(3, F32))
    np.testing.assert_array_equal(interpret(g0, x)[0], np.ones(3, F32))
    assert interpret(g0, x)[0].dtype == np.float32


def test_numpy_functions_on_tracers_dispatch_to_graphc():
    def f(x, w):
        return np.sum(np.exp(x) @ w, axis=0) + np.maximum(x, 0.0).sum()
    x, w = np.random.default_rng(1).standard_normal((2, 3, 3))
    g = gc.trace(f, x, w)
    ops = {n.op for n in g.nodes}
    assert {Op.EXP, Op.MATMUL, Op.SUM, Op.MAXIMUM} <= ops
    np.testing.assert_allclose(interpret(g, x, w)[0], f(x, w), rtol=1e-13)


def test_reductions_of_all_axes_on_scalars_are_identity():
    x = np.float64(2.5)
    np.testing.assert_array_equal(gc.sum(x), np.sum(x))
    np.testing.assert_array_equal(gc.max(x), np.max(x))


def test_var_and_std_match_numpy():
    x = np.random.default_rng(2).standard_normal((4, 5))
    np.testing.assert_allclose(gc.var(x, axis=0), np.var(x, axis=0), rtol=1e-12)
    np.testing.assert_allclose(gc.std(x, axis=1, ddof=1), np.std(x, axis=1, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(gc.clip(x, -0.5, 0.5), np.clip(x, -0.5, 0.5))


# ---- RAND: counter-based uniform generator ----------------------------------------------------
def test_rand_uniformity_statistics():
    n = 200_000
    u = gc.random_uniform(42, (n,), dtype="float64")
    assert u.shape == (n,) and u.dtype == np.float64
    assert u.min() >= 0.0 and u.max() < 1.0
    # mean 1/2 and variance 1/12; standard errors ~6.5e-4 and ~1.9e-4
    assert abs(u.mean() - 0.5) < 0.004
    assert abs(u.var() - 1 / 12) < 0.0015
    # chi-square on 32 equal bins (31 dof: mean 31, sd ~7.9): 80 is far in the tail
    counts = np.bincount((u * 32).astype(int), minlength=32)
    chi2 = ((counts - n / 32) ** 2 / (n / 32)).sum()
    assert chi2 < 80, chi2
    # neighbours are uncorrelated
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01
    # multiples of 2**-24 (24 random bits)
    assert np.all((u * 2 ** 24) == np.floor(u * 2 ** 24))


def test_rand_same_key_same_bits():
    a = gc.random_uniform(7, (3, 4))
    b = gc.random_uniform(7, (3, 4))
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    # traced with the key as an input gives the very same bits as eager
    g = gc.trace(lambda k: gc.random_uniform(k, (3, 4)), np.int64(7))
    np.testing.assert_array_equal(interpret(g, np.int64(7))[0], a)
    # f32 and f64 give the same numbers (24 bits are exact in both)
    np.testing.assert_array_equal(gc.random_uniform(7, (3, 4), dtype="float64"), a.astype(np.float64))
    # counter-based: element i does not depend on the shape asked for
    np.testing.assert_array_equal(gc.random_uniform(7, (20,))[:12], a.reshape(-1))
    # the independent Python-int implementation agrees bit for bit
    np.testing.assert_array_equal(a, rand_reference(7, (3, 4), np.float32))


@pytest.mark.parametrize("k1,k2", [(0, 1), (1, 2), (0, 2 ** 32), (5, 5 + 2 ** 32), (-1, -2),
                                   (2 ** 63 - 1, -2 ** 63)])
def test_rand_different_keys_differ(k1, k2):
    a = gc.random_uniform(k1, (1000,), dtype="float64")
    b = gc.random_uniform(k2, (1000,), dtype="float64")
    assert np.mean(a == b) < 0.01
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.15


def test_rand_negative_key_is_its_64bit_pattern():
    np.testing.assert_array_equal(gc.random_uniform(-1, (5,)),
                                  rand_reference(2 ** 64 - 1, (5,), np.float32))


def test_rand_rejects_float_key():
    with pytest.raises(gc.GraphcError):
        gc.random_uniform(1.5, (3,))


# ---- FUSED: a kernel whose body is a graph; the interpreter runs the body --------------------
def test_fused_node_runs_its_body():
    a = input_node("a", (3, 4), DType.float64)
    b = input_node("b", (4,), DType.float64)
    body = Graph((a, b), (apply(Op.ADD, apply(Op.TANH, apply(Op.MUL, a, b)), a),), "k0")
    x = input_node("x", (3, 4), DType.float64)
    y = input_node("y", (4,), DType.float64)
    fused = apply(Op.FUSED, x, y, body=body, kind="elementwise", name="k0")
    assert fused.type == body.outputs[0].type
    graph = Graph((x, y), (apply(Op.NEG, fused),))
    gc.verify(graph)
    rng = np.random.default_rng(3)
    xv, yv = rng.standard_normal((3, 4)), rng.standard_normal(4)
    np.testing.assert_allclose(interpret(graph, xv, yv)[0], -(np.tanh(xv * yv) + xv), rtol=1e-14)
    with pytest.raises(gc.ShapeError):  # inputs must match the body's
        apply(Op.FUSED, y, x, body=body, kind="elementwise", name="k0")
