"""`Module`, `Parameter`, `functional_call` and the feed-forward layers, as in torch.nn.

A Module keeps its trainable arrays (`Parameter`s), its non-trainable state (buffers, e.g.
BatchNorm's running statistics) and its submodules in three dicts, discovered from
attribute assignment as in PyTorch::

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 8, seed=0)      # a submodule: parameters fc1.weight, fc1.bias
            self.scale = nn.Parameter(np.ones(8))   # a parameter: scale
            self.register_buffer("steps", np.zeros((), np.int64))   # a buffer: steps
            self.layers = [nn.Linear(8, 8), nn.Linear(8, 2)]        # a ModuleList: layers.0.weight ...

        def forward(self, x):
            ...

Plain numpy arrays assigned to new attributes are constants, not parameters (as plain
tensors in torch). Parameters are stored as plain numpy arrays: `model.fc1.weight` is an
ndarray, and assigning an array to a registered name replaces the parameter's value.

**Pure calls.** `functional_call(module, params, *inputs, buffers=None, key=None)` runs the
forward pass with the given (possibly traced) parameter values in place of the stored ones
and never mutates the module, so a whole training step can be differentiated and compiled::

    params = model.param_dict()
    def loss_fn(p, x, y):
        return F.cross_entropy(nn.functional_call(model, p, x), y)
    step = gc.compile(lambda p, x, y: gc.value_and_grad(loss_fn)(p, x, y))

State in, state out: with `buffers=` given it returns `(output, new_buffers)`, the buffers
after the call (BatchNorm's running statistics updated in training mode). `key=` is the
random key for Dropout (and the recurrent layers' inter-layer dropout): an int or an integer
scalar array (pass `np.int64(step)` to a compiled function so that a new key does not
retrace). The n-th random draw inside the call uses `key + n * 0x9E3779B1`, so a model with
one Dropout uses `key` itself. `training=` overrides the modules' train/eval mode for the
call (a Python bool, so a compiled function specialises on it).

Calling a module directly, `model(x)`, uses the stored arrays. On numpy arrays it runs at once
and, as in torch, updates the stored buffers (BatchNorm running statistics) in training mode;
Dropout then draws its masks from the module's own generator (its `seed=`). Inside a traced
function the stored arrays become constants, buffer updates are dropped, and Dropout in
training mode needs `functional_call(..., key=...)`.

**Initialisation.** Every layer takes `seed=` (an int) or `rng=` (a `numpy.random.Generator`)
and initialises as PyTorch does by default (B.13); with neither it draws from graphc's
default generator (`graphc.nn.init`). Parameters are float32 unless `dtype=` says otherwise;
`model.double()` / `model.to(np.float64)` convert every float parameter and buffer.
"""
from __future__ import annotations

import difflib
import math
import numbers
from collections import OrderedDict
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from graphc.errors import GraphcError, ShapeError
from graphc.frontends.tensor import Tensor
from graphc.frontends.nn import functional as F
from graphc.frontends.nn import init

__all__ = [
    "Parameter", "Module", "functional_call", "Sequential", "ModuleList", "ModuleDict",
    "Identity", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
    "Flatten", "Unflatten", "Dropout", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "Embedding",
    "ReLU", "LeakyReLU", "PReLU", "ELU", "SELU", "GELU", "SiLU", "Mish", "Tanh", "Sigmoid",
    "Softplus", "Softsign", "Hardtanh", "Hardsigmoid", "Softmax", "LogSoftmax",
    "BasicBlock", "Highway",
]


# ---- Parameter ---------------------------------------------------------------------------------
class Parameter(np.ndarray):
    """Marks an array as a trainable parameter when assigned to a Module attribute:
    `self.weight = Parameter(np.zeros((3, 4), np.float32))`. It is an ndarray (a view of the
    given array, no copy); the Module stores the plain array."""

    def __new__(cls, data, requires_grad: bool = True):
        obj = np.asarray(data).view(cls)
        obj.requires_grad = requires_grad
        return obj

    def __array_finalize__(self, obj):
        self.requires_grad = getattr(obj, "requires_grad", True)

    def __array_wrap__(self, arr, context=None, return_scalar=False):
        # results of arithmetic on a Parameter are plain arrays, not parameters
        arr = arr.view(np.ndarray)
        return arr[()] if return_scalar else arr

    def __repr__(self):
        return "Parameter(" + repr(self.view(np.ndarray)) + ")"


