"""A graph convolutional network (Kipf & Welling 2017) for node classification on a small
synthetic graph.

Lecture items (see /work/shared/lectures.md): §4.24 (graph neural networks: data that is a
graph, such as social networks). Two GCN layers H' = act(Â H W) with Â = D^{-1/2}(A + I)D^{-1/2}
(a constant of the graph, computed on the host) classify the nodes of a two-community graph
(a stochastic block model: dense inside a community, sparse across) whose node features are
only weakly informative; 10 labelled nodes per class train it, the other nodes test it.
Message passing is one matrix product per layer, so the whole model is ordinary graphc ops.

    python examples/gnn.py [--backend numpy] [--quick] [--out out/]
"""
from __future__ import annotations

import sys
import time

import numpy as np

import graphc as gc
from graphc.nn import functional as F

import _common as C

LR = 0.2


def make_graph(n_per=40, p_in=0.2, p_out=0.02, n_feat=8, seed=0):
    """(Â, features X, labels y, train mask): two communities of n_per nodes."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n_per)
    same = y[:, None] == y[None, :]
    a = rng.random((2 * n_per, 2 * n_per)) < np.where(same, p_in, p_out)
    a = np.triu(a, 1)
    a = (a | a.T).astype(np.float64) + np.eye(2 * n_per)               # A + I
    d = 1 / np.sqrt(a.sum(1))
    a_hat = (a * d[:, None] * d[None, :]).astype(np.float32)
    x = (rng.standard_normal((2 * n_per, n_feat)) + 0.4 * (2 * y[:, None] - 1)).astype(np.float32)
    train = np.zeros(2 * n_per, bool)
    for c in (0, 1):
        train[rng.choice(np.flatnonzero(y == c), 10, replace=False)] = True
    return a_hat, x, y, train


def gcn(params, a_hat, x):
    h = gc.maximum(a_hat @ (x @ params["W1"]), 0.0)                     # relu(Â X W1)
    return a_hat @ (h @ params["W2"])                                   # Â H W2 (logits)


def loss(params, a_hat, x, onehot_train):
    """Cross-entropy over the labelled nodes only (rows of onehot_train are 0 elsewhere)."""
    logp = F.log_softmax(gcn(params, a_hat, x), dim=1)
    return -gc.sum(onehot_train * logp) / gc.sum(onehot_train)


def mlp_logits(params, x):
    """The same model without the graph (Â = I), for comparison."""
    return gc.maximum(x @ params["W1"], 0.0) @ params["W2"]


def init(n_feat, hidden=16, seed=0):
    rng = np.random.default_rng(seed)
    return {"W1": (rng.standard_normal((n_feat, hidden)) / np.sqrt(n_feat)).astype(np.float32),
            "W2": (rng.standard_normal((hidden, 2)) / np.sqrt(hidden)).astype(np.float32)}


def train(a_hat, x, y, train_mask, epochs, backend, seed):
    params = init(x.shape[1], seed=seed)
    onehot = (np.eye(2, dtype=np.float32)[y] * train_mask[:, None]).astype(np.float32)
    step = gc.compile(gc.value_and_grad(loss), backend=backend)
    losses = []
    for _ in range(epochs):
        value, grads = step(params, a_hat, x, onehot)
        params = {k: params[k] - LR * np.asarray(grads[k]) for k in params}
        losses.append(float(value))
    return params, losses, step


def main(argv=None) -> dict:
    args = C.parse_args(__doc__, argv, epochs=200, quick_epochs=100)
    args.out.mkdir(parents=True, exist_ok=True)
    C.banner("GCN node classification on a two-community graph", args)
    t0 = time.perf_counter()
    a_hat, x, y, train_mask = make_graph(seed=args.seed)
    print(f"   graph: {len(y)} nodes, {int((a_hat > 0).sum() - len(y)) // 2} edges, "
          f"{int(train_mask.sum())} labelled")
    test = ~train_mask
    params, losses, step = train(a_hat, x, y, train_mask, args.epochs, args.backend, args.seed)
    pred = np.asarray(gc.compile(gcn, backend=args.backend)(params, a_hat, x)).argmax(1)
    acc = float((pred[test] == y[test]).mean())
    eye = np.eye(len(y), dtype=np.float32)                                # no graph: Â = I
    p0, _, _ = train(eye, x, y, train_mask, args.epochs, args.backend, args.seed)
    acc_mlp = float((np.asarray(gc.compile(mlp_logits)(p0, x)).argmax(1)[test] == y[test]).mean())
    print(f"   loss {losses[0]:.3f} -> {losses[-1]:.3f}; test accuracy GCN {C.percent(acc)}, "
          f"same model without the graph {C.percent(acc_mlp)}")
    metrics = {"first_loss": losses[0], "final_loss": losses[-1], "test_accuracy": acc,
               "no_graph_accuracy": acc_mlp}
    metrics["pictures"] = C.draw(step, args.out, "gnn_value_and_grad",
                                 stages=("traced", "fused"), fmt="dot")
    return C.finish(metrics, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
