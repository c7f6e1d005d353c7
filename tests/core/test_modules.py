"""graphc.nn Modules: parameter discovery and naming (torch's names), state dicts through .npz,
train/eval behaviour, every layer's forward against a hand-written NumPy reference in
float64, finite-difference gradient checks through functional_call, and a whole training
step compiled into one graph."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import nn
from graphc.nn import functional as F

RNG = np.random.default_rng(1234)


def rnd(*shape, scale=1.0):
    return RNG.normal(0.0, scale, shape)


def f64(model):
    return model.double()


def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def close(a, b, tol=1e-10):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def traced_call(model, *inputs, **kw):
    """Run the model inside gc.compile (params and inputs as graph inputs), float64."""
    p = model.param_dict()
    out = gc.compile(lambda p, *xs: nn.functional_call(model, p, *xs, **kw))(p, *inputs)
    return out


# ---- NumPy references ----------------------------------------------------------------------------
def conv2d_ref(x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    if padding == "same":
        th, tw = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
        pads = ((th // 2, th - th // 2), (tw // 2, tw - tw // 2))
    else:
        pads = ((padding[0], padding[0]), (padding[1], padding[1]))
    xp = np.pad(x, ((0, 0), (0, 0)) + pads)
    Ho = (xp.shape[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    Wo = (xp.shape[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((N, O, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            patch = xp[:, :, i * stride[0]:i * stride[0] + dilation[0] * (kh - 1) + 1:dilation[0],
                       j * stride[1]:j * stride[1] + dilation[1] * (kw - 1) + 1:dilation[1]]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
    return out if b is None else out + b[None, :, None, None]


def pool_ref(x, k, s, op):
    N, C, H, W = x.shape
    Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
    out = np.zeros((N, C, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = op(x[:, :, i * s:i * s + k, j * s:j * s + k], axis=(2, 3))
    return out


def bn_ref(x, gamma, beta, axes, eps=1e-5):
    shape = [1] * x.ndim
    shape[1] = x.shape[1]
    mean = x.mean(axis=axes)
    var = x.var(axis=axes)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    n = x.size // x.shape[1]
    return y * gamma.reshape(shape) + beta.reshape(shape), mean, var * n / (n - 1)


def ln_ref(x, g, b, eps=1e-5):
    m = x.mean(-1, keepdims=True)
    v = x.var(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * g + b


def lstm_cell_ref(x, h, c, w_ih, w_hh, b_ih, b_hh):
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    i, f, g, o = np.split(gates, 4, axis=-1)
    c2 = sig(f) * c + sig(i) * np.tanh(g)
    return sig(o) * np.tanh(c2), c2


def gru_cell_ref(x, h, w_ih, w_hh, b_ih, b_hh):
    gi = x @ w_ih.T + b_ih
    gh = h @ w_hh.T + b_hh
    ir, iz, inn = np.split(gi, 3, axis=-1)
    hr, hz, hn = np.split(gh, 3, axis=-1)
    r, z = sig(ir + hr), sig(iz + hz)
    n = np.tanh(inn + r * hn)
    return (1 - z) * n + z * h


def rnn_cell_ref(x, h, w_ih, w_hh, b_ih, b_hh):
    return np.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)


def rnn_layer_ref(mode, p, x, num_layers, bidirectional, h0=None):
    """x (T, N, F) -> (output, h_n[, c_n]) with torch's parameter names in p."""
    T, N, _ = x.shape
    D = 2 if bidirectional else 1
    H = p["weight_hh_l0"].shape[1]
    hs, cs = [], []
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            s = f"_l{layer}" + ("_reverse" if d else "")
            w = [p[n + s] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h = np.zeros((N, H)) if h0 is None else h0[layer * D + d]
            c = np.zeros((N, H))
            ys = [None] * T
            for t in (reversed(range(T)) if d else range(T)):
                if mode == "lstm":
                    h, c = lstm_cell_ref(x[t], h, c, *w)
                elif mode == "gru":
                    h = gru_cell_ref(x[t], h, *w)
                else:
                    h = rnn_cell_ref(x[t], h, *w)
                ys[t] = h
            outs.append(np.stack(ys))
            hs.append(h)
            cs.append(c)
        x = np.concatenate(outs, -1)
    return x, np.stack(hs), np.stack(cs)


def softmax_ref(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def mha_ref(p, q, k, v, num_heads, mask=None):
    """Batch-first (N, L, E) multi-head attention with torch's packing."""
    E = q.shape[-1]
    W, b = p["in_proj_weight"], p["in_proj_bias"]
    Q, K, V = q @ W[:E].T + b[:E], k @ W[E:2 * E].T + b[E:2 * E], v @ W[2 * E:].T + b[2 * E:]
    N, L, _ = Q.shape
    S = K.shape[1]
    d = E // num_heads
    split = lambda t, n: t.reshape(N, n, num_heads, d).transpose(0, 2, 1, 3)  # noqa: E731
    s = split(Q, L) @ split(K, S).transpose(0, 1, 3, 2) / np.sqrt(d)
    if mask is not None:
        s = np.where(mask, -np.inf, s)
    a = softmax_ref(s)
    o = (a @ split(V, S)).transpose(0, 2, 1, 3).reshape(N, L, E)
    return o @ p["out_proj.weight"].T + p["out_proj.bias"], a.mean(1)


def directional_fd_check(f, params, n_dirs=3, eps=1e-6, tol=1e-6):
    """Compare gc.grad(f) with central differences along random directions (float64)."""
    g = gc.grad(f)(params)
    rng = np.random.default_rng(0)
    for _ in range(n_dirs):
        d = {k: rng.normal(size=v.shape) for k, v in params.items()}
        plus = {k: params[k] + eps * d[k] for k in params}
        minus = {k: params[k] - eps * d[k] for k in params}
        fd = (float(f(plus)) - float(f(minus))) / (2 * eps)
        an = sum(float(np.sum(g[k] * d[k])) for k in params)
        assert an == pytest.approx(fd, rel=tol, abs=tol)
    return g


# ---- Module: discovery, naming, state --------------------------------------------------------------
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4, seed=0)
        self.scale = nn.Parameter(np.ones(4))
        self.register_buffer("count", np.zeros((), np.int64))
        self.layers = [nn.Linear(4, 4, seed=1), nn.Tanh(), nn.Linear(4, 2, seed=2)]
        self.const = np.arange(3.0)            # a plain array: a constant, not a parameter
        self.body = nn.Sequential(nn.BatchNorm1d(2), nn.ReLU())

    def forward(self, x):
        h = self.fc(x + self.const) * self.scale
        for m in self.layers:
            h = m(h)
        return self.body(h)


def test_parameter_discovery_and_dotted_names():
    m = Net()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["scale", "fc.weight", "fc.bias", "layers.0.weight", "layers.0.bias",
                     "layers.2.weight", "layers.2.bias", "body.0.weight", "body.0.bias"]
    assert [n for n, _ in m.named_buffers()] == [
        "count", "body.0.running_mean", "body.0.running_var", "body.0.num_batches_tracked"]
    assert isinstance(m.layers, nn.ModuleList) and len(m.layers) == 3
    assert m.fc.weight.shape == (4, 3) and type(m.fc.weight) is np.ndarray
    assert len(list(m.parameters())) == 9
    assert m.num_parameters() == 4 + 12 + 4 + 20 + 10 + 4
    # assigning an array to a registered name replaces the parameter's value
    m.fc.bias = np.zeros(4, np.float32)
    assert np.all(m.param_dict()["fc.bias"] == 0)
    assert "const" not in dict(m.named_parameters())
    del m.scale
    assert "scale" not in m.param_dict()
    with pytest.raises(AttributeError):
        m.scale


def test_tied_parameters_are_listed_once_and_follow_functional_call():
    a, b = nn.Linear(3, 3, bias=False, seed=0), nn.Linear(3, 3, bias=False, seed=1)
    b.weight = a.weight
    model = nn.Sequential(a, b)
    assert list(model.param_dict()) == ["0.weight"]
    w = rnd(3, 3)
    x = rnd(2, 3)
    out = nn.functional_call(model, {"0.weight": w}, x)
    close(out, x @ w.T @ w.T)


def test_torch_parameter_names_and_shapes():
    shapes = lambda m: [(n, v.shape) for n, v in m.state_dict().items()]  # noqa: E731
    assert shapes(nn.Conv2d(3, 8, 3)) == [("weight", (8, 3, 3, 3)), ("bias", (8,))]
    assert shapes(nn.BatchNorm2d(4)) == [("weight", (4,)), ("bias", (4,)), ("running_mean", (4,)),
                                         ("running_var", (4,)), ("num_batches_tracked", ())]
    lstm = nn.LSTM(3, 5, num_layers=2, bidirectional=True)
    assert [n for n, _ in shapes(lstm)][:8] == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_ih_l0_reverse",
        "weight_hh_l0_reverse", "bias_ih_l0_reverse", "bias_hh_l0_reverse"]
    assert lstm.weight_ih_l1.shape == (20, 10) and lstm.weight_hh_l1_reverse.shape == (20, 5)
    assert nn.GRU(3, 5).weight_ih_l0.shape == (15, 3)
    assert shapes(nn.MultiheadAttention(8, 2)) == [
        ("in_proj_weight", (24, 8)), ("in_proj_bias", (24,)), ("out_proj.weight", (8, 8)),
        ("out_proj.bias", (8,))]
    enc = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)
    assert [n for n, _ in shapes(enc)] == [
        "self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
        "self_attn.out_proj.bias", "linear1.weight", "linear1.bias", "linear2.weight",
        "linear2.bias", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"]
    blk = nn.BasicBlock(4, 8, stride=2)
    assert [n for n, _ in shapes(blk) if "downsample" in n] == [
        "downsample.0.weight", "downsample.1.weight", "downsample.1.bias",
        "downsample.1.running_mean", "downsample.1.running_var",
        "downsample.1.num_batches_tracked"]
    assert "downsample.0.weight" not in nn.BasicBlock(4, 4).state_dict()


def test_default_init_is_torch_like_and_seeded():
    lin = nn.Linear(50, 40, seed=3)
    assert lin.weight.dtype == np.float32
    assert np.abs(lin.weight).max() <= 1 / np.sqrt(50) and np.abs(lin.weight).max() > 0.9 / np.sqrt(50)
    assert np.abs(lin.bias).max() <= 1 / np.sqrt(50)
    np.testing.assert_array_equal(lin.weight, nn.Linear(50, 40, seed=3).weight)
    assert not np.array_equal(lin.weight, nn.Linear(50, 40, seed=4).weight)
    r1, r2 = np.random.default_rng(7), np.random.default_rng(7)
    np.testing.assert_array_equal(nn.LSTM(3, 4, rng=r1).weight_hh_l0, nn.LSTM(3, 4, rng=r2).weight_hh_l0)
    assert np.abs(nn.GRU(3, 16, seed=0).weight_hh_l0).max() <= 0.25
    conv = nn.Conv2d(2, 3, 3, seed=0)
    assert np.abs(conv.weight).max() <= 1 / np.sqrt(18)
    bn = nn.BatchNorm1d(3)
    assert np.all(bn.weight == 1) and np.all(bn.bias == 0) and np.all(bn.running_var == 1)
    mha = nn.MultiheadAttention(8, 2, seed=0)
    assert np.all(mha.in_proj_bias == 0) and np.all(mha.out_proj.bias == 0)
    assert np.abs(mha.in_proj_weight).max() <= np.sqrt(6 / (8 + 24))


def test_state_dict_round_trip_through_npz(tmp_path):
    m1, m2 = Net().double(), Net().double()
    m2.fc.weight = m2.fc.weight + 1
    x = rnd(5, 3)
    m1(x)                                   # eager training call: updates BN running stats
    assert int(m1.body[0].num_batches_tracked) == 1
    sd = m1.state_dict()
    assert "body.0.running_mean" in sd and "const" not in sd
    m1.save(tmp_path / "net.npz")
    m2.load(tmp_path / "net.npz")
    for k, v in m2.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])
    m1.eval(), m2.eval()
    close(m1(x), m2(x), 0)
    # state_dict returns copies; load keeps dtypes and checks names and shapes
    sd["fc.weight"][...] = 0
    assert not np.all(m1.fc.weight == 0)
    m3 = Net()
    m3.load_state_dict(sd)
    assert m3.fc.weight.dtype == np.float32
    with pytest.raises(KeyError):
        m3.load_state_dict({"fc.weight": sd["fc.weight"]})
    res = m3.load_state_dict({"fc.weight": sd["fc.weight"], "bogus": np.zeros(1)}, strict=False)
    assert res.unexpected_keys == ["bogus"] and "fc.bias" in res.missing_keys
    with pytest.raises(gc.ShapeError):
        m3.load_state_dict({"fc.weight": np.zeros((2, 2))}, strict=False)


