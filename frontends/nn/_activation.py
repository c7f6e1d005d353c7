"""Activation functions of graphc.nn.functional: step and ReLU families, ELU/SELU/CELU,
erf/erfc and GELU, sigmoid/tanh/softplus families, GLU, maxout, softmax and logsumexp."""
from __future__ import annotations

import math

import numpy as np

from graphc.errors import GraphcError
from graphc.ops import Op
from graphc.types import DType, normalize_axes
from graphc.frontends import numpy_api as gnp
from graphc.frontends import tensor as T
from graphc.frontends.tensor import Tensor, lift
from graphc.frontends.nn._util import (_abs, _axis, _const, _exp, _expm1_neg, _float, _like,
                                       _log, _log1p, _public, _shape_err, _tanh, _where)

__all__ = [
    "heaviside", "step", "threshold", "relu", "relu6", "leaky_relu", "prelu", "elu", "selu", "celu",
    "gelu", "erf", "erfc", "silu", "swish", "mish", "sigmoid", "logsigmoid", "tanh", "hardtanh",
    "hardsigmoid", "hardswish", "softplus", "softsign", "tanhshrink", "glu", "maxout",
    "softmax", "softmin", "log_softmax", "logsumexp",
]


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
    # the shift changes nothing mathematically, so its derivative is zero: stop_gradient
    # keeps autodiff from building (and the backends from running) the max's backward
    if x.ndim == 0:
        return x - x
    return x - gnp.stop_gradient(x.max(d, keepdims=True))


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
    m = gnp.stop_gradient(_where(_abs(m) == np.inf, 0, m))  # a shift: zero derivative
    out = _log(_exp(x - m).sum(axes, keepdims=True)) + m
    if not keepdim:
        out = out.reshape(tuple(s for i, s in enumerate(x.shape) if i not in axes))
    return out
