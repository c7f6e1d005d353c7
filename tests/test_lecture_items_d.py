"""Lecture items (see docs/lectures.md) shown by small training runs with graphc: 4.16 the
one-to-sequence RNN pattern, 6.17 a small positive ReLU bias against dead units, 6.18 the
initialisation decides where training ends, 7.8 PCA/ZCA/Cholesky whitening, 7.24 mixup,
7.30 k-fold cross-validation, 9.29 the toy sentiment RNN."""
from __future__ import annotations

import os
import sys

import numpy as np

import graphc as gc
from graphc import nn, optim
from graphc.nn import functional as F
from graphc.nn import init

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import _common as C  # noqa: E402


def _train(model, x, y, *, epochs, lr, batch=None, opt="adam", loss=F.cross_entropy, seed=0):
    """Minibatch (or full-batch when batch is None) training with one compiled graphc step."""
    step = gc.train.TrainStep(model, loss,
                              optim.Adam(lr=lr) if opt == "adam" else optim.SGD(lr=lr),
                              backend="numpy", seed=seed)
    rng = np.random.default_rng(seed)
    n = len(x)
    batch = batch or n
    losses = []
    for _ in range(epochs):
        order = rng.permutation(n) if batch < n else np.arange(n)
        for i in range(0, n - batch + 1, batch):
            idx = order[i:i + batch]
            losses.append(step(x[idx], y[idx]).loss)
    return step, losses


def _acc(step, x, y):
    return float(np.mean(np.argmax(np.asarray(step.evaluate(x)), -1) == y))


# ---- 7.24 mixup: x~ = lam x_i + (1-lam) x_j, y~ = lam y_i + (1-lam) y_j, lam ~ Beta ------------
def test_mixup_digits_soft_labels_trains_to_good_accuracy():
    xtr, ytr, xte, yte = C.load_digits_split(0)
    model = nn.Sequential(nn.Linear(64, 64, seed=0), nn.ReLU(), nn.Linear(64, 10, seed=1))
    step = gc.train.TrainStep(model, F.cross_entropy, optim.Adam(lr=0.01), backend="numpy")
    rng, eye, B = np.random.default_rng(0), np.eye(10, dtype=np.float32), 64
    for _ in range(8):
        order = rng.permutation(len(xtr))
        for i in range(0, len(xtr) - B + 1, B):
            idx, perm = order[i:i + B], rng.permutation(B)
            lam = np.float32(rng.beta(0.4, 0.4))            # lambda ~ Beta(0.4, 0.4) in [0, 1]
            xb, yb = xtr[idx], eye[ytr[idx]]                # one-hot y
            xm, ym = lam * xb + (1 - lam) * xb[perm], lam * yb + (1 - lam) * yb[perm]
            np.testing.assert_allclose(ym.sum(1), 1, rtol=1e-6)   # soft labels stay distributions
            loss = step(xm, ym).loss                        # soft-label F.cross_entropy
    assert np.isfinite(loss)
    acc = _acc(step, xte, yte)
    print(f"mixup test accuracy {acc:.3f}")
    assert acc > 0.93


# ---- 7.30 k-fold cross-validation ----------------------------------------------------------------
def test_five_fold_cross_validation_of_softmax_regression_on_iris():
    from sklearn.datasets import load_iris
    from sklearn.model_selection import StratifiedKFold
    d = load_iris()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    accs, seen = [], np.zeros(len(x), int)
    for k, (tr, te) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0).split(x, y)):
        seen[te] += 1
        mu, sd = x[tr].mean(0), x[tr].std(0)               # statistics of the training folds only
        step, _ = _train(nn.Linear(4, 3, seed=k), (x[tr] - mu) / sd, y[tr], epochs=200, lr=0.1)
        accs.append(_acc(step, (x[te] - mu) / sd, y[te]))
    assert np.all(seen == 1)                               # every flower is held out exactly once
    print("per-fold accuracy", [round(a, 3) for a in accs], f"mean {np.mean(accs):.3f}")
    assert min(accs) > 0.8 and np.mean(accs) > 0.9


# ---- 4.16 one-to-sequence: a GRUCell decoder from a single input vector ------------------------
V, T, K = 5, 6, 4                                          # vocabulary, sequence length, inputs