def test_functional_call_validates_names_and_shapes_and_does_not_mutate():
    lin = nn.Linear(3, 2, seed=0).double()
    w0 = lin.weight.copy()
    with pytest.raises(KeyError, match="weigth.*did you mean 'weight'"):
        nn.functional_call(lin, {"weigth": w0}, rnd(1, 3))
    with pytest.raises(gc.ShapeError):
        nn.functional_call(lin, {"weight": np.zeros((3, 3))}, rnd(1, 3))
    x = rnd(4, 3)
    out = nn.functional_call(lin, {"bias": np.zeros(2)}, x)   # a subset: others stored
    close(out, x @ w0.T)
    np.testing.assert_array_equal(lin.weight, w0)
    assert lin.training


# ---- train / eval ------------------------------------------------------------------------------------
def test_batchnorm_train_eval_and_running_stats():
    bn = nn.BatchNorm1d(3).double()
    bn.weight, bn.bias = rnd(3), rnd(3)
    x = rnd(8, 3) * 2 + 1
    y_ref, mean, var_unbiased = bn_ref(x, bn.weight, bn.bias, (0,))
    close(bn(x), y_ref)                    # training: batch statistics
    close(bn.running_mean, 0.1 * mean)
    close(bn.running_var, 0.9 + 0.1 * var_unbiased)
    bn.eval()
    rm, rv = bn.running_mean.copy(), bn.running_var.copy()
    y_eval = bn(x)
    close(y_eval, (x - rm) / np.sqrt(rv + 1e-5) * bn.weight + bn.bias)
    np.testing.assert_array_equal(bn.running_mean, rm)   # eval does not update
    # functional: state in, state out; the module is not mutated
    bn.train()
    buf = bn.buffer_dict()
    out, new = nn.functional_call(bn, bn.param_dict(), x, buffers=buf)
    close(new["running_mean"], 0.9 * rm + 0.1 * mean)
    assert int(new["num_batches_tracked"]) == 2
    np.testing.assert_array_equal(bn.running_mean, rm)
    out_eval = nn.functional_call(bn, {}, x, training=False)
    close(out_eval, y_eval)
    assert bn.training


