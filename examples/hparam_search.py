"""Random hyperparameter search over the learning rate and the hidden-layer size of an MLP on
the 8x8 digits, judged on a validation split.

Lecture items (see /work/shared/lectures.md): §5.28 (hyperparameter search: manual, grid,
random, Bayesian; the configuration with the lowest validation loss wins). Random search: T
trials, each drawing log10(lr) uniformly from [−2.5, 0] and the hidden size from {8, 16, 32,
64}; each trial trains on the training part and is scored on a validation split held out of
the training set (`_common.holdout`), and only the winner is evaluated on the test set, so the
test accuracy stays an unbiased estimate. Grid search is the same loop over a product of
lists. Each hidden size compiles its own training step (the shapes differ); trials with the
same size reuse it.

    python examples/hparam_search.py [--backend numpy] [--quick] [--trials 8] [--out out/]
"""
from __future__ import annotations

import sys
import time

import numpy as np

import graphc as gc
from graphc.nn import functional as F

import _common as C

HIDDEN_SIZES, BATCH = (8, 16, 32, 64), 32


def init(hidden, seed):
    rng = np.random.default_rng(seed)
    return {"W1": (rng.standard_normal((64, hidden)) / 8).astype(np.float32),
            "b1": np.zeros(hidden, np.float32),
            "W2": (rng.standard_normal((hidden, 10)) / np.sqrt(hidden)).astype(np.float32),
            "b2": np.zeros(10, np.float32)}


def logits(params, x):
    return gc.maximum(x @ params["W1"] + params["b1"], 0.0) @ params["W2"] + params["b2"]


def loss(params, x, y):
    return F.cross_entropy(logits(params, x), y)


def train(step, hidden, lr, x, y, epochs, seed):
    return C.sgd_epochs(step, init(hidden, seed), x, y, epochs, lr, BATCH, seed)


def main(argv=None) -> dict:
    def setup(p):
        p.add_argument("--trials", type=int, default=None, help="trials (default 12, 6 quick)")
    args = C.parse_args(__doc__, argv, epochs=20, quick_epochs=5, setup=setup)
    args.trials = args.trials or (6 if args.quick else 12)
    args.out.mkdir(parents=True, exist_ok=True)
    C.banner(f"Random search, {args.trials} trials", args)
    t0 = time.perf_counter()
    d = C.digits(seed=args.seed)
    d, (x_val, y_val) = C.holdout(d, 0.2, args.seed)
    rng = np.random.default_rng(args.seed)
    steps, evals, trials = {}, gc.compile(loss, backend=args.backend), []
    with C.blas_threads(1):
        for t in range(args.trials):
            lr = float(10 ** rng.uniform(-2.5, 0.0))
            hidden = int(rng.choice(HIDDEN_SIZES))
            if hidden not in steps:
                steps[hidden] = gc.compile(gc.value_and_grad(loss), backend=args.backend)
            params = train(steps[hidden], hidden, lr, d.x_train, d.y_train, args.epochs,
                           args.seed)
            val_loss = float(evals(params, x_val, y_val))
            val_acc = float((np.asarray(gc.compile(logits)(params, x_val)).argmax(1)
                             == y_val).mean())
            trials.append({"lr": lr, "hidden": hidden, "val_loss": val_loss, "val_acc": val_acc,
                           "params": params})
            print(f"   trial {t}: lr {lr:.4f}, hidden {hidden:>2}: validation loss "
                  f"{val_loss:.3f}, accuracy {C.percent(val_acc)}")
    best = min(trials, key=lambda r: r["val_loss"])
    test_acc = float((np.asarray(gc.compile(logits)(best["params"], d.x_test)).argmax(1)
                      == d.y_test).mean())
    print(f"   best: lr {best['lr']:.4f}, hidden {best['hidden']} (validation loss "
          f"{best['val_loss']:.3f}); test accuracy {C.percent(test_acc)}")
    metrics = {"trials": [{k: v for k, v in r.items() if k != "params"} for r in trials],
               "best_lr": best["lr"], "best_hidden": best["hidden"],
               "best_val_loss": best["val_loss"], "test_accuracy": test_acc}
    metrics["pictures"] = C.draw(steps[best["hidden"]], args.out, "hparam_value_and_grad",
                                 stages=("traced", "fused"), fmt="dot")
    return C.finish(metrics, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
