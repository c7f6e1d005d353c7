"""`Parameter` and `Module`, the base class of layers and models (torch.nn.Module), with the
generator helpers layers initialise from. The overview (parameters, buffers, submodules, pure
calls, initialisation) is the docstring of graphc.frontends.nn.modules; the pure call itself
is in graphc.frontends.nn.stateless."""
from __future__ import annotations

import numbers
from collections import OrderedDict
from typing import Callable, Iterator, NamedTuple

import numpy as np

from graphc.errors import ShapeError
from graphc.frontends.tensor import Tensor
from graphc.frontends.nn import init
from graphc.frontends.nn._util import _has_tensor
from graphc.frontends.nn.stateless import _current, _functional_call, functional_call

__all__ = ["Parameter", "Module"]


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
                and all(isinstance(v, Module) for v in value):
            from graphc.frontends.nn.containers import ModuleList  # it imports this module
            value = ModuleList(value)
        elif isinstance(value, dict) and value and all(isinstance(v, Module) for v in value.values()):
            from graphc.frontends.nn.containers import ModuleDict
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
