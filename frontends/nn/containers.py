"""Containers: `Sequential`, `ModuleList` and `ModuleDict` (as torch.nn). Assigning a list or
dict of modules to a Module attribute wraps it in a ModuleList / ModuleDict."""
from __future__ import annotations

from collections import OrderedDict

from graphc.frontends.nn.module import Module

__all__ = ["Sequential", "ModuleList", "ModuleDict"]


class _ModuleSequence(Module):
    """Submodules in order, as a sequence: len, iteration over the modules, indexing, and
    slicing into a new container of the subclass's kind (`_slice`)."""

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self._slice(list(self._modules.items())[i])
        return list(self._modules.values())[i]

    def _slice(self, items) -> Module:
        raise NotImplementedError


class Sequential(_ModuleSequence):
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

    def _slice(self, items) -> "Sequential":
        return Sequential(OrderedDict(items))

    def append(self, m: Module) -> "Sequential":
        self.add_module(str(len(self)), m)
        return self


class ModuleList(_ModuleSequence):
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

    def _slice(self, items) -> "ModuleList":
        return ModuleList([m for _, m in items])

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
