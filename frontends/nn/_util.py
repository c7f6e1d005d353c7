"""Plumbing shared by graphc.frontends.nn: the `_public` wrapper (eager evaluation on numpy
arguments), dtype and constant helpers, shorthands for the unary primitives, accurate
log1p/expm1 compositions and the trace-time check of integer class labels."""
from __future__ import annotations

import functools

import numpy as np

from graphc.errors import GraphcError, ShapeError
from graphc.interpret import interpret
from graphc.ir import Graph, register_internal_dir
from graphc.ops import Op
from graphc.types import DType, normalize_axes
from graphc.frontends import tensor as T
from graphc.frontends.tensor import Tensor, lift

register_internal_dir(__file__)


def _has_tensor(x) -> bool:
    if isinstance(x, Tensor):
        return True
    if isinstance(x, (list, tuple)):
        return any(_has_tensor(v) for v in x)
    if isinstance(x, dict):
        return any(_has_tensor(v) for v in x.values())
    return False


def _public(fn):
    """As `numpy_api.eager`, for tuple results too: with no tracer tensor among the arguments
    the recorded graph is evaluated at once and numpy arrays come back."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        if _has_tensor(args) or _has_tensor(kwargs):
            return out
        if isinstance(out, Tensor):
            return interpret(Graph((), (out.node,), fn.__name__))[0]
        if isinstance(out, tuple) and any(isinstance(o, Tensor) for o in out):
            idx = [i for i, o in enumerate(out) if isinstance(o, Tensor)]
            vals = interpret(Graph((), tuple(out[i].node for i in idx), fn.__name__))
            res = list(out)
            for i, v in zip(idx, vals):
                res[i] = v
            return tuple(res)
        return out
    return wrapper


def _float(x) -> Tensor:
    """A float tensor (ints become float64, as NumPy's true division does)."""
    x = lift(x)
    if not x.node.dtype.is_float:
        x = T.cast(x, DType.float64)
    return x


def _like(x: Tensor, y) -> Tensor:
    """`y` as a tensor of x's dtype (a strong constant when y is an array or number)."""
    y = lift(y)
    return T.cast(y, x.node.dtype)


def _const(value, like: Tensor) -> Tensor:
    return lift(np.asarray(value, dtype=like.dtype))


def _where(c, a, b) -> Tensor:
    return T.where(c, a, b)


def _shape_err(msg: str):
    return ShapeError(msg, stage="trace")


def _ntuple(v, n: int, name: str) -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return (int(v),) * n
    v = tuple(int(a) for a in v)
    if len(v) == 1:
        return v * n
    if len(v) != n:
        raise ValueError(f"{name} must be an int or a tuple of {n} ints, got {v}")
    return v


def _axis(dim: int, ndim: int) -> int:
    return normalize_axes(dim, ndim)[0] if ndim else 0


def _log1p(u: Tensor) -> Tensor:
    """log(1 + u) accurate for small u, from log alone (Kahan's trick:
    log1p(u) = log(w) * u / (w - 1) with w = 1 + u rounded; = u where w == 1). For u >= 0."""
    w = 1 + u
    d = w - 1
    tiny = d == 0
    return _where(tiny, u, T.unary(Op.LOG, w) * u / _where(tiny, 1, d))


def _expm1_neg(x: Tensor) -> Tensor:
    """exp(x) - 1 accurate for small |x|, for x <= 0 (Kahan: (u - 1) * x / log(u), u = exp(x);
    = x where u == 1). Arguments below -50 give -1 (exp(-50) - 1 == -1 in float64)."""
    xc = _where(x < -50, -50, x)
    u = T.unary(Op.EXP, xc)
    d = u - 1
    one = d == 0
    r = _where(one, xc, d * xc / T.unary(Op.LOG, _where(one, 2, u)))
    return _where(x < -50, -1, r)


def _exp(x):
    return T.unary(Op.EXP, x)


def _log(x):
    return T.unary(Op.LOG, x)


def _sqrt(x):
    return T.unary(Op.SQRT, x)


def _tanh(x):
    return T.unary(Op.TANH, x)


def _abs(x):
    return T.unary(Op.ABS, x)


def _pair_float(input, target):
    x, y = lift(input), lift(target)
    dt = T.result_dtype(x, y)
    if not dt.is_float:
        dt = DType.float64
    return T.cast(x, dt), T.cast(y, dt)


def _check_labels(target, num_classes: int, ignore_index=None):
    """Concrete labels are checked at trace time (traced labels cannot be)."""
    if isinstance(target, Tensor):
        if not target.node.dtype.is_int:
            raise GraphcError(f"class-index targets must be integers, got {target.node.type}",
                              stage="trace")
        return target
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise GraphcError(f"class-index targets must be integers, got {t.dtype}", stage="trace")
    t = t.astype(np.int64) if t.dtype.kind == "u" else t
    bad = (t < 0) | (t >= num_classes)
    if ignore_index is not None:
        bad &= t != ignore_index
    if np.any(bad):
        raise GraphcError(f"target {t[bad].ravel()[0]} is out of bounds for {num_classes} classes",
                          stage="trace")
    return t