class OneToSequence(nn.Module):
    """h0 = tanh(W x); h_t = GRUCell(softmax(y_{t-1}), h_{t-1}); y_t = head(h_t)."""

    def __init__(self):
        super().__init__()
        self.init, self.cell = nn.Linear(K, 16, seed=0), nn.GRUCell(V, 16, seed=1)
        self.head = nn.Linear(16, V, seed=2)

    def forward(self, x):
        h, prev, outs = gc.tanh(self.init(x)), np.zeros((x.shape[0], V), np.float32), []
        for _ in range(T):
            h = self.cell(prev, h)
            out = self.head(h)
            outs.append(out)
            prev = F.softmax(out, dim=-1)                  # feed the previous output back in
        return gc.stack(outs, axis=1)


def test_one_to_sequence_gru_decoder_learns_fixed_sequences():
    targets = np.random.default_rng(0).integers(0, V, (K, T)).astype(np.int64)
    x = np.eye(K, dtype=np.float32)                        # one input vector per sequence

    def seq_loss(out, y):
        return F.cross_entropy(gc.reshape(out, (-1, V)), gc.reshape(y, (-1,)))

    step, losses = _train(OneToSequence(), x, targets, epochs=250, lr=0.03, loss=seq_loss)
    pred = np.argmax(np.asarray(step.evaluate(x)), -1)
    assert losses[-1] < 0.05 * losses[0]
    np.testing.assert_array_equal(pred, targets)           # every sequence generated exactly


# ---- 7.8 whitening: z = W (x - mean), W Sigma W^T = I ----------------------------------------
def test_pca_zca_cholesky_whitening_and_softmax_regression_on_whitened_digits():
    from sklearn.datasets import load_iris
    x = load_iris().data                                   # full-rank covariance
    xc = x - x.mean(0)
    S = np.cov(xc, rowvar=False)
    lam, U = np.linalg.eigh(S)                             # Sigma = U Lambda U^T
    W_pca = np.diag(lam ** -0.5) @ U.T
    W_zca = U @ np.diag(lam ** -0.5) @ U.T
    W_chol = np.linalg.cholesky(np.linalg.inv(S)).T        # W = L^T, L L^T = Sigma^-1
    for W in (W_pca, W_zca, W_chol):
        np.testing.assert_allclose(W @ S @ W.T, np.eye(4), atol=1e-10)
        np.testing.assert_allclose(np.cov(xc @ W.T, rowvar=False), np.eye(4), atol=1e-10)
    np.testing.assert_allclose(W_zca, W_zca.T)             # ZCA is symmetric (closest to x)

    d = C.digits(seed=0)                                   # pixels in [0, 1], not centred
    mu = d.x_train.mean(0)
    lam, U = np.linalg.eigh(np.cov(d.x_train - mu, rowvar=False))
    keep = lam > 1e-2 * lam.max()                          # drop the (near-)zero-variance directions
    W = (U[:, keep] / np.sqrt(lam[keep])).T                # PCA whitening of the kept components
    ztr = ((d.x_train - mu) @ W.T).astype(np.float32)
    zte = ((d.x_test - mu) @ W.T).astype(np.float32)
    np.testing.assert_allclose(np.cov(ztr, rowvar=False), np.eye(keep.sum()), atol=1e-5)
    res = {}
    for name, (a, b) in {"raw": (d.x_train, d.x_test), "whitened": (ztr, zte)}.items():
        step, losses = _train(nn.Linear(a.shape[1], 10, seed=0), a, d.y_train, epochs=5, lr=0.1,
                              batch=32, opt="sgd")
        res[name] = (float(np.mean(losses[-40:])), _acc(step, b, d.y_test))
    print(f"{keep.sum()} components; (train loss, test acc) after 5 SGD epochs:", res)
    assert res["whitened"][0] < 0.5 * res["raw"][0]        # same SGD, far faster on whitened input
    assert res["whitened"][1] > res["raw"][1] > 0.85


