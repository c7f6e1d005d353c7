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
