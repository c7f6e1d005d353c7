"""The closed set of primitive ops. Each op is declared here once: its kind, arity,
shape/dtype rule and NumPy reference. Everything else (relu, softmax, conv2d, losses)
is a composition of these, built by the frontends.

Tables elsewhere are keyed by `Op` and tested to cover it: the VJP table in
`graphc/passes/autodiff.py`, and one lowering table per backend.
"""
from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from graphc.types import DType, TensorType, broadcast_shapes


class Op(enum.Enum):
    # leaves
    INPUT = "input"
    CONST = "const"
    # elementwise unary
    NEG = "neg"
    EXP = "exp"
    LOG = "log"
    SQRT = "sqrt"
    SIN = "sin"
    COS = "cos"
    TANH = "tanh"
    ABS = "abs"
    SIGN = "sign"
    RECIP = "reciprocal"
    CAST = "cast"
    STOP_GRADIENT = "stop_gradient"  # identity whose derivative is taken as zero (jax.lax's)
    # elementwise binary (NumPy broadcasting)
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    POW = "pow"
    MAXIMUM = "maximum"
    MINIMUM = "minimum"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    EQ = "eq"
    NE = "ne"
    # elementwise ternary
    WHERE = "where"
    # reductions
    SUM = "sum"
    MAX = "max"
    # movement
    RESHAPE = "reshape"
    PERMUTE = "permute"
    EXPAND = "expand"
    SLICE = "slice"
    PAD = "pad"
    CONCAT = "concat"
    # contraction
    MATMUL = "matmul"
    # counter-based random numbers: uniform [0, 1) from an integer key (same bits on every backend)
    RAND = "rand"
    # transformation marker: `grad y wrt x`, replaced by the backward stage
    GRAD = "grad"
    # a fused kernel: its `body` attribute is a Graph of the ops it computes in one pass
    FUSED = "fused"

    def __repr__(self) -> str:
        return f"Op.{self.name}"


# ---- op classes, as sets next to the enum -------------------------------------------------
UNARY = frozenset({Op.NEG, Op.EXP, Op.LOG, Op.SQRT, Op.SIN, Op.COS, Op.TANH, Op.ABS, Op.SIGN,
                   Op.RECIP, Op.CAST, Op.STOP_GRADIENT})
FLOAT_UNARY = frozenset({Op.EXP, Op.LOG, Op.SQRT, Op.SIN, Op.COS, Op.TANH, Op.RECIP})
ARITH = frozenset({Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.POW, Op.MAXIMUM, Op.MINIMUM})
COMPARE = frozenset({Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE})
BINARY = ARITH | COMPARE
ELEMENTWISE = UNARY | BINARY | {Op.WHERE}
REDUCE = frozenset({Op.SUM, Op.MAX})
VIEWS = frozenset({Op.RESHAPE, Op.PERMUTE, Op.EXPAND, Op.SLICE})  # no copy needed
MOVEMENT = VIEWS | {Op.PAD, Op.CONCAT}  # ops that only choose which element to read
CONTRACTIONS = REDUCE | {Op.MATMUL}
COSTLY = frozenset({Op.EXP, Op.LOG, Op.TANH, Op.SIN, Op.COS, Op.POW})  # tens of instructions
LEAF = frozenset({Op.INPUT, Op.CONST})
COMMUTATIVE = frozenset({Op.ADD, Op.MUL, Op.MAXIMUM, Op.MINIMUM, Op.EQ, Op.NE})


def kind(op: Op) -> str:
    """The op's class, as the pictures colour it: leaf, elementwise, reduce, movement, matmul, grad."""
    if op in LEAF:
        return "leaf"
    if op in ELEMENTWISE:
        return "elementwise"
    if op in REDUCE:
        return "reduce"
    if op in MOVEMENT:
        return "movement"
    return op.value


class Const:
    """An immutable constant array. Equal and hashed by value, so CSE can merge equal constants."""

    __slots__ = ("array", "_key")

    def __init__(self, value, dtype: DType | None = None):
        arr = np.array(value, dtype=dtype.np if dtype else None)
        if arr.dtype == np.float16 or arr.dtype.kind in "uc":
            arr = arr.astype(np.float32 if arr.dtype.kind in "fc" else np.int64)
        DType.of(arr)  # reject dtypes graphc has no name for
        arr.setflags(write=False)
        self.array = arr
        self._key = (arr.dtype.str, arr.shape, hashlib.sha1(arr.tobytes()).hexdigest())

    def __eq__(self, other) -> bool:
        return isinstance(other, Const) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        a = self.array
        if a.size <= 6:
            return np.array2string(a, separator=",", precision=6).replace("\n", "")
        return f"<{a.dtype}{list(a.shape)} sha1:{self._key[2][:8]}>"


