"""The workloads in PyTorch eager mode ("torch eager"): autograd for the gradients and a
hand-written SGD update, the LSTM through `nn.LSTM` (CPU wheel, all cores).

Each builder returns a function with the hand-written NumPy version's signature and result
structure: it takes the NumPy arrays, runs the step and hands back NumPy arrays (the
`torch.from_numpy` views in and `.numpy()` out share memory, as a CPU user would write it).
"""
from __future__ import annotations

import os

import numpy as np

from benchmarks.passes import LR, mlp_forward


def _torch():
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    return torch


def _ce(F, z, onehot):
    # probabilities as the target: mean over the batch of -sum(onehot * log_softmax(z))
    return F.cross_entropy(z, onehot)


def _mlp(F, p, x):
    return mlp_forward(p, x, F.relu)


def _train(torch, loss_fn):
    """step(params, *data) -> (loss, new params): autograd, then p - LR * grad."""
    def step(p, *data):
        leaves = {k: torch.from_numpy(v).requires_grad_() for k, v in p.items()}
        loss = loss_fn(leaves, *(torch.from_numpy(d) for d in data))
        grads = torch.autograd.grad(loss, list(leaves.values()))
        with torch.no_grad():
            new = {k: (v - LR * g).numpy() for (k, v), g in zip(leaves.items(), grads)}
        return loss.detach().numpy(), new
    return step


def _infer(torch, fn):
    def run(*arrays):
        with torch.inference_mode():
            return fn(*(torch.from_numpy(a) if isinstance(a, np.ndarray) else
                        {k: torch.from_numpy(v) for k, v in a.items()} for a in arrays)).numpy()
    return run


def build(problem):
    torch = _torch()
    F = torch.nn.functional
    kind = problem.kind
    if kind == "mlp":
        return _train(torch, lambda p, x, y: _ce(F, _mlp(F, p, x), y))
    if kind == "cnn":
        def cnn_loss(p, x, y):
            h = F.max_pool2d(F.relu(F.conv2d(x, p["K1"], p["c1"], padding=2)), 2)
            h = F.max_pool2d(F.relu(F.conv2d(h, p["K2"], p["c2"])), 2)
            h = F.relu(h.flatten(1) @ p["W1"] + p["b1"])
            return _ce(F, h @ p["W2"] + p["b2"], y)
        return _train(torch, cnn_loss)
    if kind == "lstm":
        return _train(torch, _lstm_loss(torch, F, problem))
    if kind == "chain":
        return _infer(torch, lambda x: torch.tanh(x * 0.5 + 1.0) * torch.exp(-(x * x))
                      + torch.sqrt(torch.abs(x)))
    if kind == "softmax":
        return _infer(torch, lambda x: torch.softmax(x, dim=1))
    if kind == "infer":
        return _infer(torch, lambda p, x: _mlp(F, p, x))
    if kind == "gemm":
        return _infer(torch, torch.matmul)
    raise ValueError(f"no torch version of {kind!r}")


def _lstm_loss(torch, F, problem):
    """nn.LSTM with our parameters mapped in: PyTorch keeps weight_ih as (4H, I) with the gates
    in the same order (i, f, g, o) and computes x @ weight_ih.T, so Wx.T and Wh.T are its
    weights (views: the gradients arrive in our layout), b its bias_ih and a zero bias_hh."""
    from torch.func import functional_call
    p, x, _ = problem.args
    I, H = x.shape[2], p["Wh"].shape[0]
    lstm = torch.nn.LSTM(I, H)
    zero = torch.zeros(4 * H)

    def loss(p, x, y):
        w = {"weight_ih_l0": p["Wx"].t(), "weight_hh_l0": p["Wh"].t(),
             "bias_ih_l0": p["b"], "bias_hh_l0": zero}
        _, (h, _) = functional_call(lstm, w, (x,))
        return _ce(F, h[0] @ p["W"] + p["bW"], y)
    return loss