def test_batchnorm2d_and_traced_buffers():
    bn = nn.BatchNorm2d(2, momentum=0.5).double()
    x = rnd(3, 2, 4, 5)
    f = gc.compile(lambda p, b, x: nn.functional_call(bn, p, x, buffers=b))
    out, new = f(bn.param_dict(), bn.buffer_dict(), x)
    y_ref, mean, var = bn_ref(x, bn.weight, bn.bias, (0, 2, 3))
    close(out, y_ref)
    close(new["running_mean"], 0.5 * mean)
    close(new["running_var"], 0.5 + 0.5 * var)
    assert new["num_batches_tracked"].dtype == np.int64 and int(new["num_batches_tracked"]) == 1


def test_dropout_train_eval_and_keys():
    d = nn.Dropout(0.5, seed=0)
    x = np.ones((200,), np.float32)
    y = d(x)                                   # eager, training: own generator
    assert set(np.unique(y)) <= {0.0, 2.0} and 40 < np.sum(y == 0) < 160
    assert not np.array_equal(y, d(x))         # a new mask per call
    d.eval()
    np.testing.assert_array_equal(d(x), x)
    d.train()
    f = gc.compile(lambda x, k: nn.functional_call(d, {}, x, key=k))
    a, b, c = f(x, np.int64(1)), f(x, np.int64(1)), f(x, np.int64(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(a, F.dropout(x, 0.5, True, np.int64(1)))  # first draw: the key
    # two dropouts in one call draw different masks
    two = nn.Sequential(nn.Dropout(0.5), nn.Identity(), nn.Dropout(0.5))
    m1 = nn.functional_call(nn.Sequential(nn.Dropout(0.5)), {}, x, key=5)
    m2 = nn.functional_call(two, {}, x, key=5)
    assert not np.array_equal(m1 * 2, m2) and set(np.unique(m2)) <= {0.0, 4.0}
    with pytest.raises(gc.GraphcError, match="random key"):
        gc.compile(lambda x: d(x))(x)
    np.testing.assert_array_equal(gc.compile(lambda x: nn.functional_call(d, {}, x, training=False))(x), x)


# ---- layers against NumPy references ---------------------------------------------------------------
def test_linear_and_activations():
    lin = f64(nn.Linear(5, 3, seed=0))
    x = rnd(2, 4, 5)
    close(lin(x), x @ lin.weight.T + lin.bias)
    close(traced_call(lin, x), x @ lin.weight.T + lin.bias)
    z = rnd(3, 4)
    close(nn.ReLU()(z), np.maximum(z, 0))
    close(nn.LeakyReLU(0.1)(z), np.where(z > 0, z, 0.1 * z))
    close(nn.Tanh()(z), np.tanh(z))
    close(nn.Sigmoid()(z), sig(z))
    close(nn.Softmax(dim=-1)(z), softmax_ref(z))
    close(nn.PReLU().double()(z), np.where(z > 0, z, 0.25 * z))
    close(nn.Flatten()(rnd(2, 3, 4)).shape, (2, 12))
    close(nn.Identity(3, foo=1)(z), z)
    close(nn.Unflatten(1, (2, 2))(z).reshape(3, 4), z)
    hw = f64(nn.Highway(4, seed=0))
    t = sig(z @ hw.gate.weight.T + hw.gate.bias)
    close(hw(z), t * np.maximum(z @ hw.transform.weight.T + hw.transform.bias, 0) + (1 - t) * z)
    assert np.all(hw.gate.bias == -1)


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1), dict(padding="same", dilation=2),
                                dict(padding=(1, 0), bias=False)])
