"""torch.nn.functional for graphc: activations, losses and layers as compositions of primitives.

Every function here is built from the closed set of primitive ops in `graphc.ops` (no new
ops): it records graph nodes when given tracer tensors and, like the `gc.*` NumPy functions,
evaluates at once when given plain numpy arrays (`F.relu(np.array([-1., 2.]))` is an
array). Names, argument order and defaults follow `torch.nn.functional` (lectures,
Appendix B), with these graphc conventions:

* **Randomness** is explicit. `dropout(x, p, training, key)` and the other random functions
  take an integer `key` (a Python int or a traced integer scalar) for graphc's counter-based
  generator (`gc.random_uniform`): the same key gives the same mask on every backend, and a
  compiled training step can take a new key each step without retracing.
* **State is returned, never mutated.** `batch_norm(..., training=True)` with running
  statistics returns `(y, new_running_mean, new_running_var)`; otherwise it returns `y`.
* **Subgradients** (B.11): relu'(0) = 0, leaky_relu'(0) = negative_slope, hardtanh' = 0 at its
  corners, step/heaviside' = 0, |x|'(0) = 0, max pooling sends a window's gradient to its first
  maximum in scan order (as torch), `logsumexp`/`maxout` split ties evenly (as reduce-max).
* **Stability**: softmax/log_softmax/logsumexp subtract the maximum; sigmoid, softplus,
  logsigmoid, BCE-with-logits use exp(-|x|) forms and accurate log1p/expm1 compositions;
  no branch of a `where` can produce inf/nan that would poison a gradient.
* **erf** (for the exact `gelu`, torch's default) is composed from primitives with Cephes'
  rational approximations (ndtr.c, S. L. Moshier): in float64, |erf error| <= 5e-16 and erfc's
  relative error <= 1e-13 down to erfc ~ 1e-300 (checked against math.erf/erfc in the tests);
  `gelu(x, approximate="tanh")` is the tanh form.

Layers: `conv1d/2d/3d` are im2col (the kernel-offset windows are strided slices of the padded
input, concatenated along channels) then one matmul; `conv_transpose1d/2d/3d` dilate the
input by the stride and run the flipped-kernel convolution; pools use the same windows.
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from graphc.errors import GraphcError, ShapeError
from graphc.interpret import interpret
from graphc.ir import Graph, register_internal_dir
from graphc.ops import Op
from graphc.types import DType, normalize_axes
from graphc.frontends import numpy_api as gnp
from graphc.frontends import tensor as T
from graphc.frontends.tensor import Tensor, lift

register_internal_dir(__file__)

__all__ = [
    # activations
    "heaviside", "step", "threshold", "relu", "relu6", "leaky_relu", "prelu", "elu", "selu", "celu",
    "gelu", "erf", "erfc", "silu", "swish", "mish", "sigmoid", "logsigmoid", "tanh", "hardtanh",
    "hardsigmoid", "hardswish", "softplus", "softsign", "tanhshrink", "glu", "maxout",
    "softmax", "softmin", "log_softmax", "logsumexp",
    # losses
    "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "cross_entropy", "nll_loss", "kl_div",
    "multi_margin_loss", "hinge_embedding_loss", "hinge_loss", "soft_margin_loss",
    "margin_ranking_loss", "one_hot",
    # layers
    "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d", "unfold", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d",
    "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "adaptive_avg_pool3d", "flatten", "unflatten", "pad", "interpolate",
    "dropout", "dropout1d", "dropout2d", "dropout3d", "batch_norm", "instance_norm",
    "layer_norm", "group_norm", "rms_norm", "normalize", "cosine_similarity", "embedding",
    "scaled_dot_product_attention", "additive_attention",
]


# =================================================================================================
# plumbing
# =================================================================================================
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


def _legacy_reduction(size_average, reduce, reduction: str) -> str:
    """torch's deprecated size_average/reduce arguments, mapped to `reduction`."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return ("mean" if size_average else "sum") if reduce else "none"


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


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


# =================================================================================================
# activations
# =================================================================================================
@_public
def heaviside(input, values=1.0):
    """Heaviside step: 0 for x < 0, `values` at 0, 1 for x > 0 (torch.heaviside; graphc's
    default values=1 is the lectures' `y = 1 if x >= 0`). Gradient 0 everywhere."""
    x = _float(input)
    v = _like(x, values)
    return _where(x > 0, _const(1, x), _where(x == 0, v, _const(0, x)))


@_public
def step(input, threshold=0.0):
    """The McCulloch-Pitts / perceptron step: 1 where x >= threshold, else 0. Gradient 0."""
    x = _float(input)
    return _where(x >= threshold, _const(1, x), _const(0, x))


@_public
def threshold(input, threshold, value, inplace=False):
    """torch's F.threshold: x where x > threshold, else `value`."""
    x = lift(input)
    return _where(x > threshold, x, value)


@_public
def relu(input, inplace=False):
    """max(x, 0), built as where(x <= 0, 0, x): relu'(0) = 0 (B.11) and nan propagates."""
    x = lift(input)
    return _where(x <= 0, 0, x)


@_public
def relu6(input, inplace=False):
    """min(max(x, 0), 6) = hardtanh(x, 0, 6); gradient 0 at 0 and 6."""
    return hardtanh(lift(input), 0.0, 6.0)


@_public
def leaky_relu(input, negative_slope=0.01, inplace=False):
    """x for x > 0, negative_slope * x otherwise (the slope's gradient at 0, as torch)."""
    x = lift(input)
    return _where(x > 0, x, x * negative_slope)


@_public
def prelu(input, weight):
    """Leaky ReLU with a learned slope `weight` of shape (1,) or (C,), C = input.shape[1]
    (for 1-d input: one slope). Differentiable in both input and weight."""
    x, w = lift(input), lift(weight)
    if x.node.dtype.is_float:
        w = T.cast(w, x.node.dtype)
    if w.ndim > 1:
        raise _shape_err(f"prelu weight must be 1-d, got {w.shape}")
    if w.ndim == 1 and w.shape[0] != 1:
        if x.ndim < 2 or x.shape[1] != w.shape[0]:
            raise _shape_err(f"prelu: {w.shape[0]} slopes for input of shape {x.shape} "
                             f"(channel dim 1)")
        w = w.reshape((w.shape[0],) + (1,) * (x.ndim - 2))
    elif w.ndim == 1 and x.ndim == 0:
        w = w.reshape(())
    return _where(x > 0, x, w * x)


@_public
def elu(input, alpha=1.0, inplace=False):
    """x for x > 0, alpha*(exp(x) - 1) otherwise (the piecewise form, 2.8; expm1 accurate)."""
    x = _float(input)
    pos = x > 0
    return _where(pos, x, alpha * _expm1_neg(_where(pos, 0, x)))


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


@_public
def selu(input, inplace=False):
    """scale * elu(x, alpha) with the self-normalising constants (Klambauer et al. 2017)."""
    return _SELU_SCALE * elu(_float(input), _SELU_ALPHA)


@_public
def celu(input, alpha=1.0, inplace=False):
    """max(0, x) + min(0, alpha*(exp(x/alpha) - 1))."""
    x = _float(input)
    pos = x > 0
    return _where(pos, x, alpha * _expm1_neg(_where(pos, 0, x) / alpha))


# ---- erf: Cephes ndtr.c (Stephen L. Moshier), rational approximations ------------------------
_ERF_T = (9.60497373987051638749E0, 9.00260197203842689217E1, 2.23200534594684319226E3,
          7.00332514112805075473E3, 5.55923013010394962768E4)
_ERF_U = (1.0, 3.35617141647503099647E1, 5.21357949780152679795E2, 4.59432382970980127987E3,
          2.26290000613890934246E4, 4.92673942608635921086E4)
_ERFC_P = (2.46196981473530512524E-10, 5.64189564831068821977E-1, 7.46321056442269912687E0,
           4.86371970985681366614E1, 1.96520832956077098242E2, 5.26445194995477358631E2,
           9.34528527171957607540E2, 1.02755188689515710272E3, 5.57535335369399327526E2)
_ERFC_Q = (1.0, 1.32281951154744992508E1, 8.67072140885989742329E1, 3.54937778887819891062E2,
           9.75708501743205489753E2, 1.82390916687909736289E3, 2.24633760818710981792E3,
           1.65666309194161350182E3, 5.57535340817727675546E2)
_ERFC_R = (5.64189583547755073984E-1, 1.27536670759978104416E0, 5.01905042251180477414E0,
           6.16021097993053585195E0, 7.40974269950448939160E0, 2.97886665372100240670E0)
