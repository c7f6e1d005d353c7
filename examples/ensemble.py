"""Bagging: k small MLPs, each trained on a bootstrap sample of the 8x8 digits, averaged.

Lecture items (see /work/shared/lectures.md): §4.28 / §7.29 (ensembles, bagging, model
averaging: k models trained on k data sets drawn with replacement, predictions averaged; the
ensemble's expected squared error is V/k + (k − 1)C/k, so it is never worse than a member on
average and gains most when the members' errors are uncorrelated — the identity itself is tested
in tests/test_lecture_items.py). One compiled training step serves every member (same shapes).

    python examples/ensemble.py [--backend numpy] [--quick] [--members 5] [--out out/]
"""
from __future__ import annotations

import sys
import time

import numpy as np

import graphc as gc
from graphc.nn import functional as F

import _common as C

HIDDEN, BATCH, LR = 32, 32, 0.1


def init(seed):
    rng = np.random.default_rng(seed)
    return {"W1": (rng.standard_normal((64, HIDDEN)) / 8).astype(np.float32),
            "b1": np.zeros(HIDDEN, np.float32),
            "W2": (rng.standard_normal((HIDDEN, 10)) / np.sqrt(HIDDEN)).astype(np.float32),
            "b2": np.zeros(10, np.float32)}


def logits(params, x):
    return gc.tanh(x @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]


def loss(params, x, y):
    return F.cross_entropy(logits(params, x), y)


def probabilities(params, x):
    return F.softmax(logits(params, x), dim=1)


def train_member(step, x, y, epochs, seed):
    return C.sgd_epochs(step, init(seed), x, y, epochs, LR, BATCH, seed)


def main(argv=None) -> dict:
    def setup(p):
        p.add_argument("--members", type=int, default=5, help="ensemble size k (default 5)")
    args = C.parse_args(__doc__, argv, epochs=30, quick_epochs=6, setup=setup)
    args.out.mkdir(parents=True, exist_ok=True)
    C.banner(f"Bagging {args.members} MLPs on the 8x8 digits", args)
    t0 = time.perf_counter()
    x, y, x_test, y_test = C.load_digits_split(args.seed)
    step = gc.compile(gc.value_and_grad(loss), backend=args.backend)
    predict = gc.compile(probabilities, backend=args.backend)
    rng = np.random.default_rng(args.seed)
    member_probs, member_acc = [], []
    with C.blas_threads(1):
        for k in range(args.members):
            boot = rng.integers(0, len(x), len(x))                  # drawn with replacement
            params = train_member(step, x[boot], y[boot], args.epochs, args.seed + 1 + k)
            p = np.asarray(predict(params, x_test))
            member_probs.append(p)
            member_acc.append(float((p.argmax(1) == y_test).mean()))
            print(f"   member {k}: {len(np.unique(boot))} distinct training images, "
                  f"test accuracy {C.percent(member_acc[-1])}")
    ensemble = np.mean(member_probs, 0)
    acc = float((ensemble.argmax(1) == y_test).mean())
    print(f"   ensemble (averaged probabilities): {C.percent(acc)}; mean member "
          f"{C.percent(np.mean(member_acc))}, best member {C.percent(max(member_acc))}")
    metrics = {"member_accuracies": member_acc, "mean_member_accuracy": float(np.mean(member_acc)),
               "ensemble_accuracy": acc}
    metrics["pictures"] = C.draw(step, args.out, "ensemble_value_and_grad",
                                 stages=("traced", "fused"), fmt="dot")
    return C.finish(metrics, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
