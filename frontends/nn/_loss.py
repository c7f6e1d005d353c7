"""Loss functions of graphc.nn.functional: regression losses, (binary) cross-entropy,
NLL, KL divergence and the margin/hinge family, with torch's reductions."""
from __future__ import annotations

import numpy as np

from graphc.frontends import numpy_api as gnp
from graphc.frontends import tensor as T
from graphc.frontends.tensor import Tensor, lift
from graphc.frontends.nn._util import (_abs, _check_labels, _const, _exp, _float, _like, _log,
                                       _log1p, _pair_float, _public, _shape_err, _where)
from graphc.frontends.nn._activation import log_softmax, relu, softplus

__all__ = [
    "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "cross_entropy", "nll_loss", "kl_div",
    "multi_margin_loss", "hinge_embedding_loss", "hinge_loss", "soft_margin_loss",
    "margin_ranking_loss",
]


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