def test_conv2d_matches_reference(kw):
    conv = f64(nn.Conv2d(2, 3, (3, 2) if "bias" in kw else 3, seed=0, **kw))
    x = rnd(2, 2, 7, 6)
    ref = conv2d_ref(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation)
    close(traced_call(conv, x), ref)


def test_pooling_embedding_layernorm():
    x = rnd(2, 3, 6, 6)
    close(nn.MaxPool2d(2)(x), pool_ref(x, 2, 2, np.max))
    close(nn.AvgPool2d(3, stride=1)(x), pool_ref(x, 3, 1, np.mean))
    close(nn.AdaptiveAvgPool2d(1)(x), x.mean((2, 3), keepdims=True))
    close(nn.AdaptiveAvgPool2d((3, None))(x), x.reshape(2, 3, 3, 2, 6).mean(3))
    emb = f64(nn.Embedding(7, 4, padding_idx=0, seed=0))
    assert np.all(emb.weight[0] == 0)
    idx = np.array([[1, 0, 6], [3, 3, 2]])
    close(traced_call(emb, idx), emb.weight[idx])
    ln = f64(nn.LayerNorm(4))
    ln.weight, ln.bias = rnd(4), rnd(4)
    z = rnd(2, 3, 4)
    close(traced_call(ln, z), ln_ref(z, ln.weight, ln.bias))