def _plain(a):
    return a.view(np.ndarray) if isinstance(a, np.ndarray) else a


def _is_array(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic, Tensor))


# ---- the state of a functional call (parameter swap, random key, mode) --------------------------
class _CallState:
    def __init__(self, key, eager: bool):
        self.key = key
        self.eager = eager
        self.draws = 0

    def next_key(self):
        """The key for the next random draw: key + n * 0x9E3779B1 (n counts draws)."""
        n = self.draws
        self.draws += 1
        if self.key is None:
            return None
        if n == 0:
            return self.key
        if isinstance(self.key, numbers.Integral) and not isinstance(self.key, np.generic):
            return (int(self.key) + n * 0x9E3779B1) % (1 << 63)
        return self.key + np.int64(n * 0x9E3779B1)


_STATE: list[_CallState] = []


def _current() -> _CallState | None:
    return _STATE[-1] if _STATE else None


def _dropout_key(module) -> Any:
    """The key a random layer uses now: the functional call's next key; eagerly without a
    key, one drawn from the module's own generator; traced without a key, an error."""
    st = _current()
    k = st.next_key() if st is not None else None
    if k is not None:
        return k
    if st is not None and st.eager:
        return int(module._rng().integers(0, 2 ** 62))
    raise GraphcError(
        f"{type(module).__name__} in training mode inside a traced function needs a random key",
        stage="trace",
        hint="call the model through gc.nn.functional_call(model, params, x, key=k) with an "
             "int or an integer scalar array (e.g. np.int64(step)), or call model.eval()")


def _has_tensor(x) -> bool:
    if isinstance(x, Tensor):
        return True
    if isinstance(x, (list, tuple)):
        return any(_has_tensor(v) for v in x)
    if isinstance(x, dict):
        return any(_has_tensor(v) for v in x.values())
    return False


# ---- Module ------------------------------------------------------------------------------------
class _IncompatibleKeys(NamedTuple):
    missing_keys: list
    unexpected_keys: list


