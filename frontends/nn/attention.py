"""Attention layers: MultiheadAttention and TransformerEncoderLayer as in torch.nn (parameter
names and packing, so torch state dicts load), Bahdanau's additive attention and an
encoder-decoder (Seq2Seq) that uses it (lectures 4.21, 4.22, Appendix A).

Masks follow torch: a boolean mask is True where attention is NOT allowed; a float mask is
added to the scores. Arrays given as masks become constants of the graph.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from graphc.errors import GraphcError, ShapeError
from graphc.frontends import numpy_api as gnp
from graphc.frontends.tensor import Tensor
from graphc.frontends.nn import functional as F
from graphc.frontends.nn import init
from graphc.frontends.nn.containers import ModuleList
from graphc.frontends.nn.layers import Embedding, Linear
from graphc.frontends.nn.module import Module, Parameter, _make_rng, _seeded
from graphc.frontends.nn.norm_layers import Dropout, LayerNorm
from graphc.frontends.nn.stateless import _dropout_key
from graphc.frontends.nn.rnn import GRU, LSTM, GRUCell, LSTMCell

__all__ = ["MultiheadAttention", "TransformerEncoderLayer", "TransformerEncoder",
           "AdditiveAttention", "Seq2Seq"]


def _mask_scores(scores, mask):
    """Apply a torch-style mask (bool: True = masked; float: added) to attention scores."""
    if mask is None:
        return scores
    dt = np.dtype(mask.dtype)
    if dt == np.bool_:
        return gnp.where(mask, -np.inf, scores)
    return scores + mask


class MultiheadAttention(Module):
    """MultiheadAttention(embed_dim, num_heads, dropout=0.0, bias=True, kdim=None, vdim=None,
    batch_first=False, *, dtype, seed, rng) -- `concat(head_1..head_h) W_Oᵀ + b_O` with
    `head_i = softmax(Q_i K_iᵀ/√d + M) V_i`, as torch.nn.MultiheadAttention.

    Parameters (torch names): in_proj_weight (3E, E) packing W_q, W_k, W_v (xavier_uniform_),
    in_proj_bias (3E,) zeros, out_proj.weight (E, E), out_proj.bias zeros; with kdim/vdim
    different from E: q_proj_weight, k_proj_weight, v_proj_weight instead of in_proj_weight.

    forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False) -> (attn_output, attn_weights):
    query (L, N, E) (or (N, L, E) with batch_first, or unbatched (L, E)), key/value (S, N, ·);
    key_padding_mask (N, S), attn_mask (L, S) or (N·heads, L, S); is_causal without attn_mask
    masks j > i. attn_weights (N, L, S) averaged over heads, (N, heads, L, S) with
    average_attn_weights=False, None with need_weights=False. Dropout on the attention
    weights in training mode (needs functional_call(..., key=) when traced)."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False, *,
                 dtype=np.float32, seed=None, rng=None):
        super().__init__()
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError("add_bias_kv and add_zero_attn are not supported")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        E = int(embed_dim)
        self.embed_dim, self.num_heads, self.head_dim = E, int(num_heads), E // num_heads
        self.kdim = int(kdim) if kdim is not None else E
        self.vdim = int(vdim) if vdim is not None else E
        self._qkv_same_embed_dim = self.kdim == E and self.vdim == E
        self.dropout, self.batch_first = float(dropout), bool(batch_first)
        r = _make_rng(seed, rng)
        _seeded(self, r)
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(init.xavier_uniform_(np.empty((3 * E, E), dtype), rng=r))
            for n in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(n, None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = Parameter(init.xavier_uniform_(np.empty((E, E), dtype), rng=r))
            self.k_proj_weight = Parameter(init.xavier_uniform_(np.empty((E, self.kdim), dtype), rng=r))
            self.v_proj_weight = Parameter(init.xavier_uniform_(np.empty((E, self.vdim), dtype), rng=r))
        if bias:
            self.in_proj_bias = Parameter(np.zeros(3 * E, dtype))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(E, E, bias=bias, dtype=dtype, rng=r)
        if bias:
            self.out_proj.bias = np.zeros(E, dtype)

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, " \
               f"batch_first={self.batch_first}"

    def _proj(self, x, i):
        E = self.embed_dim
        if self.in_proj_weight is not None:
            w = self.in_proj_weight[i * E:(i + 1) * E]
        else:
            w = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)[i]
        b = self.in_proj_bias[i * E:(i + 1) * E] if self.in_proj_bias is not None else None
        return F.linear(x, w, b)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        unbatched = query.ndim == 2
        if unbatched:
            query, key, value = (gnp.expand_dims(t, 1) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = gnp.expand_dims(key_padding_mask, 0)
        elif self.batch_first:  # internally (L, N, E), as torch
            query, key, value = (gnp.transpose(t, (1, 0, 2)) for t in (query, key, value))
        L, N, E = query.shape
        S = key.shape[0]
        h, d = self.num_heads, self.head_dim
        if E != self.embed_dim:
            raise ShapeError(f"MultiheadAttention: query has {E} features, expected "
                             f"{self.embed_dim}", stage="trace")

        def heads(x, n):  # (n, N, E) -> (N, h, n, d)
            return gnp.transpose(gnp.reshape(x, (n, N, h, d)), (1, 2, 0, 3))

        q = heads(self._proj(query, 0), L)
        k = heads(self._proj(key, 1), S)
        v = heads(self._proj(value, 2), S)
        scores = (q @ gnp.transpose(k, (0, 1, 3, 2))) * (1.0 / math.sqrt(d))  # (N, h, L, S)
        if attn_mask is None and is_causal:
            attn_mask = np.triu(np.ones((L, S), bool), 1)
        if attn_mask is not None:
            if attn_mask.ndim == 3:  # (N*h, L, S)
                attn_mask = gnp.reshape(attn_mask, (N, h, L, S))
            scores = _mask_scores(scores, attn_mask)
        if key_padding_mask is not None:
            kpm = gnp.reshape(key_padding_mask, (N, 1, 1, S))
            scores = _mask_scores(scores, kpm)
        w = F.softmax(scores, dim=-1)
        if self.dropout > 0 and self.training:
            w = F.dropout(w, self.dropout, True, _dropout_key(self))
        out = w @ v  # (N, h, L, d)
        out = gnp.reshape(gnp.transpose(out, (2, 0, 1, 3)), (L, N, E))
        out = self.out_proj(out)
        if unbatched:
            out = out[:, 0]
        elif self.batch_first:
            out = gnp.transpose(out, (1, 0, 2))
        if not need_weights:
            return out, None
        if average_attn_weights:
            w = gnp.mean(w, axis=1)
        return out, (w[0] if unbatched else w)


class TransformerEncoderLayer(Module):
    """TransformerEncoderLayer(d_model, nhead, dim_feedforward=2048, dropout=0.1,
    activation='relu', layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True,
    *, dtype, seed, rng), as torch: post-norm by default,
    `x = norm1(x + dropout1(self_attn(x)))`, `x = norm2(x + dropout2(linear2(dropout(act(linear1(x))))))`;
    norm_first=True gives the pre-norm variant. forward(src, src_mask=None,
    src_key_padding_mask=None, is_causal=False) -> same shape as src."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True, *,
                 dtype=np.float32, seed=None, rng=None):
        super().__init__()
        r = _make_rng(seed, rng)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, dtype=dtype, rng=r)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype, rng=r)
        self.dropout = Dropout(dropout, rng=r)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype, rng=r)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout, rng=r)
        self.dropout2 = Dropout(dropout, rng=r)
        if isinstance(activation, str):
            if activation not in ("relu", "gelu"):
                raise ValueError(f"activation should be relu or gelu, not {activation!r}")
            activation = getattr(F, activation)
        self.activation = activation

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=False,
                           attn_mask=attn_mask, is_causal=is_causal)[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x


class TransformerEncoder(Module):
    """TransformerEncoder(encoder_layer, num_layers, norm=None): num_layers copies of
    encoder_layer (same initial weights, as torch's deepcopy), names layers.0..., then norm."""

    def __init__(self, encoder_layer, num_layers, norm=None):
        super().__init__()
        self.layers = ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                      is_causal=is_causal)
        return self.norm(x) if self.norm is not None else x


class AdditiveAttention(Module):
    """Additive (Bahdanau) attention, lectures 4.22, over `F.additive_attention`:
    `score_j = vᵀ tanh(W_q q + W_k k_j)` (= `v_aᵀ tanh(W_a [q; k_j])` with W_a = [W_q W_k]),
    `α = softmax_j(score)`, `context = Σ_j α_j value_j`.

    AdditiveAttention(query_size, key_size, hidden_size, *, dtype, seed, rng): submodules
    query_proj (Linear q -> hidden), key_proj (Linear k -> hidden), v (Linear hidden -> 1),
    none with a bias, torch's default Linear init. forward(query (N, Q) or (N, L, Q),
    keys (N, S, K), values=None (= keys), mask=None ((N, S) bool, True = a real position to
    attend to)) -> (context (N, V) or (N, L, V), weights (N, S) or (N, L, S))."""

    def __init__(self, query_size, key_size, hidden_size, *, dtype=np.float32, seed=None,
                 rng=None):
        super().__init__()
        r = _make_rng(seed, rng)
        self.query_proj = Linear(query_size, hidden_size, bias=False, dtype=dtype, rng=r)
        self.key_proj = Linear(key_size, hidden_size, bias=False, dtype=dtype, rng=r)
        self.v = Linear(hidden_size, 1, bias=False, dtype=dtype, rng=r)

    def forward(self, query, keys, values=None, mask=None):
        if query.ndim == keys.ndim:  # L queries per batch: keys broadcast over them
            keys = gnp.expand_dims(keys, -3)
            values = None if values is None else gnp.expand_dims(values, -3)
            mask = None if mask is None else gnp.expand_dims(mask, -2)
        return F.additive_attention(query, keys, self.query_proj.weight, self.key_proj.weight,
                                    self.v.weight[0], values, mask)


class Seq2Seq(Module):
    """Encoder-decoder with additive attention (Bahdanau et al. 2015; lectures 4.21-4.22).

    Seq2Seq(src_vocab, tgt_vocab, embed_dim, hidden_size, rnn='gru' | 'lstm', attn_size=None
    (= hidden_size), *, dtype, seed, rng). Submodules: src_embed, tgt_embed (Embedding),
    encoder (GRU/LSTM, batch_first), attention (AdditiveAttention, query = decoder state,
    keys = encoder outputs), decoder (GRUCell/LSTMCell over [embedding; context]), out
    (Linear over [state; context] -> tgt_vocab logits).

    Decoder step i: context c_i = attention(g_{i-1}, z_1..z_S); g_i = cell([emb(y_{i-1}); c_i],
    g_{i-1}); logits_i = out([g_i; c_i]); g_0 = the encoder's final state (LSTM: with its cell).

    forward(src (N, S) int, tgt_in (N, T) int, src_mask=None) -> (logits (N, T, tgt_vocab),
    attention weights (N, T, S)). Teacher forcing: tgt_in[:, i] is the token fed at step i
    (BOS, then the target shifted right by one), logits[:, i] predict target token i.
    src_mask (N, S) bool marks real (not padding) source tokens.
    `greedy_decode(src, bos, steps)` decodes eagerly (numpy arrays) without teacher forcing."""

    def __init__(self, src_vocab, tgt_vocab, embed_dim, hidden_size, rnn="gru", attn_size=None,
                 *, dtype=np.float32, seed=None, rng=None):
        super().__init__()
        if rnn not in ("gru", "lstm"):
            raise ValueError(f"rnn must be 'gru' or 'lstm', not {rnn!r}")
        r = _make_rng(seed, rng)
        E, H = int(embed_dim), int(hidden_size)
        self.rnn, self.hidden_size = rnn, H
        self.src_embed = Embedding(src_vocab, E, dtype=dtype, rng=r)
        self.tgt_embed = Embedding(tgt_vocab, E, dtype=dtype, rng=r)
        Enc, Cell = (GRU, GRUCell) if rnn == "gru" else (LSTM, LSTMCell)
        self.encoder = Enc(E, H, batch_first=True, dtype=dtype, rng=r)
        self.attention = AdditiveAttention(H, H, attn_size or H, dtype=dtype, rng=r)
        self.decoder = Cell(E + H, H, dtype=dtype, rng=r)
        self.out = Linear(2 * H, tgt_vocab, dtype=dtype, rng=r)

    def encode(self, src):
        """-> (encoder outputs (N, S, H), initial decoder state)."""
        z, state = self.encoder(self.src_embed(src))
        if self.rnn == "lstm":
            return z, (state[0][0], state[1][0])
        return z, state[0]

    def decode_step(self, y_prev, state, z, src_mask=None):
        """One decoder step from token ids y_prev (N,) -> (logits (N, V), new state, weights (N, S))."""
        g = state[0] if self.rnn == "lstm" else state
        ctx, w = self.attention(g, z, mask=src_mask)
        inp = gnp.concatenate([self.tgt_embed(y_prev), ctx], axis=-1)
        state = self.decoder(inp, state)
        g = state[0] if self.rnn == "lstm" else state
        return self.out(gnp.concatenate([g, ctx], axis=-1)), state, w

    def forward(self, src, tgt_in, src_mask=None):
        z, state = self.encode(src)
        logits, weights = [], []
        for i in range(tgt_in.shape[1]):
            lg, state, w = self.decode_step(tgt_in[:, i], state, z, src_mask)
            logits.append(lg)
            weights.append(w)
        return gnp.stack(logits, axis=1), gnp.stack(weights, axis=1)

    def greedy_decode(self, src, bos: int, steps: int, src_mask=None):
        """Eager greedy decoding: feeds back the argmax token. -> (tokens (N, steps) int64,
        attention weights (N, steps, S))."""
        if isinstance(src, Tensor):
            raise GraphcError("greedy_decode runs eagerly on numpy arrays (argmax feedback)",
                              hint="trace forward() with teacher forcing instead")
        z, state = self.encode(src)
        y = np.full(src.shape[0], bos, np.int64)
        toks, ws = [], []
        for _ in range(steps):
            lg, state, w = self.decode_step(y, state, z, src_mask)
            y = np.asarray(lg).argmax(-1).astype(np.int64)
            toks.append(y)
            ws.append(np.asarray(w))
        return np.stack(toks, 1), np.stack(ws, 1)

