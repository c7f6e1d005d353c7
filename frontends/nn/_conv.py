"""Linear and convolution layers of graphc.nn.functional: `linear`, `conv1d/2d/3d` (im2col:
the kernel-offset windows are strided slices of the padded input, stacked into a
(C*Kn, N*L) matrix with the batch among the columns, then one matmul),
`conv_transpose1d/2d/3d` (the stride-dilated input convolved with the flipped kernel) and
`unfold`. `_windows` is shared with the pooling functions."""
from __future__ import annotations

import itertools

import numpy as np

from graphc.frontends import numpy_api as gnp
from graphc.frontends import tensor as T
from graphc.frontends.tensor import Tensor, lift
from graphc.frontends.nn._util import _like, _ntuple, _public, _shape_err

__all__ = [
    "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d", "unfold",
]


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
    pad, take the Kn = prod(K) kernel-offset windows of the padded input, stack (groups ==
    1) or concatenate them into an im2col matrix and contract it with the weight reshaped in one matmul: (O, C*Kn) @
    (C*Kn, N*L), the batch among the columns, when groups == 1, else (G, Og, Kn*Cg) @
    (N, G, Kn*Cg, L), a batched matmul."""
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
    if G == 1:
        # the batch joins the columns: cols (C*Kn, N*L), so the forward product, the weight
        # gradient (K = N*L, no per-sample products summed over the batch) and the input
        # gradient are one large matmul each, not N small ones
        # (rows channel-major, c*Kn + k, as the weight's own layout: its reshape to
        # (O, C*Kn) is a view, and so is its gradient's way back)
        xt = x.transpose((1, 0) + tuple(range(2, x.ndim)))          # (C, N, *spatial)
        wins = _windows(xt, K, stride, dilation, out, 2, flip)      # each (C, N, *out)
        cols = gnp.stack(wins, axis=1)                              # (C, Kn, N, *out)
        wm = w.reshape((O, Cg * Kn))
        y = T.matmul(wm, cols.reshape((Cg * Kn, N * L))).reshape((O, N) + tuple(out))
        y = y.transpose((1, 0) + tuple(range(2, 2 + nd)))
        if b is not None:
            y = y + _like(y, b).reshape((O,) + (1,) * nd)
        return y
    x = x.reshape((N, G, Cg) + x.shape[2:])  # (groups > 1 from here on)
    lead = x.ndim - nd
    wins = _windows(x, K, stride, dilation, out, lead, flip)
    cols = gnp.concatenate(wins, axis=lead - 1)
    cols = cols.reshape(cols.shape[:lead - 1] + (Kn * Cg, L))
    wm = w.reshape((G, Og, Cg, Kn)).transpose(0, 1, 3, 2).reshape((G, Og, Kn * Cg))
    y = T.matmul(wm, cols).reshape((N, O) + tuple(out))
    if b is not None:
        y = y + _like(y, b).reshape((O,) + (1,) * nd)
    return y


def _conv_operands(name: str, nd: int, input, weight, weight_layout: str):
    """Input and weight in their common dtype, the input given a batch dim if it has none
    (rank nd + 1): -> (x (N, C, *spatial), w, unbatched)."""
    x, w = lift(input), lift(weight)
    dt = T.result_dtype(x, w)
    x, w = T.cast(x, dt), T.cast(w, dt)
    if w.ndim != nd + 2:
        raise _shape_err(f"{name} weight must have rank {nd + 2} ({weight_layout}), got {w.shape}")
    unbatched = x.ndim == nd + 1
    if unbatched:
        x = x.reshape((1,) + x.shape)
    if x.ndim != nd + 2:
        raise _shape_err(f"{name} input must have rank {nd + 2} (N, C, *spatial) or {nd + 1}, "
                         f"got {x.shape}")
    return x, w, unbatched


def _conv(nd, input, weight, bias, stride, padding, dilation, groups):
    x, w, unbatched = _conv_operands(f"conv{nd}d", nd, input, weight, "out, in/groups, *kernel")
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
    x, w, unbatched = _conv_operands(f"conv_transpose{nd}d", nd, input, weight,
                                     "in, out/groups, *kernel")
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
    cols = gnp.stack(wins, axis=2)                                  # (N, C, Kn, *out)
    return cols.reshape((N, C * K[0] * K[1], out[0] * out[1]))