class Module:
    """Base class of layers and models (torch.nn.Module). Subclasses call
    `super().__init__()` first and define `forward`."""

    training: bool

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ---- attribute registration ----------------------------------------------------------------
    def _dicts(self):
        d = self.__dict__
        if "_parameters" not in d:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 "before assigning attributes")
        return d["_parameters"], d["_buffers"], d["_modules"]

    def __setattr__(self, name: str, value):
        params, buffers, modules = self._dicts()
        if isinstance(value, (list, tuple)) and value and not hasattr(value, "_fields") \
                and all(isinstance(v, Module) for v in value) and not isinstance(value, ModuleList):
            value = ModuleList(value)
        elif isinstance(value, dict) and value and all(isinstance(v, Module) for v in value.values()) \
                and not isinstance(value, ModuleDict):
            value = ModuleDict(value)
        if isinstance(value, Parameter):
            self._forget(name)
            params[name] = _plain(value)
        elif isinstance(value, Module):
            self._forget(name)
            modules[name] = value
        elif name in params:
            if value is not None and not _is_array(value) and not isinstance(value, numbers.Number):
                raise TypeError(f"cannot assign {type(value).__name__} to parameter {name!r} "
                                "(an array or None expected)")
            params[name] = value if value is None or isinstance(value, Tensor) else np.asarray(value)
        elif name in buffers:
            buffers[name] = value if value is None or isinstance(value, Tensor) else np.asarray(value)
        elif name in modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to submodule {name!r} "
                                "(a Module or None expected)")
            modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name):
        params, buffers, modules = self._dicts()
        for d in (params, buffers, modules):
            d.pop(name, None)
        self._non_persistent.discard(name)
        self.__dict__.pop(name, None)

    def __getattr__(self, name: str):
        d = self.__dict__
        for table in ("_parameters", "_buffers", "_modules"):
            t = d.get(table)
            if t is not None and name in t:
                return t[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        params, buffers, modules = self._dicts()
        if name in params or name in buffers or name in modules:
            self._forget(name)
        else:
            object.__delattr__(self, name)

    def __dir__(self):
        p, b, m = self._dicts()
        return sorted(set(super().__dir__()) | set(p) | set(b) | set(m))

    def register_parameter(self, name: str, value) -> None:
        """Register `value` (an array, or None for an absent optional parameter such as a
        bias) as parameter `name`."""
        self._forget(name)
        self._dicts()[0][name] = None if value is None else _plain(np.asarray(value))

    def register_buffer(self, name: str, value, persistent: bool = True) -> None:
        """Register a non-trainable array (e.g. running statistics). Non-persistent buffers are
        left out of `state_dict()`."""
        self._forget(name)
        self._dicts()[1][name] = None if value is None else np.asarray(value)
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: "Module | None") -> None:
        self._forget(name)
        self._dicts()[2][name] = module

    # ---- the forward pass ---------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        if _current() is not None:  # inside a functional call: parameters are already in place
            return self.forward(*args, **kwargs)
        if _has_tensor(args) or _has_tensor(kwargs):
            # traced, outside functional_call: stored arrays are constants, buffers unchanged
            return _functional_call(self, {}, None, args, kwargs, key=None, eager=False)[0]
        out, new_buffers = _functional_call(self, {}, None, args, kwargs, key=None, eager=True)
        if not _has_tensor(new_buffers):
            for name, value in new_buffers.items():  # eager: update running statistics, as torch
                owner, leaf = self._owner(name)
                old = owner._buffers[leaf]
                if value is not old and value is not None:
                    owner._buffers[leaf] = np.asarray(value, dtype=None if old is None else old.dtype)
        return out

    def functional_call(self, params, *inputs, buffers=None, key=None, training=None,
                        return_buffers=None, **kwargs):
        """`functional_call(self, params, *inputs, ...)`; see `graphc.nn.functional_call`."""
        return functional_call(self, params, *inputs, buffers=buffers, key=key,
                               training=training, return_buffers=return_buffers, **kwargs)

    # ---- traversal -------------------------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        for name, m in self._dicts()[2].items():
            if m is not None:
                yield name, m

    def children(self) -> Iterator["Module"]:
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix: str = "", memo: set | None = None):
        """(dotted name, module) for this module and every submodule, each once."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, m in self.named_children():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def _named(self, table: int, prefix: str, recurse: bool):
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mp, m in mods:
            for name, v in m._dicts()[table].items():
                if v is None or (table == 0 and id(v) in seen):
                    continue
                if table == 0 and isinstance(v, np.ndarray):
                    seen.add(id(v))
                yield (f"{mp}.{name}" if mp else name), v

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        """(dotted name, array) for every parameter, e.g. ("layers.0.weight", W); shared
        arrays once, under their first name."""
        return self._named(0, prefix, recurse)

    def parameters(self, recurse: bool = True) -> Iterator[np.ndarray]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True):
        return self._named(1, prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[np.ndarray]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def param_dict(self) -> dict[str, np.ndarray]:
        """{dotted name: array} of the parameters: the `params` of `functional_call`, a pytree
        for gc.grad / gc.compile (the stored arrays themselves, not copies)."""
        return dict(self.named_parameters())

    def buffer_dict(self) -> dict[str, np.ndarray]:
        """{dotted name: array} of the buffers: the `buffers=` of `functional_call`."""
        return dict(self.named_buffers())

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))

    def _owner(self, dotted: str) -> tuple["Module", str]:
        *path, leaf = dotted.split(".")
        m = self
        for p in path:
            m = m._dicts()[2][p]
        return m, leaf

    def get_submodule(self, target: str) -> "Module":
        return self._owner(target + ".x")[0] if target else self

    # ---- modes -----------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Training mode (BatchNorm uses batch statistics, Dropout drops); returns self."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        """Evaluation mode (running statistics, no dropout); returns self."""
        return self.train(False)

    def apply(self, fn: Callable[["Module"], None]) -> "Module":
        for m in list(self.modules())[::-1]:
            fn(m)
        return self

    def to(self, dtype) -> "Module":
        """Convert every float parameter and buffer to `dtype` (in place); returns self."""
        dt = np.dtype(dtype)
        for m in self.modules():
            for table in m._dicts()[:2]:
                for k, v in table.items():
                    if isinstance(v, np.ndarray) and v.dtype.kind == "f":
                        table[k] = v.astype(dt)
        return self

    def double(self) -> "Module":
        return self.to(np.float64)

    def float(self) -> "Module":
        return self.to(np.float32)

    # ---- state -----------------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of the parameters and persistent buffers under their dotted names (the
        names torch uses, so torch state dicts map one to one)."""
        out = OrderedDict()
        for mp, m in self.named_modules():
            p, b, _ = m._dicts()
            for name, v in list(p.items()) + [(k, v) for k, v in b.items()
                                               if k not in m._non_persistent]:
                if v is not None:
                    out[f"{mp}.{name}" if mp else name] = np.array(v, copy=True)
        return out

    def load_state_dict(self, state, strict: bool = True) -> _IncompatibleKeys:
        """Copy arrays from `state` ({dotted name: array}, e.g. a torch state dict converted
        with `.numpy()`) into the parameters and buffers, keeping their dtypes. With
        strict=True, missing or unexpected names and shape mismatches raise KeyError/ShapeError."""
        own = {}
        for mp, m in self.named_modules():
            p, b, _ = m._dicts()
            for table in (p, b):
                for name, v in table.items():
                    if v is not None and not (table is b and name in m._non_persistent):
                        own[f"{mp}.{name}" if mp else name] = (table, name)
        state = {k: state[k] for k in state}
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for k, (table, name) in own.items():
            if k not in state:
                continue
            new = np.asarray(state[k])
            old = table[name]
            if new.shape != old.shape:
                raise ShapeError(f"load_state_dict: {k} has shape {new.shape}, the module "
                                 f"expects {old.shape}")
            table[name] = np.array(new, dtype=old.dtype, copy=True)
        return _IncompatibleKeys(missing, unexpected)

    def save(self, path) -> None:
        """Write `state_dict()` to an .npz file."""
        np.savez(path, **self.state_dict())

    def load(self, path, strict: bool = True) -> "Module":
        """Load an .npz written by `save` (or `np.savez(path, **state_dict)`); returns self."""
        with np.load(path, allow_pickle=False) as z:
            self.load_state_dict({k: z[k] for k in z.files}, strict=strict)
        return self

    # ---- printing --------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, m in self._dicts()[2].items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ("\n" + "\n".join(lines) + "\n)" if lines else ")")

    # ---- randomness ------------------------------------------------------------------------------
    def _rng(self) -> np.random.Generator:
        g = self.__dict__.get("_generator")
        if g is None:
            g = np.random.default_rng(_default_rng().integers(0, 2 ** 63))
            object.__setattr__(self, "_generator", g)
        return g