_ERFC_S = (1.0, 2.26052863220117276590E0, 9.39603524938001434673E0, 1.20489539808096656605E1,
           1.70814450747565897222E1, 9.60896809063285878198E0, 3.36907645100081516050E0)


def _poly(x: Tensor, coeffs) -> Tensor:
    """Horner: coeffs[0] x^n + ... + coeffs[n]."""
    acc = None
    for c in coeffs:
        acc = _const(c, x) if acc is None else acc * x + c
    return acc


def _erf_small(x: Tensor) -> Tensor:
    """erf(x) for |x| <= 1 (callers pass a guarded x)."""
    z = x * x
    return x * _poly(z, _ERF_T) / _poly(z, _ERF_U)


def _erfc_large(a: Tensor) -> Tensor:
    """erfc(a) for a >= 1 (callers pass a guarded a; a is clipped to 27, where erfc underflows)."""
    a = _where(a > 27, 27, a)
    mid = a < 8
    am, al = _where(mid, a, 8), _where(mid, 8, a)
    ratio = _where(mid, _poly(am, _ERFC_P) / _poly(am, _ERFC_Q), _poly(al, _ERFC_R) / _poly(al, _ERFC_S))
    return _exp(-(a * a)) * ratio


@_public
def erf(input):
    """The error function, composed from primitives (Cephes' rational approximations:
    |x| < 1: x T(x^2)/U(x^2); otherwise 1 - exp(-x^2) P(|x|)/Q(|x|)). Float64 error ~1e-16."""
    x = _float(input)
    small = _abs(x) < 1
    xs = _where(small, x, 0)
    a = _where(small, 1, _abs(x))
    big = T.unary(Op.SIGN, x) * (1 - _erfc_large(a))
    return _where(small, _erf_small(xs), big)


@_public
def erfc(input):
    """1 - erf(x), accurate in the right tail (no cancellation for large x)."""
    x = _float(input)
    small = _abs(x) < 1
    xs = _where(small, x, 0)
    a = _where(small, 1, _abs(x))
    tail = _erfc_large(a)
    return _where(small, 1 - _erf_small(xs), _where(x > 0, tail, 2 - tail))


@_public
def gelu(input, approximate="none"):
    """x * Phi(x), Phi the standard normal CDF. approximate="none" (torch's default) uses
    graphc's composed erfc (Phi(x) = erfc(-x/sqrt 2)/2, accurate in both tails);
    approximate="tanh" is 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    x = _float(input)
    if approximate == "tanh":
        return 0.5 * x * (1 + _tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * (x * x * x))))
    if approximate != "none":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return x * (0.5 * erfc(x * (-1 / math.sqrt(2))))


@_public
def sigmoid(input):
    """1/(1 + exp(-x)), evaluated as where(x >= 0, 1/(1+e), e/(1+e)) with e = exp(-|x|):
    no overflow, full relative precision in both tails, sigmoid'(0) = 1/4."""
    x = _float(input)
    pos = x >= 0
    e = _exp(_where(pos, -x, x))
    r = 1 / (1 + e)
    return _where(pos, r, e * r)


@_public
def tanh(input):
    return _tanh(_float(input))


@_public
def logsigmoid(input):
    """log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|))."""
    x = _float(input)
    return gnp.minimum(x, 0) - _log1p(_exp(-_abs(x)))


@_public
def softplus(input, beta=1.0, threshold=20.0):
    """(1/beta) log(1 + exp(beta x)), linear (= x) where beta x > threshold, as torch.
    Stable form max(z, 0) + log1p(exp(-|z|)); softplus'(0) = 1/2."""
    x = _float(input)
    z = x * beta
    sp = (gnp.maximum(z, 0) + _log1p(_exp(-_abs(z)))) / beta
    return _where(z > threshold, x, sp)


@_public
def silu(input, inplace=False):
    """x * sigmoid(x) (SiLU / swish)."""
    x = _float(input)
    return x * sigmoid(x)


swish = silu


@_public
def mish(input, inplace=False):
    """x * tanh(softplus(x))."""
    x = _float(input)
    return x * _tanh(softplus(x))


@_public
def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    """clamp(x, min_val, max_val); gradient 1 strictly inside, 0 at and beyond the corners."""
    x = lift(input)
    return _where(x <= min_val, min_val, _where(x >= max_val, max_val, x))


@_public
def hardsigmoid(input, inplace=False):
    """relu6(x + 3) / 6."""
    return relu6(lift(input) + 3) / 6


@_public
def hardswish(input, inplace=False):
    """x * relu6(x + 3) / 6."""
    x = lift(input)
    return x * relu6(x + 3) / 6


@_public
def softsign(input):
    """x / (1 + |x|)."""
    x = _float(input)
    return x / (1 + _abs(x))


@_public
def tanhshrink(input):
    x = _float(input)
    return x - _tanh(x)


@_public
def glu(input, dim=-1):
    """Gated linear unit: a * sigmoid(b), a and b the halves of `input` along dim."""
    x = _float(input)
    d = _axis(dim, x.ndim)
    n = x.shape[d]
    if n % 2:
        raise _shape_err(f"glu: dimension {d} has odd size {n}")
    a = x[(slice(None),) * d + (slice(0, n // 2),)]
    b = x[(slice(None),) * d + (slice(n // 2, n),)]
    return a * sigmoid(b)


@_public
def maxout(input, pieces, dim=1):
    """Maxout (Goodfellow et al. 2013; lectures 2.10): split `dim` (size C, default the channel
    dim 1) into C/pieces groups of `pieces` consecutive units and keep each group's maximum.
    `maxout(linear(x, W, b), k)` with W of shape (k*out, in) is max_j(w_j^T x + b_j).
    Ties share the gradient evenly (reduce-max)."""
    x = lift(input)
    d = _axis(dim, x.ndim)
    n = x.shape[d]
    if pieces < 1 or n % pieces:
        raise _shape_err(f"maxout: size {n} of dim {d} is not a multiple of pieces={pieces}")
    y = x.reshape(x.shape[:d] + (n // pieces, pieces) + x.shape[d + 1:])
    return y.max(d + 1)


def _softmax_dim(dim, x: Tensor) -> int:
    if dim is None:
        if x.ndim >= 3:
            raise GraphcError("softmax/log_softmax need an explicit dim for inputs of rank >= 3",
                              stage="trace", hint="pass dim=-1 (the class axis), as B.9 asks")
        return max(x.ndim - 1, 0)  # torch's implicit choice for rank <= 2
    return _axis(dim, x.ndim)


def _shifted(x: Tensor, d: int) -> Tensor:
    if x.ndim == 0:
        return x - x
    return x - x.max(d, keepdims=True)


@_public
def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """exp(x - max) / sum(exp(x - max)) along dim (never overflows). dim=None is allowed for
    rank <= 2 (the last axis, torch's implicit choice there) and an error otherwise."""
    x = _float(input) if dtype is None else T.cast(lift(input), DType.of(np.dtype(dtype)))
    d = _softmax_dim(dim, x)
    e = _exp(_shifted(x, d))
    if x.ndim == 0:
        return e
    return e / e.sum(d, keepdims=True)


@_public
def softmin(input, dim=None, _stacklevel=3, dtype=None):
    """softmax(-x, dim)."""
    x = _float(input) if dtype is None else T.cast(lift(input), DType.of(np.dtype(dtype)))
    return softmax(-x, dim)


@_public
def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """x - max - log(sum(exp(x - max))) along dim."""
    x = _float(input) if dtype is None else T.cast(lift(input), DType.of(np.dtype(dtype)))
    d = _softmax_dim(dim, x)
    z = _shifted(x, d)
    if x.ndim == 0:
        return z
    return z - _log(_exp(z).sum(d, keepdims=True))


@_public
def logsumexp(input, dim, keepdim=False):
    """log(sum(exp(x))) over dim(s), as torch.logsumexp: shifted by the maximum (replaced by 0
    where it is infinite, so all -inf gives -inf and +inf gives +inf)."""
    x = _float(input)
    axes = normalize_axes(dim, x.ndim)
    if not axes:
        return x
    m = x.max(axes, keepdims=True)
    m = _where(_abs(m) == np.inf, 0, m)
    out = _log(_exp(x - m).sum(axes, keepdims=True)) + m
    if not keepdim:
        out = out.reshape(tuple(s for i, s in enumerate(x.shape) if i not in axes))
    return out


# =================================================================================================
# losses
# =================================================================================================
def _pair_float(input, target):
    x, y = lift(input), lift(target)
    dt = T.result_dtype(x, y)
    if not dt.is_float:
        dt = DType.float64
    return T.cast(x, dt), T.cast(y, dt)


@_public
def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """(input - target)^2, reduced (mean over all elements by default; B.2)."""
    x, y = _pair_float(input, target)
    d = x - y
    loss = d * d
    if weight is not None:
        loss = loss * _like(loss, weight)
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction))


@_public
def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """|input - target|, reduced; the gradient at 0 is sign(0) = 0."""
    x, y = _pair_float(input, target)
    loss = _abs(x - y)
    if weight is not None:
        loss = loss * _like(loss, weight)
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction))


@_public
def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (beta = 0: L1)."""
    x, y = _pair_float(input, target)
    d = _abs(x - y)
    if beta == 0:
        loss = d
    else:
        loss = _where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction))


@_public
def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta)."""
    x, y = _pair_float(input, target)
    d = _abs(x - y)
    loss = _where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta))
    if weight is not None:
        loss = loss * _like(loss, weight)
    return _reduce(loss, reduction)


def _clamped_log(p: Tensor) -> Tensor:
    """max(log p, -100) with a finite gradient at p = 0 (torch's BCE clamp)."""
    pos = p > 0
    return _where(pos, gnp.maximum(_log(_where(pos, p, 1)), -100), -100)


@_public
def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean"):
    """-w [y log p + (1 - y) log(1 - p)] on probabilities p, logs clamped at -100 (as torch,
    so p = 0 or 1 gives a finite loss and gradient)."""
    p, y = _pair_float(input, target)
    loss = -(y * _clamped_log(p) + (1 - y) * _clamped_log(1 - p))
    if weight is not None:
        loss = loss * _like(loss, weight)
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction))


