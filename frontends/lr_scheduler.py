"""LR schedules with PyTorch's semantics and a closed form, stepped on the host in Python.
Public as `graphc.optim.*` and `graphc.optim.lr_scheduler.*` (as torch.optim.lr_scheduler)."""
from __future__ import annotations

import bisect
import math
import numbers
from typing import Callable, Sequence

__all__ = [
    "LRScheduler", "LambdaLR", "StepLR", "MultiStepLR", "ConstantLR", "LinearLR",
    "ExponentialLR", "PolynomialLR", "CosineAnnealingLR", "SequentialLR", "CyclicLR",
    "CosineAnnealingWarmRestarts", "warmup", "inverse_time", "inverse_sqrt",
]


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