def _make_rng(seed=None, rng=None) -> np.random.Generator:
    """The generator a layer initialises from: `rng` if given, else a fresh one from `seed`,
    else graphc's default generator (graphc.nn.init)."""
    if rng is not None and seed is not None:
        raise TypeError("give seed= or rng=, not both")
    if rng is not None:
        return rng
    if seed is not None:
        return np.random.default_rng(seed)
    return _default_rng()


def _default_rng() -> np.random.Generator:
    return init.default_generator()


def _seeded(module: Module, rng: np.random.Generator) -> None:
    """Give a module with random forward behaviour its own generator, split from `rng`."""
    object.__setattr__(module, "_generator", np.random.default_rng(rng.integers(0, 2 ** 63)))


# ---- functional_call -------------------------------------------------------------------------------
def functional_call(module: Module, params, *inputs, buffers=None, key=None, training=None,
                    return_buffers=None, **kwargs):
    """Run `module(*inputs, **kwargs)` with `params` ({dotted name: array or traced tensor})
    in place of the stored parameters, without mutating the module.

    - params: any subset of `module.param_dict()`'s names; the others keep their stored
      values (as constants). Unknown names raise KeyError.
    - buffers: None (stored buffers, as constants) or {dotted name: array}, likewise.
    - key: random key for Dropout: an int or an integer scalar (array or traced).
    - training: None (the modules' own modes), True or False for this call only.
    - return_buffers: default `buffers is not None`. When true, returns
      `(output, new_buffers)` with new_buffers = {dotted name: value after the call} for every
      buffer (BatchNorm's running statistics updated in training mode); else `output`.

    Forward keyword arguments go in **kwargs; one named `key`, `buffers` or `training` (e.g.
    MultiheadAttention's key) must be passed positionally.
    """
    if isinstance(params, tuple) and len(params) == 2 and buffers is None:
        params, buffers = params  # torch.func style (params, buffers)
    if return_buffers is None:
        return_buffers = buffers is not None
    eager = not (_has_tensor(inputs) or _has_tensor(kwargs) or _has_tensor(params)
                 or _has_tensor(buffers) or isinstance(key, Tensor))
    out, new_buffers = _functional_call(module, params or {}, buffers, inputs, kwargs, key=key,
                                        eager=eager, training=training)
    return (out, new_buffers) if return_buffers else out