def test_recurrent_cells_match_reference():
    x, h, c = rnd(3, 4), rnd(3, 5), rnd(3, 5)
    cell = f64(nn.LSTMCell(4, 5, seed=0))
    w = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
    h2, c2 = traced_call(cell, x, (h, c))
    rh, rc = lstm_cell_ref(x, h, c, *w)
    close(h2, rh), close(c2, rc)
    cell = f64(nn.GRUCell(4, 5, seed=1))
    w = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
    close(traced_call(cell, x, h), gru_cell_ref(x, h, *w))
    close(cell(x), gru_cell_ref(x, 0 * h, *w))          # zero initial state
    cell = f64(nn.RNNCell(4, 5, seed=2))
    close(cell(x, h), rnn_cell_ref(x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh))
    close(cell(x[0], h[0]), rnn_cell_ref(x[0], h[0], cell.weight_ih, cell.weight_hh,
                                         cell.bias_ih, cell.bias_hh))   # unbatched


@pytest.mark.parametrize("mode,layers,bidi,batch_first", [
    ("lstm", 2, True, False), ("gru", 2, True, True), ("rnn", 1, False, False), ("lstm", 1, False, True)])
def test_unrolled_recurrent_layers_match_reference(mode, layers, bidi, batch_first):
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[mode]
    m = f64(cls(3, 4, num_layers=layers, bidirectional=bidi, batch_first=batch_first, seed=0))
    T, N = 5, 2
    x = rnd(T, N, 3)
    D = 2 if bidi else 1
    h0 = rnd(layers * D, N, 4)
    out_ref, h_ref, c_ref = rnn_layer_ref(mode, m.param_dict(), x, layers, bidi, h0)
    xin = x.transpose(1, 0, 2) if batch_first else x
    hx = (h0, np.zeros_like(h0)) if mode == "lstm" else h0
    out, state = traced_call(m, xin, hx)
    close(out, out_ref.transpose(1, 0, 2) if batch_first else out_ref)
    if mode == "lstm":
        close(state[0], h_ref), close(state[1], c_ref)
    else:
        close(state, h_ref)
    assert out.shape == ((N, T, 4 * D) if batch_first else (T, N, 4 * D))
    # default zero state, unbatched input
    out_u, st_u = m(xin[0] if batch_first else x[:, 0])
    ref0 = rnn_layer_ref(mode, m.param_dict(), x[:, :1], layers, bidi)
    close(out_u, ref0[0][:, 0])
    close(st_u[0] if mode == "lstm" else st_u, ref0[1][:, 0])


