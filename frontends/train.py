"""Training: a whole step (forward, loss, backward, optimizer update) compiled as ONE graph,
and a small `fit` loop with a progress bar, early stopping and best-checkpoint keeping.

>>> import numpy as np, graphc as gc
>>> from graphc import nn
>>> model = nn.Sequential(nn.Linear(2, 8, seed=0), nn.Tanh(), nn.Linear(8, 2, seed=1))
>>> step = gc.train.TrainStep(model, nn.functional.cross_entropy, gc.optim.SGD(lr=0.5))
>>> x = np.random.default_rng(0).standard_normal((32, 2)).astype(np.float32)
>>> y = (x[:, 0] > 0).astype(np.int64)
>>> first = step(x, y).loss
>>> for _ in range(50):
...     last = step(x, y).loss
>>> bool(last < first), step.compiled.times["trace"] > 0
(True, True)

`TrainStep` keeps the parameters, the buffers (BatchNorm statistics) and the optimizer state
between calls and passes them to the compiled step itself, so the caller hands over only
the batch; the learning rate and the dropout key are graph inputs, so a schedule or a new
key never retraces. On a backend with device memory (opencl) that state stays on the
device as device arrays: per call only the batch, the learning rate and the key go up and
the loss comes down; `step.params` and friends copy it down when read. `step.compiled` is
the `Compiled` function: draw its stages like any other
(`gc.draw(step.compiled, stage="fused")`).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from graphc.device import DeviceArray
from graphc.errors import GraphcError
from graphc.ir import register_internal_dir
from graphc.frontends import pytree
from graphc.frontends.api import compile as gc_compile, value_and_grad
from graphc.frontends.nn.modules import Module, functional_call

register_internal_dir(__file__)

__all__ = ["TrainStep", "StepResult", "History", "fit", "accuracy"]


class StepResult:
    """One step's loss (a float) and the model's output on the batch. The output is copied
    to the host only when read (`.output`, a numpy array), so a loop that does not look at
    it moves no more than the loss from a device."""

    def __init__(self, loss: float, output):
        self.loss, self._output = loss, output

    @property
    def output(self) -> np.ndarray:
        return np.asarray(self._output)

    def __repr__(self) -> str:
        return f"StepResult(loss={self.loss!r}, output={self.output!r})"


def _host(tree):
    """`tree` itself when it holds no device array (the numpy backend's arrays are the
    state); else a copy with every device array as a numpy array."""
    leaves = pytree.flatten(tree, with_paths=False)[0]
    if not any(isinstance(x, DeviceArray) for x in leaves):
        return tree
    return pytree.tree_map(np.asarray, tree)


def accuracy(output: np.ndarray, target: np.ndarray) -> float:
    """Fraction of rows whose arg-max class equals the target (class indices or one-hot);
    a single output column is read as a logit of class 1."""
    output = np.asarray(output)
    if output.ndim == 1 or output.shape[-1] == 1:
        pred = (output.reshape(len(output)) > 0).astype(np.int64)
    else:
        pred = output.argmax(-1)
    target = np.asarray(target)
    if target.ndim == pred.ndim + 1:
        target = target.argmax(-1)
    return float(np.mean(pred == target.reshape(pred.shape)))


class TrainStep:
    """One compiled training step for `model` with loss `loss_fn(output, target)` and a
    `graphc.optim` optimizer. Call it with a batch: `step(x, y) -> StepResult`.

    - `step.lr`: the learning rate used by the next call (set it, or let `fit` apply a
      schedule); `step.params` / `step.buffers` / `step.opt_state`: the carried state, as
      numpy arrays (on a device backend, read-only copies of the device arrays the step
      keeps; assign a new dict to change the state).
    - `step.evaluate(x)`: the model's output in eval mode with the current parameters
      (compiled too); `step.sync()`: writes the parameters and buffers back into `model`.
    - `device_state=False` keeps the state as numpy arrays between calls on a device backend
      too (uploaded and read back every call; for comparison, see benchmarks/device_state.py).
    """

    def __init__(self, model: Module, loss_fn: Callable, optimizer, backend="numpy",
                 passes: str | None = None, seed: int = 0, device_state: bool = True):
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.params = {k: np.array(v) for k, v in model.param_dict().items()}
        self.buffers = {k: np.array(v) for k, v in model.buffer_dict().items()}
        self.opt_state = optimizer.init(self.params)
        self.lr = float(optimizer.lr)
        self.steps = 0
        self.seed = seed

        def train_step(params, buffers, opt_state, x, y, lr, key):
            def loss_of(p):
                out, new_buffers = functional_call(model, p, x, buffers=buffers, key=key,
                                                   training=True)
                return loss_fn(out, y), (out, new_buffers)
            (loss, (out, new_buffers)), grads = value_and_grad(loss_of, has_aux=True)(params)
            new_params, new_state = optimizer.update(grads, opt_state, params, lr=lr)
            return loss, out, new_params, new_buffers, new_state

        def eval_step(params, buffers, x):
            return functional_call(model, params, x, buffers=buffers, training=False,
                                   return_buffers=False)

        # the step owns params, buffers and optimizer state: it donates them, so the
        # update writes in place where the backend can (memory-plan rule M5), and a device
        # backend keeps them in device memory (device_state=False: numpy between calls)
        self.compiled = gc_compile(train_step, backend=backend, passes=passes,
                                   donate_argnums=(0, 1, 2), device_outputs=device_state)
        self.compiled_eval = gc_compile(eval_step, backend=backend, passes=passes)

    # the state as the user sees it: numpy arrays (the step keeps device arrays, if any,
    # in _params, _buffers, _opt_state)
    params = property(lambda self: _host(self._params),
                      lambda self, v: setattr(self, "_params", v))
    buffers = property(lambda self: _host(self._buffers),
                       lambda self, v: setattr(self, "_buffers", v))
    opt_state = property(lambda self: _host(self._opt_state),
                         lambda self, v: setattr(self, "_opt_state", v))

    def __call__(self, x, y) -> StepResult:
        key = np.int64(self.seed * 1_000_003 + self.steps)  # a new dropout mask every step
        loss, out, self._params, self._buffers, self._opt_state = self.compiled(
            self._params, self._buffers, self._opt_state, x, y, float(self.lr), key)
        self.steps += 1
        return StepResult(float(loss), out)

    def evaluate(self, x) -> np.ndarray:
        return self.compiled_eval(self._params, self._buffers, x)

    def sync(self) -> Module:
        """Copy the trained parameters and buffers back into the model; returns it."""
        self.model.load_state_dict({**self.params, **self.buffers}, strict=False)
        return self.model

    def state(self) -> dict:
        # a copy: the compiled step overwrites the arrays it was given (donation)
        return copy.deepcopy({"params": self.params, "buffers": self.buffers,
                              "opt_state": self.opt_state})

    def load(self, state: dict) -> None:
        self.params, self.buffers, self.opt_state = (copy.deepcopy(state[k]) for k in
                                                     ("params", "buffers", "opt_state"))


@dataclass
class History:
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    seconds: float = 0.0


def _batches(n: int, batch_size: int, rng, shuffle: bool, drop_last: bool) -> Iterable[np.ndarray]:
    order = rng.permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        yield order[i:i + batch_size]


def fit(step: TrainStep, x, y, epochs: int = 10, batch_size: int = 32, val=None,
        scheduler=None, patience: int | None = None, metric: Callable | None = accuracy,
        restore_best: bool = True, seed: int = 0, progress: bool = True,
        drop_last: bool = True) -> History:
    """Train `step` on (x, y) for `epochs`, shuffling with `seed`.

    - val: optional (x_val, y_val), evaluated after every epoch (loss and `metric`).
    - scheduler: a `graphc.optim` schedule (stepped once per epoch) or a function
      epoch -> lr.
    - patience: stop when the validation loss has not improved for this many epochs
      (early stopping); with restore_best the best epoch's state is put back at the end.
    - drop_last: skip a final partial batch, so every call has one shape (one trace).
    The progress bar (tqdm) shows loss and accuracy; returns a History.
    """
    if len(x) != len(y):
        raise GraphcError(f"fit: {len(x)} inputs but {len(y)} targets", stage="fit")
    rng = np.random.default_rng(seed)
    hist, best, best_state, bad = History(), math.inf, None, 0
    t0 = time.perf_counter()
    bar = _progress(epochs, progress)
    for epoch in range(epochs):
        if scheduler is not None:
            step.lr = scheduler(epoch) if callable(scheduler) and not hasattr(scheduler, "step") \
                else scheduler.get_last_lr()[0]
        losses, accs = [], []
        for idx in _batches(len(x), batch_size, rng, True, drop_last):
            r = step(x[idx], y[idx])
            losses.append(r.loss)
            if metric is not None:
                accs.append(metric(r.output, y[idx]))
        hist.lr.append(float(step.lr))
        hist.train_loss.append(float(np.mean(losses)))
        hist.train_acc.append(float(np.mean(accs)) if accs else math.nan)
        if scheduler is not None and hasattr(scheduler, "step"):
            scheduler.step()
        score = hist.train_loss[-1]
        if val is not None:
            out = step.evaluate(val[0])
            hist.val_loss.append(float(step.loss_fn(out, val[1])))
            hist.val_acc.append(metric(out, val[1]) if metric is not None else math.nan)
            score = hist.val_loss[-1]
        if score < best:
            best, bad, hist.best_epoch = score, 0, epoch
            best_state = step.state() if restore_best else None
        else:
            bad += 1
        bar.update(epoch, hist)
        if patience is not None and bad > patience:
            hist.stopped_early = True
            break
    bar.close()
    if restore_best and best_state is not None:
        step.load(best_state)
    hist.seconds = time.perf_counter() - t0
    return hist


class _progress:
    """A tqdm bar over epochs when tqdm is installed and wanted; silent otherwise."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total, unit="epoch", leave=True)
            except ImportError:  # tqdm is a dependency; a stripped install still trains
                self.bar = None

    def update(self, epoch: int, hist: History):
        if self.bar is None:
            return
        info = {"loss": f"{hist.train_loss[-1]:.4f}"}
        if not math.isnan(hist.train_acc[-1]):
            info["acc"] = f"{hist.train_acc[-1]:.3f}"
        if hist.val_loss:
            info["val_loss"] = f"{hist.val_loss[-1]:.4f}"
            if not math.isnan(hist.val_acc[-1]):
                info["val_acc"] = f"{hist.val_acc[-1]:.3f}"
        self.bar.set_postfix(info)
        self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()
