"""Functions in the `graphc` namespace, named and behaving as in NumPy.

Inside a traced function they record nodes; called on plain numpy arrays they evaluate at
once with the reference interpreter, so `gc.tanh(np.ones(3))` is an array.

>>> import numpy as np, graphc as gc
>>> gc.maximum(np.array([1.0, -2.0]), 0.0)
array([1., 0.])
"""
from __future__ import annotations

import functools

import numpy as np

from graphc.errors import ShapeError
from graphc.interpret import interpret
from graphc.ir import Graph, apply, register_internal_dir
from graphc.ops import Op
from graphc.types import normalize_axes
from graphc.frontends import tensor as T
from graphc.frontends.tensor import Tensor, lift

register_internal_dir(__file__)


def _has_tensor(args) -> bool:
    for a in args:
        if isinstance(a, Tensor):
            return True
        if isinstance(a, (list, tuple)) and _has_tensor(a):
            return True
    return False


def eager(fn):
    """Outside tracing (no Tensor among the arguments) evaluate the recorded graph at once."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        if isinstance(out, Tensor) and not _has_tensor(args) and not _has_tensor(kwargs.values()):
            return interpret(Graph((), (out.node,), fn.__name__))[0]
        return out
    return wrapper


def _u(op):
    return eager(lambda x: T.unary(op, x))


def _b(op):
    return eager(lambda a, b: T.binary(op, a, b))


exp, log, sqrt, sin, cos, tanh = (_u(o) for o in (Op.EXP, Op.LOG, Op.SQRT, Op.SIN, Op.COS, Op.TANH))
abs, sign, negative, reciprocal = (_u(o) for o in (Op.ABS, Op.SIGN, Op.NEG, Op.RECIP))
absolute = abs
add, subtract, multiply = _b(Op.ADD), _b(Op.SUB), _b(Op.MUL)
maximum, minimum = _b(Op.MAXIMUM), _b(Op.MINIMUM)
less, less_equal, greater, greater_equal = _b(Op.LT), _b(Op.LE), _b(Op.GT), _b(Op.GE)
equal, not_equal = _b(Op.EQ), _b(Op.NE)
divide = true_divide = eager(T.true_divide)
power = eager(T.power)
matmul = eager(T.matmul)
where = eager(T.where)
broadcast_to = eager(T.broadcast_to)
reshape = eager(T.reshape)
transpose = eager(T.transpose)
for _name, _f in {"exp": exp, "log": log, "sqrt": sqrt, "sin": sin, "cos": cos, "tanh": tanh,
                  "abs": abs, "sign": sign, "negative": negative, "reciprocal": reciprocal,
                  "add": add, "subtract": subtract, "multiply": multiply, "maximum": maximum,
                  "minimum": minimum, "less": less, "less_equal": less_equal, "greater": greater,
                  "greater_equal": greater_equal, "equal": equal, "not_equal": not_equal}.items():
    _f.__name__ = _f.__qualname__ = _name
    _f.__doc__ = f"Elementwise {_name}, as numpy.{_name}."


@eager
def square(x):
    x = lift(x)
    return x * x


@eager
def sum(x, axis=None, keepdims=False):
    return lift(x).sum(axis, keepdims)


@eager
def mean(x, axis=None, keepdims=False):
    return lift(x).mean(axis, keepdims)


@eager
def var(x, axis=None, keepdims=False, ddof=0):
    return lift(x).var(axis, keepdims, ddof)


@eager
def std(x, axis=None, keepdims=False, ddof=0):
    return lift(x).std(axis, keepdims, ddof)


@eager
def max(x, axis=None, keepdims=False):
    return lift(x).max(axis, keepdims)


@eager
def min(x, axis=None, keepdims=False):
    return lift(x).min(axis, keepdims)


amax, amin = max, min


@eager
def dot(a, b):
    a, b = lift(a), lift(b)
    if a.ndim <= 2 and b.ndim <= 2:
        return a * b if a.ndim == 0 or b.ndim == 0 else T.matmul(a, b)
    raise ShapeError("dot of tensors of rank > 2: use matmul or tensordot", stage="trace")


@eager
def clip(x, a_min, a_max):
    x = lift(x)
    if a_min is not None:
        x = maximum(x, a_min)
    if a_max is not None:
        x = minimum(x, a_max)
    return x


@eager
def expand_dims(x, axis):
    x = lift(x)
    axes = normalize_axes(axis, x.ndim + (1 if isinstance(axis, int) else len(axis)))
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return T.reshape(x, tuple(shape))


@eager
def squeeze(x, axis=None):
    x = lift(x)
    axes = tuple(i for i, s in enumerate(x.shape) if s == 1) if axis is None \
        else normalize_axes(axis, x.ndim)
    for a in axes:
        if x.shape[a] != 1:
            raise ShapeError(f"cannot squeeze axis {a} of size {x.shape[a]}", stage="trace")
    return T.reshape(x, tuple(s for i, s in enumerate(x.shape) if i not in axes))


@eager
def concatenate(arrays, axis=0):
    ts = [lift(a) for a in arrays]
    dt = T.result_dtype(*ts)
    ts = [T.cast(t, dt) for t in ts]
    if not ts:
        raise ShapeError("need at least one array to concatenate", stage="trace")
    ax = normalize_axes(axis, ts[0].ndim)[0]
    if len(ts) == 1:
        return ts[0]
    return Tensor(apply(Op.CONCAT, *(t.node for t in ts), axis=ax))


@eager
def stack(arrays, axis=0):
    ts = [lift(a) for a in arrays]
    if not ts:
        raise ShapeError("need at least one array to stack", stage="trace")
    return concatenate([expand_dims(t, axis) for t in ts], axis=axis)


@eager
def zeros_like(x, dtype=None):
    x = lift(x)
    return T.broadcast_to(lift(np.zeros((), dtype or x.dtype)), x.shape)


@eager
def ones_like(x, dtype=None):
    x = lift(x)
    return T.broadcast_to(lift(np.ones((), dtype or x.dtype)), x.shape)


@eager
def full_like(x, fill_value, dtype=None):
    x = lift(x)
    return T.broadcast_to(lift(np.full((), fill_value, dtype or x.dtype)), x.shape)


@eager
def pad(x, pad_width, constant_values=0.0):
    x = lift(x)
    pw = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (x.ndim, 2))
    return Tensor(apply(Op.PAD, x.node, pads=tuple((int(a), int(b)) for a, b in pw),
                        value=float(constant_values)))



@eager
def random_uniform(key, shape, dtype="float32"):
    """Uniform [0, 1) numbers from an integer `key` (a Python int or a traced int scalar),
    reproducible bit for bit on every backend: graphc's counter-based generator."""
    from graphc.types import DType
    if isinstance(key, int) and not -2**63 <= key < 2**64:
        raise ShapeError(f"random_uniform: key {key} does not fit in 64 bits", stage="trace")
    if isinstance(key, int) and key >= 2**63:
        key -= 2**64  # the same 64-bit pattern, as the int64 the graph carries
    k = lift(key)
    if not k.node.dtype.is_int:
        raise ShapeError(f"random_uniform needs an integer key, got {k.node.type}", stage="trace")
    return Tensor(apply(Op.RAND, k.node, shape=tuple(int(s) for s in shape),
                        dtype=DType.of(np.dtype(dtype))))


@eager
def stop_gradient(x):
    """The identity, whose derivative is taken as zero (as `jax.lax.stop_gradient`): e.g. the
    row maximum subtracted in a stable softmax, which changes nothing mathematically."""
    x = lift(x)
    return Tensor(apply(Op.STOP_GRADIENT, x.node), weak=x.weak)
