"""Recurrent layers: RNNCell, LSTMCell, GRUCell and the unrolled RNN, LSTM, GRU, with
PyTorch's equations, gate packing and parameter names (lectures B.8), so weights interchange
with torch.nn:

- LSTM, gates packed (i, f, g, o): `i = σ(W_ii x + b_ii + W_hi h + b_hi)` (likewise f, o),
  `g = tanh(W_ig x + b_ig + W_hg h + b_hg)`, `c' = f⊙c + i⊙g`, `h' = o⊙tanh(c')`.
- GRU, gates packed (r, z, n): `r = σ(W_ir x + b_ir + W_hr h + b_hr)`, `z = σ(…)`,
  `n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn))`, `h' = (1 − z)⊙n + z⊙h`.
- RNN: `h' = tanh(W_ih x + b_ih + W_hh h + b_hh)` (or relu).

Weights `weight_ih` (gates·H, in) and `weight_hh` (gates·H, H), biases `bias_ih`, `bias_hh`
(gates·H), all initialised U(−1/√H, 1/√H). The unrolled layers name them
`weight_ih_l{k}` / `..._l{k}_reverse` as torch does, take (T, N, F) input (or (N, T, F) with
batch_first=True, or unbatched (T, F)), start from zero states unless given, and return
`(output, h_n)` (LSTM: `(output, (h_n, c_n))`) with h_n of shape (num_layers·D, N, H).
Loops over time are unrolled at trace time (sequence lengths are static).
"""
from __future__ import annotations

import math

import numpy as np

from graphc.errors import ShapeError
from graphc.frontends import numpy_api as gnp
from graphc.frontends.nn import functional as F
from graphc.frontends.nn.layers import _uniform
from graphc.frontends.nn.module import Module, Parameter, _make_rng, _seeded
from graphc.frontends.nn.stateless import _dropout_key

__all__ = ["RNNCell", "LSTMCell", "GRUCell", "RNN", "LSTM", "GRU",
           "rnn_cell", "lstm_cell", "gru_cell"]

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


# ---- one step, as pure functions (also used by the cells) -------------------------------------------
def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh", xw=None):
    """One Elman step: act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh). `xw` is a precomputed
    x W_ihᵀ + b_ih (the unrolled layer computes it for all steps at once)."""
    pre = (F.linear(x, w_ih, b_ih) if xw is None else xw) + F.linear(h, w_hh, b_hh)
    return gnp.tanh(pre) if nonlinearity == "tanh" else F.relu(pre)


def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, xw=None):
    """One LSTM step, gates packed (i, f, g, o) as torch; returns (h', c')."""
    gates = (F.linear(x, w_ih, b_ih) if xw is None else xw) + F.linear(h, w_hh, b_hh)
    H = h.shape[-1]
    i = F.sigmoid(gates[..., 0:H])
    f = F.sigmoid(gates[..., H:2 * H])
    g = gnp.tanh(gates[..., 2 * H:3 * H])
    o = F.sigmoid(gates[..., 3 * H:4 * H])
    c2 = f * c + i * g
    return o * gnp.tanh(c2), c2


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, xw=None):
    """One GRU step, gates packed (r, z, n) as torch (reset applied after the recurrent
    matmul); returns h'."""
    gi = F.linear(x, w_ih, b_ih) if xw is None else xw
    gh = F.linear(h, w_hh, b_hh)
    H = h.shape[-1]
    r = F.sigmoid(gi[..., 0:H] + gh[..., 0:H])
    z = F.sigmoid(gi[..., H:2 * H] + gh[..., H:2 * H])
    n = gnp.tanh(gi[..., 2 * H:3 * H] + r * gh[..., 2 * H:3 * H])
    return (1 - z) * n + z * h


def _zeros(like, shape):
    """Zeros of `shape` with `like`'s dtype (a numpy constant; broadcasts into the graph)."""
    return np.zeros(shape, dtype=np.dtype(like.dtype))