@dataclass(frozen=True)
class OpDef:
    """One op's declaration: arity (-1 = variadic), type rule and NumPy reference."""
    op: Op
    arity: int
    infer: Callable[..., TensorType]      # infer(input_types, **attrs) -> TensorType
    reference: Callable[..., np.ndarray]  # reference(*arrays, **attrs) -> array


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


# ---- type rules -----------------------------------------------------------------------------
def _t_unary(op):
    def infer(ts, **_):
        (t,) = ts
        if op in FLOAT_UNARY:
            _need(t.dtype.is_float, f"{op.value} needs a float input, got {t.dtype.name}")
        else:
            _need(t.dtype is not DType.bool, f"{op.value} is not defined on bool")
        return t
    return infer


def _t_binary(op):
    def infer(ts, **_):
        a, b = ts
        _need(a.dtype is b.dtype, f"{op.value} needs equal dtypes, got {a.dtype.name} and "
              f"{b.dtype.name} (the frontend inserts casts)")
        if op not in (Op.EQ, Op.NE):
            _need(a.dtype is not DType.bool, f"{op.value} is not defined on bool")
        if op is Op.POW:
            _need(a.dtype.is_float, "pow needs float inputs")
        shape = broadcast_shapes(a.shape, b.shape)
        return TensorType(shape, DType.bool if op in COMPARE else a.dtype)
    return infer


def _t_where(ts, **_):
    c, a, b = ts
    _need(c.dtype is DType.bool, f"where's condition must be bool, got {c.dtype.name}")
    _need(a.dtype is b.dtype, f"where needs equal branch dtypes, got {a.dtype.name}, {b.dtype.name}")
    return TensorType(broadcast_shapes(c.shape, a.shape, b.shape), a.dtype)


def _t_reduce(op):
    def infer(ts, axes, keepdims):
        (t,) = ts
        _need(all(0 <= a < t.ndim for a in axes) and list(axes) == sorted(set(axes)),
              f"bad axes {axes} for rank {t.ndim}")
        _need(t.dtype is not DType.bool, f"{op.value} is not defined on bool (cast first)")
        if op is Op.MAX:
            _need(all(t.shape[a] > 0 for a in axes), "max over an empty axis")
        shape = tuple(1 if i in axes else s for i, s in enumerate(t.shape) if keepdims or i not in axes)
        return TensorType(shape, t.dtype)
    return infer


def _t_reshape(ts, shape):
    (t,) = ts
    _need(all(s >= 0 for s in shape), f"negative size in {shape}")
    _need(int(np.prod(shape, dtype=np.int64)) == t.size,
          f"cannot reshape {t.shape} ({t.size} elements) to {shape}")
    return TensorType(tuple(shape), t.dtype)


def _t_permute(ts, perm):
    (t,) = ts
    _need(sorted(perm) == list(range(t.ndim)), f"{perm} is not a permutation of {t.ndim} axes")
    return TensorType(tuple(t.shape[p] for p in perm), t.dtype)


def _t_expand(ts, shape):
    (t,) = ts
    _need(len(shape) >= t.ndim and broadcast_shapes(t.shape, shape) == tuple(shape),
          f"cannot broadcast {t.shape} to {shape}")
    return TensorType(tuple(shape), t.dtype)