# ---- 6.17 small positive ReLU bias -------------------------------------------------------------
def test_small_positive_relu_bias_means_fewer_inactive_units():
    xtr, ytr, xte, yte = C.load_digits_split(0)

    def inactive(m):                                       # (fraction of zero activations, dead units)
        h = np.asarray(F.relu(m[0](xtr)))
        return float(np.mean(h == 0)), int(np.sum((h == 0).all(0)))

    res = {}
    for b in (0.0, 0.1):
        m = nn.Sequential(nn.Linear(64, 100, seed=0), nn.ReLU(), nn.Linear(100, 10, seed=1))
        init.constant_(m[0].bias, b)                       # same weights, only the bias differs
        at_init = inactive(m)
        step, _ = _train(m, xtr, ytr, epochs=5, lr=2.0, batch=32, opt="sgd")
        step.sync()
        res[b] = (at_init, inactive(m), _acc(step, xte, yte))
    print("bias: ((zero frac, dead) at init, after training, test acc)", res)
    assert res[0.1][0][0] < res[0.0][0][0] - 0.05           # fewer inactive activations at init
    assert res[0.1][1][0] < res[0.0][1][0]                  # ... and after large-lr training
    assert res[0.1][1][1] <= res[0.0][1][1]                 # dead units: no more with the bias
    assert min(r[2] for r in res.values()) > 0.9


# ---- 6.18 the initialisation decides where training ends ---------------------------------------
def test_seeds_end_in_different_minima_on_xor_but_not_for_a_convex_loss():
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    Y = np.array([0, 1, 1, 0], np.int64)
    final = []
    for seed in range(8):                                  # same data, model, optimiser, steps
        m = nn.Sequential(nn.Linear(2, 2, seed=seed), nn.ReLU(), nn.Linear(2, 2, seed=seed + 100))
        step, losses = _train(m, X, Y, epochs=400, lr=0.05, seed=seed)
        final.append(losses[-1])
    print("XOR 2-2-2 ReLU, final loss per seed:", np.round(final, 4))
    final = np.array(final)
    assert final.min() < 0.01                              # some starts solve XOR ...
    assert final.max() > 0.6                               # ... some stay at log 2 (dead ReLUs)
    assert np.any((final > 0.2) & (final < 0.55))          # ... and some stop in between

    from sklearn.datasets import load_iris
    d = load_iris()                                        # convex: softmax regression
    x = ((d.data - d.data.mean(0)) / d.data.std(0)).astype(np.float32)
    y = d.target.astype(np.int64)
    convex = [_train(nn.Linear(4, 3, seed=s), x, y, epochs=600, lr=0.5, opt="sgd")[1][-1]
              for s in range(4)]
    print("softmax regression, final loss per seed:", np.round(convex, 5))
    assert np.ptp(convex) < 0.01 * np.ptp(final)           # "it does not matter how you initialize"


# ---- 9.29 toy sentiment RNN --------------------------------------------------------------------
VOCAB = ["this", "is", "good", "bad", "news", "not", "<eos>"]
SENTENCES = [("this is good news", 1), ("this is bad news", 0), ("this is not good news", 0),
             ("this is not bad news", 1), ("good news", 1), ("bad news", 0),
             ("not good news", 0), ("not bad news", 1), ("this is good", 1), ("this is bad", 0),
             ("this is not good", 0), ("this is not bad", 1)]


class Sentiment(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(len(VOCAB), 12, batch_first=True, seed=0)   # Elman, tanh
        self.head = nn.Linear(12, 2, seed=1)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])                       # sequence-to-one


def test_toy_sentiment_elman_rnn_classifies_the_sentences():
    L = 6                                                  # padded with <eos> to one length

    def encode(s):
        words = s.split() + ["<eos>"] * (L - len(s.split()))
        return np.eye(len(VOCAB), dtype=np.float32)[[VOCAB.index(w) for w in words]]

    x = np.stack([encode(s) for s, _ in SENTENCES])        # one-hot word per step
    y = np.array([c for _, c in SENTENCES], np.int64)
    assert x.shape == (12, L, 7)
    step, losses = _train(Sentiment(), x, y, epochs=200, lr=0.03)
    assert losses[-1] < 0.01
    assert _acc(step, x, y) == 1.0                         # incl. "not good" / "not bad"