def test_multihead_attention_matches_reference():
    mha = f64(nn.MultiheadAttention(8, 2, batch_first=True, seed=0))
    mha.in_proj_bias = rnd(24, scale=0.1)
    q, kv = rnd(2, 3, 8), rnd(2, 4, 8)
    out, w = traced_call(mha, q, kv, kv)
    ref, wref = mha_ref(mha.param_dict(), q, kv, kv, 2)
    close(out, ref), close(w, wref)
    # torch's default sequence-first layout, and a key padding mask
    kpm = np.array([[False, False, True, False], [False, False, False, False]])
    out2, w2 = mha.functional_call({}, q, kv, kv, key_padding_mask=kpm)
    ref2, wref2 = mha_ref(mha.param_dict(), q, kv, kv, 2, kpm[:, None, None, :])
    close(out2, ref2), close(w2, wref2)
    assert np.all(w2[0, :, 2] == 0)
    mha_sf = f64(nn.MultiheadAttention(8, 2, seed=0))
    mha_sf.load_state_dict(mha.state_dict())
    out3, _ = mha_sf(q.transpose(1, 0, 2), kv.transpose(1, 0, 2), kv.transpose(1, 0, 2))
    close(out3.transpose(1, 0, 2), ref)
    # causal self-attention
    out4, w4 = mha(q, q, q, is_causal=True)
    causal = np.triu(np.ones((3, 3), bool), 1)
    ref4, wref4 = mha_ref(mha.param_dict(), q, q, q, 2, causal)
    close(out4, ref4), close(w4, wref4)


