"""The tracer tensor: what a user's function receives while graphc traces it.

It behaves like a NumPy array (operators, `.shape`, `.T`, `.sum(axis)`, indexing), but each
operation records a node of the graph instead of computing. Dtypes promote as in NumPy
(NEP 50: Python scalars adopt the tensor's dtype); the frontend inserts the casts, so the
primitive ops always see equal dtypes.
"""
from __future__ import annotations

import numbers

import numpy as np

from graphc.errors import GraphcError, ShapeError
from graphc.ir import Node, apply, const, register_internal_dir, user_loc
from graphc.ops import Op
from graphc.types import DType, normalize_axes, promote

register_internal_dir(__file__)


class Tensor:
    """A traced value. `weak` marks Python scalars lifted to tensors: they adopt the
    dtype of whatever they meet, as a Python float does in NumPy."""

    __slots__ = ("node", "weak")
    __array_priority__ = 1000  # numpy defers `ndarray + Tensor` to Tensor.__radd__

    def __init__(self, node: Node, weak: bool = False):
        self.node = node
        self.weak = weak

    # ---- array-like attributes -------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.node.shape

    @property
    def dtype(self) -> np.dtype:
        return self.node.dtype.np

    @property
    def ndim(self) -> int:
        return len(self.node.shape)

    @property
    def size(self) -> int:
        return self.node.type.size

    @property
    def T(self) -> "Tensor":
        return self.transpose()

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"Tensor({self.node.type}, op={self.node.op.value})"

    __hash__ = object.__hash__

    def _concrete(self, what):
        loc = user_loc()
        raise GraphcError(f"{what} of a traced tensor: its value is not known while tracing",
                          stage="trace", node=repr(self), loc=loc.full if loc else None,
                          hint="Python control flow may depend on shapes and Python values, not on "
                               "tensor values; use gc.where(cond, a, b) instead of if/else")

    def __bool__(self):
        self._concrete("bool()")

    def __float__(self):
        self._concrete("float()")

    def __int__(self):
        self._concrete("int()")

    def __index__(self):
        self._concrete("use as an index")

    def __array__(self, dtype=None, copy=None):
        self._concrete("conversion to a numpy array")

    # ---- numpy interoperability: np.exp(t), np_array @ t ... ----------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from graphc.frontends import numpy_api
        fn = getattr(numpy_api, _UFUNCS.get(ufunc.__name__, ufunc.__name__), None)
        if method != "__call__" or fn is None or kwargs:
            return NotImplemented
        return fn(*inputs)

    def __array_function__(self, func, types, args, kwargs):
        from graphc.frontends import numpy_api
        fn = getattr(numpy_api, func.__name__, None)
        if fn is None:
            return NotImplemented
        return fn(*args, **kwargs)

    # ---- operators ------------------------------------------------------------------------------
    def __add__(self, o): return binary(Op.ADD, self, o)
    def __radd__(self, o): return binary(Op.ADD, o, self)
    def __sub__(self, o): return binary(Op.SUB, self, o)
    def __rsub__(self, o): return binary(Op.SUB, o, self)
    def __mul__(self, o): return binary(Op.MUL, self, o)
    def __rmul__(self, o): return binary(Op.MUL, o, self)
    def __truediv__(self, o): return true_divide(self, o)
    def __rtruediv__(self, o): return true_divide(o, self)
    def __pow__(self, o): return power(self, o)
    def __rpow__(self, o): return power(o, self)
    def __matmul__(self, o): return matmul(self, o)
    def __rmatmul__(self, o): return matmul(o, self)
    def __neg__(self): return unary(Op.NEG, self)
    def __pos__(self): return self
    def __abs__(self): return unary(Op.ABS, self)
    def __lt__(self, o): return binary(Op.LT, self, o)
    def __le__(self, o): return binary(Op.LE, self, o)
    def __gt__(self, o): return binary(Op.GT, self, o)
    def __ge__(self, o): return binary(Op.GE, self, o)
    def __eq__(self, o): return binary(Op.EQ, self, o)  # type: ignore[override]
    def __ne__(self, o): return binary(Op.NE, self, o)  # type: ignore[override]
    def __getitem__(self, idx): return getitem(self, idx)

    # ---- methods (NumPy names) -------------------------------------------------------------------
    def sum(self, axis=None, keepdims=False): return reduce(Op.SUM, self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return reduce(Op.MAX, self, axis, keepdims)
    def min(self, axis=None, keepdims=False): return -reduce(Op.MAX, -self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        axes = normalize_axes(axis, self.ndim)
        n = int(np.prod([self.shape[a] for a in axes], dtype=np.int64))
        x = self if self.node.dtype.is_float else self.astype(np.float64)
        return reduce(Op.SUM, x, axis, keepdims) / n

    def var(self, axis=None, keepdims=False, ddof=0):
        axes = normalize_axes(axis, self.ndim)
        n = int(np.prod([self.shape[a] for a in axes], dtype=np.int64))
        d = self - self.mean(axis, keepdims=True)
        return (d * d).sum(axis, keepdims) / (n - ddof)

    def std(self, axis=None, keepdims=False, ddof=0):
        return unary(Op.SQRT, self.var(axis, keepdims, ddof))

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return reshape(self, shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return transpose(self, axes or None)

    def astype(self, dtype): return cast(self, DType.of(np.dtype(dtype)))
    def exp(self): return unary(Op.EXP, self)
    def log(self): return unary(Op.LOG, self)
    def sqrt(self): return unary(Op.SQRT, self)
    def tanh(self): return unary(Op.TANH, self)
    def abs(self): return unary(Op.ABS, self)
    def flatten(self): return reshape(self, (self.size,))
    def squeeze(self, axis=None):
        from graphc.frontends.numpy_api import squeeze
        return squeeze(self, axis)


_UFUNCS = {"true_divide": "divide", "absolute": "abs", "less": "less", "power": "power"}


# ---- building blocks shared by the methods and by graphc.frontends.numpy_api -----------------------
def lift(x, like: Tensor | None = None) -> Tensor:
    """A Tensor for `x`: Tensors pass through; Python scalars become weak constants; arrays
    become constants of their own dtype."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (bool, numbers.Number)) and not isinstance(x, np.generic):
        if isinstance(x, bool):
            dt = DType.bool
        elif isinstance(x, numbers.Integral):
            dt = DType.int64
        else:
            dt = DType.float64
        return Tensor(const(x, dt), weak=True)
    try:
        arr = np.asarray(x)
        return Tensor(const(arr))
    except (TypeError, ValueError) as e:
        raise GraphcError(f"cannot use {type(x).__name__} as a tensor: {e}", stage="trace") from None


def result_dtype(*ts: Tensor) -> DType:
    """NumPy promotion where weak (Python scalar) operands only decide the kind
    (bool < int < float), never the width."""
    strong = [t.node.dtype for t in ts if not t.weak]
    weak = [t.node.dtype for t in ts if t.weak]
    rank = {DType.bool: 0, DType.int32: 1, DType.int64: 1, DType.float32: 2, DType.float64: 2}
    if strong:
        dt = strong[0]
        for d in strong[1:]:
            dt = promote(dt, d)
        for w in weak:
            if rank[w] > rank[dt]:
                dt = DType.int64 if w.is_int else DType.float64
        return dt
    dt = weak[0]
    for w in weak[1:]:
        dt = promote(dt, w)
    return dt


def cast(t: Tensor, dtype: DType) -> Tensor:
    if t.node.dtype is dtype:
        return t
    if t.node.op is Op.CONST:  # fold casts of constants at trace time
        return Tensor(const(t.node.attrs["value"].array.astype(dtype.np), dtype), t.weak)
    return Tensor(apply(Op.CAST, t.node, dtype=dtype))


def _all_weak(*ts):
    return all(t.weak for t in ts)


def unary(op: Op, x) -> Tensor:
    x = lift(x)
    if op in (Op.EXP, Op.LOG, Op.SQRT, Op.SIN, Op.COS, Op.TANH, Op.RECIP) and not x.node.dtype.is_float:
        x = cast(x, DType.float64 if x.node.dtype.is_int else DType.float32)
    return Tensor(apply(op, x.node), weak=x.weak)


def binary(op: Op, a, b) -> Tensor:
    a, b = lift(a), lift(b)
    dt = result_dtype(a, b)
    if op is Op.POW and not dt.is_float:
        dt = DType.float64 if dt.is_int else DType.float32
    return Tensor(apply(op, cast(a, dt).node, cast(b, dt).node), weak=_all_weak(a, b))


def true_divide(a, b) -> Tensor:
    a, b = lift(a), lift(b)
    dt = result_dtype(a, b)
    if not dt.is_float:
        dt = DType.float64  # NumPy: int / int -> float64
    return Tensor(apply(Op.DIV, cast(a, dt).node, cast(b, dt).node), weak=_all_weak(a, b))


def power(a, b) -> Tensor:
    if not isinstance(a, numbers.Number):
        a = lift(a)  # arrays too, so eager gc.power(x, 2) agrees with traced x ** 2
    b_is_small_int = isinstance(b, numbers.Integral) and not isinstance(b, bool) and 0 <= b <= 4
    if b_is_small_int and isinstance(a, Tensor) and not a.weak:
        # x**2 as x*x: exact, and its gradient needs no log (the lectures' `dx**2`)
        out = None
        for _ in range(int(b)):
            out = a if out is None else out * a
        return out if out is not None else binary(Op.MUL, a, 0) + 1
    return binary(Op.POW, a, b)


def where(cond, a, b) -> Tensor:
    c, a, b = lift(cond), lift(a), lift(b)
    if c.node.dtype is not DType.bool:
        c = binary(Op.NE, c, 0)
    dt = result_dtype(a, b)
    return Tensor(apply(Op.WHERE, c.node, cast(a, dt).node, cast(b, dt).node), weak=_all_weak(a, b))


def reduce(op: Op, x, axis=None, keepdims=False) -> Tensor:
    x = lift(x)
    try:
        axes = normalize_axes(axis, x.ndim)
    except ValueError as e:
        raise ShapeError(f"{op.value}: {e}", stage="trace", node=repr(x),
                         loc=_loc_str()) from None
    if x.node.dtype is DType.bool or (op is Op.SUM and x.node.dtype is DType.int32):
        x = cast(x, DType.int64)  # NumPy sums bools and int32 in int64 (no silent overflow)
    if not axes:
        return x
    return Tensor(apply(op, x.node, axes=axes, keepdims=bool(keepdims)))


def reshape(x, shape) -> Tensor:
    x = lift(x)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    if shape.count(-1) == 1:
        known = int(np.prod([s for s in shape if s != -1], dtype=np.int64))
        if known == 0 or x.size % known:
            raise ShapeError(f"cannot reshape {x.shape} to {shape}", stage="trace", loc=_loc_str())
        shape = tuple(x.size // known if s == -1 else s for s in shape)
    if shape == x.shape:
        return x
    return Tensor(apply(Op.RESHAPE, x.node, shape=shape))


def transpose(x, axes=None) -> Tensor:
    x = lift(x)
    perm = tuple(reversed(range(x.ndim))) if axes is None else tuple(int(a) % max(x.ndim, 1) for a in axes)
    if perm == tuple(range(x.ndim)):
        return x
    return Tensor(apply(Op.PERMUTE, x.node, perm=perm))


def broadcast_to(x, shape) -> Tensor:
    x = lift(x)
    shape = tuple(int(s) for s in shape)
    if shape == x.shape:
        return x
    return Tensor(apply(Op.EXPAND, x.node, shape=shape))


def matmul(a, b) -> Tensor:
    """NumPy matmul semantics; 1-d operands are promoted to matrices and the axis removed."""
    a, b = lift(a), lift(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul: operands must not be scalars, got {a.shape} @ {b.shape}",
                         stage="trace", loc=_loc_str())
    dt = result_dtype(a, b)
    a, b = cast(a, dt), cast(b, dt)
    a2 = reshape(a, (1,) + a.shape) if a.ndim == 1 else a
    b2 = reshape(b, b.shape + (1,)) if b.ndim == 1 else b
    out = Tensor(apply(Op.MATMUL, a2.node, b2.node))
    if a.ndim == 1:
        out = reshape(out, out.shape[:-2] + out.shape[-1:])
    if b.ndim == 1:
        out = reshape(out, out.shape[:-1])
    return out


def getitem(x: Tensor, idx) -> Tensor:
    """Basic indexing: ints, slices (positive steps), None and Ellipsis."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    if sum(1 for i in idx if i is Ellipsis) > 1:
        raise ShapeError("an index can only have a single ellipsis", stage="trace", loc=_loc_str())
    if Ellipsis in [i for i in idx if i is Ellipsis]:
        k = [j for j, i in enumerate(idx) if i is Ellipsis][0]
        idx = idx[:k] + (slice(None),) * (x.ndim - n_real) + idx[k + 1:]
        n_real = sum(1 for i in idx if i is not None)  # the ellipsis now stands for its slices
    if n_real > x.ndim:
        raise ShapeError(f"too many indices ({n_real}) for a tensor of shape {x.shape}",
                         stage="trace", loc=_loc_str())
    idx = idx + (slice(None),) * (x.ndim - n_real)
    starts, stops, steps, out_shape, axis = [], [], [], [], 0
    for i in idx:
        if i is None:
            out_shape.append(1)
            continue
        size = x.shape[axis]
        if isinstance(i, (int, np.integer)) and not isinstance(i, bool):
            j = int(i) + size if i < 0 else int(i)
            if not 0 <= j < size:
                raise ShapeError(f"index {i} is out of bounds for axis {axis} with size {size}",
                                 stage="trace", node=repr(x), loc=_loc_str())
            starts.append(j), stops.append(j + 1), steps.append(1)
        elif isinstance(i, slice):
            lo, hi, st = i.indices(size)
            if st < 0:
                raise ShapeError("negative slice steps are not supported", stage="trace",
                                 loc=_loc_str(), hint="index with a positive step and reverse "
                                 "with a concatenate of slices")
            hi = max(hi, lo)
            starts.append(lo), stops.append(hi), steps.append(st)
            out_shape.append(len(range(lo, hi, st)))
        else:
            raise ShapeError(f"unsupported index {i!r} (graphc supports ints, slices, None and ...)",
                             stage="trace", loc=_loc_str(),
                             hint="for class labels use one-hot masks (gc.nn.functional.one_hot)")
        axis += 1
    out = x
    if (tuple(starts), tuple(stops), tuple(steps)) != ((0,) * x.ndim, x.shape, (1,) * x.ndim):
        out = Tensor(apply(Op.SLICE, x.node, starts=tuple(starts), stops=tuple(stops),
                           steps=tuple(steps)))
    return reshape(out, tuple(out_shape))


def _loc_str():
    loc = user_loc()
    return loc.full if loc else None

