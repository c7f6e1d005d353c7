"""graphc.nn.functional convolution, pooling and resampling against direct NumPy loops
(float64), gradients against finite differences along random directions, and the compile
smoke table for these layers (test_functional checks that every public function has one)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import graphc as gc
import graphc.nn.functional as F

RNG = np.random.default_rng(5)


def rnd(*shape):
    return RNG.standard_normal(shape)


def check_grad_dir(f, args, argnums, h=1e-6, rtol=1e-6, directions=2):
    """gc.grad(f) against central differences along random directions (float64)."""
    nums = argnums if isinstance(argnums, tuple) else (argnums,)
    grads = gc.grad(f, argnums=nums)(*args)
    rng = np.random.default_rng(3)
    for i, g in zip(nums, grads):
        assert g.shape == args[i].shape and np.all(np.isfinite(g))
        for _ in range(directions):
            d = rng.standard_normal(g.shape)
            a_plus, a_minus = list(args), list(args)
            a_plus[i], a_minus[i] = args[i] + h * d, args[i] - h * d
            num = (float(f(*a_plus)) - float(f(*a_minus))) / (2 * h)
            np.testing.assert_allclose(np.sum(g * d), num, rtol=rtol, atol=1e-7)


def wsum(fn, seed=4):
    cache = {}

    def f(*a):
        y = fn(*a)
        if y.shape not in cache:
            cache[y.shape] = np.random.default_rng(seed).standard_normal(y.shape)
        return (y * cache[y.shape]).sum()
    return f


# ---- direct references ---------------------------------------------------------------------------
def naive_conv(x, w, b, stride, pads, dilation, groups):
    """Cross-correlation by its definition, one output element at a time (any nd)."""
    nd = x.ndim - 2
    N, C = x.shape[:2]
    O, Cg = w.shape[:2]
    K = w.shape[2:]
    xp = np.pad(x, [(0, 0), (0, 0)] + list(pads))
    out = [(xp.shape[2 + a] - dilation[a] * (K[a] - 1) - 1) // stride[a] + 1 for a in range(nd)]
    y = np.zeros((N, O) + tuple(out))
    Og = O // groups
    for o in range(O):
        g = o // Og
        for pos in itertools.product(*(range(n) for n in out)):
            acc = np.zeros(N)
            for offs in itertools.product(*(range(k) for k in K)):
                idx = tuple(p * s + k * d for p, s, k, d in zip(pos, stride, offs, dilation))
                acc += xp[(slice(None), slice(g * Cg, (g + 1) * Cg)) + idx] @ w[(o, slice(None)) + offs]
            y[(slice(None), o) + pos] = acc + (0 if b is None else b[o])
    return y


def naive_conv_transpose(x, w, b, stride, padding, output_padding, groups, dilation):
    """Transposed convolution as the scatter of every input element through the kernel."""
    nd = x.ndim - 2
    N, Cin = x.shape[:2]
    Coutg = w.shape[1]
    K = w.shape[2:]
    Cin_g = Cin // groups
    full = [(x.shape[2 + a] - 1) * stride[a] + dilation[a] * (K[a] - 1) + 1 + output_padding[a]
            for a in range(nd)]
    y = np.zeros((N, Coutg * groups) + tuple(full))
    for ci in range(Cin):
        g = ci // Cin_g
        for pos in itertools.product(*(range(n) for n in x.shape[2:])):
            for offs in itertools.product(*(range(k) for k in K)):
                idx = tuple(p * s + k * d for p, s, k, d in zip(pos, stride, offs, dilation))
                y[(slice(None), slice(g * Coutg, (g + 1) * Coutg)) + idx] += \
                    x[(slice(None), ci) + pos][:, None] * w[(ci, slice(None)) + offs][None, :]
    out = [(x.shape[2 + a] - 1) * stride[a] - 2 * padding[a] + dilation[a] * (K[a] - 1)
           + output_padding[a] + 1 for a in range(nd)]
    y = y[(slice(None), slice(None)) + tuple(slice(p, p + o) for p, o in zip(padding, out))]
    return y + (0 if b is None else b.reshape((-1,) + (1,) * nd))


def naive_pool(x, K, stride, padding, dilation=None, ceil_mode=False, kind="max",
               count_include_pad=True):
    nd = len(K)
    dilation = dilation or (1,) * nd
    spatial = x.shape[-nd:]
    out = []
    for i, k, s, p, d in zip(spatial, K, stride, padding, dilation):
        span = i + 2 * p - d * (k - 1) - 1
        o = (math.ceil(span / s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= i + p:
            o -= 1
        out.append(o)
    y = np.zeros(x.shape[:-nd] + tuple(out))
    for pos in itertools.product(*(range(n) for n in out)):
        if kind == "max":
            vals = []
            for offs in itertools.product(*(range(k) for k in K)):
                idx = [p_ * s - pp + o * d for p_, s, pp, o, d in zip(pos, stride, padding, offs, dilation)]
                if all(0 <= j < n for j, n in zip(idx, spatial)):
                    vals.append(x[(Ellipsis,) + tuple(idx)])
            y[(Ellipsis,) + pos] = np.max(vals, axis=0)
        else:
            lo = [p_ * s - pp for p_, s, pp in zip(pos, stride, padding)]
            hi = [min(l + k, n + pp) for l, k, n, pp in zip(lo, K, spatial, padding)]
            size = np.prod([h - l for l, h in zip(lo, hi)])
            lo_c = [max(l, 0) for l in lo]
            hi_c = [min(h, n) for h, n in zip(hi, spatial)]
            win = x[(Ellipsis,) + tuple(slice(l, h) for l, h in zip(lo_c, hi_c))]
            div = size if count_include_pad else np.prod([h - l for l, h in zip(lo_c, hi_c)])
            y[(Ellipsis,) + pos] = win.sum(axis=tuple(range(-nd, 0))) / div
    return y


def same_pads(K, d):
    return [((dd * (k - 1)) // 2, dd * (k - 1) - (dd * (k - 1)) // 2) for k, dd in zip(K, d)]


# ---- convolution -----------------------------------------------------------------------------------
CONV2D_CASES = [
    # (C, O, kernel, stride, padding, dilation, groups, H, W)
    (3, 4, (3, 3), 1, 0, 1, 1, 6, 7),
    (3, 4, (3, 3), 2, 1, 1, 1, 7, 7),
    (2, 3, (2, 3), (2, 1), (1, 2), 1, 1, 6, 5),
    (3, 2, (3, 3), 1, 2, 2, 1, 7, 6),
    (4, 6, (3, 2), (1, 2), (0, 1), (2, 1), 2, 7, 8),
    (3, 5, (1, 1), 1, 0, 1, 1, 4, 4),
    (2, 3, (4, 4), 1, "same", 1, 1, 6, 5),          # even kernel: the odd pad goes right/bottom
    (2, 3, (3, 2), 1, "same", (2, 3), 1, 7, 7),
    (2, 3, (3, 3), 1, "valid", 1, 1, 5, 6),
    (4, 4, (3, 3), 1, 1, 1, 4, 5, 5),               # depthwise
    (4, 6, (1, 1), 1, 0, 1, 2, 4, 5),               # grouped, one window
]


def _norm_pads(padding, K, d, nd):
    if padding == "same":
        return same_pads(K, d)
    if padding == "valid":
        return [(0, 0)] * nd
    p = (padding,) * nd if isinstance(padding, int) else padding
    return [(pp, pp) for pp in p]


@pytest.mark.parametrize("case", CONV2D_CASES)
def test_conv2d_against_naive_loop(case):
    C, O, K, stride, padding, dilation, groups, H, W = case
    x, w, b = rnd(2, C, H, W), rnd(O, C // groups, *K), rnd(O)
    s = (stride,) * 2 if isinstance(stride, int) else stride
    d = (dilation,) * 2 if isinstance(dilation, int) else dilation
    ref = naive_conv(x, w, b, s, _norm_pads(padding, K, d, 2), d, groups)
    y = F.conv2d(x, w, b, stride, padding, dilation, groups)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    if padding == "same":
        assert y.shape[2:] == x.shape[2:]
    # the output size formula floor((i + 2p - d(k-1) - 1)/s) + 1 (B.3)
    pads = _norm_pads(padding, K, d, 2)
    assert y.shape[2:] == tuple((i + lo + hi - dd * (k - 1) - 1) // ss + 1
                                for i, (lo, hi), dd, k, ss in zip((H, W), pads, d, K, s))
    check_grad_dir(wsum(lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups)),
                   [x, w, b], (0, 1, 2))


def test_conv2d_details():
    x, w = rnd(3, 5, 5), rnd(2, 3, 3, 3)                            # unbatched input
    np.testing.assert_allclose(F.conv2d(x, w, padding=1), naive_conv(x[None], w, None, (1, 1),
                                                                     [(1, 1)] * 2, (1, 1), 1)[0])
    y32 = F.conv2d(x.astype(np.float32), w.astype(np.float32))
    assert y32.dtype == np.float32
    with pytest.raises(ValueError):
        F.conv2d(x, w, stride=2, padding="same")                    # as torch
    with pytest.raises(gc.ShapeError):
        F.conv2d(rnd(1, 4, 5, 5), w)                                # channel mismatch
    # the graph is small: one matmul, one concat, kH*kW slices (im2col)
    g = gc.trace(lambda x, w: F.conv2d(x, w, padding=1), rnd(2, 3, 8, 8), w)
    ops = [n.op.name for n in g.nodes]
    assert ops.count("MATMUL") == 1 and ops.count("CONCAT") == 1 and ops.count("SLICE") == 9
    # Sobel edge detection (lectures 9.10): a vertical edge lights up the x-gradient filter
    img = np.zeros((1, 1, 5, 6))
    img[..., 3:] = 1.0
    sobel = np.array([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])[None, None]
    edge = F.conv2d(img, sobel)[0, 0]
    np.testing.assert_array_equal(edge, np.tile([0.0, 4, 4, 0], (3, 1)))


@pytest.mark.parametrize("nd,case", [
    (1, dict(C=3, O=4, K=(3,), stride=2, padding=1, dilation=1, groups=1, S=(9,))),
    (1, dict(C=4, O=2, K=(2,), stride=1, padding="same", dilation=3, groups=2, S=(8,))),
    (3, dict(C=2, O=3, K=(2, 3, 2), stride=(1, 2, 1), padding=1, dilation=1, groups=1, S=(3, 5, 4))),
])
def test_conv1d_conv3d(nd, case):
    c = case
    x, w, b = rnd(2, c["C"], *c["S"]), rnd(c["O"], c["C"] // c["groups"], *c["K"]), rnd(c["O"])
    fn = {1: F.conv1d, 3: F.conv3d}[nd]
    s = (c["stride"],) * nd if isinstance(c["stride"], int) else c["stride"]
    d = (c["dilation"],) * nd
    ref = naive_conv(x, w, b, s, _norm_pads(c["padding"], c["K"], d, nd), d, c["groups"])
    y = fn(x, w, b, c["stride"], c["padding"], c["dilation"], c["groups"])
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    check_grad_dir(wsum(lambda x, w: fn(x, w, b, c["stride"], c["padding"], c["dilation"], c["groups"])),
                   [x, w], (0, 1))


@pytest.mark.parametrize("nd,kw", [
    (2, dict(stride=2, padding=1, output_padding=1, groups=1, dilation=1)),
    (2, dict(stride=(1, 2), padding=0, output_padding=0, groups=2, dilation=(2, 1))),
    (2, dict(stride=3, padding=2, output_padding=0, groups=1, dilation=1)),
    (1, dict(stride=2, padding=0, output_padding=1, groups=1, dilation=2)),
])
def test_conv_transpose_against_scatter(nd, kw):
    Cin, Coutg, K = 4, 3, (3,) * nd
    S = (4, 3)[:nd] if nd == 2 else (5,)
    x, w, b = rnd(2, Cin, *S), rnd(Cin, Coutg, *K), rnd(Coutg * kw["groups"])
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d}[nd]
    tup = {k: (v,) * nd if isinstance(v, int) else v for k, v in kw.items() if k != "groups"}
    ref = naive_conv_transpose(x, w, b, tup["stride"], tup["padding"], tup["output_padding"],
                               kw["groups"], tup["dilation"])
    y = fn(x, w, b, **kw)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    check_grad_dir(wsum(lambda x, w, b: fn(x, w, b, **kw)), [x, w, b], (0, 1, 2))


def test_conv_transpose_is_the_conv_input_gradient():
    x, w = rnd(2, 3, 7, 7), rnd(4, 3, 3, 3)
    g = rnd(2, 4, 4, 4)
    vjp = gc.grad(lambda x: (F.conv2d(x, w, stride=2, padding=1) * g).sum())(x)
    np.testing.assert_allclose(F.conv_transpose2d(g, w, stride=2, padding=1, output_padding=0), vjp)


def test_conv3d_transpose_and_unfold():
    x, w = rnd(1, 2, 3, 2, 3), rnd(2, 2, 2, 2, 2)
    ref = naive_conv_transpose(x, w, None, (2, 1, 1), (0, 0, 1), (1, 0, 0), 1, (1, 1, 1))
    np.testing.assert_allclose(F.conv_transpose3d(x, w, stride=(2, 1, 1), padding=(0, 0, 1),
                                                  output_padding=(1, 0, 0)), ref, atol=1e-12)
    x = rnd(2, 3, 5, 6)
    cols = F.unfold(x, (2, 3), dilation=1, padding=1, stride=(2, 1))
    xp = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)])
    Ho, Wo = (7 - 2) // 2 + 1, (8 - 3) + 1
    ref = np.stack([xp[:, :, i * 2:i * 2 + 2, j:j + 3].reshape(2, -1) for i in range(Ho) for j in range(Wo)], -1)
    np.testing.assert_allclose(cols, ref)
    # conv2d = weight matrix @ unfold (C-major column layout, as torch)
    w = rnd(4, 3, 2, 3)
    np.testing.assert_allclose((w.reshape(4, -1) @ cols).reshape(2, 4, Ho, Wo),
                               F.conv2d(x, w, stride=(2, 1), padding=1), atol=1e-12)
    # a 1x1 kernel: one window, each column a pixel's channels
    np.testing.assert_allclose(F.unfold(x, 1), x.reshape(2, 3, 30))


# ---- pooling -------------------------------------------------------------------------------------
POOL_CASES = [
    # (kernel, stride, padding, dilation, ceil_mode, H, W)
    ((2, 2), None, 0, 1, False, 6, 6),
    ((3, 3), 2, 1, 1, False, 7, 6),
    ((2, 3), (1, 2), (1, 1), 1, False, 5, 7),
    ((3, 3), 2, 1, 1, True, 8, 8),
    ((2, 2), 2, 0, 1, True, 5, 7),
    ((3, 2), 1, 0, (2, 1), False, 7, 5),
]


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d(case):
    K, stride, padding, dilation, ceil_mode, H, W = case
    x = rnd(2, 3, H, W)
    s = K if stride is None else ((stride,) * 2 if isinstance(stride, int) else stride)
    p = (padding,) * 2 if isinstance(padding, int) else padding
    d = (dilation,) * 2 if isinstance(dilation, int) else dilation
    ref = naive_pool(x, K, s, p, d, ceil_mode, "max")
    y = F.max_pool2d(x, K, stride, padding, dilation, ceil_mode)
    np.testing.assert_allclose(y, ref)
    check_grad_dir(wsum(lambda x: F.max_pool2d(x, K, stride, padding, dilation, ceil_mode)), [x], 0)
    y2, idx = F.max_pool2d(x, K, stride, padding, dilation, ceil_mode, return_indices=True)
    np.testing.assert_allclose(y2, ref)
    flat = x.reshape(2, 3, -1)
    np.testing.assert_allclose(np.take_along_axis(flat, idx.reshape(2, 3, -1), -1).reshape(y.shape), ref)


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool2d(case, count_include_pad):
    K, stride, padding, dilation, ceil_mode, H, W = case
    if dilation != 1:
        return
    x = rnd(2, 3, H, W)
    s = K if stride is None else ((stride,) * 2 if isinstance(stride, int) else stride)
    p = (padding,) * 2 if isinstance(padding, int) else padding
    ref = naive_pool(x, K, s, p, None, ceil_mode, "avg", count_include_pad)
    y = F.avg_pool2d(x, K, stride, padding, ceil_mode, count_include_pad)
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    check_grad_dir(wsum(lambda x: F.avg_pool2d(x, K, stride, padding, ceil_mode, count_include_pad)), [x], 0)
    np.testing.assert_allclose(F.avg_pool2d(x, K, stride, padding, ceil_mode, count_include_pad,
                                            divisor_override=5), ref * 0 + F.avg_pool2d(
        x, K, stride, padding, ceil_mode, True, divisor_override=1) / 5)


def test_max_pool_gradient_goes_to_first_maximum():
    x = np.zeros((1, 1, 4, 4))                  # every window ties (as after a ReLU)
    x[0, 0, 3, 3] = -1.0
    g = gc.grad(lambda x: F.max_pool2d(x, 2).sum())(x)
    ref = np.zeros((4, 4))
    ref[::2, ::2] = 1.0                         # the top-left element of each window (scan order)
    np.testing.assert_array_equal(g[0, 0], ref)
    # the lectures' max-pool example (9.11): 4x4 -> 2x2 with 2x2 windows, stride 2
    a = np.array([[1.0, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]])[None, None]
    np.testing.assert_array_equal(F.max_pool2d(a, 2, 2)[0, 0], [[6, 8], [3, 4]])
    # padding is -inf: an all-negative border never picks up a padded zero
    neg = -np.ones((1, 1, 3, 3)) - np.arange(9).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal(F.max_pool2d(neg, 3, 1, 1)[0, 0],
                                  naive_pool(neg, (3, 3), (1, 1), (1, 1))[0, 0])
    with pytest.raises(ValueError):
        F.max_pool2d(neg, 2, 1, 2)              # padding above half the kernel, as torch


def test_pool_1d_3d_and_adaptive():
    x1 = rnd(2, 3, 9)
    np.testing.assert_allclose(F.max_pool1d(x1, 3, 2, 1), naive_pool(x1, (3,), (2,), (1,)))
    np.testing.assert_allclose(F.avg_pool1d(x1, 2), naive_pool(x1, (2,), (2,), (0,), kind="avg"))
    x3 = rnd(1, 2, 4, 5, 4)
    np.testing.assert_allclose(F.max_pool3d(x3, 2), naive_pool(x3, (2, 2, 2), (2, 2, 2), (0, 0, 0)))
    np.testing.assert_allclose(F.avg_pool3d(x3, (2, 3, 2), 1), naive_pool(x3, (2, 3, 2), (1, 1, 1), (0, 0, 0), kind="avg"))
    x = rnd(2, 3, 7, 5)

    def adaptive_ref(x, oh, ow):
        H, W = x.shape[-2:]
        y = np.zeros(x.shape[:-2] + (oh, ow))
        for i in range(oh):
            for j in range(ow):
                h0, h1 = (i * H) // oh, -((-(i + 1) * H) // oh)
                w0, w1 = (j * W) // ow, -((-(j + 1) * W) // ow)
                y[..., i, j] = x[..., h0:h1, w0:w1].mean((-2, -1))
        return y
    for size in ((3, 2), (7, 5), (1, 1), (4, None)):
        oh, ow = size[0], size[1] if size[1] is not None else 5
        np.testing.assert_allclose(F.adaptive_avg_pool2d(x, size), adaptive_ref(x, oh, ow), atol=1e-14)
    np.testing.assert_allclose(F.adaptive_avg_pool2d(x, 1)[..., 0, 0], x.mean((2, 3)))
    np.testing.assert_allclose(F.adaptive_avg_pool1d(x1, 4), adaptive_ref(x1[:, :, None], 1, 4)[:, :, 0])
    check_grad_dir(wsum(lambda x: F.adaptive_avg_pool2d(x, (3, 2))), [x], 0)
    np.testing.assert_allclose(F.adaptive_avg_pool3d(x3, (2, 1, 3)).shape, (1, 2, 2, 1, 3))


# ---- padding, resampling, flatten ----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_modes(mode):
    x = rnd(2, 3, 4, 5)
    pads = (2, 1, 1, 3)
    np_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
    ref = np.pad(x, [(0, 0), (0, 0), (1, 3), (2, 1)], mode=np_mode)
    np.testing.assert_allclose(F.pad(x, pads, mode), ref)
    check_grad_dir(wsum(lambda x: F.pad(x, pads, mode)), [x], 0)
    if mode == "constant":
        np.testing.assert_allclose(F.pad(x, (1, 1), value=2.5), np.pad(x, [(0, 0)] * 3 + [(1, 1)], constant_values=2.5))
        np.testing.assert_allclose(F.pad(x, (-1, 2, 0, -2)), np.pad(x[:, :, :2, 1:], [(0, 0)] * 3 + [(0, 2)]))


def np_interp_linear(x, out, align_corners, axis):
    n = x.shape[axis]
    o = np.arange(out)
    src = o * (n - 1) / (out - 1) if align_corners else np.maximum((o + 0.5) * n / out - 0.5, 0)
    i0 = np.minimum(np.floor(src).astype(int), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    lam = (src - i0).reshape((-1,) + (1,) * (x.ndim - axis - 1))
    return np.take(x, i0, axis) * (1 - lam) + np.take(x, i1, axis) * lam


def test_interpolate():
    x = rnd(2, 3, 4, 5)
    up = F.interpolate(x, scale_factor=2)
    np.testing.assert_allclose(up, x.repeat(2, 2).repeat(2, 3))           # nearest, integer factor
    np.testing.assert_allclose(F.interpolate(x, size=(3, 7)),
                               x[:, :, np.floor(np.arange(3) * 4 / 3).astype(int)][..., np.floor(np.arange(7) * 5 / 7).astype(int)])
    for ac in (False, True):
        ref = np_interp_linear(np_interp_linear(x, 7, ac, 2), 9, ac, 3)
        np.testing.assert_allclose(F.interpolate(x, size=(7, 9), mode="bilinear", align_corners=ac), ref)
    np.testing.assert_allclose(F.interpolate(x[:, :, 0], size=8, mode="linear"), np_interp_linear(x[:, :, 0], 8, False, 2))
    np.testing.assert_allclose(F.interpolate(x, size=(2, 1), mode="area"), F.adaptive_avg_pool2d(x, (2, 1)))
    check_grad_dir(wsum(lambda x: F.interpolate(x, size=(7, 9), mode="bilinear")), [x], 0)


def test_flatten_unflatten():
    x = rnd(2, 3, 4, 5)
    np.testing.assert_array_equal(F.flatten(x), x.reshape(2, -1))
    np.testing.assert_array_equal(F.flatten(x, 0), x.reshape(-1))
    np.testing.assert_array_equal(F.flatten(x, 1, 2), x.reshape(2, 12, 5))
    np.testing.assert_array_equal(F.unflatten(F.flatten(x), 1, (3, -1, 5)), x)


# ---- a small CNN, end to end: compiled value and gradient equal eager ------------------------------
def test_small_cnn_compiles_and_trains():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    y = np.array([0, 1, 2, 1])
    p = {"w1": rng.standard_normal((4, 1, 3, 3)).astype(np.float32) * 0.5,
         "b1": np.zeros(4, np.float32),
         "w2": rng.standard_normal((3, 4 * 4 * 4)).astype(np.float32) * 0.2,
         "b2": np.zeros(3, np.float32)}

    def loss(p, x, y):
        h = F.relu(F.conv2d(x, p["w1"], p["b1"], padding="same"))
        h = F.max_pool2d(h, 2)
        return F.cross_entropy(F.linear(F.flatten(h), p["w2"], p["b2"]), y)

    step = gc.compile(gc.value_and_grad(loss))
    v, g = step(p, x, y)
    v_e, g_e = gc.value_and_grad(loss)(p, x, y)
    np.testing.assert_allclose(v, v_e, rtol=1e-6)
    for k in p:
        assert g[k].dtype == np.float32
        np.testing.assert_allclose(g[k], g_e[k], rtol=1e-5, atol=1e-6)
    losses = []
    for _ in range(15):
        v, g = step(p, x, y)
        losses.append(float(v))
        p = {k: p[k] - 0.5 * g[k] for k in p}
    assert losses[-1] < 0.5 * losses[0]


# ---- compile smoke table for these layers ---------------------------------------------------------------
XI = rnd(2, 4, 6, 6)
SMOKE = {
    "conv1d": (lambda x, w, b: F.conv1d(x, w, b, 2, 1), (rnd(2, 3, 9), rnd(4, 3, 3), rnd(4))),
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, 1, "same", 2, 2), (XI, rnd(6, 2, 3, 3), rnd(6))),
    "conv3d": (lambda x, w: F.conv3d(x, w, padding=1), (rnd(1, 2, 3, 4, 4), rnd(3, 2, 2, 2, 2))),
    "conv_transpose1d": (lambda x, w: F.conv_transpose1d(x, w, stride=2), (rnd(2, 3, 5), rnd(3, 2, 3))),
    "conv_transpose2d": (lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1),
                         (XI, rnd(4, 3, 3, 3))),
    "conv_transpose3d": (lambda x, w: F.conv_transpose3d(x, w, stride=2), (rnd(1, 2, 2, 3, 2), rnd(2, 2, 2, 2, 2))),
    "unfold": (lambda x: F.unfold(x, 3, padding=1), (XI,)),
    "max_pool1d": (lambda x: F.max_pool1d(x, 3, 2, 1), (rnd(2, 3, 9),)),
    "max_pool2d": (lambda x: F.max_pool2d(x, 3, 2, 1, return_indices=True), (XI,)),
    "max_pool3d": (lambda x: F.max_pool3d(x, 2), (rnd(1, 2, 4, 4, 4),)),
    "avg_pool1d": (lambda x: F.avg_pool1d(x, 3, 2, 1, count_include_pad=False), (rnd(2, 3, 9),)),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True), (XI,)),
    "avg_pool3d": (lambda x: F.avg_pool3d(x, 2), (rnd(1, 2, 4, 4, 4),)),
    "adaptive_avg_pool1d": (lambda x: F.adaptive_avg_pool1d(x, 4), (rnd(2, 3, 9),)),
    "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, (4, 1)), (XI,)),
    "adaptive_avg_pool3d": (lambda x: F.adaptive_avg_pool3d(x, 2), (rnd(1, 2, 4, 4, 4),)),
    "pad": (lambda x: F.pad(x, (1, 2, 2, 1), "reflect"), (XI,)),
    "interpolate": (lambda x: F.interpolate(x, scale_factor=1.5, mode="bilinear"), (XI,)),
}


@pytest.mark.parametrize("name", list(SMOKE))
def test_compiled_matches_eager(name):
    fn, args = SMOKE[name]
    eager = fn(*args)
    compiled = gc.compile(fn, backend="numpy")(*args)
    for e, c in zip(eager if isinstance(eager, tuple) else (eager,),
                    compiled if isinstance(compiled, tuple) else (compiled,)):
        assert isinstance(c, np.ndarray) and c.dtype == e.dtype and c.shape == e.shape
        np.testing.assert_allclose(c, e, rtol=1e-12, atol=1e-13)
