"""Feed-forward layers (as torch.nn): Identity, Linear, Conv2d, the 2-d pooling layers,
Flatten/Unflatten and Embedding, initialised as PyTorch does by default (B.13)."""
from __future__ import annotations

import math

import numpy as np

from graphc.frontends.nn import functional as F
from graphc.frontends.nn import init
from graphc.frontends.nn.module import Module, Parameter, _make_rng

__all__ = [
    "Identity", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
    "Flatten", "Unflatten", "Embedding",
]


# ---- initialisation helpers ----------------------------------------------------------------------------
def _uniform(rng: np.random.Generator, shape, bound: float, dtype=np.float32) -> np.ndarray:
    """U(-bound, bound) of `shape` (torch's default for biases and recurrent weights)."""
    a = np.empty(shape, dtype=dtype)
    return init.uniform_(a, -bound, bound, rng=rng)


def _default_weight(rng, shape, dtype) -> np.ndarray:
    """torch's Linear/Conv default: kaiming_uniform_(a=√5), i.e. U(±1/√fan_in)."""
    w = np.empty(shape, dtype=dtype)
    return init.kaiming_uniform_(w, a=math.sqrt(5), rng=rng)


def _fan_in(shape) -> int:
    return int(shape[1] * np.prod(shape[2:], dtype=np.int64)) if len(shape) > 1 else int(shape[0])


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


# ---- layers ------------------------------------------------------------------------------------------
class Identity(Module):
    """Returns its input (accepts and ignores constructor arguments, as torch)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Linear(Module):
    """Linear(in_features, out_features, bias=True, *, dtype=float32, seed=None, rng=None).
    weight (out, in), bias (out,), both U(±1/√in); forward(x (..., in)) -> x @ weight.T + bias."""

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float32, seed=None,
                 rng=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        r = _make_rng(seed, rng)
        self.weight = Parameter(_default_weight(r, (out_features, in_features), dtype))
        if bias:
            self.bias = Parameter(_uniform(r, (out_features,), 1 / math.sqrt(in_features)
                                           if in_features else 0, dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}"


class Conv2d(Module):
    """Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
    bias=True, *, dtype, seed, rng): cross-correlation on NCHW input (B.3, B.4); padding an int,
    a pair, 'valid' or 'same'. weight (C_out, C_in/groups, kH, kW), bias (C_out,), U(±1/√fan_in)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", *, dtype=np.float32, seed=None,
                 rng=None):
        super().__init__()
        if padding_mode != "zeros":
            raise NotImplementedError("Conv2d supports padding_mode='zeros' only")
        if in_channels % groups or out_channels % groups:
            raise ValueError("in_channels and out_channels must be divisible by groups")
        if padding == "same" and any(s != 1 for s in _pair(stride)):
            raise ValueError("padding='same' needs stride 1 (as in PyTorch)")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.dilation, self.groups = _pair(dilation), int(groups)
        r = _make_rng(seed, rng)
        shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = Parameter(_default_weight(r, shape, dtype))
        if bias:
            self.bias = Parameter(_uniform(r, (out_channels,), 1 / math.sqrt(_fan_in(shape)), dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, " \
            f"stride={self.stride}"
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False")


class _Pool2d(Module):
    """The window of the 2-d pooling layers: kernel_size, stride (default kernel_size), padding."""

    def __init__(self, kernel_size, stride, padding):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding = padding

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """MaxPool2d(kernel_size, stride=None (= kernel_size), padding=0, dilation=1,
    ceil_mode=False) on NCHW (padding counts as -inf); F.max_pool2d."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__(kernel_size, stride, padding)
        self.dilation, self.ceil_mode = dilation, ceil_mode

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode)


class AvgPool2d(_Pool2d):
    """AvgPool2d(kernel_size, stride=None (= kernel_size), padding=0, ceil_mode=False,
    count_include_pad=True) on NCHW; F.avg_pool2d."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__(kernel_size, stride, padding)
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)


class AdaptiveAvgPool2d(Module):
    """AdaptiveAvgPool2d(output_size): average pooling to a fixed (H, W) output size
    (AdaptiveAvgPool2d(1) is global average pooling; None keeps a size)."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class Flatten(Module):
    """Flatten(start_dim=1, end_dim=-1): merges dims start..end."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)


class Unflatten(Module):
    """Unflatten(dim, unflattened_size): splits dim into unflattened_size."""

    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, x):
        return F.unflatten(x, self.dim, self.unflattened_size)


class Embedding(Module):
    """Embedding(num_embeddings, embedding_dim, padding_idx=None): weight (num, dim) ~ N(0, 1)
    (the padding row zero); forward(indices int array (...)) -> (..., dim)."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, *, dtype=np.float32,
                 seed=None, rng=None, _weight=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        if padding_idx is not None and padding_idx < 0:
            padding_idx += num_embeddings
        self.padding_idx = padding_idx
        if _weight is not None:
            w = np.array(_weight, dtype=dtype)
        else:
            w = np.empty((num_embeddings, embedding_dim), dtype)
            init.normal_(w, 0.0, 1.0, rng=_make_rng(seed, rng))
        if padding_idx is not None:
            w[padding_idx] = 0
        self.weight = Parameter(w)

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None):
        """An Embedding holding `embeddings` (freeze is accepted for torch compatibility;
        graphc trains what you differentiate)."""
        e = np.asarray(embeddings)
        return cls(e.shape[0], e.shape[1], padding_idx, dtype=e.dtype, _weight=e)

    def forward(self, indices):
        kw = {"padding_idx": self.padding_idx} if self.padding_idx is not None else {}
        return F.embedding(indices, self.weight, **kw)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}" + \
            (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")
