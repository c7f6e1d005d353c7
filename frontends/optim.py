"""torch.optim for graphc: optimisers whose updates are traceable, penalties, clipping and
LR schedules. Public as `graphc.optim`.

Every optimiser has a **pure functional core** over pytrees (dicts, lists, tuples of arrays),
written only with operators and `gc.*` functions, so the same code runs eagerly on numpy
arrays and records graph nodes on traced Tensors:

    state = opt.init(params)                                  # pytree of numpy arrays
    new_params, new_state = opt.update(grads, state, params, lr=None)   # pure, no mutation

`state` is a dict: `{"step": float64 0-d array, <buffer name>: pytree shaped like params}`,
the buffer names being PyTorch's (`momentum_buffer`, `sum`, `square_avg`, `grad_avg`,
`exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`). `lr=None` uses `opt.lr`; pass `lr` explicitly
(a Python float, or the traced scalar a compiled step receives) to schedule it.

A compiled training step is then ONE graph whose inputs are the parameters, the optimiser
state, the batch and the LR, and whose outputs are the new parameters and state. The LR is a
Python float, which `gc.compile` turns into a scalar input, so a schedule does not retrace:

>>> import numpy as np, graphc as gc
>>> from graphc import optim
>>> def loss_fn(p, x, y):
...     return ((x @ p["w"] + p["b"] - y) ** 2).mean()
>>> opt = optim.Adam(lr=0.1)                        # hyperparameters only: functional use
>>> @gc.compile
... def train_step(p, s, x, y, lr):
...     loss, g = gc.value_and_grad(loss_fn)(p, x, y)
...     p, s = opt.update(g, s, p, lr=lr)          # traced: becomes part of the graph
...     return p, s, loss
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(64, 3)).astype(np.float32)
>>> y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3
>>> p = {"w": np.zeros((3, 1), np.float32), "b": np.zeros(1, np.float32)}
>>> s = opt.init(p)
>>> sched = optim.CosineAnnealingLR(0.1, T_max=200)  # host-side: a float LR per step
>>> for t in range(200):
...     p, s, loss = train_step(p, s, x, y, sched.get_last_lr()[0])
...     sched.step()
>>> bool(loss < 1e-4), p["w"].dtype, float(s["step"])
(True, dtype('float32'), 200.0)

The same step as a lambda, returning `(new_params, new_state)`:

    step = gc.compile(lambda p, s, x, y, lr: opt.update(gc.grad(loss_fn)(p, x, y), s, p, lr))

Beware: `opt.update(g, s, p)` without `lr=` inside a compiled function bakes `opt.lr` into
the graph as a constant at trace time; later changes to `opt.lr` are then ignored.

For eager loops there is a PyTorch-style stateful wrapper around the same core:

    opt = optim.SGD(params, lr=0.1, momentum=0.9)   # params: a pytree of numpy arrays
    params = opt.step(grads)                        # grads: same structure as params

`step` updates `opt.state`, writes the new values **into the arrays you passed** (like
torch's in-place update, so other references to them see the change; read-only arrays and
Python floats are replaced instead) and returns `opt.params`, the updated pytree. A
scheduler given the optimiser sets `opt.lr` at every `sched.step()`.

Conventions (lectures Appendix B.6, B.7, B.14, B.15) are PyTorch's: ε is added after the
square root; SGD momentum is `b ← μb + (1 − τ)g` (b₁ = g₁), `θ ← θ − lr·b`, so the LR
scales the whole buffer; `weight_decay=λ` adds λθ to the gradient (= the loss term
`l2_penalty(params, λ)`), while AdamW decays decoupled, `θ ← θ(1 − lr·λ)`.
"""
from __future__ import annotations

import bisect
import math
import numbers
from typing import Any, Callable, Sequence

import numpy as np

from graphc.frontends import numpy_api as gnp
from graphc.frontends import pytree
from graphc.frontends.tensor import Tensor