def _functional_call(module, params, buffers, inputs, kwargs, *, key, eager, training=None):
    mods = list(module.named_modules())
    swapped, modes = [], []
    used_p, used_b = set(), set()

    # tied parameters (one array under several names) take the value given for the first name
    first_name = {}
    for n, v in module.named_parameters():
        first_name.setdefault(id(v), n)

    def fill(table, given, used, prefix, what, m):
        new = OrderedDict(table)
        if given:
            for name, old in table.items():
                full = f"{prefix}.{name}" if prefix else name
                if full not in given and what == "parameter" and old is not None:
                    full = first_name.get(id(old), full)
                if full in given:
                    v = given[full]
                    shape = v.shape if hasattr(v, "shape") else np.shape(v)
                    if old is not None and tuple(shape) != old.shape:
                        raise ShapeError(f"functional_call: {what} {full!r} has shape "
                                         f"{tuple(shape)}, {type(m).__name__} expects {old.shape}")
                    new[name] = v
                    used.add(full)
        return new

    for prefix, m in mods:
        p, b, _ = m._dicts()
        swapped.append((m, p, b))
        modes.append((m, m.training))
    try:
        for (m, p, b), (prefix, _) in zip(swapped, mods):
            object.__setattr__(m, "_parameters", fill(p, params, used_p, prefix, "parameter", m))
            object.__setattr__(m, "_buffers", fill(b, buffers, used_b, prefix, "buffer", m))
            if training is not None:
                object.__setattr__(m, "training", bool(training))
        for given, used, what in ((params, used_p, "parameter"), (buffers, used_b, "buffer")):
            extra = [k for k in (given or {}) if k not in used]
            if extra:
                known = [n for _, m in mods for n in m._dicts()[0 if what == "parameter" else 1]]
                close = difflib.get_close_matches(extra[0], [n for n, _ in (
                    module.named_parameters() if what == "parameter" else module.named_buffers())])
                raise KeyError(f"functional_call: {type(module).__name__} has no {what} "
                               f"{extra[0]!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                               + ("" if known else f"; it has no {what}s"))
        _STATE.append(_CallState(key, eager))
        try:
            out = module.forward(*inputs, **kwargs)
        finally:
            _STATE.pop()
        new_buffers = {}
        for prefix, m in mods:
            for name, v in m._buffers.items():
                if v is not None:
                    new_buffers[f"{prefix}.{name}" if prefix else name] = v
        return out, new_buffers
    finally:
        for m, p, b in swapped:
            object.__setattr__(m, "_parameters", p)
            object.__setattr__(m, "_buffers", b)
        for m, mode in modes:
            object.__setattr__(m, "training", mode)


# ---- containers ------------------------------------------------------------------------------------
class Sequential(Module):
    """Modules applied in order: `Sequential(m0, m1, ...)` (names "0", "1", ...) or
    `Sequential(OrderedDict(name=module, ...))`."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], dict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def forward(self, x):
        for m in self.children():
            x = m(x)
        return x

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(OrderedDict(list(self._modules.items())[i]))
        return list(self._modules.values())[i]

    def append(self, m: Module) -> "Sequential":
        self.add_module(str(len(self)), m)
        return self


class ModuleList(Module):
    """A list of modules, named "0", "1", ... (assigning a list of modules to an attribute
    makes one)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, m: Module) -> "ModuleList":
        self.add_module(str(len(self)), m)
        return self

    def extend(self, ms) -> "ModuleList":
        for m in ms:
            self.append(m)
        return self

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, i):
        if isinstance(i, slice):
            return ModuleList(list(self._modules.values())[i])
        return list(self._modules.values())[i]

    def __setitem__(self, i, m):
        self.add_module(str(range(len(self))[i]), m)

    def forward(self, *a, **k):
        raise NotImplementedError("a ModuleList has no forward(); iterate over it")


class ModuleDict(Module):
    """A dict of modules (assigning a dict of modules to an attribute makes one)."""

    def __init__(self, modules=None):
        super().__init__()
        for k, m in (modules or {}).items():
            self.add_module(k, m)

    def __getitem__(self, k):
        return self._modules[k]

    def __setitem__(self, k, m):
        self.add_module(k, m)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def forward(self, *a, **k):
        raise NotImplementedError("a ModuleDict has no forward()")


