"""Pooling functions of graphc.nn.functional: max and average pooling over the kernel-offset
windows of `_conv._windows`, and adaptive average pooling as one matmul per axis with a
constant averaging matrix (`_apply_along`, shared with `interpolate`)."""
from __future__ import annotations

import itertools

import numpy as np

from graphc.frontends import numpy_api as gnp
from graphc.frontends import tensor as T
from graphc.frontends.tensor import Tensor, lift
from graphc.frontends.nn._util import _const, _float, _ntuple, _public, _shape_err, _where
from graphc.frontends.nn._conv import _windows

__all__ = [
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
]


def _pool_windows(nd, x: Tensor, kernel_size, stride, padding, dilation, ceil_mode, name,
                  fill=0.0):
    """The kernel-offset windows of x (..., *spatial) for pooling, x padded with `fill` (and
    on the right where ceil_mode needs it): -> (K, stride, padding, dilation, out, windows)."""
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
    lead = x.ndim - nd
    if any(lo or hi for lo, hi in pads):
        x = gnp.pad(x, [(0, 0)] * lead + pads, constant_values=fill)
    return K, s, p, d, out, _windows(x, K, s, d, out, lead)


@_public
def _max_pool(nd, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, name):
    x = lift(input)
    fill = -np.inf if x.node.dtype.is_float else float(np.iinfo(x.dtype).min)
    K, s, p, d, out, wins = _pool_windows(nd, x, kernel_size, stride, padding, dilation,
                                          ceil_mode, name, fill)
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
    K, s, p, d, out, wins = _pool_windows(nd, x, kernel_size, stride, padding, 1, ceil_mode,
                                          name)
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
