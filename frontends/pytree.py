"""Nested tuples, lists and dicts of arrays ("pytrees", as JAX calls them), flattened to
a list of leaves and a hashable structure. Python ints, bools, strings and None are
static: they are part of the structure, not leaves, so loops over them unroll."""
from __future__ import annotations

import itertools
from typing import Any, Callable

import numpy as np

STATIC = (int, bool, str, type(None))


_LEAF_TYPES: tuple = ()
_LEAF = ("*",)  # a leaf's place in a treedef


def is_leaf(x) -> bool:
    global _LEAF_TYPES
    if not _LEAF_TYPES:  # resolved once: the tracer module imports this one
        from graphc.device import DeviceArray
        from graphc.frontends.tensor import Tensor
        _LEAF_TYPES = (np.ndarray, np.generic, float, Tensor, DeviceArray)
    return isinstance(x, _LEAF_TYPES) and not isinstance(x, bool)


def flatten(tree, path: str = "", root: str = "out",
            with_paths: bool = True) -> tuple[list, Any, list[str]]:
    """-> (leaves, treedef, leaf paths like 'params.w1'); a bare leaf's path is `root`.
    The treedef is hashable and exact (a static value is recorded with its type, so 1 and
    True differ); with_paths=False skips building the path strings (gc.compile's calls that its
    signature matcher does not take: a first call, a float or a device array; and `lower`)."""
    leaves: list = []
    paths: list[str] = []
    return leaves, _flatten(tree, path, (leaves, paths, root, with_paths)), paths


# (flatten and unflatten recurse through module-level functions, not nested ones: a nested
# function that calls itself is a reference cycle, which kept the leaves, a call's inputs or
# outputs, alive until Python's cycle collector ran)
def _flatten(x, p: str, acc: tuple) -> Any:
    leaves, paths, root, with_paths = acc
    t = type(x)  # exact types first, array children without a call (W5 b1's arguments:
    if t is np.ndarray or t is float:  # 7.6 -> 3.3 us a flatten)
        leaves.append(x)
        paths.append(p or root)
        return _LEAF
    if not with_paths and (t is dict or t is tuple or t is list):
        kids = []
        for v in (x.values() if t is dict else x):
            if type(v) is np.ndarray:
                leaves.append(v)
                paths.append(root)
                kids.append(_LEAF)
            else:
                kids.append(_flatten(v, "", acc))
        return ("dict", tuple(x), tuple(kids)) if t is dict else (t.__name__, tuple(kids))

    def sub(k):
        return (f"{p}.{k}" if p else str(k)) if with_paths else ""
    if isinstance(x, (tuple, list)) and not hasattr(x, "_fields"):
        return (type(x).__name__, tuple(_flatten(v, sub(i), acc) for i, v in enumerate(x)))
    if isinstance(x, tuple):  # namedtuple
        return ("namedtuple", type(x),
                tuple(_flatten(v, sub(k), acc) for k, v in zip(x._fields, x)))
    if isinstance(x, dict):
        keys = tuple(x.keys())
        return ("dict", keys, tuple(_flatten(x[k], sub(k), acc) for k in keys))
    if is_leaf(x):
        leaves.append(x)
        paths.append(p or root)
        return _LEAF
    if isinstance(x, STATIC):
        return ("static", x, type(x))
    from graphc.errors import SignatureError
    raise SignatureError(f"graphc cannot trace an argument of type {type(x).__name__} at "
                         f"{p or 'top'}", stage="trace",
                         hint="use numpy arrays, floats, or tuples/lists/dicts of them")


def unflatten(treedef, leaves) -> Any:
    if treedef == _LEAF:  # a bare leaf (a function with one output): no walk
        return leaves[0]
    return _unflatten(treedef, iter(leaves))


def _unflatten(d, it) -> Any:
    tag = d[0]
    if tag == "*":
        return next(it)
    if tag == "static":
        return d[1]
    if tag == "dict":
        return {k: _unflatten(c, it) for k, c in zip(d[1], d[2])}
    if tag == "namedtuple":
        return d[1](*(_unflatten(c, it) for c in d[2]))
    children = [_unflatten(c, it) for c in d[1]]
    return tuple(children) if tag == "tuple" else children


def matcher(treedef, leaves) -> Callable | None:
    """A function `args -> their leaves, or None`, specialised to one call signature: it
    returns the leaves (as `flatten` would) when `args` has exactly the structure `treedef`
    (same containers, dict keys in the same order, equal static values) and every leaf is a
    C-contiguous numpy array with the shape and dtype of the same leaf in `leaves`; None
    otherwise. None instead of a function when some leaf of `leaves` is not a numpy array
    or is empty.

    It is Python source written for that one structure and exec'd, as torch.fx writes its
    GraphModule's forward: checking W5 b1's 7 arrays that way takes ~2 us, where flattening,
    building the signature, looking it up and checking each array took ~12 (the per-call
    cost of `gc.compile` that a batch-1 model pays on every call). Its source is in
    `.source`.

    >>> import numpy as np
    >>> args = ({"w": np.ones((2, 3), np.float32)}, np.zeros(3, np.float32))
    >>> leaves, tree, _ = flatten(args, with_paths=False)
    >>> m = matcher(tree, leaves)
    >>> len(m(args)), m(({"w": np.ones((2, 3))}, args[1]))   # float64: not this signature
    (2, None)
    """
    env: dict[str, Any] = {"ndarray": np.ndarray}
    lines: list[str] = []
    found: list[str] = []
    count = itertools.count()

    def const(value) -> str:
        name = f"c{len(env)}"
        env[name] = value
        return name

    def walk(d, expr: str):
        tag = d[0]
        v = f"v{next(count)}"
        lines.append(f"{v} = {expr}")
        if tag == "*":
            a = leaves[len(found)]
            if type(a) is not np.ndarray:
                raise TypeError
            if a.size == 0:  # (any strides are contiguous: left to the checked path)
                raise TypeError
            # C-contiguous: the strides numpy gives a new array of that shape and dtype
            strides = np.empty(a.shape, a.dtype).strides
            lines.append(f"if type({v}) is not ndarray or {v}.shape != {const(a.shape)} or "
                         f"{v}.dtype is not {const(a.dtype)} or "
                         f"{v}.strides != {const(strides)}: return None")
            found.append(v)
        elif tag == "static":
            lines.append(f"if type({v}) is not {const(d[2])} or {v} != {const(d[1])}: "
                         "return None")
        elif tag in ("tuple", "list", "dict", "namedtuple"):
            kids = d[2] if tag in ("dict", "namedtuple") else d[1]
            kind = tag if tag != "namedtuple" else const(d[1])  # (the namedtuple's class)
            lines.append(f"if type({v}) is not {kind} or len({v}) != "
                         f"{len(kids)}: return None")
            if tag == "dict":
                lines.append(f"if tuple({v}) != {const(d[1])}: return None")
                lines.append(f"{v} = tuple({v}.values())")
            for k, kid in enumerate(kids):
                walk(kid, f"{v}[{k}]")
        else:
            raise TypeError

    try:
        walk(treedef, "args")
    except TypeError:
        return None
    body = "\n    ".join(lines + [f"return [{', '.join(found)}]"])
    source = f"def match(args):\n    {body}\n"
    exec(compile(source, "<graphc signature matcher>", "exec"), env)  # noqa: S102
    fn = env["match"]
    fn.source = source
    return fn


def tree_map(fn, tree):
    leaves, d, _ = flatten(tree)
    return unflatten(d, [fn(x) for x in leaves])
