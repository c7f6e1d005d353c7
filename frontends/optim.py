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

The base class is in graphc.frontends.optimizer, penalties and clipping in
graphc.frontends.regularization, the schedules in graphc.frontends.lr_scheduler (also
`graphc.optim.lr_scheduler`, as torch.optim.lr_scheduler); all are re-exported here.
"""
from __future__ import annotations

from graphc.frontends import numpy_api as gnp
from graphc.frontends.optimizer import Optimizer, _cast, _zeros_like
from graphc.frontends.regularization import *  # noqa: F401,F403
from graphc.frontends.lr_scheduler import *  # noqa: F401,F403

__all__ = [
    # optimisers
    "Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW",
    # penalties and clipping
    "l1_penalty", "l2_penalty", "elastic_net_penalty", "clip_grad_norm", "clip_grad_value",
    "add_gradient_noise",
    # schedules
    "LRScheduler", "LambdaLR", "StepLR", "MultiStepLR", "ConstantLR", "LinearLR",
    "ExponentialLR", "PolynomialLR", "CosineAnnealingLR", "SequentialLR", "CyclicLR",
    "CosineAnnealingWarmRestarts", "warmup", "inverse_time", "inverse_sqrt",
]


# ---- optimisers ----------------------------------------------------------------------------
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
