"""Batch normalisation and dropout, on and off, and how both behave differently in training and
evaluation mode (lectures.md section 7: 7.1 BN in training mode, 7.2 learnable γ and β, 7.3 BN
at inference with running statistics, 7.4-7.5 placement before the nonlinearity and effects,
7.16-7.18 dropout, test-time scaling and inverted dropout, 7.20 rates 0.2 for inputs and 0.5
for hidden units; section 4: 4.9 FC → BN → activation; section 9: 9.19 the dropout
expectation; Appendix B.5 and B.10 the conventions).

1. The same MLP (64-256-256-10, ReLU) on a 400-image subset of the digits (so it can
   overfit), trained with and without BatchNorm1d and with and without Dropout (0.2 on the
   inputs, 0.5 on the hidden units): train and test accuracy (eval mode) and their gap.
2. Train vs eval behaviour:
   - dropout: two training-mode passes differ (new masks), eval passes are identical; the
     training-mode accuracy on the training set is below the eval-mode one;
   - the lecture's dropout expectation (9.19): a = W₁x + W₂y with each input kept with
     probability ½; Monte-Carlo means of the inverted (graphc/PyTorch) and the lecture's
     non-inverted dropout against W₁x + W₂y and ½(W₁x + W₂y);
   - batch norm: in training mode a sample's output depends on the other samples of its
     batch, in eval mode it does not; the running statistics approach the statistics of the
     layer's input over the training set.

    python examples/batchnorm_dropout.py [--backend numpy] [--quick] [--epochs N] [--out out/]

writes out/batchnorm_dropout.png (train and test accuracy per epoch of the four variants).
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

import graphc as gc
from graphc import nn, optim
from graphc.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import blas_threads, load_digits_split, pyplot, save_figure  # noqa: E402
from _common import parse_and_announce as parse_args  # noqa: E402

N_TRAIN = 400
VARIANTS = ("plain", "batchnorm", "dropout", "batchnorm+dropout")


def make_mlp(bn: bool, dropout: bool, seed=0, hidden=256):
    """64 → 256 → 256 → 10; BN between each Linear and its ReLU (4.9); dropout 0.2 on the
    inputs and 0.5 after each hidden ReLU (7.20)."""
    rng = np.random.default_rng(seed)
    layers = [nn.Dropout(0.2, rng=rng)] if dropout else []
    n_in = 64
    for _ in range(2):
        layers.append(nn.Linear(n_in, hidden, rng=rng))
        if bn:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(nn.ReLU())
        if dropout:
            layers.append(nn.Dropout(0.5, rng=rng))
        n_in = hidden
    layers.append(nn.Linear(n_in, 10, rng=rng))
    return nn.Sequential(*layers)


def train_variants(data, backend, epochs):
    xtr, ytr, xte, yte = data
    runs = {}
    for name in VARIANTS:
        model = make_mlp(bn="batchnorm" in name, dropout="dropout" in name)
        step = gc.train.TrainStep(model, F.cross_entropy, optim.SGD(lr=0.05, momentum=0.9),
                                  backend=backend)
        train_acc, test_acc, test_loss = [], [], []
        t0 = time.perf_counter()
        for epoch in range(epochs):
            gc.train.fit(step, xtr, ytr, epochs=1, batch_size=32, restore_best=False,
                         progress=False, seed=epoch)
            train_acc.append(gc.train.accuracy(step.evaluate(xtr), ytr))   # eval mode
            out = step.evaluate(xte)
            test_acc.append(gc.train.accuracy(out, yte))
            test_loss.append(float(F.cross_entropy(out, yte)))
        runs[name] = {"step": step, "train_acc": train_acc, "test_acc": test_acc,
                      "test_loss": test_loss,
                      "seconds": time.perf_counter() - t0}
    return runs


def dropout_behaviour(step, x, y, backend):
    """Training-mode passes (two keys) vs eval-mode passes on the same inputs."""
    def forward_train(params, buffers, x, key):
        return nn.functional_call(step.model, params, x, buffers=buffers, key=key,
                                  training=True, return_buffers=False)
    fwd = gc.compile(forward_train, backend=backend)
    a = fwd(step.params, step.buffers, x, np.int64(1))
    b = fwd(step.params, step.buffers, x, np.int64(2))
    e1, e2 = step.evaluate(x), step.evaluate(x)
    return {"train_passes_differ": float(np.abs(a - b).max()),
            "eval_passes_differ": float(np.abs(e1 - e2).max()),
            "train_mode_acc": gc.train.accuracy(a, y), "eval_mode_acc": gc.train.accuracy(e1, y)}


def dropout_expectation(backend, n=200_000, w=(0.7, 0.4), inputs=(1.5, 2.0), key=7):
    """Lecture 9.19: a = W₁x + W₂y, each input kept with probability ½.
    Returns (Monte-Carlo means: inverted, non-inverted; exact: W₁x + W₂y, ½(W₁x + W₂y))."""
    terms = np.array([w[0] * inputs[0], w[1] * inputs[1]], np.float64)

    def sample(t, key):
        rows = gc.broadcast_to(t, (n, 2))
        inverted = gc.sum(F.dropout(rows, 0.5, True, key), axis=1)    # scaled by 1/(1-p)
        plain = inverted * 0.5                                            # the lectures' form
        return gc.mean(inverted), gc.mean(plain)

    inv, plain = gc.compile(sample, backend=backend)(terms, np.int64(key))
    return float(inv), float(plain), float(terms.sum()), float(0.5 * terms.sum())


def batchnorm_behaviour(step, x, backend):
    """A sample's output in two different batches, training and eval mode; running mean of
    the first BN layer vs the mean of its input over the training set."""
    def forward(params, buffers, x):
        return nn.functional_call(step.model, params, x, buffers=buffers, training=True,
                                  return_buffers=False)
    fwd = gc.compile(forward, backend=backend)
    b1, b2 = x[:32], np.concatenate([x[:1], x[100:131]])
    train_diff = float(np.abs(fwd(step.params, step.buffers, b1)[0]
                              - fwd(step.params, step.buffers, b2)[0]).max())
    eval_diff = float(np.abs(step.evaluate(b1)[0] - step.evaluate(b2)[0]).max())
    # the input of the first BatchNorm1d: the first Linear's output over the training set
    first = next(i for i, m in enumerate(step.model) if isinstance(m, nn.Linear))
    bn = next(i for i, m in enumerate(step.model) if isinstance(m, nn.BatchNorm1d))
    pre = x @ step.params[f"{first}.weight"].T + step.params[f"{first}.bias"]
    rm, rv = step.buffers[f"{bn}.running_mean"], step.buffers[f"{bn}.running_var"]
    return {"train_mode_batch_dependence": train_diff, "eval_mode_batch_dependence": eval_diff,
            "running_mean_error": float(np.abs(rm - pre.mean(0)).mean()),
            "running_var_ratio": float(np.median(rv / pre.var(0))),
            "feature_std": float(pre.std(0).mean())}


def plot(runs, path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, r in runs.items():
        ep = np.arange(1, len(r["train_acc"]) + 1)
        line, = axes[0].plot(ep, r["train_acc"], ".-", label=name)
        axes[1].plot(ep, r["test_acc"], ".-", color=line.get_color(), label=name)
        axes[2].semilogy(ep, r["test_loss"], ".-", color=line.get_color(), label=name)
    axes[0].set(xlabel="epoch", ylabel="accuracy", title=f"train accuracy ({N_TRAIN} images, eval mode)")
    axes[1].set(xlabel="epoch", ylabel="accuracy", title="test accuracy")
    axes[2].set(xlabel="epoch", ylabel="cross-entropy", title="test loss")
    axes[1].set_ylim(0.85, 1.0)
    axes[1].legend()
    save_figure(fig, axes, path)


def main(argv=None) -> dict:
    args = parse_args(argv, __doc__, "Batch norm and dropout, on and off", epochs=40,
                      quick_epochs=12)
    with blas_threads(1):
        return run(args)


def run(args) -> dict:
    t0 = time.perf_counter()
    xtr, ytr, xte, yte = load_digits_split(args.seed)
    data = (xtr[:N_TRAIN], ytr[:N_TRAIN], xte, yte)
    epochs = args.epochs
    print(f"MLP 64-256-256-10 (ReLU) on {N_TRAIN} digits (test {len(xte)}), SGD lr 0.05 momentum"
          f" 0.9, batch 32, {epochs} epochs")
    runs = train_variants(data, args.backend, epochs)
    print(f"  {'variant':18s} {'train acc':>9s} {'test acc':>9s} {'gap':>6s} {'best test':>9s}"
          f" {'test loss':>9s} {'s/epoch':>8s}")
    results = {}
    for name, r in runs.items():
        tr, te = r["train_acc"][-1], r["test_acc"][-1]
        results[name] = {"train_acc": tr, "test_acc": te, "best_test_acc": max(r["test_acc"]),
                         "test_loss": r["test_loss"][-1], "train_curve": r["train_acc"],
                         "test_curve": r["test_acc"]}
        print(f"  {name:18s} {tr:9.3f} {te:9.3f} {tr - te:6.3f} {max(r['test_acc']):9.3f}"
              f" {r['test_loss'][-1]:9.3f} {r['seconds'] / epochs:8.3f}")
    print("  (train accuracy in eval mode. The batch-norm variants give the best test accuracy and"
          " loss here;\n   dropout alone does not clearly improve on the plain net in this setting)")

    drop = dropout_behaviour(runs["dropout"]["step"], data[0], data[1], args.backend)
    print("\nDropout, train vs eval mode (the trained dropout model, its training images):")
    print(f"  two training-mode passes differ by up to {drop['train_passes_differ']:.3f}; two eval"
          f" passes by {drop['eval_passes_differ']:.1f}")
    print(f"  accuracy with dropout active {drop['train_mode_acc']:.3f}, in eval mode "
          f"{drop['eval_mode_acc']:.3f}")
    inv, plain, full, half = dropout_expectation(args.backend)
    print("Dropout expectation (9.19), a = W₁x + W₂y, keep probability ½, 200000 samples:")
    print(f"  inverted dropout (×1/(1−p) in training):  E[a] ≈ {inv:.4f}   (W₁x + W₂y = {full:.4f},"
          f" what eval mode computes)")
    print(f"  the lectures' plain dropout:              E[a] ≈ {plain:.4f}   (½(W₁x + W₂y) = "
          f"{half:.4f}: multiply by ½ at test time)")

    bn = batchnorm_behaviour(runs["batchnorm"]["step"], data[0], args.backend)
    print("BatchNorm, train vs eval mode (the trained batchnorm model):")
    print(f"  sample 0's logits in two different batches differ by "
          f"{bn['train_mode_batch_dependence']:.3f} in training mode, "
          f"{bn['eval_mode_batch_dependence']:.1f} in eval mode")
    print(f"  running_mean vs the training-set mean of the first BN's input: mean abs error "
          f"{bn['running_mean_error']:.3f} (features' std {bn['feature_std']:.2f}); "
          f"running_var / variance, median {bn['running_var_ratio']:.2f}")

    path = os.path.join(args.out, "batchnorm_dropout.png")
    plot(runs, path)
    seconds = time.perf_counter() - t0
    print(f"\nwrote {path} ({seconds:.1f} s)")
    return {"variants": results, "dropout": drop,
            "dropout_expectation": {"inverted": inv, "plain": plain, "full": full, "half": half},
            "batchnorm": bn, "pictures": [path], "seconds": seconds}


if __name__ == "__main__":
    main(sys.argv[1:])