@_public
def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """BCE on logits z: -[pos_weight y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))], computed as
    (1 - y) softplus(z) + pos_weight y softplus(-z) with softplus(+-z) = max(+-z, 0) +
    log1p(exp(-|z|)): every term is >= 0, so nothing cancels and nothing overflows."""
    z, y = _pair_float(input, target)
    l = _log1p(_exp(-_abs(z)))
    pos_term = gnp.maximum(-z, 0) + l          # -log sigmoid(z)
    if pos_weight is not None:
        pos_term = pos_term * _like(z, pos_weight)
    loss = (1 - y) * (gnp.maximum(z, 0) + l) + y * pos_term
    if weight is not None:
        loss = loss * _like(loss, weight)
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction))


def _class_dim(x: Tensor) -> int:
    return 1 if x.ndim >= 2 else 0


def _one_hot_mask(target, num_classes: int, class_dim: int, like: Tensor) -> Tensor:
    """Float mask of like's dtype, one at each target's class: target (N, d1..) -> (N, C, d1..)
    for class_dim 1 (or (..., C) for class_dim = target.ndim): the labels compared against an
    arange constant (graphc has no gather)."""
    t = lift(target)
    shape = list(t.shape)
    shape.insert(class_dim, 1)
    t = t.reshape(tuple(shape))
    classes = np.arange(num_classes, dtype=t.dtype).reshape(
        (num_classes,) + (1,) * (len(shape) - class_dim - 1))
    return T.cast(t == lift(classes), like.node.dtype)


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


def _nll(logp: Tensor, target, weight, ignore_index, reduction: str) -> Tensor:
    cd = _class_dim(logp)
    C = logp.shape[cd]
    t = _check_labels(target, C, ignore_index)
    expect = logp.shape[:cd] + logp.shape[cd + 1:]
    if tuple(np.shape(t) if not isinstance(t, Tensor) else t.shape) != expect:
        raise _shape_err(f"target of shape {np.shape(t) if not isinstance(t, Tensor) else t.shape} "
                         f"for input of shape {logp.shape}: expected {expect}")
    mask = _one_hot_mask(t, C, cd, logp)
    if isinstance(t, Tensor):
        valid = T.cast(t != ignore_index, logp.node.dtype)
        all_valid = False
    else:
        v = t != ignore_index
        all_valid = bool(np.all(v))
        valid = _const(v, logp)
    picked = (logp * mask).sum(cd)  # logp[n, y_n]
    if weight is not None:
        wb = _like(logp, weight).reshape((C,) + (1,) * (logp.ndim - cd - 1))
        w_n = (mask * wb).sum(cd)  # weight[y_n] (0 for ignored labels outside [0, C))
        w_n = w_n if all_valid else w_n * valid
    else:
        w_n = None if all_valid else valid
    loss = -picked if w_n is None else -(picked * w_n)
    if reduction == "mean":
        if w_n is None:
            return loss.mean()
        return loss.sum() / w_n.sum()
    return _reduce(loss, reduction)


@_public
def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """Negative log-likelihood on log-probabilities `input` (N, C) / (N, C, d1, ...) / (C,)
    with integer class targets (N) / (N, d1, ...) / (): -weight[y] * input[n, y]; 'mean'
    divides by the sum of the targets' weights; targets equal to ignore_index count nothing."""
    x = _float(input)
    return _nll(x, target, weight, ignore_index, _legacy_reduction(size_average, reduce, reduction))


@_public
def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Cross-entropy on unnormalised logits (class dim 1, or 0 for a 1-d input), as torch:

    * integer targets (class indices, numpy or traced; shape = input's without the class dim):
      log_softmax then nll_loss (with weight, ignore_index, label_smoothing as torch);
    * float targets of the input's shape: class probabilities (soft labels, mixup):
      -sum_c weight_c y_c log_softmax(x)_c, 'mean' over the N*d1*... positions.
    """
    x = _float(input)
    reduction = _legacy_reduction(size_average, reduce, reduction)
    cd = _class_dim(x)
    C = x.shape[cd]
    logp = log_softmax(x, cd)
    eps = label_smoothing
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {eps}")
    t_is_float = (target.node.dtype.is_float if isinstance(target, Tensor)
                  else np.asarray(target).dtype.kind == "f")
    if t_is_float:
        y = _like(x, target)
        if y.shape != x.shape:
            raise _shape_err(f"probability targets must have the input's shape {x.shape}, got {y.shape}")
        if eps > 0:
            y = y * (1 - eps) + eps / C
        terms = logp * y
        if weight is not None:
            terms = terms * _like(x, weight).reshape((C,) + (1,) * (x.ndim - cd - 1))
        loss = -terms.sum(cd)
        if reduction == "mean":
            return loss.sum() / (x.size // C)
        return _reduce(loss, reduction)
    nll = _nll(logp, target, weight, ignore_index, reduction)
    if eps == 0:
        return nll
    t = _check_labels(target, C, ignore_index)
    terms = logp if weight is None else logp * _like(x, weight).reshape((C,) + (1,) * (x.ndim - cd - 1))
    smooth = -terms.sum(cd)
    if isinstance(t, Tensor):
        valid = T.cast(t != ignore_index, x.node.dtype)
    else:
        valid = _const(t != ignore_index, x)
    smooth = smooth * valid
    if reduction == "mean":
        if weight is not None:
            mask = _one_hot_mask(t, C, cd, x)
            wb = _like(x, weight).reshape((C,) + (1,) * (x.ndim - cd - 1))
            denom = ((mask * wb).sum(cd) * valid).sum()
        else:
            denom = valid.sum()
        smooth = smooth.sum() / denom
    else:
        smooth = _reduce(smooth, reduction)
    return (1 - eps) * nll + smooth * (eps / C)


@_public
def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """KL divergence with `input` = log-probabilities, as torch: target * (log target - input)
    (0 where target = 0); reduction 'batchmean' divides the sum by input.shape[0] (the true
    per-example KL), 'mean' averages over all elements (torch's default, with its warning)."""
    x, t = _pair_float(input, target)
    if log_target:
        loss = _exp(t) * (t - x)
    else:
        pos = t > 0
        loss = _where(pos, t * _log(_where(pos, t, 1)), 0) - t * x
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if reduction == "batchmean":
        return loss.sum() / (x.shape[0] if x.ndim else 1)
    return _reduce(loss, reduction)


@_public
def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, size_average=None,
                      reduce=None, reduction="mean"):
    """Multi-class hinge (torch's multi_margin_loss, the Crammer-Singer-style SVM loss summed
    over wrong classes): loss_n = sum_{i != y} w_y max(0, margin - x[y] + x[i])^p / C,
    p in {1, 2}; input (N, C) or (C,), integer targets (N,) or ()."""
    if p not in (1, 2):
        raise ValueError("multi_margin_loss: only p = 1 and p = 2 are supported (as torch)")
    x = _float(input)
    cd = x.ndim - 1
    if x.ndim not in (1, 2):
        raise _shape_err(f"multi_margin_loss: input must be (N, C) or (C,), got {x.shape}")
    C = x.shape[cd]
    t = _check_labels(target, C)
    mask = _one_hot_mask(t, C, cd, x)
    xy = (x * mask).sum(cd, keepdims=True)
    h = relu(margin - xy + x)
    if p == 2:
        h = h * h
    if weight is not None:
        h = h * (mask * _like(x, weight)).sum(cd, keepdims=True)
    loss = (h * (1 - mask)).sum(cd) / C
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction))


