"""Penalties and gradient clipping, traceable (written with gc.* functions, so they run eagerly
on numpy arrays and record graph nodes on traced Tensors). Public as `graphc.optim.*`."""
from __future__ import annotations

import math

import numpy as np

from graphc.frontends import numpy_api as gnp
from graphc.frontends import pytree
from graphc.frontends.optimizer import _cast

__all__ = ["l1_penalty", "l2_penalty", "elastic_net_penalty", "clip_grad_norm", "clip_grad_value",
           "add_gradient_noise"]


# ---- penalties and clipping (traceable) ------------------------------------------------------
def _total(values):
    out = None
    for v in values:
        out = v if out is None else out + v
    return 0.0 if out is None else out


def l1_penalty(params, lam: float):
    """`lam · Σ|w|` over every leaf of `params` (pass only the leaves to regularise, e.g.
    the weights). Its gradient is `lam · sign(w)`, 0 at w = 0."""
    return lam * _total(gnp.sum(gnp.abs(w)) for w in pytree.flatten(params)[0])


def l2_penalty(params, lam: float):
    """`lam/2 · Σw²`: its gradient `lam · w` is what `weight_decay=lam` adds (coupled L2)."""
    return (lam / 2) * _total(gnp.sum(gnp.square(w)) for w in pytree.flatten(params)[0])


def elastic_net_penalty(params, l1: float, l2: float):
    """`l1 · Σ|w| + l2/2 · Σw²` (= l1_penalty + l2_penalty; the lectures' |W| + β|W|² is
    l1=1, l2=2β)."""
    return l1_penalty(params, l1) + l2_penalty(params, l2)


def clip_grad_norm(grads, max_norm: float, norm_type: float = 2.0):
    """Scale all gradients together so their global norm is at most `max_norm`, as torch's
    `clip_grad_norm_` but pure: returns `(clipped_grads, total_norm)`, the norm taken before
    clipping. `g ← g · min(1, max_norm/(‖g‖ + 1e-6))`; `norm_type` may be `float('inf')`."""
    leaves, tree, _ = pytree.flatten(grads)
    if not leaves:
        return grads, np.zeros((), np.float32)
    norm_type = float(norm_type)
    if norm_type == math.inf:
        total = _total_max(gnp.max(gnp.abs(g)) for g in leaves)
    elif norm_type == 2.0:
        total = gnp.sqrt(_total(gnp.sum(g * g) for g in leaves))
    else:
        total = _total(gnp.sum(gnp.abs(g) ** norm_type) for g in leaves) ** (1.0 / norm_type)
    coef = gnp.minimum(max_norm / (total + 1e-6), 1.0)
    return pytree.unflatten(tree, [g * _cast(coef, g) for g in leaves]), total


def _total_max(values):
    out = None
    for v in values:
        out = v if out is None else gnp.maximum(out, v)
    return out


def clip_grad_value(grads, clip_value: float):
    """Clamp every gradient element to `[-clip_value, clip_value]` (torch's clip_grad_value_)."""
    c = float(clip_value)
    return pytree.tree_map(lambda g: gnp.clip(g, -c, c), grads)


def add_gradient_noise(grads, key, eta: float = 0.01, gamma: float = 0.55, step=0):
    """Annealed Gaussian gradient noise (Neelakantan et al. 2015; lectures 5.25 / 7.28):
    `g_t ← g_t + N(0, σ_t²)` with `σ_t² = eta/(1 + t)^gamma`, t = `step` (a number or a traced
    scalar). The paper's η ∈ {0.01, 0.3, 1.0}, γ = 0.55. Pure and traceable, like the clipping
    functions: call it on the gradients before `optimizer.update`. The normal draws come from
    `gc.random_uniform(key, ...)` by the Box-Muller transform (one draw of shape (2, n) for all
    leaves together, so different leaves get independent noise); `key` is an int or a traced
    integer scalar, and the same key gives the same noise on every backend."""
    leaves, tree, _ = pytree.flatten(grads)
    if not leaves:
        return grads
    sizes = [int(np.prod(g.shape)) for g in leaves]
    total = sum(sizes)
    u = gnp.random_uniform(key, (2, total))
    radius = gnp.sqrt(-2.0 * gnp.log(1.0 - u[0]))           # 1 − u ∈ (0, 1]: no log(0)
    z = radius * gnp.cos((2.0 * math.pi) * u[1])             # standard normal, shape (total,)
    if isinstance(step, (int, float, np.integer, np.floating)):
        sigma = math.sqrt(eta / (1.0 + float(step)) ** gamma)
    else:
        sigma = gnp.sqrt(eta * gnp.exp(-gamma * gnp.log(1.0 + step)))
    out, start = [], 0
    for g, n in zip(leaves, sizes):
        noise = gnp.reshape(z[start:start + n], g.shape)
        out.append(g + _cast(sigma * noise, g))
        start += n
    return pytree.unflatten(tree, out)