# ---- cells ------------------------------------------------------------------------------------------
class _CellBase(Module):
    def __init__(self, input_size, hidden_size, bias, gates, *, dtype, seed, rng):
        super().__init__()
        self.input_size, self.hidden_size, self.bias = int(input_size), int(hidden_size), bool(bias)
        r = _make_rng(seed, rng)
        k = 1.0 / math.sqrt(hidden_size)
        G = gates * hidden_size
        self.weight_ih = Parameter(_uniform(r, (G, input_size), k, dtype))
        self.weight_hh = Parameter(_uniform(r, (G, hidden_size), k, dtype))
        if bias:
            self.bias_ih = Parameter(_uniform(r, (G,), k, dtype))
            self.bias_hh = Parameter(_uniform(r, (G,), k, dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")

    def _check(self, x):
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ShapeError(f"{type(self).__name__}: input of shape {x.shape}, expected "
                             f"(N, {self.input_size}) or ({self.input_size},)", stage="trace")
        return x.ndim == 1

    def _state(self, x, hx):
        return hx if hx is not None else _zeros(x, x.shape[:-1] + (self.hidden_size,))


class RNNCell(_CellBase):
    """RNNCell(input_size, hidden_size, bias=True, nonlinearity='tanh', *, dtype, seed, rng).
    forward(input (N, in) or (in,), hx=None) -> h' (N, H)."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", *,
                 dtype=np.float32, seed=None, rng=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"unknown nonlinearity {nonlinearity!r} (tanh or relu)")
        super().__init__(input_size, hidden_size, bias, 1, dtype=dtype, seed=seed, rng=rng)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        self._check(input)
        return rnn_cell(input, self._state(input, hx), self.weight_ih, self.weight_hh,
                        self.bias_ih, self.bias_hh, self.nonlinearity)


class LSTMCell(_CellBase):
    """LSTMCell(input_size, hidden_size, bias=True, *, dtype, seed, rng).
    forward(input, hx=None or (h, c)) -> (h', c')."""

    def __init__(self, input_size, hidden_size, bias=True, *, dtype=np.float32, seed=None, rng=None):
        super().__init__(input_size, hidden_size, bias, 4, dtype=dtype, seed=seed, rng=rng)

    def forward(self, input, hx=None):
        self._check(input)
        h, c = hx if hx is not None else (self._state(input, None), self._state(input, None))
        return lstm_cell(input, h, c, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class GRUCell(_CellBase):
    """GRUCell(input_size, hidden_size, bias=True, *, dtype, seed, rng).
    forward(input, hx=None) -> h'."""

    def __init__(self, input_size, hidden_size, bias=True, *, dtype=np.float32, seed=None, rng=None):
        super().__init__(input_size, hidden_size, bias, 3, dtype=dtype, seed=seed, rng=rng)

    def forward(self, input, hx=None):
        self._check(input)
        return gru_cell(input, self._state(input, hx), self.weight_ih, self.weight_hh,
                        self.bias_ih, self.bias_hh)


# ---- unrolled layers --------------------------------------------------------------------------------
class _RNNBase(Module):
    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, dtype=np.float32, seed=None, rng=None):
        super().__init__()
        if not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}")
        self.mode = mode
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.num_layers, self.bias = int(num_layers), bool(bias)
        self.batch_first, self.dropout = bool(batch_first), float(dropout)
        self.bidirectional = bool(bidirectional)
        r = _make_rng(seed, rng)
        _seeded(self, r)
        k = 1.0 / math.sqrt(hidden_size)
        G = _GATES[mode] * hidden_size
        D = 2 if bidirectional else 1
        for layer in range(self.num_layers):
            n_in = self.input_size if layer == 0 else hidden_size * D
            for d in range(D):
                s = f"_l{layer}" + ("_reverse" if d else "")
                setattr(self, "weight_ih" + s, Parameter(_uniform(r, (G, n_in), k, dtype)))
                setattr(self, "weight_hh" + s, Parameter(_uniform(r, (G, hidden_size), k, dtype)))
                if bias:
                    setattr(self, "bias_ih" + s, Parameter(_uniform(r, (G,), k, dtype)))
                    setattr(self, "bias_hh" + s, Parameter(_uniform(r, (G,), k, dtype)))

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        for name, default in (("num_layers", 1), ("bias", True), ("batch_first", False),
                              ("dropout", 0.0), ("bidirectional", False)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s

    def _weights(self, layer, d):
        s = f"_l{layer}" + ("_reverse" if d else "")
        g = lambda n: getattr(self, n + s) if self.bias or n.startswith("weight") else None  # noqa: E731
        return g("weight_ih"), g("weight_hh"), g("bias_ih"), g("bias_hh")

    def forward(self, input, hx=None):
        lstm = self.mode == "LSTM"
        if input.ndim not in (2, 3) or input.shape[-1] != self.input_size:
            raise ShapeError(f"{type(self).__name__}: input of shape {input.shape}, expected "
                             f"({'N, T' if self.batch_first else 'T, N'}, {self.input_size})",
                             stage="trace")
        unbatched = input.ndim == 2
        x = gnp.expand_dims(input, 1) if unbatched else \
            (gnp.transpose(input, (1, 0, 2)) if self.batch_first else input)
        T, N = x.shape[0], x.shape[1]
        D = 2 if self.bidirectional else 1
        H = self.hidden_size
        if hx is None:
            z = _zeros(x, (N, H))
            h0 = [z] * (self.num_layers * D)
            c0 = [z] * (self.num_layers * D)
        else:
            hs, cs = hx if lstm else (hx, None)
            if unbatched:
                hs = gnp.expand_dims(hs, 1)
                cs = gnp.expand_dims(cs, 1) if lstm else None
            if tuple(hs.shape) != (self.num_layers * D, N, H):
                raise ShapeError(f"{type(self).__name__}: initial state of shape {hs.shape}, "
                                 f"expected {(self.num_layers * D, N, H)}", stage="trace")
            h0 = [hs[i] for i in range(self.num_layers * D)]
            c0 = [cs[i] for i in range(self.num_layers * D)] if lstm else None
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, d)
                xw = F.linear(x, w_ih, b_ih)  # the input projection of all steps at once
                h = h0[layer * D + d]
                c = c0[layer * D + d] if lstm else None
                ys = [None] * T
                for t in (range(T - 1, -1, -1) if d else range(T)):
                    if lstm:
                        h, c = lstm_cell(None, h, c, w_ih, w_hh, None, b_hh, xw=xw[t])
                    elif self.mode == "GRU":
                        h = gru_cell(None, h, w_ih, w_hh, None, b_hh, xw=xw[t])
                    else:
                        h = rnn_cell(None, h, w_ih, w_hh, None, b_hh, xw=xw[t],
                                     nonlinearity="tanh" if self.mode == "RNN_TANH" else "relu")
                    ys[t] = h
                outs.append(gnp.stack(ys, axis=0))
                h_n.append(h)
                c_n.append(c)
            x = outs[0] if D == 1 else gnp.concatenate(outs, axis=-1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True, _dropout_key(self))
        out = x[:, 0] if unbatched else (gnp.transpose(x, (1, 0, 2)) if self.batch_first else x)
        hn = gnp.stack(h_n, axis=0)
        cn = gnp.stack(c_n, axis=0) if lstm else None
        if unbatched:
            hn = hn[:, 0]
            cn = cn[:, 0] if lstm else None
        return (out, (hn, cn)) if lstm else (out, hn)


class RNN(_RNNBase):
    """RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, *, dtype, seed, rng).
    forward(input, h_0=None) -> (output (T, N, D·H), h_n (num_layers·D, N, H))."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, *, dtype=np.float32,
                 seed=None, rng=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"unknown nonlinearity {nonlinearity!r} (tanh or relu)")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         dtype=dtype, seed=seed, rng=rng)
        self.nonlinearity = nonlinearity


class LSTM(_RNNBase):
    """LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, *, dtype, seed, rng).
    forward(input, (h_0, c_0)=None) -> (output, (h_n, c_n))."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, dtype=np.float32, seed=None, rng=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype=dtype, seed=seed, rng=rng)


class GRU(_RNNBase):
    """GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, *, dtype, seed, rng).
    forward(input, h_0=None) -> (output, h_n)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, dtype=np.float32, seed=None, rng=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype=dtype, seed=seed, rng=rng)