def test_transformer_encoder_layer_matches_reference():
    layer = f64(nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True, seed=0))
    layer.eval()
    p = layer.param_dict()
    x = rnd(2, 3, 8)
    sa = lambda z: mha_ref({k[10:]: v for k, v in p.items() if k.startswith("self_attn.")},  # noqa: E731
                           z, z, z, 2)[0]
    ff = lambda z: np.maximum(z @ p["linear1.weight"].T + p["linear1.bias"], 0) \
        @ p["linear2.weight"].T + p["linear2.bias"]  # noqa: E731
    n1 = lambda z: ln_ref(z, p["norm1.weight"], p["norm1.bias"])  # noqa: E731
    n2 = lambda z: ln_ref(z, p["norm2.weight"], p["norm2.bias"])  # noqa: E731
    h = n1(x + sa(x))
    close(traced_call(layer, x), n2(h + ff(h)))
    # training mode with dropout is random but reproducible under a key
    layer.train()
    f = gc.compile(lambda p, x, k: nn.functional_call(layer, p, x, key=k))
    a, b = f(p, x, np.int64(3)), f(p, x, np.int64(3))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, n2(h + ff(h)))
    enc = nn.TransformerEncoder(layer, 2).eval()
    assert [n for n in enc.param_dict()][0] == "layers.0.self_attn.in_proj_weight"
    close(enc(x), layer.eval()(layer(x)))


def test_basic_block_with_identity_and_projection_shortcut():
    for inp, planes, stride in ((3, 3, 1), (3, 4, 2)):
        blk = f64(nn.BasicBlock(inp, planes, stride, seed=0))
        x = rnd(2, inp, 6, 6)
        p = blk.param_dict()
        bn = lambda z, n: bn_ref(z, p[n + ".weight"], p[n + ".bias"], (0, 2, 3))[0]  # noqa: E731
        out = bn(conv2d_ref(x, p["conv1.weight"], None, (stride, stride), (1, 1)), "bn1")
        out = bn(conv2d_ref(np.maximum(out, 0), p["conv2.weight"], None, (1, 1), (1, 1)), "bn2")
        sc = x if stride == 1 else bn(conv2d_ref(x, p["downsample.0.weight"], None, (2, 2)),
                                      "downsample.1")
        close(traced_call(blk, x), np.maximum(out + sc, 0))