@_public
def hinge_embedding_loss(input, target, margin=1.0, size_average=None, reduce=None,
                         reduction="mean"):
    """torch's hinge_embedding_loss, for distances x and labels y in {1, -1}:
    x where y == 1, max(0, margin - x) where y == -1."""
    x, y = _pair_float(input, target)
    loss = _where(y != 1, relu(margin - x), 0) + _where(y != -1, x, 0)
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction))


@_public
def hinge_loss(input, target, margin=1.0, reduction="mean"):
    """The binary SVM hinge (not a torch function; lectures Appendix A): max(0, margin - y s)
    for scores s and labels y in {-1, +1}; gradient 0 at the kink."""
    s, y = _pair_float(input, target)
    return _reduce(relu(margin - y * s), reduction)


@_public
def soft_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """log(1 + exp(-y x)) for y in {-1, +1} (the logistic loss), stable."""
    x, y = _pair_float(input, target)
    return _reduce(softplus(-y * x, 1.0, np.inf), _legacy_reduction(size_average, reduce, reduction))


@_public
def margin_ranking_loss(input1, input2, target, margin=0.0, size_average=None, reduce=None,
                        reduction="mean"):
    """max(0, -y (x1 - x2) + margin)."""
    x1, x2 = _pair_float(input1, input2)
    y = _like(x1, target)
    return _reduce(relu(-y * (x1 - x2) + margin), _legacy_reduction(size_average, reduce, reduction))


@_public
def one_hot(tensor, num_classes=-1):
    """int64 one-hot encoding with a trailing class axis, as torch. num_classes=-1 infers
    max+1, which needs concrete labels (traced labels need an explicit num_classes)."""
    if num_classes is None or num_classes < 0:
        if isinstance(tensor, Tensor):
            raise GraphcError("one_hot of traced labels needs num_classes", stage="trace")
        arr = np.asarray(tensor)
        num_classes = int(arr.max()) + 1 if arr.size else 0
    t = lift(tensor)
    if not t.node.dtype.is_int:
        raise GraphcError(f"one_hot needs integer labels, got {t.node.type}", stage="trace")
    if not isinstance(tensor, Tensor):
        _check_labels(tensor, num_classes)
    shape = t.shape + (1,)
    classes = lift(np.arange(num_classes, dtype=t.dtype))
    return T.cast(t.reshape(shape) == classes, DType.int64)


# =================================================================================================
# layers: linear, convolution, pooling
# =================================================================================================
@_public
def linear(input, weight, bias=None):
    """x @ W.T + b, W of shape (out, in) (B.1); x of shape (..., in)."""
    x, w = lift(input), lift(weight)
    if w.ndim == 1:
        y = T.matmul(x, w)
    else:
        y = T.matmul(x, w.T)
    if bias is not None:
        y = y + _like(y, bias)
    return y


