"""Shape and indexing functions of graphc.nn.functional: flatten/unflatten, `pad` (constant,
reflect, replicate, circular), `interpolate`, and the one-hot based `one_hot` and `embedding`
(graphc has no gather: labels are compared against an arange constant)."""
from __future__ import annotations

import math

import numpy as np

from graphc.errors import GraphcError
from graphc.types import DType
from graphc.frontends import numpy_api as gnp
from graphc.frontends import tensor as T
from graphc.frontends.tensor import Tensor, lift
from graphc.frontends.nn._util import (_axis, _check_labels, _float, _ntuple, _public,
                                       _shape_err)
from graphc.frontends.nn._pooling import _adaptive_avg, _apply_along

__all__ = ["flatten", "unflatten", "pad", "interpolate", "embedding", "one_hot"]


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