def test_seq2seq_with_additive_attention_matches_reference():
    model = f64(nn.Seq2Seq(6, 7, embed_dim=3, hidden_size=4, rnn="gru", attn_size=5, seed=0))
    p = model.param_dict()
    src = np.array([[1, 2, 3, 4], [5, 1, 0, 0]])
    tgt = np.array([[0, 3, 2], [0, 1, 1]])
    mask = src != 0
    logits, attn = traced_call(model, src, tgt, mask)
    # reference: GRU encoder, additive attention on the previous decoder state, GRU cell
    enc_p = {k[8:]: v for k, v in p.items() if k.startswith("encoder.")}
    z, h_n, _ = rnn_layer_ref("gru", enc_p, p["src_embed.weight"][src].transpose(1, 0, 2), 1, False)
    z = z.transpose(1, 0, 2)
    g = h_n[0]
    dec = [p["decoder." + n] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    for i in range(tgt.shape[1]):
        e = np.tanh((g @ p["attention.query_proj.weight"].T)[:, None, :]
                    + z @ p["attention.key_proj.weight"].T)
        s = np.where(mask, (e @ p["attention.v.weight"].T)[..., 0], -np.inf)
        a = softmax_ref(s)
        ctx = np.einsum("ns,nsh->nh", a, z)
        g = gru_cell_ref(np.concatenate([p["tgt_embed.weight"][tgt[:, i]], ctx], -1), g, *dec)
        lg = np.concatenate([g, ctx], -1) @ p["out.weight"].T + p["out.bias"]
        close(logits[:, i], lg), close(attn[:, i], a)
    assert np.all(attn[1, :, 2:] == 0)
    toks, w = model.greedy_decode(src, bos=0, steps=3, src_mask=mask)
    assert toks.shape == (2, 3) and w.shape == (2, 3, 4)
    lstm_model = nn.Seq2Seq(6, 7, 3, 4, rnn="lstm", seed=0)
    assert lstm_model(src, tgt)[0].shape == (2, 3, 7)


# ---- gradients against finite differences -------------------------------------------------------------
def test_lstm_gradient_matches_finite_differences():
    m = f64(nn.LSTM(2, 3, num_layers=2, bidirectional=True, seed=0))
    x = rnd(3, 2, 2)

    def f(p):
        out, (h, c) = nn.functional_call(m, p, x)
        return (out ** 2).sum() + (h * c).sum()
    directional_fd_check(f, m.param_dict())


def test_conv2d_gradient_matches_finite_differences():
    conv = f64(nn.Conv2d(2, 3, 3, stride=2, padding=1, seed=0))
    x = rnd(2, 2, 5, 5)
    g = directional_fd_check(lambda p: (gc.tanh(nn.functional_call(conv, p, x)) ** 2).sum(),
                             conv.param_dict())
    assert g["weight"].shape == (3, 2, 3, 3)


def test_attention_gradient_matches_finite_differences():
    mha = f64(nn.MultiheadAttention(4, 2, batch_first=True, seed=0))
    q, kv = rnd(2, 3, 4), rnd(2, 2, 4)
    directional_fd_check(lambda p: (nn.functional_call(mha, p, q, kv, kv)[0] ** 2).sum(),
                         mha.param_dict())
    att = f64(nn.AdditiveAttention(3, 4, 5, seed=0))
    query, keys = rnd(2, 3), rnd(2, 3, 4)
    directional_fd_check(lambda p: (nn.functional_call(att, p, query, keys)[0] ** 2).sum(),
                         att.param_dict())


# ---- a whole training step compiled into one graph -------------------------------------------------
def test_compiled_training_step_reduces_loss():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    y = np.sin(x @ np.array([[1.0], [-1.0], [0.5], [2.0]], np.float32))
    model = nn.Sequential(nn.Linear(4, 16, seed=0), nn.Tanh(), nn.Linear(16, 1, seed=1))

    def loss(pred, y):
        return ((pred - y) ** 2).mean()

    vg = gc.value_and_grad(lambda p, x, y: loss(nn.functional_call(model, p, x), y))

    @gc.compile
    def step(p, x, y, lr):
        value, g = vg(p, x, y)
        return {k: p[k] - lr * g[k] for k in p}, value

    p = model.param_dict()
    losses = []
    for _ in range(40):
        p, value = step(p, x, y, 0.3)
        losses.append(float(value))
    assert losses[-1] < 0.5 * losses[0]
    assert p["0.weight"].dtype == np.float32 and len(step._cache) == 1
    model.load_state_dict(p)
    assert float(loss(model(x), y)) < losses[-2]


def test_compiled_training_step_with_batchnorm_buffers_and_dropout_key():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 3))
    y = (x.sum(1, keepdims=True) > 0).astype(np.float64)
    model = nn.Sequential(nn.Linear(3, 8, seed=0), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(8, 1, seed=1)).double()

    def loss_fn(p, b, x, y, key):
        out, nb = nn.functional_call(model, p, x, buffers=b, key=key)
        return ((out - y) ** 2).mean(), nb

    @gc.compile
    def step(p, b, x, y, key):
        (value, nb), g = gc.value_and_grad(loss_fn, has_aux=True)(p, b, x, y, key)
        return {k: p[k] - 0.1 * g[k] for k in p}, nb, value

    p, b = model.param_dict(), model.buffer_dict()
    losses = []
    for t in range(25):
        p, b, value = step(p, b, x, y, np.int64(t))
        losses.append(float(value))
    assert len(step._cache) == 1
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    assert int(b["1.num_batches_tracked"]) == 25
    model.load_state_dict({**p, **b})
    model.eval()
    # eval mode: running statistics, no dropout
    h = x @ p["0.weight"].T + p["0.bias"]
    h = (h - b["1.running_mean"]) / np.sqrt(b["1.running_var"] + 1e-5) * p["1.weight"] + p["1.bias"]
    close(model(x), np.maximum(h, 0) @ p["4.weight"].T + p["4.bias"])