__all__ = [
    # optimisers
    "Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW",
    # penalties and clipping
    "l1_penalty", "l2_penalty", "elastic_net_penalty", "clip_grad_norm", "clip_grad_value",
    # schedules
    "LRScheduler", "LambdaLR", "StepLR", "MultiStepLR", "ConstantLR", "LinearLR",
    "ExponentialLR", "PolynomialLR", "CosineAnnealingLR", "SequentialLR", "CyclicLR",
    "CosineAnnealingWarmRestarts", "warmup", "inverse_time", "inverse_sqrt",
]


# ---- pytree and dtype helpers --------------------------------------------------------------
def _leaves_like(tree, paths: list[str], what: str) -> list:
    """`tree`'s leaves in the order of `paths` (the params' leaf paths). Matching by path
    lets a dict's keys come in another order and a list stand for a tuple."""
    leaves, _, ps = pytree.flatten(tree)
    if ps == paths:
        return leaves
    by_path = dict(zip(ps, leaves))
    missing = [p for p in paths if p not in by_path]
    extra = [p for p in ps if p not in set(paths)]
    if missing or extra:
        raise ValueError(f"{what} does not have the structure of params: "
                         f"missing {missing or 'nothing'}, unexpected {extra or 'nothing'}")
    return [by_path[p] for p in paths]


def _cast(s, like):
    """Scalar `s` in `like`'s dtype, so float32 parameters stay float32. Python numbers and
    weak traced scalars adapt by themselves; numpy values and strong Tensors (a float64 step
    count, say) are cast, since NumPy and the tracer would promote the parameter instead."""
    dt = getattr(like, "dtype", None)
    if dt is None or (isinstance(s, Tensor) and s.weak):
        return s
    if isinstance(s, (np.ndarray, np.generic, Tensor)):
        return s.astype(dt)
    return s


def _zeros_like(p, fill: float = 0.0):
    if isinstance(p, Tensor):
        return gnp.full_like(p, fill)
    return np.full_like(np.asarray(p), fill)


def _is_traced(tree) -> bool:
    return any(isinstance(x, Tensor) for x in pytree.flatten(tree)[0])


