"""Attention functions of graphc.nn.functional: scaled dot-product attention (torch's
semantics, masks, causal masking, grouped-query heads, dropout on the weights) and additive
(Bahdanau) attention."""
from __future__ import annotations

import math

import numpy as np

from graphc.types import DType
from graphc.frontends import tensor as T
from graphc.frontends.tensor import lift
from graphc.frontends.nn._util import _float, _like, _public, _tanh, _where
from graphc.frontends.nn._activation import softmax
from graphc.frontends.nn._conv import linear
from graphc.frontends.nn._dropout import dropout

__all__ = ["scaled_dot_product_attention", "additive_attention"]


@_public
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False, *,
                                 dropout_key=None, return_weights=False):
    """softmax(q k^T * scale + mask) v, as torch: q (..., L, E), k (..., S, E), v (..., S, Ev),
    scale defaults to 1/sqrt(E). attn_mask: bool (True = take part in attention) or float
    (added to the scores), broadcastable to (..., L, S); is_causal masks j > i (top-left
    aligned, tril of an (L, S) ones). dropout_p > 0 applies dropout to the weights with
    `dropout_key` (graphc's explicit random key; torch's argument `key` is the key tensor).
    Fully masked rows give nan, as torch's math path. return_weights=True returns
    (output, weights)."""
    q, k, v = _float(query), lift(key), lift(value)
    dt = T.result_dtype(q, k, v)
    q, k, v = T.cast(q, dt), T.cast(k, dt), T.cast(v, dt)
    L, E = q.shape[-2:]
    S = k.shape[-2]
    if enable_gqa and q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]

        def repeat(t):
            sh = t.shape
            t = t.reshape(sh[:-3] + (sh[-3], 1) + sh[-2:])
            t = T.broadcast_to(t, sh[:-3] + (sh[-3], rep) + sh[-2:])
            return t.reshape(sh[:-3] + (sh[-3] * rep,) + sh[-2:])
        k, v = repeat(k), repeat(v)
    s = (1.0 / math.sqrt(E)) if scale is None else scale
    scores = T.matmul(q, k.transpose(tuple(range(k.ndim - 2)) + (k.ndim - 1, k.ndim - 2))) * s
    if is_causal:
        causal = np.tril(np.ones((L, S), dtype=bool))
        scores = _where(lift(causal), scores, -np.inf)
    if attn_mask is not None:
        mk = lift(attn_mask)
        if mk.node.dtype is DType.bool:
            scores = _where(mk, scores, -np.inf)
        else:
            scores = scores + _like(scores, mk)
    w = softmax(scores, -1)
    if dropout_p > 0:
        w = dropout(w, dropout_p, True, dropout_key)
    out = T.matmul(w, v)
    return (out, w) if return_weights else out


@_public
def additive_attention(query, keys, W_q, W_k, v, values=None, mask=None):
    """Additive (Bahdanau) attention (lectures 4.22): scores
    e_j = v^T tanh(W_q q + W_k k_j), weights a = softmax_j(e), context c = sum_j a_j value_j.

    query (..., Dq); keys (..., S, Dk); W_q (H, Dq) and W_k (H, Dk) in the (out, in) layout
    (together the lecture's W_a acting on [q; k_j]); v (H,); values (..., S, Dv), default keys;
    mask (..., S) bool, True = attend. Leading dims broadcast (for L queries per batch use
    query (N, L, Dq) with keys (N, 1, S, Dk)). Returns (context (..., Dv), weights (..., S))."""
    q, kk = _float(query), _float(keys)
    qh = linear(q, W_q)                                  # (..., H)
    kh = linear(kk, W_k)                                 # (..., S, H)
    e = T.matmul(_tanh(qh.reshape(qh.shape[:-1] + (1, qh.shape[-1])) + kh), lift(v))  # (..., S)
    if mask is not None:
        e = _where(lift(mask), e, -np.inf)
    a = softmax(e, -1)
    vals = kk if values is None else _float(values)
    ctx = T.matmul(a.reshape(a.shape[:-1] + (1, a.shape[-1])), vals)     # (..., 1, Dv)
    return ctx.reshape(ctx.shape[:-2] + ctx.shape[-1:]), a
