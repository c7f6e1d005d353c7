"""The `Optimizer` base class: a pure functional core over pytrees (`init`, `update`) and a
PyTorch-style stateful wrapper (`step`). The concrete optimisers and the overview are in
graphc.frontends.optim."""
from __future__ import annotations

from typing import Any

import numpy as np

from graphc.frontends import numpy_api as gnp
from graphc.frontends import pytree
from graphc.frontends.tensor import Tensor

__all__ = ["Optimizer"]


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