# ---- optimisers ----------------------------------------------------------------------------
class Optimizer:
    """Base class: the functional core (`init`, `update`) and the stateful wrapper (`step`).

    Subclasses set `buffers` (the per-parameter state names) and implement `_update_leaf`,
    the update of one parameter array, written with operators and gc.* functions only.
    """

    buffers: tuple[str, ...] = ()

    def __init__(self, params=None, lr: float = 1e-3):
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        self.lr = lr
        self.initial_lr: float | None = None  # set by the first scheduler, as torch does
        self.params = params
        self.state = self.init(params) if params is not None else None

    # ---- functional core ----------------------------------------------------------------
    def _buffer_names(self) -> tuple[str, ...]:
        return self.buffers

    def _init_buffer(self, name: str, p):
        return _zeros_like(p)

    def init(self, params) -> dict:
        """The initial state for `params`: step 0 and zero-filled buffers shaped like params."""
        leaves, tree, _ = pytree.flatten(params)
        state: dict[str, Any] = {"step": np.zeros((), np.float64)}
        for name in self._buffer_names():
            state[name] = pytree.unflatten(tree, [self._init_buffer(name, p) for p in leaves])
        return state

    def update(self, grads, state: dict, params, lr=None):
        """One optimisation step, purely: returns `(new_params, new_state)`.

        Works on numpy arrays (eagerly) and on traced Tensors (inside gc.compile / gc.trace).
        `lr` defaults to `self.lr`; pass it to schedule the LR without retracing.
        """
        if state is None:
            raise ValueError("state is None: create it with state = opt.init(params)")
        lr = self.lr if lr is None else lr
        p_leaves, tree, paths = pytree.flatten(params)
        g_leaves = _leaves_like(grads, paths, "grads")
        bufs = {n: _leaves_like(state[n], paths, f"state[{n!r}]") for n in self._buffer_names()}
        t = state["step"] + 1
        if not isinstance(t, Tensor):
            t = np.asarray(t, dtype=np.float64)
        new_p, new_b = [], {n: [] for n in bufs}
        for i, (p, g) in enumerate(zip(p_leaves, g_leaves)):
            p2, b2 = self._update_leaf(p, g, {n: bufs[n][i] for n in bufs}, t, lr)
            new_p.append(p2)
            for n in bufs:
                new_b[n].append(b2[n])
        new_state = {"step": t, **{n: pytree.unflatten(tree, v) for n, v in new_b.items()}}
        return pytree.unflatten(tree, new_p), new_state

    def _update_leaf(self, p, g, bufs: dict, t, lr):
        raise NotImplementedError

    # ---- stateful convenience (eager loops) ------------------------------------------------
    def step(self, grads):
        """Apply one update to the params given at construction; returns them.

        The new values are written into the original numpy arrays (as torch updates its
        tensors in place); leaves that cannot be written are replaced in `self.params`.
        """
        if self.params is None:
            raise ValueError(f"{type(self).__name__} was built without params: use "
                             f"state = opt.init(params) and opt.update(grads, state, params), "
                             f"or build it as {type(self).__name__}(params, ...)")
        if _is_traced(grads):
            raise ValueError("opt.step() is for eager loops; inside a traced function use the "
                             "pure opt.update(grads, state, params, lr)")
        new, self.state = self.update(grads, self.state, self.params)
        old_leaves, tree, _ = pytree.flatten(self.params)
        out = []
        for old, nw in zip(old_leaves, pytree.flatten(new)[0]):
            if isinstance(old, np.ndarray) and old.flags.writeable and old.shape == np.shape(nw):
                np.copyto(old, nw, casting="same_kind")
                out.append(old)
            else:
                out.append(nw)
        self.params = pytree.unflatten(tree, out)
        return self.params

    def state_dict(self) -> dict:
        return {"state": self.state, "hyperparams": self.hyperparams}

    def load_state_dict(self, d: dict) -> None:
        self.state = d["state"]
        for k, v in d.get("hyperparams", {}).items():
            setattr(self, k, v)

    @property
    def hyperparams(self) -> dict:
        """The hyperparameters, lr first (what repr shows and state_dict saves)."""
        hp = {k: v for k, v in vars(self).items() if k not in ("params", "state", "initial_lr")}
        return {"lr": hp.pop("lr"), **hp}

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams.items())
        return f"{type(self).__name__}({hp})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov and L2 decay.

    Per parameter (PyTorch): `g ← g + λθ`; with momentum μ: `b ← g` at the first step, then
    `b ← μb + (1 − τ)g`; `g ← g + μb` if nesterov else `g ← b`; `θ ← θ − lr·g`.
    """

    def __init__(self, params=None, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 maximize: bool = False):
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        self.momentum, self.dampening = momentum, dampening
        self.weight_decay, self.nesterov, self.maximize = weight_decay, nesterov, maximize
        super().__init__(params, lr)

    def _buffer_names(self):
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def _update_leaf(self, p, g, bufs, t, lr):
        if self.maximize:
            g = -g
        if self.weight_decay != 0:
            g = g + self.weight_decay * p
        new = {}
        if self.momentum != 0:
            buf = self.momentum * bufs["momentum_buffer"] + (1 - self.dampening) * g
            if self.dampening != 0:  # torch starts the buffer at g, undamped
                buf = gnp.where(t == 1, g, buf)
            new["momentum_buffer"] = buf
            g = g + self.momentum * buf if self.nesterov else buf
        return p - _cast(lr, p) * g, new


class Adagrad(Optimizer):
    """Adagrad: `G ← G + g²`, `θ ← θ − clr·g/(√G + ε)`, `clr = lr/(1 + (t − 1)·lr_decay)`."""

    buffers = ("sum",)

    def __init__(self, params=None, lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, maximize: bool = False):
        if lr_decay < 0.0 or weight_decay < 0.0 or eps < 0.0 or initial_accumulator_value < 0.0:
            raise ValueError("Adagrad: lr_decay, weight_decay, eps and "
                             "initial_accumulator_value must be >= 0")
        self.lr_decay, self.weight_decay = lr_decay, weight_decay
        self.initial_accumulator_value, self.eps, self.maximize = \
            initial_accumulator_value, eps, maximize
        super().__init__(params, lr)

    def _init_buffer(self, name, p):
        return _zeros_like(p, self.initial_accumulator_value)

    def _update_leaf(self, p, g, bufs, t, lr):
        if self.maximize:
            g = -g
        if self.weight_decay != 0:
            g = g + self.weight_decay * p
        clr = lr / (1 + (t - 1) * self.lr_decay) if self.lr_decay != 0 else lr
        s = bufs["sum"] + g * g
        std = gnp.sqrt(s) + self.eps
        return p - _cast(clr, p) * (g / std), {"sum": s}


class RMSprop(Optimizer):
    """RMSprop: `v ← αv + (1 − α)g²`; centered: `ḡ ← αḡ + (1 − α)g`, `v − ḡ²` under the root;
    `d = √(·) + ε`; with momentum μ `b ← μb + g/d`, `θ ← θ − lr·b`, else `θ ← θ − lr·g/d`."""

    def __init__(self, params=None, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 maximize: bool = False):
        if not 0.0 <= alpha or eps < 0.0 or weight_decay < 0.0 or momentum < 0.0:
            raise ValueError("RMSprop: alpha, eps, weight_decay and momentum must be >= 0")
        self.alpha, self.eps, self.weight_decay = alpha, eps, weight_decay
        self.momentum, self.centered, self.maximize = momentum, centered, maximize
        super().__init__(params, lr)

    def _buffer_names(self):
        return (("square_avg",) + (("grad_avg",) if self.centered else ())
                + (("momentum_buffer",) if self.momentum > 0 else ()))

    def _update_leaf(self, p, g, bufs, t, lr):
        if self.maximize:
            g = -g
        if self.weight_decay != 0:
            g = g + self.weight_decay * p
        a = self.alpha
        new = {"square_avg": a * bufs["square_avg"] + (1 - a) * (g * g)}
        if self.centered:
            new["grad_avg"] = a * bufs["grad_avg"] + (1 - a) * g
            avg = gnp.sqrt(new["square_avg"] - new["grad_avg"] * new["grad_avg"])
        else:
            avg = gnp.sqrt(new["square_avg"])
        avg = avg + self.eps
        if self.momentum > 0:
            new["momentum_buffer"] = self.momentum * bufs["momentum_buffer"] + g / avg
            return p - _cast(lr, p) * new["momentum_buffer"], new
        return p - _cast(lr, p) * (g / avg), new


class Adam(Optimizer):
    """Adam: `m ← β₁m + (1 − β₁)g`, `v ← β₂v + (1 − β₂)g²`, t counted from 1,
    `θ ← θ − lr/(1 − β₁ᵗ) · m / (√v/√(1 − β₂ᵗ) + ε)`. `weight_decay` is coupled (added to g);
    `amsgrad=True` uses the running maximum of v."""

    _decoupled = False

    def __init__(self, params=None, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 maximize: bool = False):
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid beta parameters: {betas}")
        if eps < 0.0 or weight_decay < 0.0:
            raise ValueError("eps and weight_decay must be >= 0")
        self.betas, self.eps, self.weight_decay = tuple(betas), eps, weight_decay
        self.amsgrad, self.maximize = amsgrad, maximize
        super().__init__(params, lr)

    def _buffer_names(self):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())

    def _update_leaf(self, p, g, bufs, t, lr):
        b1, b2 = self.betas
        if self.maximize:
            g = -g
        if self.weight_decay != 0:
            if self._decoupled:
                p = p * _cast(1 - lr * self.weight_decay, p)
            else:
                g = g + self.weight_decay * p
        new = {"exp_avg": b1 * bufs["exp_avg"] + (1 - b1) * g,
               "exp_avg_sq": b2 * bufs["exp_avg_sq"] + (1 - b2) * (g * g)}
        v = new["exp_avg_sq"]
        if self.amsgrad:
            v = new["max_exp_avg_sq"] = gnp.maximum(bufs["max_exp_avg_sq"], v)
        # bias corrections in float64 (the step count's dtype), then cast, as torch does in Python
        step_size = _cast(lr / (1 - b1 ** t), p)
        bc2_sqrt = _cast((1 - b2 ** t) ** 0.5, p)
        denom = gnp.sqrt(v) / bc2_sqrt + self.eps
        return p - step_size * (new["exp_avg"] / denom), new


class AdamW(Adam):
    """Adam with decoupled weight decay: `θ ← θ(1 − lr·λ)`, then the Adam step without λ in g."""

    _decoupled = True

    def __init__(self, params=None, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 maximize: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)


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


# ---- LR schedules (host-side Python) ----------------------------------------------------------
class LRScheduler:
    """Base class: PyTorch scheduler semantics with a closed form.

    `sched = XLR(opt_or_base_lr, ...)`: the first argument is an optimiser (anything with an
    `lr` attribute; the base LR is its LR when the first scheduler was attached, kept as
    `opt.initial_lr`) or a float base LR for functional use. Construction performs step 0.
    `sched.step()` advances the counter `last_epoch` and sets the optimiser's LR;
    `sched.get_last_lr()` is `[lr]` (a list, as in torch: one parameter group), `sched.last_lr`
    the float; `sched.lr_at(t)` is the pure closed form, `sched.lrs(n)` the first n values.
    Step once per epoch, or once per iteration for warmup and cyclical schedules.
    """

    def __init__(self, optimizer, last_epoch: int = -1):
        if isinstance(optimizer, numbers.Real) and not isinstance(optimizer, bool):
            self.optimizer, self.base_lr = None, float(optimizer)
        elif hasattr(optimizer, "lr"):
            self.optimizer = optimizer
            if getattr(optimizer, "initial_lr", None) is None:
                optimizer.initial_lr = optimizer.lr
            self.base_lr = float(optimizer.initial_lr)
        else:
            raise TypeError(f"{type(self).__name__} needs an optimizer or a float base LR, "
                            f"got {type(optimizer).__name__}")
        self.last_epoch = last_epoch
        self.step()

    def lr_at(self, t: int) -> float:
        """The LR after `t` calls of step() (t = 0 at construction)."""
        raise NotImplementedError

    def lrs(self, n: int) -> list[float]:
        """The first n LRs, t = 0 .. n-1 (for printing a schedule table)."""
        return [self.lr_at(t) for t in range(n)]

    def step(self) -> None:
        self.last_epoch += 1
        self._last_lr = float(self.lr_at(self.last_epoch))
        if self.optimizer is not None:
            self.optimizer.lr = self._last_lr

    def get_last_lr(self) -> list[float]:
        return [self._last_lr]

    @property
    def last_lr(self) -> float:
        return self._last_lr


def _optimizer_or_none(optimizer, who: str):
    if optimizer is not None and not hasattr(optimizer, "lr"):
        raise TypeError(f"{who}'s first argument is the optimizer (or None for functional use), "
                        f"got {type(optimizer).__name__}")
    return optimizer


class LambdaLR(LRScheduler):
    """`lr = base · lr_lambda(t)`. With `inverse_time(k)`: base/(1 + k t); with
    `inverse_sqrt(k)`: base/√(1 + k t) (the lectures' α₀/√t counting t from 1)."""

    def __init__(self, optimizer, lr_lambda: Callable[[int], float], last_epoch: int = -1):
        self.lr_lambda = lr_lambda
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t):
        return self.base_lr * self.lr_lambda(t)


