"""Dropout functions of graphc.nn.functional: inverted dropout and channel (feature) dropout,
with masks from graphc's counter-based generator and an explicit random key."""
from __future__ import annotations

import numpy as np

from graphc.errors import GraphcError
from graphc.frontends import numpy_api as gnp
from graphc.frontends.tensor import Tensor, lift
from graphc.frontends.nn._util import _public, _shape_err, _where

__all__ = ["dropout", "dropout1d", "dropout2d", "dropout3d", "dropconnect"]


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


@_public
def dropconnect(weight, p=0.5, training=True, key=None):
    """DropConnect (Wan et al. 2013; lecture 7.21, "Could also drop edges"): inverted dropout of
    the *weights* (edges) rather than of the activations. In training, each weight element is
    zeroed with probability p and the rest scaled by 1/(1-p), so E[W'] = W; identity when
    training=False or p = 0. graphc-specific (torch has no F.dropconnect): use it as
    `F.linear(x, F.dropconnect(layer.weight, 0.5, training, key), layer.bias)`; one mask is
    drawn per call (shared by the whole minibatch), from `gc.random_uniform(key, W.shape)`."""
    w = lift(weight)
    if not training:
        return w
    return _dropout_impl(w, p, key, w.shape, "dropconnect")