# ---- initialisation helpers ----------------------------------------------------------------------------
def _uniform(rng: np.random.Generator, shape, bound: float, dtype=np.float32) -> np.ndarray:
    """U(-bound, bound) of `shape` (torch's default for biases and recurrent weights)."""
    a = np.empty(shape, dtype=dtype)
    return init.uniform_(a, -bound, bound, rng=rng)


def _default_weight(rng, shape, dtype) -> np.ndarray:
    """torch's Linear/Conv default: kaiming_uniform_(a=√5), i.e. U(±1/√fan_in)."""
    w = np.empty(shape, dtype=dtype)
    return init.kaiming_uniform_(w, a=math.sqrt(5), rng=rng)


def _fan_in(shape) -> int:
    return int(shape[1] * np.prod(shape[2:], dtype=np.int64)) if len(shape) > 1 else int(shape[0])


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


# ---- layers ------------------------------------------------------------------------------------------
class Identity(Module):
    """Returns its input (accepts and ignores constructor arguments, as torch)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Linear(Module):
    """Linear(in_features, out_features, bias=True, *, dtype=float32, seed=None, rng=None).
    weight (out, in), bias (out,), both U(±1/√in); forward(x (..., in)) -> x @ weight.T + bias."""

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float32, seed=None,
                 rng=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        r = _make_rng(seed, rng)
        self.weight = Parameter(_default_weight(r, (out_features, in_features), dtype))
        if bias:
            self.bias = Parameter(_uniform(r, (out_features,), 1 / math.sqrt(in_features)
                                           if in_features else 0, dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}"


class Conv2d(Module):
    """Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
    bias=True, *, dtype, seed, rng): cross-correlation on NCHW input (B.3, B.4); padding an int,
    a pair, 'valid' or 'same'. weight (C_out, C_in/groups, kH, kW), bias (C_out,), U(±1/√fan_in)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", *, dtype=np.float32, seed=None,
                 rng=None):
        super().__init__()
        if padding_mode != "zeros":
            raise NotImplementedError("Conv2d supports padding_mode='zeros' only")
        if in_channels % groups or out_channels % groups:
            raise ValueError("in_channels and out_channels must be divisible by groups")
        if padding == "same" and any(s != 1 for s in _pair(stride)):
            raise ValueError("padding='same' needs stride 1 (as in PyTorch)")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.dilation, self.groups = _pair(dilation), int(groups)
        r = _make_rng(seed, rng)
        shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = Parameter(_default_weight(r, shape, dtype))
        if bias:
            self.bias = Parameter(_uniform(r, (out_channels,), 1 / math.sqrt(_fan_in(shape)), dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, " \
            f"stride={self.stride}"
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False")


class MaxPool2d(Module):
    """MaxPool2d(kernel_size, stride=None (= kernel_size), padding=0, dilation=1,
    ceil_mode=False) on NCHW (padding counts as -inf); F.max_pool2d."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.dilation, self.ceil_mode = padding, dilation, ceil_mode

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(Module):
    """AvgPool2d(kernel_size, stride=None (= kernel_size), padding=0, ceil_mode=False,
    count_include_pad=True) on NCHW; F.avg_pool2d."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.ceil_mode, self.count_include_pad = padding, ceil_mode, count_include_pad

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """AdaptiveAvgPool2d(output_size): average pooling to a fixed (H, W) output size
    (AdaptiveAvgPool2d(1) is global average pooling; None keeps a size)."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class Flatten(Module):
    """Flatten(start_dim=1, end_dim=-1): merges dims start..end."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)


class Unflatten(Module):
    """Unflatten(dim, unflattened_size): splits dim into unflattened_size."""

    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, x):
        return F.unflatten(x, self.dim, self.unflattened_size)


class Dropout(Module):
    """Dropout(p=0.5, *, seed=None, rng=None): in training mode zeroes each element with
    probability p and scales the rest by 1/(1-p) (inverted dropout, B.5); identity in eval mode.

    Masks come from graphc's counter-based generator: under `functional_call(..., key=k)` from
    that key (the n-th random draw of the call uses k + n·0x9E3779B1); called eagerly
    without a key, from a key the module draws from its own generator (seeded by seed=/rng=)."""

    def __init__(self, p=0.5, inplace=False, *, seed=None, rng=None):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = float(p)
        _seeded(self, _make_rng(seed, rng))

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return F.dropout(x, self.p, True, _dropout_key(self))

    def extra_repr(self):
        return f"p={self.p}"


class _BatchNorm(Module):
    _dims: tuple[int, ...] = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, *, dtype=np.float32, seed=None, rng=None):
        super().__init__()
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype))
            self.bias = Parameter(np.zeros(num_features, dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def _check(self, x):
        if x.ndim not in self._dims or x.shape[1] != self.num_features:
            raise ShapeError(f"{type(self).__name__}({self.num_features}): input of shape "
                             f"{x.shape}, expected {self._expect}", stage="trace")

    def forward(self, x):
        self._check(x)
        use_batch = self.training or not self.track_running_stats
        if not (self.training and self.track_running_stats):
            out = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                               use_batch, self.momentum or 0.0, self.eps)
            return out[0] if isinstance(out, tuple) else out
        self.num_batches_tracked = self.num_batches_tracked + 1
        # momentum=None: cumulative moving average, as torch
        m = self.momentum if self.momentum is not None else \
            (1.0 / self.num_batches_tracked).astype(self.running_mean.dtype)
        out, mean, var = F.batch_norm(x, self.running_mean, self.running_var, self.weight,
                                      self.bias, True, m, self.eps)
        self.running_mean, self.running_var = mean, var
        return out

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, " \
               f"affine={self.affine}, track_running_stats={self.track_running_stats}"


class BatchNorm1d(_BatchNorm):
    """BatchNorm1d(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
    per feature over N (input (N, C)) or over N, L (input (N, C, L)), B.10. Buffers
    running_mean, running_var, num_batches_tracked; functional_call(..., buffers=b) returns the
    updated ones in training mode."""
    _dims, _expect = (2, 3), "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """BatchNorm2d(num_features, ...): per channel over (N, H, W) of NCHW input; as BatchNorm1d."""
    _dims, _expect = (4,), "(N, C, H, W)"


class LayerNorm(Module):
    """LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True): normalises over
    the trailing dims (biased variance), same in train and eval; weight ones, bias zeros."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, *,
                 dtype=np.float32, seed=None, rng=None):
        super().__init__()
        ns = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) \
            else tuple(normalized_shape)
        self.normalized_shape, self.eps = tuple(int(s) for s in ns), float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        if elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, dtype))
            if bias:
                self.bias = Parameter(np.zeros(self.normalized_shape, dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class Embedding(Module):
    """Embedding(num_embeddings, embedding_dim, padding_idx=None): weight (num, dim) ~ N(0, 1)
    (the padding row zero); forward(indices int array (...)) -> (..., dim)."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, *, dtype=np.float32,
                 seed=None, rng=None, _weight=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        if padding_idx is not None and padding_idx < 0:
            padding_idx += num_embeddings
        self.padding_idx = padding_idx
        if _weight is not None:
            w = np.array(_weight, dtype=dtype)
        else:
            w = np.empty((num_embeddings, embedding_dim), dtype)
            init.normal_(w, 0.0, 1.0, rng=_make_rng(seed, rng))
        if padding_idx is not None:
            w[padding_idx] = 0
        self.weight = Parameter(w)

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None):
        """An Embedding holding `embeddings` (freeze is accepted for torch compatibility;
        graphc trains what you differentiate)."""
        e = np.asarray(embeddings)
        return cls(e.shape[0], e.shape[1], padding_idx, dtype=e.dtype, _weight=e)

    def forward(self, indices):
        kw = {"padding_idx": self.padding_idx} if self.padding_idx is not None else {}
        return F.embedding(indices, self.weight, **kw)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}" + \
            (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")


# ---- activations ------------------------------------------------------------------------------------
def _activation(name: str, fname: str, params: tuple = (), doc: str = ""):
    """A Module class calling F.<fname>(x, *params) with the constructor's arguments."""
    names = [p[0] for p in params]

    def __init__(self, *args, inplace=False, **kwargs):
        Module.__init__(self)
        vals = dict(params)
        for n, v in zip(names, args):
            vals[n] = v
        for n, v in kwargs.items():
            if n not in vals:
                raise TypeError(f"{name}() got an unexpected keyword argument {n!r}")
            vals[n] = v
        for n in names:
            object.__setattr__(self, n, vals[n])

    def forward(self, x):
        return getattr(F, fname)(x, **{n: getattr(self, n) for n in names})

    def extra_repr(self):
        return ", ".join(f"{n}={getattr(self, n)}" for n in names)

    sig = ", ".join(f"{n}={v!r}" for n, v in params)
    return type(name, (Module,), {"__init__": __init__, "forward": forward,
                                  "extra_repr": extra_repr, "__module__": __name__,
                                  "__doc__": f"{name}({sig}): {doc or 'F.' + fname}, elementwise."})


ReLU = _activation("ReLU", "relu", doc="max(x, 0), gradient 0 at 0")
LeakyReLU = _activation("LeakyReLU", "leaky_relu", (("negative_slope", 0.01),))
ELU = _activation("ELU", "elu", (("alpha", 1.0),))
SELU = _activation("SELU", "selu")
GELU = _activation("GELU", "gelu", (("approximate", "none"),))
SiLU = _activation("SiLU", "silu")
Mish = _activation("Mish", "mish")
Tanh = _activation("Tanh", "tanh")
Sigmoid = _activation("Sigmoid", "sigmoid")
Softplus = _activation("Softplus", "softplus", (("beta", 1.0), ("threshold", 20.0)))
Softsign = _activation("Softsign", "softsign")
Hardtanh = _activation("Hardtanh", "hardtanh", (("min_val", -1.0), ("max_val", 1.0)))
Hardsigmoid = _activation("Hardsigmoid", "hardsigmoid")
Softmax = _activation("Softmax", "softmax", (("dim", -1),), "softmax along dim")
LogSoftmax = _activation("LogSoftmax", "log_softmax", (("dim", -1),), "log-softmax along dim")


class PReLU(Module):
    """PReLU(num_parameters=1, init=0.25): max(x, 0) + weight * min(x, 0), one slope shared
    (or one per channel, dim 1)."""

    def __init__(self, num_parameters=1, init=0.25, *, dtype=np.float32):
        super().__init__()
        self.num_parameters = int(num_parameters)
        self.weight = Parameter(np.full(num_parameters, init, dtype))

    def forward(self, x):
        return F.prelu(x, self.weight)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"


# ---- blocks -----------------------------------------------------------------------------------------
class BasicBlock(Module):
    """ResNet basic block (He et al. 2015; torchvision names): conv1 (3x3, stride, no bias) →
    bn1 → relu → conv2 (3x3, no bias) → bn2, plus the shortcut, then relu.

    BasicBlock(inplanes, planes, stride=1, downsample=None, *, dtype, seed, rng). The shortcut
    is the identity when the shape is unchanged; otherwise (downsample=None) a projection
    `downsample = Sequential(Conv2d(inplanes, planes, 1, stride, bias=False), BatchNorm2d(planes))`.
    downsample=True forces the projection, False forces the identity, a Module is used as given."""
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, *, dtype=np.float32,
                 seed=None, rng=None):
        super().__init__()
        r = _make_rng(seed, rng)
        self.conv1 = Conv2d(inplanes, planes, 3, stride, 1, bias=False, dtype=dtype, rng=r)
        self.bn1 = BatchNorm2d(planes, dtype=dtype)
        self.relu = ReLU()
        self.conv2 = Conv2d(planes, planes, 3, 1, 1, bias=False, dtype=dtype, rng=r)
        self.bn2 = BatchNorm2d(planes, dtype=dtype)
        if downsample is None:
            downsample = stride != 1 or inplanes != planes
        if downsample is True:
            downsample = Sequential(Conv2d(inplanes, planes, 1, stride, bias=False, dtype=dtype,
                                           rng=r), BatchNorm2d(planes, dtype=dtype))
        if downsample is False:
            if stride != 1 or inplanes != planes:
                raise ValueError("an identity shortcut needs stride 1 and inplanes == planes")
            downsample = None
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


class Highway(Module):
    """Highway layer (Srivastava et al. 2015): y = T(x)⊙H(x) + (1 − T(x))⊙x with
    H = act(Linear(x)) (the submodule `transform`) and T = σ(Linear(x)) (`gate`, bias
    initialised to gate_bias, negative so that the layer starts close to the identity)."""

    def __init__(self, features, activation=None, gate_bias=-1.0, *, dtype=np.float32,
                 seed=None, rng=None):
        super().__init__()
        r = _make_rng(seed, rng)
        self.transform = Linear(features, features, dtype=dtype, rng=r)
        self.gate = Linear(features, features, dtype=dtype, rng=r)
        self.gate.bias = np.full(features, gate_bias, dtype)
        self.activation = activation if activation is not None else ReLU()

    def forward(self, x):
        t = F.sigmoid(self.gate(x))
        return t * self.activation(self.transform(x)) + (1 - t) * x