def inverse_time(k: float = 1.0) -> Callable[[int], float]:
    """A LambdaLR factor `1/(1 + k t)` (1/t decay, lectures 5.17)."""
    return lambda t: 1.0 / (1.0 + k * t)


def inverse_sqrt(k: float = 1.0) -> Callable[[int], float]:
    """A LambdaLR factor `1/√(1 + k t)` (1/√t decay counted from 1, lectures 5.18)."""
    return lambda t: 1.0 / math.sqrt(1.0 + k * t)


class StepLR(LRScheduler):
    """`lr = base · gamma^⌊t / step_size⌋`."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        self.step_size, self.gamma = int(step_size), gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t):
        return self.base_lr * self.gamma ** (t // self.step_size)


class MultiStepLR(LRScheduler):
    """`lr = base · gamma^(number of milestones ≤ t)`."""

    def __init__(self, optimizer, milestones: Sequence[int], gamma: float = 0.1,
                 last_epoch: int = -1):
        self.milestones, self.gamma = sorted(int(m) for m in milestones), gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t):
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, t)


class ConstantLR(LRScheduler):
    """`lr = base · factor` for t < total_iters, then base."""

    def __init__(self, optimizer, factor: float = 1.0 / 3, total_iters: int = 5,
                 last_epoch: int = -1):
        if not 0 <= factor <= 1:
            raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
        self.factor, self.total_iters = factor, total_iters
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t):
        return self.base_lr * (self.factor if t < self.total_iters else 1.0)


class LinearLR(LRScheduler):
    """`lr = base · (s + (e − s)·min(t, T)/T)`, s = start_factor ∈ (0, 1], e = end_factor.
    Linear decay to a floor: start 1, end α_floor/α₀; warmup from 0: see `warmup`."""

    def __init__(self, optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = -1):
        if not 0 < start_factor <= 1:
            raise ValueError("Starting multiplicative factor expected to be greater than 0 and "
                             "less or equal to 1 (for a warmup from 0 use optim.warmup).")
        if not 0 <= end_factor <= 1:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t):
        frac = min(t, self.total_iters) / self.total_iters
        return self.base_lr * (self.start_factor + (self.end_factor - self.start_factor) * frac)


class ExponentialLR(LRScheduler):
    """`lr = base · gamma^t` (gamma = e^{−k} gives the lectures' α₀e^{−kt})."""

    def __init__(self, optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t):
        return self.base_lr * self.gamma ** t


class PolynomialLR(LRScheduler):
    """`lr = base · (1 − min(t, T)/T)^power` (power 1: linear decay to 0)."""

    def __init__(self, optimizer, total_iters: int = 5, power: float = 1.0, last_epoch: int = -1):
        self.total_iters, self.power = total_iters, power
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t):
        return self.base_lr * (1.0 - min(t, self.total_iters) / self.total_iters) ** self.power


