"""`functional_call`: a Module's forward pass with given (possibly traced) parameters and
buffers, without mutating it (torch.func.functional_call; torch.nn.utils.stateless before).
Also the per-call state: the random key that Dropout and the recurrent layers draw from."""
from __future__ import annotations

import difflib
import numbers
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

from graphc.errors import GraphcError, ShapeError
from graphc.frontends.tensor import Tensor
from graphc.frontends.nn._util import _has_tensor

if TYPE_CHECKING:
    from graphc.frontends.nn.module import Module

__all__ = ["functional_call"]


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
