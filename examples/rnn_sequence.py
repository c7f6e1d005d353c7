"""Recurrent networks on a sequence task: the 8x8 digits read row by row as sequences of 8
steps of 8 pixels, classified from the last hidden state (sequence-to-one), with a vanilla
(Elman) RNN, an LSTM, a GRU, and the lecture's own GRU form written as a small Module
(lectures.md section 4: 4.15 the Elman RNN with weights shared across time, 4.16
sequence-to-one, 4.17 LSTM, 4.18 GRU (the lecture applies the reset gate before the recurrent
matmul, PyTorch after it: Appendix B.8); section 8: 8.21 gradients through shared
parameters, BPTT on the unrolled graph; section 9: 9.28 "deep digit recognition").

The recurrent layers are unrolled at trace time, so each training step (forward over 8
steps, backpropagation through time, Adam update) is one compiled graph.

Stated results (full run, test accuracy on the 450 held-out digits): RNN ≥ 0.85, LSTM ≥ 0.90,
GRU ≥ 0.90, lecture GRU ≥ 0.90 (the --quick run: ≥ 0.75 each).

    python examples/rnn_sequence.py [--backend numpy] [--quick] [--epochs N] [--out out/]

writes out/rnn_sequence.png (training loss and test accuracy per epoch).
"""
from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

import graphc as gc
from graphc import nn, optim
from graphc.nn import functional as F
from graphc.nn import init

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
from _common import blas_threads, load_digits_split, pyplot, save_figure  # noqa: E402
from _common import parse_and_announce as parse_args  # noqa: E402

HIDDEN = 32
THRESHOLDS = {"full": {"RNN": 0.85, "LSTM": 0.90, "GRU": 0.90, "lecture GRU": 0.90},
              "quick": {"RNN": 0.75, "LSTM": 0.75, "GRU": 0.75, "lecture GRU": 0.75}}


class LectureGRU(nn.Module):
    """The lecture's GRU (4.18), batch-first, one layer:
    u = σ(W_u x + V_u z + b_u), r = σ(W_r x + V_r z + b_r),
    z̃ = tanh(W_z x + V_z (r ⊙ z) + b_z), z' = u ⊙ z + (1 − u) ⊙ z̃.
    The reset gate acts on the state *before* the recurrent matmul (PyTorch's GRU applies it
    after: r ⊙ (W_hn h + b_hn))."""

    def __init__(self, input_size, hidden_size, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        k = 1 / math.sqrt(hidden_size)
        H = hidden_size
        self.hidden_size = H
        self.W = nn.Parameter(init.uniform_((3 * H, input_size), -k, k, rng=rng))  # W_u, W_r, W_z
        self.V = nn.Parameter(init.uniform_((3 * H, H), -k, k, rng=rng))           # V_u, V_r, V_z
        self.b = nn.Parameter(init.uniform_((3 * H,), -k, k, rng=rng))

    def forward(self, x):
        N, T, _ = x.shape
        H = self.hidden_size
        xw = F.linear(x, self.W, self.b)               # all time steps' input terms at once
        z = np.zeros((N, H), np.float32)
        V_ur, V_z = self.V[:2 * H], self.V[2 * H:]
        outs = []
        for t in range(T):
            a = xw[:, t]
            g = F.sigmoid(a[:, :2 * H] + F.linear(z, V_ur))
            u, r = g[:, :H], g[:, H:]
            cand = gc.tanh(a[:, 2 * H:] + F.linear(r * z, V_z))
            z = u * z + (1 - u) * cand
            outs.append(z)
        return gc.stack(outs, axis=1), z


class SequenceClassifier(nn.Module):
    """A recurrent layer over the rows, then Linear(hidden → 10) on the last hidden state."""

    def __init__(self, kind, hidden=HIDDEN, seed=0):
        super().__init__()
        self.kind = kind
        if kind == "lecture GRU":
            self.rnn = LectureGRU(8, hidden, seed=seed)
        else:
            self.rnn = getattr(nn, kind)(8, hidden, batch_first=True, seed=seed)
        self.head = nn.Linear(hidden, 10, seed=seed + 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def plot(runs, path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for name, h in runs.items():
        ep = np.arange(1, len(h.train_loss) + 1)
        line, = axes[0].semilogy(ep, h.train_loss, ".-", label=name)
        axes[1].plot(ep, h.val_acc, ".-", color=line.get_color(), label=name)
    axes[0].set(xlabel="epoch", ylabel="training loss", title="digits row by row: training loss")
    axes[1].set(xlabel="epoch", ylabel="test accuracy", title="test accuracy")
    axes[1].legend()
    save_figure(fig, axes, path)


def main(argv=None) -> dict:
    args = parse_args(argv, __doc__, "RNN, LSTM and GRU on digits read row by row", epochs=12,
                      quick_epochs=3)
    with blas_threads(1):
        return run(args)


def run(args) -> dict:
    t0 = time.perf_counter()
    xtr, ytr, xte, yte = load_digits_split(args.seed)
    xtr, xte = xtr.reshape(-1, 8, 8), xte.reshape(-1, 8, 8)   # (N, T = 8 rows, 8 pixels)
    epochs = args.epochs
    mode = "quick" if args.quick else "full"
    print(f"Digits as sequences of 8 rows of 8 pixels ({len(xtr)} train / {len(xte)} test); "
          f"hidden {HIDDEN}, Adam lr 0.01, batch 32, {epochs} epochs")
    print(f"  {'model':12s} {'params':>7s} {'train loss':>11s} {'test acc':>9s} {'needs':>6s}"
          f" {'ms/step':>8s} {'compile s':>9s}")
    runs, results = {}, {}
    for kind in ("RNN", "LSTM", "GRU", "lecture GRU"):
        model = SequenceClassifier(kind)
        step = gc.train.TrainStep(model, F.cross_entropy, optim.Adam(lr=0.01), backend=args.backend)
        h = gc.train.fit(step, xtr, ytr, epochs=epochs, batch_size=32, val=(xte, yte),
                         restore_best=False, progress=False)
        runs[kind] = h
        steps = epochs * (len(xtr) // 32)
        compile_s = sum(step.compiled.times.values()) + sum(step.compiled_eval.times.values())
        need = THRESHOLDS[mode][kind]
        results[kind] = {"test_acc": h.val_acc[-1], "train_loss": h.train_loss[-1],
                         "threshold": need, "ms_per_step": 1e3 * (h.seconds - compile_s) / steps}
        print(f"  {kind:12s} {model.num_parameters():7d} {h.train_loss[-1]:11.4f} "
              f"{h.val_acc[-1]:9.3f} {need:6.2f} {results[kind]['ms_per_step']:8.2f} "
              f"{compile_s:9.2f}")
    C.show_code(step.compiled, args)
    ok = all(r["test_acc"] >= r["threshold"] for r in results.values())
    print("  every model above its threshold" if ok else "  SOME MODEL BELOW ITS THRESHOLD")

    path = os.path.join(args.out, "rnn_sequence.png")
    plot(runs, path)
    seconds = time.perf_counter() - t0
    print(f"\nwrote {path} ({seconds:.1f} s)")
    return {"models": results, "all_above_threshold": ok, "pictures": [path], "seconds": seconds}


if __name__ == "__main__":
    main(sys.argv[1:])
