"""Normalisation functions of graphc.nn.functional: batch, instance, layer, group and RMS
normalisation (training mode returns updated running statistics instead of mutating them),
`normalize` and `cosine_similarity`."""
from __future__ import annotations

import numpy as np

from graphc.frontends import numpy_api as gnp
from graphc.frontends import tensor as T
from graphc.frontends.tensor import Tensor, lift
from graphc.frontends.nn._util import (_abs, _axis, _float, _like, _pair_float, _public,
                                       _shape_err, _sqrt)

__all__ = [
    "batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm", "normalize",
    "cosine_similarity",
]


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
