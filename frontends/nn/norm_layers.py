"""Regularisation and normalisation layers (as torch.nn): Dropout, BatchNorm1d/2d (running
statistics as buffers) and LayerNorm."""
from __future__ import annotations

import numbers

import numpy as np

from graphc.errors import ShapeError
from graphc.frontends.nn import functional as F
from graphc.frontends.nn.module import Module, Parameter, _make_rng, _seeded
from graphc.frontends.nn.stateless import _dropout_key

__all__ = ["Dropout", "BatchNorm1d", "BatchNorm2d", "LayerNorm"]


class Dropout(Module):
    """Dropout(p=0.5, *, seed=None, rng=None): in training mode zeroes each element with
    probability p and scales the rest by 1/(1-p) (inverted dropout, B.5); identity in eval mode.

    Masks come from graphc's counter-based generator: under `functional_call(..., key=k)` from
    that key (the n-th random draw of the call uses k + n·0x9E3779B1); called eagerly
    without a key, from a key the module draws from its own generator (seeded by seed=/rng=)."""

    def __init__(self, p=0.5, inplace=False, *, seed=None, rng=None):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = float(p)
        _seeded(self, _make_rng(seed, rng))

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return F.dropout(x, self.p, True, _dropout_key(self))

    def extra_repr(self):
        return f"p={self.p}"


class _BatchNorm(Module):
    _dims: tuple[int, ...] = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, *, dtype=np.float32, seed=None, rng=None):
        super().__init__()
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype))
            self.bias = Parameter(np.zeros(num_features, dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def _check(self, x):
        if x.ndim not in self._dims or x.shape[1] != self.num_features:
            raise ShapeError(f"{type(self).__name__}({self.num_features}): input of shape "
                             f"{x.shape}, expected {self._expect}", stage="trace")

    def forward(self, x):
        self._check(x)
        use_batch = self.training or not self.track_running_stats
        if not (self.training and self.track_running_stats):
            out = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                               use_batch, self.momentum or 0.0, self.eps)
            return out[0] if isinstance(out, tuple) else out
        self.num_batches_tracked = self.num_batches_tracked + 1
        # momentum=None: cumulative moving average, as torch
        m = self.momentum if self.momentum is not None else \
            (1.0 / self.num_batches_tracked).astype(self.running_mean.dtype)
        out, mean, var = F.batch_norm(x, self.running_mean, self.running_var, self.weight,
                                      self.bias, True, m, self.eps)
        self.running_mean, self.running_var = mean, var
        return out

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, " \
               f"affine={self.affine}, track_running_stats={self.track_running_stats}"


class BatchNorm1d(_BatchNorm):
    """BatchNorm1d(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
    per feature over N (input (N, C)) or over N, L (input (N, C, L)), B.10. Buffers
    running_mean, running_var, num_batches_tracked; functional_call(..., buffers=b) returns the
    updated ones in training mode."""
    _dims, _expect = (2, 3), "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """BatchNorm2d(num_features, ...): per channel over (N, H, W) of NCHW input; as BatchNorm1d."""
    _dims, _expect = (4,), "(N, C, H, W)"


class LayerNorm(Module):
    """LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True): normalises over
    the trailing dims (biased variance), same in train and eval; weight ones, bias zeros."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, *,
                 dtype=np.float32, seed=None, rng=None):
        super().__init__()
        ns = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) \
            else tuple(normalized_shape)
        self.normalized_shape, self.eps = tuple(int(s) for s in ns), float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        if elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, dtype))
            if bias:
                self.bias = Parameter(np.zeros(self.normalized_shape, dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