class CosineAnnealingLR(LRScheduler):
    """`lr = eta_min + (base − eta_min)(1 + cos(π t / T_max))/2` (rising again after T_max,
    as torch's; no restarts: see CosineAnnealingWarmRestarts)."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class CosineAnnealingWarmRestarts(LRScheduler):
    """SGDR: cosine from base to eta_min over T_i steps, then restart; T_0 first, each next
    period T_mult times longer: `lr = eta_min + (base − eta_min)(1 + cos(π T_cur/T_i))/2`."""

    def __init__(self, optimizer, T_0: int, T_mult: int = 1, eta_min: float = 0.0,
                 last_epoch: int = -1):
        if T_0 <= 0 or not isinstance(T_0, int):
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if T_mult < 1 or not isinstance(T_mult, int):
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        self.T_0, self.T_mult, self.eta_min = T_0, T_mult, eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t):
        if self.T_mult == 1:
            t_cur, t_i = t % self.T_0, self.T_0
        else:  # periods grow geometrically: O(log t) iterations
            t_cur, t_i = t, self.T_0
        while t_cur >= t_i:
            t_cur, t_i = t_cur - t_i, t_i * self.T_mult
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


class CyclicLR(LRScheduler):
    """Cyclical LR between base_lr and max_lr (Smith 2017), stepped per iteration:
    up for step_size_up steps, down for step_size_down (default: the same). Modes:
    'triangular' (constant amplitude), 'triangular2' (amplitude halved each cycle),
    'exp_range' (amplitude gamma^t). Unlike torch, momentum is not cycled (graphc bakes
    momentum into the compiled graph); `optimizer` may be None for functional use."""

    def __init__(self, optimizer, base_lr: float, max_lr: float, step_size_up: int = 2000,
                 step_size_down: int | None = None, mode: str = "triangular", gamma: float = 1.0,
                 scale_fn: Callable[[float], float] | None = None, scale_mode: str = "cycle",
                 last_epoch: int = -1):
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        self.max_lr = max_lr
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        self.total_size, self.step_ratio = up + down, up / (up + down)
        self.mode, self.gamma = mode, gamma
        if scale_fn is not None:
            self.scale_fn, self.scale_mode = scale_fn, scale_mode
        elif mode == "triangular":
            self.scale_fn, self.scale_mode = (lambda x: 1.0), "cycle"
        elif mode == "triangular2":
            self.scale_fn, self.scale_mode = (lambda x: 1 / (2.0 ** (x - 1))), "cycle"
        else:
            self.scale_fn, self.scale_mode = (lambda x: gamma ** x), "iterations"
        # torch's CyclicLR replaces the optimiser's LR by base_lr, whatever it was
        self.optimizer = _optimizer_or_none(optimizer, "CyclicLR")
        self.base_lr = float(base_lr)
        if self.optimizer is not None:
            self.optimizer.initial_lr = self.base_lr
        self.last_epoch = last_epoch
        self.step()

    def lr_at(self, t):
        cycle = math.floor(1 + t / self.total_size)
        x = 1.0 + t / self.total_size - cycle
        scale = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        height = (self.max_lr - self.base_lr) * scale
        return self.base_lr + height * self.scale_fn(cycle if self.scale_mode == "cycle" else t)


class SequentialLR(LRScheduler):
    """Schedulers one after another: `schedulers[i]` runs from `milestones[i-1]`, restarted
    at its own t = 0 (torch's SequentialLR), so `lr_at(t) = schedulers[i].lr_at(t − m_{i−1})`."""

    def __init__(self, optimizer, schedulers: Sequence[LRScheduler], milestones: Sequence[int],
                 last_epoch: int = -1):
        if len(schedulers) < 1 or len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR expects len(milestones) == len(schedulers) - 1, got "
                             f"{len(milestones)} milestones for {len(schedulers)} schedulers")
        self.schedulers, self.milestones = list(schedulers), [int(m) for m in milestones]
        self.optimizer = _optimizer_or_none(optimizer, "SequentialLR")
        self.base_lr = self.schedulers[0].base_lr
        self.last_epoch = last_epoch
        self.step()

    def lr_at(self, t):
        i = bisect.bisect_right(self.milestones, t)
        return self.schedulers[i].lr_at(t - (self.milestones[i - 1] if i else 0))


def warmup(scheduler: LRScheduler, warmup_iters: int, start_factor: float = 0.0) -> SequentialLR:
    """A linear warmup in front of `scheduler`: the LR rises linearly from
    `start_factor · base` (0 allowed, unlike LinearLR) to base over `warmup_iters` steps,
    then `scheduler` runs from its own t = 0. Equals torch's
    `SequentialLR([LinearLR(start_factor, 1, warmup_iters), scheduler], [warmup_iters])`."""
    ramp = LambdaLR(scheduler.base_lr,
                    lambda t: start_factor + (1.0 - start_factor) * min(t, warmup_iters) / warmup_iters)
    return SequentialLR(scheduler.optimizer, [ramp, scheduler], [warmup_iters])