def slice_len(start: int, stop: int, step: int) -> int:
    return max(0, (stop - start + step - 1) // step)


def _t_slice(ts, starts, stops, steps):
    (t,) = ts
    _need(len(starts) == len(stops) == len(steps) == t.ndim, "slice needs one range per axis")
    for a, (lo, hi, st) in enumerate(zip(starts, stops, steps)):
        _need(st > 0 and 0 <= lo <= t.shape[a] and lo <= hi <= t.shape[a],
              f"bad slice {lo}:{hi}:{st} on axis {a} of size {t.shape[a]}")
    return TensorType(tuple(slice_len(*r) for r in zip(starts, stops, steps)), t.dtype)


def _t_pad(ts, pads, value):
    (t,) = ts
    _need(len(pads) == t.ndim and all(lo >= 0 and hi >= 0 for lo, hi in pads),
          f"pad needs a non-negative (low, high) pair per axis, got {pads}")
    return TensorType(tuple(s + lo + hi for s, (lo, hi) in zip(t.shape, pads)), t.dtype)


def _t_concat(ts, axis):
    _need(len(ts) >= 1, "concat needs at least one input")
    t0 = ts[0]
    _need(0 <= axis < t0.ndim, f"axis {axis} out of range for rank {t0.ndim}")
    for t in ts[1:]:
        _need(t.dtype is t0.dtype, f"concat needs equal dtypes, got {t0.dtype.name}, {t.dtype.name}")
        _need(t.ndim == t0.ndim and all(a == b for i, (a, b) in enumerate(zip(t.shape, t0.shape))
                                        if i != axis),
              f"concat along axis {axis} needs equal other sizes: {[x.shape for x in ts]}")
    shape = list(t0.shape)
    shape[axis] = sum(t.shape[axis] for t in ts)
    return TensorType(tuple(shape), t0.dtype)


def _t_matmul(ts, **_):
    a, b = ts
    _need(a.ndim >= 2 and b.ndim >= 2, f"matmul primitive needs rank >= 2, got {a.shape} @ {b.shape}")
    _need(a.dtype is b.dtype and a.dtype is not DType.bool,
          f"matmul needs equal numeric dtypes, got {a.dtype.name} and {b.dtype.name}")
    _need(a.shape[-1] == b.shape[-2], f"matmul contraction mismatch: {a.shape} @ {b.shape} "
          f"({a.shape[-1]} != {b.shape[-2]})")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return TensorType(batch + (a.shape[-2], b.shape[-1]), a.dtype)


def _t_grad(ts, **_):
    y, x = ts
    _need(y.shape == () and y.dtype.is_float, f"grad needs a float scalar output, got {y}")
    _need(x.dtype.is_float, f"grad is taken with respect to float inputs, got {x.dtype.name}")
    return x


# ---- NumPy references --------------------------------------------------------------------
def _ref_slice(x, starts, stops, steps):
    return x[tuple(slice(*r) for r in zip(starts, stops, steps))]


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser: a cheap bijective mixer, easy to write in any backend."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def rand_bits(key: int, size: int) -> np.ndarray:
    """uint32 random bits for element indices 0..size-1: fmix32(index ^ fmix32(fmix32(key_hi +
    golden) ^ key_lo)), then fmix32 again. Counter-based, so any element is computable alone."""
    k = int(key) & 0xFFFFFFFFFFFFFFFF
    lo, hi = np.uint32(k & 0xFFFFFFFF), np.uint32(k >> 32)
    with np.errstate(over="ignore"):
        seed = _fmix32(np.asarray(_fmix32(np.asarray(hi + np.uint32(0x9E3779B9))) ^ lo))
        return _fmix32(_fmix32(np.arange(size, dtype=np.uint32) ^ seed) + np.uint32(0x6A09E667))


def ref_rand(key, shape, dtype):
    """Uniform [0, 1) numbers: the top 24 bits of `rand_bits`, scaled by 2**-24 (exact in f32)."""
    bits = rand_bits(int(key), int(np.prod(shape, dtype=np.int64)))
    return ((bits >> np.uint32(8)).astype(dtype.np) * dtype.np.type(2.0 ** -24)).reshape(shape)


def _t_rand(ts, shape, dtype):
    (k,) = ts
    _need(k.shape == () and k.dtype.is_int, f"rand needs a scalar integer key, got {k}")
    _need(dtype.is_float, "rand produces floats")
    return TensorType(tuple(shape), dtype)


def _t_fused(ts, body, kind, name, reason="", buffer=-1, inplace=False, donated=-1):
    _need(len(body.outputs) == 1, "a fused kernel has one output")
    _need(len(ts) == len(body.inputs) and all(t == i.type for t, i in zip(ts, body.inputs)),
          f"fused kernel {name}: inputs {[str(t) for t in ts]} do not match its body's "
          f"{[str(i.type) for i in body.inputs]}")
    return body.outputs[0].type


def _ref_fused(*xs, body, **_):
    from graphc.interpret import interpret  # the body is a graph: run it like one
    return interpret(body, *xs)[0]


def _ref_grad(*_a, **_k):
    raise NotImplementedError("grad nodes are expanded by the backward stage before running")


_NP_UNARY = {Op.NEG: np.negative, Op.EXP: np.exp, Op.LOG: np.log, Op.SQRT: np.sqrt,
             Op.SIN: np.sin, Op.COS: np.cos, Op.TANH: np.tanh, Op.ABS: np.abs,
             Op.SIGN: np.sign, Op.RECIP: np.reciprocal}
_NP_BINARY = {Op.ADD: np.add, Op.SUB: np.subtract, Op.MUL: np.multiply, Op.POW: np.power,
              Op.MAXIMUM: np.maximum, Op.MINIMUM: np.minimum, Op.LT: np.less,
              Op.LE: np.less_equal, Op.GT: np.greater, Op.GE: np.greater_equal,
              Op.EQ: np.equal, Op.NE: np.not_equal}


def _ref_div(a, b):
    # integer division truncates toward zero (C semantics, as the compiled backends do)
    if a.dtype.kind in "iu":
        return (np.sign(a) * np.sign(b) * (np.abs(a) // np.maximum(np.abs(b), 1))).astype(a.dtype)
    return np.divide(a, b)


OPS: dict[Op, OpDef] = {
    Op.INPUT: OpDef(Op.INPUT, 0, lambda ts, name, shape, dtype, role="input":
                    TensorType(tuple(shape), dtype), None),
    Op.CONST: OpDef(Op.CONST, 0, lambda ts, value: TensorType(value.array.shape,
                                                               DType.of(value.array)),
                    lambda value: value.array),
    **{op: OpDef(op, 1, _t_unary(op), (lambda f: lambda x: f(x))(f)) for op, f in _NP_UNARY.items()},
    Op.CAST: OpDef(Op.CAST, 1, lambda ts, dtype: TensorType(ts[0].shape, dtype),
                   lambda x, dtype: x.astype(dtype.np)),
    Op.STOP_GRADIENT: OpDef(Op.STOP_GRADIENT, 1, lambda ts: ts[0], lambda x: x),
    **{op: OpDef(op, 2, _t_binary(op), (lambda f: lambda a, b: f(a, b))(f))
       for op, f in _NP_BINARY.items()},
    Op.DIV: OpDef(Op.DIV, 2, _t_binary(Op.DIV), _ref_div),
    Op.WHERE: OpDef(Op.WHERE, 3, _t_where, lambda c, a, b: np.where(c, a, b)),
    Op.SUM: OpDef(Op.SUM, 1, _t_reduce(Op.SUM),
                  lambda x, axes, keepdims: np.sum(x, axis=axes, keepdims=keepdims, dtype=x.dtype)),
    Op.MAX: OpDef(Op.MAX, 1, _t_reduce(Op.MAX),
                  lambda x, axes, keepdims: np.max(x, axis=axes, keepdims=keepdims)),
    Op.RESHAPE: OpDef(Op.RESHAPE, 1, _t_reshape, lambda x, shape: np.reshape(x, shape)),
    Op.PERMUTE: OpDef(Op.PERMUTE, 1, _t_permute, lambda x, perm: np.transpose(x, perm)),
    Op.EXPAND: OpDef(Op.EXPAND, 1, _t_expand, lambda x, shape: np.broadcast_to(x, shape)),
    Op.SLICE: OpDef(Op.SLICE, 1, _t_slice, _ref_slice),
    Op.PAD: OpDef(Op.PAD, 1, _t_pad,
                  lambda x, pads, value: np.pad(x, pads, constant_values=np.array(value, x.dtype))),
    Op.CONCAT: OpDef(Op.CONCAT, -1, _t_concat, lambda *xs, axis: np.concatenate(xs, axis=axis)),
    Op.MATMUL: OpDef(Op.MATMUL, 2, _t_matmul, np.matmul),
    Op.RAND: OpDef(Op.RAND, 1, _t_rand, ref_rand),
    Op.GRAD: OpDef(Op.GRAD, 2, _t_grad, _ref_grad),
    Op.FUSED: OpDef(Op.FUSED, -1, _t_fused, _ref_fused),
}

assert set(OPS) == set(Op), f"ops without a declaration: {set(Op) - set(OPS)}"