def _conv_pads(padding, n, kernel, dilation, stride):
    if isinstance(padding, str):
        if padding == "valid":
            return [(0, 0)] * n
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError("padding='same' is not supported for strided convolutions "
                                 "(as in torch)")
            tot = [d * (k - 1) for k, d in zip(kernel, dilation)]
            return [(t // 2, t - t // 2) for t in tot]
        raise ValueError(f"padding must be 'valid', 'same', an int or a tuple, got {padding!r}")
    return [(p, p) for p in _ntuple(padding, n, "padding")]


def _windows(xp: Tensor, kernel, stride, dilation, out, lead: int, flip: bool = False):
    """One strided slice of xp (..., *spatial) per kernel offset (row-major over the kernel),
    each of shape (..., *out): window element `offset` of every output position.
    flip=True pairs kernel index j with offset k-1-j (a flipped kernel)."""
    res = []
    for offs in itertools.product(*(range(k) for k in kernel)):
        idx = [slice(None)] * lead
        for o, k, d, s, n in zip(offs, kernel, dilation, stride, out):
            o = k - 1 - o if flip else o
            idx.append(slice(o * d, o * d + s * (n - 1) + 1, s))
        res.append(xp[tuple(idx)])
    return res


def _conv_core(x: Tensor, w: Tensor, b, stride, pads, dilation, groups: int, nd: int,
               flip: bool = False) -> Tensor:
    """Batched convolution (cross-correlation), x (N, C, *S), w (O, C/groups, *K):
    pad, take the prod(K) kernel-offset windows of the padded input, concatenate them along
    the channel axis into an im2col matrix (N, [G,] K*Cg, L) and contract it with the
    weight reshaped to (O, K*Cg) in one matmul."""
    N, C = x.shape[:2]
    O, Cg = w.shape[:2]
    K = w.shape[2:]
    spatial = x.shape[2:]
    if C != Cg * groups or O % groups:
        raise _shape_err(f"conv: input with {C} channels, weight of shape {w.shape} and "
                         f"groups={groups} do not fit (need C == weight.shape[1] * groups and "
                         f"out channels divisible by groups)")
    out = []
    for i, k, (lo, hi), d, s in zip(spatial, K, pads, dilation, stride):
        o = (i + lo + hi - d * (k - 1) - 1) // s + 1
        if o <= 0:
            raise _shape_err(f"conv: input {x.shape} is too small for kernel {K} with padding "
                             f"{pads}, dilation {dilation}")
        out.append(o)
    if any(lo or hi for lo, hi in pads):
        x = gnp.pad(x, [(0, 0), (0, 0)] + [tuple(p) for p in pads])
    G, Og = groups, O // groups
    L = int(np.prod(out))
    Kn = int(np.prod(K))
    if G > 1:
        x = x.reshape((N, G, Cg) + x.shape[2:])
    lead = x.ndim - nd
    wins = _windows(x, K, stride, dilation, out, lead, flip)
    cols = gnp.concatenate(wins, axis=lead - 1) if len(wins) > 1 else wins[0]
    cols = cols.reshape(cols.shape[:lead - 1] + (Kn * Cg, L))
    wm = w.reshape((G, Og, Cg, Kn)).transpose(0, 1, 3, 2).reshape((G, Og, Kn * Cg))
    if G == 1:
        wm = wm.reshape((Og, Kn * Cg))
    y = T.matmul(wm, cols).reshape((N, O) + tuple(out))
    if b is not None:
        y = y + _like(y, b).reshape((O,) + (1,) * nd)
    return y


def _conv(nd, input, weight, bias, stride, padding, dilation, groups):
    x, w = lift(input), lift(weight)
    dt = T.result_dtype(x, w)
    x, w = T.cast(x, dt), T.cast(w, dt)
    if w.ndim != nd + 2:
        raise _shape_err(f"conv{nd}d weight must have rank {nd + 2} (out, in/groups, *kernel), "
                         f"got {w.shape}")
    unbatched = x.ndim == nd + 1
    if unbatched:
        x = x.reshape((1,) + x.shape)
    if x.ndim != nd + 2:
        raise _shape_err(f"conv{nd}d input must have rank {nd + 2} (N, C, *spatial) or {nd + 1}, "
                         f"got {x.shape}")
    s = _ntuple(stride, nd, "stride")
    d = _ntuple(dilation, nd, "dilation")
    pads = _conv_pads(padding, nd, w.shape[2:], d, s)
    y = _conv_core(x, w, bias, s, pads, d, int(groups), nd)
    return y.reshape(y.shape[1:]) if unbatched else y


@_public
def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-d cross-correlation: input (N, C, L) or (C, L), weight (O, C/groups, k)."""
    return _conv(1, input, weight, bias, stride, padding, dilation, groups)


@_public
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-d cross-correlation (no kernel flip, B.3): input (N, C, H, W) or (C, H, W), weight
    (O, C/groups, kH, kW), bias (O,). padding: int, pair, 'valid' or 'same' (stride 1 only;
    pads d(k-1) in total, the odd one on the right/bottom). Output size
    floor((i + 2p - d(k-1) - 1)/s) + 1. Built as im2col + one matmul."""
    return _conv(2, input, weight, bias, stride, padding, dilation, groups)


@_public
def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """3-d cross-correlation: input (N, C, D, H, W), weight (O, C/groups, kD, kH, kW)."""
    return _conv(3, input, weight, bias, stride, padding, dilation, groups)


def _dilate(x: Tensor, axis: int, s: int) -> Tensor:
    """Insert s-1 zeros between neighbours along axis (length n -> (n-1)s + 1)."""
    if s == 1:
        return x
    n = x.shape[axis]
    sh = x.shape
    y = x.reshape(sh[:axis + 1] + (1,) + sh[axis + 1:])
    y = gnp.pad(y, [(0, s - 1) if i == axis + 1 else (0, 0) for i in range(y.ndim)])
    y = y.reshape(sh[:axis] + (n * s,) + sh[axis + 1:])
    return y[(slice(None),) * axis + (slice(0, (n - 1) * s + 1),)]


def _conv_transpose(nd, input, weight, bias, stride, padding, output_padding, groups, dilation):
    x, w = lift(input), lift(weight)
    dt = T.result_dtype(x, w)
    x, w = T.cast(x, dt), T.cast(w, dt)
    if w.ndim != nd + 2:
        raise _shape_err(f"conv_transpose{nd}d weight must have rank {nd + 2} "
                         f"(in, out/groups, *kernel), got {w.shape}")
    unbatched = x.ndim == nd + 1
    if unbatched:
        x = x.reshape((1,) + x.shape)
    if x.ndim != nd + 2:
        raise _shape_err(f"conv_transpose{nd}d input must have rank {nd + 2}, got {x.shape}")
    s = _ntuple(stride, nd, "stride")
    p = _ntuple(padding, nd, "padding")
    op = _ntuple(output_padding, nd, "output_padding")
    d = _ntuple(dilation, nd, "dilation")
    G = int(groups)
    Cin, Coutg = w.shape[:2]
    K = w.shape[2:]
    if x.shape[1] != Cin or Cin % G:
        raise _shape_err(f"conv_transpose: input with {x.shape[1]} channels for weight {w.shape}")
    for a in range(nd):
        if op[a] >= max(s[a], d[a]):
            raise ValueError("output_padding must be smaller than stride or dilation (as torch)")
    # the equivalent convolution: input dilated by the stride, padded by d(k-1) - p (+ output
    # padding on the right), kernel flipped, in/out channels swapped (per group)
    for a in range(nd):
        x = _dilate(x, 2 + a, s[a])
    pads = []
    for a in range(nd):
        lo = d[a] * (K[a] - 1) - p[a]
        hi = lo + op[a]
        if lo < 0 or hi < 0:  # crop where the padding exceeds the kernel reach
            n = x.shape[2 + a]
            x = x[(slice(None),) * (2 + a) + (slice(max(-lo, 0), n - max(-hi, 0)),)]
        pads.append((max(lo, 0), max(hi, 0)))
    wt = w.reshape((G, Cin // G, Coutg) + K)
    wt = wt.transpose((0, 2, 1) + tuple(range(3, 3 + nd))).reshape((G * Coutg, Cin // G) + K)
    y = _conv_core(x, wt, bias, (1,) * nd, pads, d, G, nd, flip=True)
    return y.reshape(y.shape[1:]) if unbatched else y


@_public
def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Transposed 1-d convolution (the VJP of conv1d w.r.t. its input): weight (C_in, C_out/groups, k),
    output length (i-1)s - 2p + d(k-1) + output_padding + 1."""
    return _conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups, dilation)


@_public
def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Transposed 2-d convolution ("deconvolution"): weight (C_in, C_out/groups, kH, kW); built
    as the stride-dilated input convolved with the flipped kernel."""
    return _conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups, dilation)


@_public
def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    return _conv_transpose(3, input, weight, bias, stride, padding, output_padding, groups, dilation)


@_public
def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """im2col, as torch's F.unfold: (N, C, H, W) -> (N, C*kH*kW, L), column layout C-major."""
    x = lift(input)
    if x.ndim != 4:
        raise _shape_err(f"unfold needs a 4-d input (N, C, H, W), got {x.shape}")
    K = _ntuple(kernel_size, 2, "kernel_size")
    d, s = _ntuple(dilation, 2, "dilation"), _ntuple(stride, 2, "stride")
    p = _ntuple(padding, 2, "padding")
    N, C, H, W = x.shape
    out = [(i + 2 * pp - dd * (k - 1) - 1) // ss + 1 for i, pp, dd, k, ss in zip((H, W), p, d, K, s)]
    if any(o <= 0 for o in out):
        raise _shape_err(f"unfold: input {x.shape} too small for kernel {K}")
    if any(p):
        x = gnp.pad(x, [(0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])])
    wins = _windows(x, K, s, d, out, 2)
    cols = gnp.stack(wins, axis=2) if len(wins) > 1 else wins[0].reshape((N, C, 1) + tuple(out))
    return cols.reshape((N, C * K[0] * K[1], out[0] * out[1]))


def _pool_setup(nd, x: Tensor, kernel_size, stride, padding, dilation, ceil_mode, name):
    unbatched = x.ndim == nd + 1
    if x.ndim not in (nd + 1, nd + 2):
        raise _shape_err(f"{name}: input must have rank {nd + 1} or {nd + 2}, got {x.shape}")
    K = _ntuple(kernel_size, nd, "kernel_size")
    empty = isinstance(stride, (tuple, list)) and len(stride) == 0   # torch: [] means default
    s = K if stride is None or empty else _ntuple(stride, nd, "stride")
    p = _ntuple(padding, nd, "padding")
    d = _ntuple(dilation, nd, "dilation")
    spatial = x.shape[-nd:]
    out, pads = [], []
    for i, k, ss, pp, dd in zip(spatial, K, s, p, d):
        if pp > (dd * (k - 1) + 1) // 2:
            raise ValueError(f"{name}: padding {pp} must be at most half of the effective kernel "
                             f"size {dd * (k - 1) + 1} (as torch)")
        span = i + 2 * pp - dd * (k - 1) - 1
        if span < 0:
            raise _shape_err(f"{name}: input {x.shape} is too small for kernel {K}")
        o = (-(-span // ss) if ceil_mode else span // ss) + 1
        if ceil_mode and (o - 1) * ss >= i + pp:
            o -= 1
        extra = max(0, (o - 1) * ss + dd * (k - 1) + 1 - (i + 2 * pp))
        out.append(o)
        pads.append((pp, pp + extra))
    return unbatched, K, s, p, d, out, pads


@_public
def _max_pool(nd, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, name):
    x = lift(input)
    unbatched, K, s, p, d, out, pads = _pool_setup(nd, x, kernel_size, stride, padding, dilation,
                                                   ceil_mode, name)
    lead = x.ndim - nd
    fill = -np.inf if x.node.dtype.is_float else float(np.iinfo(x.dtype).min)
    xp = gnp.pad(x, [(0, 0)] * lead + pads, constant_values=fill) \
        if any(lo or hi for lo, hi in pads) else x
    wins = _windows(xp, K, s, d, out, lead)
    # the running maximum: a later element replaces it only if strictly greater, so the first
    # maximum in scan order wins and alone receives the gradient (as torch)
    m = wins[0]
    idx = None
    if return_indices:
        spatial = x.shape[-nd:]
        offs_list = list(itertools.product(*(range(k) for k in K)))

        def flat_index(offs):
            grids = np.meshgrid(*[np.arange(o) * ss - pp + oo * dd for o, ss, pp, oo, dd
                                  in zip(out, s, p, offs, d)], indexing="ij")
            return np.ravel_multi_index([np.clip(g, 0, n - 1) for g, n in zip(grids, spatial)],
                                        spatial).astype(np.int64)
        idx = lift(flat_index(offs_list[0]))
    for j, w in enumerate(wins[1:], start=1):
        better = w > m
        m = _where(better, w, m)
        if return_indices:
            idx = _where(better, lift(flat_index(offs_list[j])), idx)
    if return_indices:
        idx = T.broadcast_to(idx, m.shape)
        return m, idx
    return m


def _max_pool_public(nd):
    def f(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
          return_indices=False):
        return _max_pool(nd, input, kernel_size, stride, padding, dilation, ceil_mode,
                         return_indices, f"max_pool{nd}d")
    f.__name__ = f.__qualname__ = f"max_pool{nd}d"
    f.__doc__ = (f"{nd}-d max pooling, as torch: stride defaults to kernel_size, padding pads "
                 f"with -inf (at most half the kernel), dilation, ceil_mode; the gradient goes "
                 f"to the first maximum of each window. return_indices=True also returns the "
                 f"int64 flat indices into the input's spatial plane.")
    return f


max_pool1d, max_pool2d, max_pool3d = (_max_pool_public(n) for n in (1, 2, 3))


def _avg_divisor(spatial, K, s, p, out, count_include_pad):
    """torch's avg_pool divisor per output position (outer product over dims)."""
    vecs = []
    for i, k, ss, pp, o in zip(spatial, K, s, p, out):
        start = np.arange(o) * ss - pp
        end = np.minimum(start + k, i + pp)
        size = end - start
        if not count_include_pad:
            size = np.minimum(end, i) - np.maximum(start, 0)
        vecs.append(size)
    div = vecs[0]
    for v in vecs[1:]:
        div = np.multiply.outer(div, v)
    return div


@_public
def _avg_pool(nd, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override, name):
    x = _float(input)
    unbatched, K, s, p, d, out, pads = _pool_setup(nd, x, kernel_size, stride, padding, 1,
                                                   ceil_mode, name)
    lead = x.ndim - nd
    xp = gnp.pad(x, [(0, 0)] * lead + pads) if any(lo or hi for lo, hi in pads) else x
    wins = _windows(xp, K, s, d, out, lead)
    total = wins[0]
    for w in wins[1:]:
        total = total + w
    if divisor_override:
        return total / float(divisor_override)
    div = _avg_divisor(x.shape[-nd:], K, s, p, out, count_include_pad)
    if np.all(div == div.flat[0]):
        return total / float(div.flat[0])
    return total / _const(div, x)


def _avg_pool_public(nd):
    def f(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
          divisor_override=None):
        return _avg_pool(nd, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                         divisor_override, f"avg_pool{nd}d")
    f.__name__ = f.__qualname__ = f"avg_pool{nd}d"
    f.__doc__ = (f"{nd}-d average pooling, as torch: stride defaults to kernel_size, zero "
                 f"padding counted in the divisor (count_include_pad=True) or not, ceil_mode, "
                 f"divisor_override.")
    return f


avg_pool1d, avg_pool2d, avg_pool3d = (_avg_pool_public(n) for n in (1, 2, 3))


def _apply_along(x: Tensor, A: np.ndarray, axis: int) -> Tensor:
    """Contract axis `axis` of x with the constant matrix A (out, in): y[..o..] = sum_i A[o, i] x[..i..]."""
    A = _const(A, x)
    if axis == x.ndim - 1:
        return T.matmul(x, A.T)
    if axis == x.ndim - 2:
        return T.matmul(A, x)
    perm = [i for i in range(x.ndim) if i != axis] + [axis]
    y = T.matmul(x.transpose(perm), A.T)
    inv = list(np.argsort(perm))
    return y.transpose(inv)


def _adaptive_matrix(n_in: int, n_out: int) -> np.ndarray:
    A = np.zeros((n_out, n_in))
    for o in range(n_out):
        lo, hi = (o * n_in) // n_out, -((-(o + 1) * n_in) // n_out)
        A[o, lo:hi] = 1.0 / (hi - lo)
    return A


def _adaptive_avg(nd, input, output_size):
    x = _float(input)
    if x.ndim not in (nd + 1, nd + 2):
        raise _shape_err(f"adaptive_avg_pool{nd}d: input must have rank {nd + 1} or {nd + 2}")
    sizes = (output_size,) * nd if isinstance(output_size, (int, type(None))) else tuple(output_size)
    if len(sizes) != nd:
        raise ValueError(f"output_size must have {nd} entries, got {output_size}")
    for a in range(nd):
        axis = x.ndim - nd + a
        n_in = x.shape[axis]
        n_out = n_in if sizes[a] is None else int(sizes[a])
        if n_out != n_in:
            x = _apply_along(x, _adaptive_matrix(n_in, n_out), axis)
    return x


@_public
def adaptive_avg_pool1d(input, output_size):
    """Adaptive average pooling: output cell o averages input[floor(o*I/O) : ceil((o+1)*I/O)],
    as a matmul with a constant averaging matrix."""
    return _adaptive_avg(1, input, output_size)


@_public
def adaptive_avg_pool2d(input, output_size):
    """Adaptive average pooling over (H, W), one constant averaging matrix per axis
    (`adaptive_avg_pool2d(x, 1)` is global average pooling); None keeps a size."""
    return _adaptive_avg(2, input, output_size)


@_public
def adaptive_avg_pool3d(input, output_size):
    return _adaptive_avg(3, input, output_size)


@_public
def flatten(input, start_dim=1, end_dim=-1):
    """Merge dims start_dim..end_dim (default start_dim=1, as nn.Flatten; torch.flatten's is 0)."""
    x = lift(input)
    if x.ndim == 0:
        return x.reshape((1,))
    a, b = _axis(start_dim, x.ndim), _axis(end_dim, x.ndim)
    if a > b:
        raise ValueError("flatten: start_dim must not come after end_dim")
    n = int(np.prod(x.shape[a:b + 1], dtype=np.int64))
    return x.reshape(x.shape[:a] + (n,) + x.shape[b + 1:])


@_public
def unflatten(input, dim, sizes):
    x = lift(input)
    a = _axis(dim, x.ndim)
    sizes = list(sizes)
    if sizes.count(-1) == 1:
        known = int(np.prod([s for s in sizes if s != -1]))
        sizes[sizes.index(-1)] = x.shape[a] // known
    return x.reshape(x.shape[:a] + tuple(sizes) + x.shape[a + 1:])


@_public
def pad(input, pad, mode="constant", value=None):
    """torch's F.pad: `pad` = (left, right) for the last dim, then the one before, ...
    mode 'constant' (value, default 0; negative pads crop), 'reflect', 'replicate', 'circular'."""
    x = lift(input)
    pad = tuple(int(v) for v in pad)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad needs (left, right) pairs for at most {x.ndim} dims, got {pad}")
    pairs = {x.ndim - 1 - i: (pad[2 * i], pad[2 * i + 1]) for i in range(len(pad) // 2)}
    if mode == "constant":
        for a, (lo, hi) in pairs.items():
            if lo < 0 or hi < 0:
                n = x.shape[a]
                x = x[(slice(None),) * a + (slice(max(-lo, 0), n - max(-hi, 0)),)]
        widths = [(max(pairs.get(a, (0, 0))[0], 0), max(pairs.get(a, (0, 0))[1], 0))
                  for a in range(x.ndim)]
        if not any(lo or hi for lo, hi in widths):
            return x
        return gnp.pad(x, widths, constant_values=0.0 if value is None else value)
    for a, (lo, hi) in sorted(pairs.items(), reverse=True):
        if lo < 0 or hi < 0:
            raise ValueError(f"pad mode {mode!r} needs non-negative pads")
        n = x.shape[a]

        def sl(i, j):
            return x[(slice(None),) * a + (slice(i, j),)]
        if mode == "reflect":
            if lo >= n or hi >= n:
                raise ValueError(f"reflect padding {lo, hi} must be smaller than the dim {n}")
            parts = [sl(i, i + 1) for i in range(lo, 0, -1)] + [x] + \
                    [sl(n - 2 - i, n - 1 - i) for i in range(hi)]
        elif mode == "replicate":
            parts = []
            if lo:
                parts.append(T.broadcast_to(sl(0, 1), x.shape[:a] + (lo,) + x.shape[a + 1:]))
            parts.append(x)
            if hi:
                parts.append(T.broadcast_to(sl(n - 1, n), x.shape[:a] + (hi,) + x.shape[a + 1:]))
        elif mode == "circular":
            if lo > n or hi > n:
                raise ValueError(f"circular padding {lo, hi} must be at most the dim {n}")
            parts = ([sl(n - lo, n)] if lo else []) + [x] + ([sl(0, hi)] if hi else [])
        else:
            raise ValueError(f"pad mode must be constant, reflect, replicate or circular, got {mode!r}")
        x = gnp.concatenate(parts, axis=a) if len(parts) > 1 else x
    return x


def _interp_matrix(n_in, n_out, mode, align_corners, scale):
    A = np.zeros((n_out, n_in))
    o = np.arange(n_out)
    if mode in ("nearest", "nearest-exact"):
        r = (n_in / n_out) if scale is None else 1.0 / scale
        src = np.floor((o + 0.5) * r) if mode == "nearest-exact" else np.floor(o * r)
        A[o, np.minimum(src.astype(np.int64), n_in - 1)] = 1.0
        return A
    if align_corners:
        src = o * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        r = (n_in / n_out) if scale is None else 1.0 / scale
        src = np.maximum((o + 0.5) * r - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    np.add.at(A, (o, i0), 1 - lam)
    np.add.at(A, (o, i1), lam)
    return A


@_public
def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize the spatial dims of (N, C, *spatial), as torch: mode 'nearest', 'nearest-exact',
    'linear' / 'bilinear' / 'trilinear' (align_corners) or 'area' (adaptive average pooling).
    Each axis is one matmul with a constant interpolation matrix."""
    x = _float(input)
    nd = x.ndim - 2
    if nd < 1:
        raise _shape_err(f"interpolate needs (N, C, *spatial), got {x.shape}")
    spatial = x.shape[2:]
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor")
    if size is not None:
        sizes = _ntuple(size, nd, "size")
        scales = (None,) * nd
    else:
        scales = tuple(float(v) for v in (scale_factor if isinstance(scale_factor, (tuple, list))
                                          else (scale_factor,) * nd))
        sizes = tuple(int(math.floor(n * f)) for n, f in zip(spatial, scales))
        if recompute_scale_factor:
            scales = (None,) * nd
    if mode == "area":
        return _adaptive_avg(nd, x, sizes)
    linear_modes = {"linear": 1, "bilinear": 2, "trilinear": 3}
    if mode in linear_modes:
        if linear_modes[mode] != nd:
            raise ValueError(f"interpolate mode {mode!r} needs {linear_modes[mode]} spatial dims")
    elif mode not in ("nearest", "nearest-exact"):
        raise ValueError(f"interpolate mode {mode!r} is not supported")
    for a in range(nd):
        A = _interp_matrix(spatial[a], sizes[a], mode, bool(align_corners), scales[a])
        if not (A.shape[0] == A.shape[1] and np.array_equal(A, np.eye(A.shape[0]))):
            x = _apply_along(x, A, 2 + a)
    return x


# =================================================================================================
# regularisation and normalisation
# =================================================================================================
def _dropout_mask_key(key, name):
    if key is None:
        raise GraphcError(f"{name} in training mode needs a random key", stage="trace",
                          hint=f"pass key=<int or traced int scalar>, e.g. F.{name}(x, 0.5, "
                               f"training=True, key=step); the same key gives the same mask")
    return key


def _dropout_impl(x: Tensor, p, key, mask_shape, name) -> Tensor:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if p == 0:
        return x
    if p == 1:
        return gnp.zeros_like(x)
    u = gnp.random_uniform(_dropout_mask_key(key, name), mask_shape,
                           dtype=x.dtype if x.node.dtype.is_float else np.float32)
    keep = u >= p  # P(keep) = 1 - p (to the generator's 2**-24 resolution)
    return _where(keep, x * (1.0 / (1.0 - p)), 0)


def _split_key_inplace(key, inplace):
    # F.dropout(x, p, training, inplace) in torch: a bool in key's place is torch's `inplace`
    if isinstance(key, (bool, np.bool_)):
        return None
    return key


@_public
def dropout(input, p=0.5, training=True, key=None, *, inplace=False):
    """Inverted dropout (B.5): in training, each element is zeroed with probability p and the
    rest scaled by 1/(1-p), so E[y] = x; identity when training=False or p = 0; zeros when
    p = 1. The mask is `gc.random_uniform(key, x.shape) >= p`: `key` (an int or a traced
    integer scalar) makes it reproducible and identical on every backend.
    (torch's 4th positional argument is `inplace`; graphc's is the key — a bool there is
    taken as torch's inplace and ignored.)"""
    x = lift(input)
    key = _split_key_inplace(key, inplace)
    if not training:
        return x
    return _dropout_impl(x, p, key, x.shape, "dropout")


def _feature_dropout(k, input, p, training, key, name):
    x = lift(input)
    key = _split_key_inplace(key, False)
    if not training:
        return x
    if x.ndim < k + 1:
        raise _shape_err(f"{name} needs an input of rank >= {k + 1}, got {x.shape}")
    return _dropout_impl(x, p, key, x.shape[:x.ndim - k] + (1,) * k, name)


@_public
def dropout1d(input, p=0.5, training=True, key=None, *, inplace=False):
    """Channel dropout for (N, C, L) / (C, L): zeroes whole channels (mask (N, C, 1))."""
    return _feature_dropout(1, input, p, training, key, "dropout1d")


@_public
def dropout2d(input, p=0.5, training=True, key=None, *, inplace=False):
    """Spatial dropout for (N, C, H, W) / (C, H, W): zeroes whole channels (mask (N, C, 1, 1))."""
    return _feature_dropout(2, input, p, training, key, "dropout2d")


@_public
def dropout3d(input, p=0.5, training=True, key=None, *, inplace=False):
    return _feature_dropout(3, input, p, training, key, "dropout3d")


def _channel_shape(x: Tensor) -> tuple[int, ...]:
    return (x.shape[1],) + (1,) * (x.ndim - 2)


@_public
def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation over every dim but the channel dim 1 (B.10), as torch.

    Returns `y`, except in training mode with running statistics given, where it returns
    `(y, new_running_mean, new_running_var)` (graph values cannot mutate arrays):
    training normalises with the batch mean and *biased* variance; the running statistics
    update as r <- (1 - momentum) r + momentum * batch_stat with the *unbiased* variance
    (n/(n-1)). Evaluation (training=False) uses the running statistics. `momentum` may be a
    traced scalar (e.g. 1/num_batches_tracked for torch's momentum=None)."""
    x = _float(input)
    if x.ndim < 2:
        raise _shape_err(f"batch_norm needs an input of rank >= 2 (N, C, ...), got {x.shape}")
    C = x.shape[1]
    cs = _channel_shape(x)
    if training:
        axes = (0,) + tuple(range(2, x.ndim))
        n = x.size // C
        if n <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input "
                             f"size {x.shape}")
        mean = x.mean(axes, keepdims=True)
        d = x - mean
        var = (d * d).mean(axes, keepdims=True)
        inv = 1 / _sqrt(var + eps)
        scale = inv if weight is None else inv * _like(x, weight).reshape(cs)
        y = d * scale
        if bias is not None:
            y = y + _like(x, bias).reshape(cs)
        if running_mean is None and running_var is None:
            return y
        m = momentum if isinstance(momentum, Tensor) else float(momentum)
        outs = [y]
        for r, stat in ((running_mean, mean), (running_var, var * (n / (n - 1)))):
            if r is None:
                outs.append(None)
                continue
            r = lift(r)
            stat, mr = stat.reshape((C,)), m
            if r.node.dtype.is_float:  # the running statistics keep their dtype
                stat = T.cast(stat, r.node.dtype)
                mr = T.cast(m, r.node.dtype) if isinstance(m, Tensor) else m
            outs.append((1 - mr) * r + mr * stat)
        return tuple(outs)
    if running_mean is None or running_var is None:
        raise ValueError("batch_norm in evaluation mode needs running_mean and running_var "
                         "(or training=True to use the batch statistics)")
    rm = _like(x, running_mean).reshape(cs)
    rv = _like(x, running_var).reshape(cs)
    scale = 1 / _sqrt(rv + eps)
    if weight is not None:
        scale = scale * _like(x, weight).reshape(cs)
    shift = -rm * scale
    if bias is not None:
        shift = shift + _like(x, bias).reshape(cs)
    return x * scale + shift


@_public
def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    """Instance normalisation: each (n, c) over its spatial dims (biased variance). With
    use_input_stats and running stats given, returns (y, new_running_mean, new_running_var)
    (batch-averaged instance statistics, unbiased variance), like batch_norm."""
    x = _float(input)
    if x.ndim < 3:
        raise _shape_err(f"instance_norm needs (N, C, *spatial), got {x.shape}")
    cs = _channel_shape(x)
    if not use_input_stats:
        return batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps)
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axes, keepdims=True)
    d = x - mean
    var = (d * d).mean(axes, keepdims=True)
    y = d / _sqrt(var + eps)
    if weight is not None:
        y = y * _like(x, weight).reshape(cs)
    if bias is not None:
        y = y + _like(x, bias).reshape(cs)
    if running_mean is None and running_var is None:
        return y
    n = int(np.prod(x.shape[2:]))
    outs = [y]
    for r, stat in ((running_mean, mean), (running_var, var * (n / max(n - 1, 1)))):
        if r is None:
            outs.append(None)
            continue
        r = lift(r)
        outs.append((1 - momentum) * r + momentum * _like(r, stat.mean(0).reshape((x.shape[1],))))
    return tuple(outs)


@_public
def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing dims `normalized_shape` (biased variance), then
    elementwise weight and bias of that shape; the same in training and evaluation (B.10)."""
    x = _float(input)
    ns = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) \
        else tuple(int(s) for s in normalized_shape)
    k = len(ns)
    if x.shape[x.ndim - k:] != ns:
        raise _shape_err(f"layer_norm: input {x.shape} does not end in normalized_shape {ns}")
    axes = tuple(range(x.ndim - k, x.ndim))
    mean = x.mean(axes, keepdims=True)
    d = x - mean
    var = (d * d).mean(axes, keepdims=True)
    y = d * (1 / _sqrt(var + eps))
    if weight is not None:
        y = y * _like(x, weight)
    if bias is not None:
        y = y + _like(x, bias)
    return y


@_public
def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalisation: channels split into num_groups groups, each normalised with its
    spatial dims (biased variance); per-channel weight and bias."""
    x = _float(input)
    N, C = x.shape[:2]
    if C % num_groups:
        raise _shape_err(f"group_norm: {C} channels are not divisible into {num_groups} groups")
    g = x.reshape((N, num_groups, -1))
    mean = g.mean(2, keepdims=True)
    d = g - mean
    var = (d * d).mean(2, keepdims=True)
    y = (d * (1 / _sqrt(var + eps))).reshape(x.shape)
    cs = _channel_shape(x)
    if weight is not None:
        y = y * _like(x, weight).reshape(cs)
    if bias is not None:
        y = y + _like(x, bias).reshape(cs)
    return y


@_public
def rms_norm(input, normalized_shape, weight=None, eps=None):
    """x / sqrt(mean(x^2 over the trailing normalized_shape) + eps) * weight; eps defaults to
    the dtype's machine epsilon, as torch."""
    x = _float(input)
    ns = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) \
        else tuple(int(s) for s in normalized_shape)
    axes = tuple(range(x.ndim - len(ns), x.ndim))
    e = float(np.finfo(x.dtype).eps) if eps is None else eps
    y = x * (1 / _sqrt((x * x).mean(axes, keepdims=True) + e))
    if weight is not None:
        y = y * _like(x, weight)
    return y


def _norm_clamped(x: Tensor, p, dim, eps) -> Tensor:
    """max(||x||_p, eps) along dim (keepdims), with finite gradients at x = 0."""
    if p == 2:
        return _sqrt(gnp.maximum((x * x).sum(dim, keepdims=True), eps * eps))
    if p == 1:
        return gnp.maximum(_abs(x).sum(dim, keepdims=True), eps)
    if p == np.inf:
        return gnp.maximum(_abs(x).max(dim, keepdims=True), eps)
    return T.power(gnp.maximum(T.power(_abs(x), float(p)).sum(dim, keepdims=True), eps ** p), 1.0 / p)


@_public
def normalize(input, p=2.0, dim=1, eps=1e-12):
    """x / max(||x||_p, eps) along dim."""
    x = _float(input)
    d = _axis(dim, x.ndim)
    return x / _norm_clamped(x, p, d, eps)


@_public
def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """x1 . x2 / max(||x1|| ||x2||, eps) along dim (broadcasting x1 against x2)."""
    a, b = _pair_float(x1, x2)
    shape = np.broadcast_shapes(a.shape, b.shape)
    a, b = T.broadcast_to(a, shape), T.broadcast_to(b, shape)
    d = _axis(dim, len(shape))
    dot = (a * b).sum(d)
    n2 = (a * a).sum(d) * (b * b).sum(d)
    return dot / _sqrt(gnp.maximum(n2, eps * eps))


@_public
def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0,
              scale_grad_by_freq=False, sparse=False):
    """Rows of weight (V, D) selected by integer indices (any shape) -> (..., D), built as
    one_hot(indices) @ weight (its VJP is the scatter-add). padding_idx: that index gives a
    zero row and no gradient (torch returns the row itself, which torch keeps at zero)."""
    if max_norm is not None or scale_grad_by_freq:
        raise NotImplementedError("embedding: max_norm and scale_grad_by_freq are not supported")
    w = lift(weight)
    if w.ndim != 2:
        raise _shape_err(f"embedding weight must be (num_embeddings, dim), got {w.shape}")
    V = w.shape[0]
    if not isinstance(input, Tensor):
        _check_labels(input, V)
    idx = lift(input)
    if not idx.node.dtype.is_int:
        raise GraphcError(f"embedding indices must be integers, got {idx.node.type}", stage="trace")
    classes = np.arange(V, dtype=idx.dtype)
    if padding_idx is not None:
        classes[padding_idx % V] = -(2 ** 31)  # never equal to a valid index
    oh = T.cast(idx.reshape(idx.shape + (1,)) == lift(classes), w.node.dtype)
    return T.matmul(oh, w)


# =================================================================================================
# attention
# =================================================================================================
@_public
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False, *,
                                 dropout_key=None, return_weights=False):
    """softmax(q k^T * scale + mask) v, as torch: q (..., L, E), k (..., S, E), v (..., S, Ev),
    scale defaults to 1/sqrt(E). attn_mask: bool (True = take part in attention) or float
    (added to the scores), broadcastable to (..., L, S); is_causal masks j > i (top-left
    aligned, tril of an (L, S) ones). dropout_p > 0 applies dropout to the weights with
    `dropout_key` (graphc's explicit random key; torch's argument `key` is the key tensor).
    Fully masked rows give nan, as torch's math path. return_weights=True returns
    (output, weights)."""
    q, k, v = _float(query), lift(key), lift(value)
    dt = T.result_dtype(q, k, v)
    q, k, v = T.cast(q, dt), T.cast(k, dt), T.cast(v, dt)
    L, E = q.shape[-2:]
    S = k.shape[-2]
    if enable_gqa and q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]

        def repeat(t):
            sh = t.shape
            t = t.reshape(sh[:-3] + (sh[-3], 1) + sh[-2:])
            t = T.broadcast_to(t, sh[:-3] + (sh[-3], rep) + sh[-2:])
            return t.reshape(sh[:-3] + (sh[-3] * rep,) + sh[-2:])
        k, v = repeat(k), repeat(v)
    s = (1.0 / math.sqrt(E)) if scale is None else scale
    scores = T.matmul(q, k.transpose(tuple(range(k.ndim - 2)) + (k.ndim - 1, k.ndim - 2))) * s
    if is_causal:
        causal = np.tril(np.ones((L, S), dtype=bool))
        scores = _where(lift(causal), scores, -np.inf)
    if attn_mask is not None:
        mk = lift(attn_mask)
        if mk.node.dtype is DType.bool:
            scores = _where(mk, scores, -np.inf)
        else:
            scores = scores + _like(scores, mk)
    w = softmax(scores, -1)
    if dropout_p > 0:
        w = dropout(w, dropout_p, True, dropout_key)
    out = T.matmul(w, v)
    return (out, w) if return_weights else out


@_public
def additive_attention(query, keys, W_q, W_k, v, values=None, mask=None):
    """Additive (Bahdanau) attention (lectures 4.22): scores
    e_j = v^T tanh(W_q q + W_k k_j), weights a = softmax_j(e), context c = sum_j a_j value_j.

    query (..., Dq); keys (..., S, Dk); W_q (H, Dq) and W_k (H, Dk) in the (out, in) layout
    (together the lecture's W_a acting on [q; k_j]); v (H,); values (..., S, Dv), default keys;
    mask (..., S) bool, True = attend. Leading dims broadcast (for L queries per batch use
    query (N, L, Dq) with keys (N, 1, S, Dk)). Returns (context (..., Dv), weights (..., S))."""
    q, kk = _float(query), _float(keys)
    qh = linear(q, W_q)                                  # (..., H)
    kh = linear(kk, W_k)                                 # (..., S, H)
    e = T.matmul(_tanh(qh.reshape(qh.shape[:-1] + (1, qh.shape[-1])) + kh), lift(v))  # (..., S)
    if mask is not None:
        e = _where(lift(mask), e, -np.inf)
    a = softmax(e, -1)
    vals = kk if values is None else _float(values)
    ctx = T.matmul(a.reshape(a.shape[:-1] + (1, a.shape[-1])), vals)     # (..., 1, Dv)
    return ctx.reshape(ctx.shape[:-2] + ctx.shape[-1:]), a
