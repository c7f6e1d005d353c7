"""The graph IR: immutable nodes, graphs with named inputs and outputs, and the one
node builder (`apply`) that runs an op's type rule and records the user's source line.

>>> from graphc.ir import apply, input_node
>>> from graphc.types import DType
>>> a = input_node("a", (2,), DType.float32)
>>> apply(Op.ADD, a, a).type.shape
(2,)
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

from graphc.errors import ShapeError
from graphc.ops import OPS, Const, Op
from graphc.types import DType, TensorType


@dataclass(frozen=True)
class SourceLoc:
    """Where a node came from: the user's file and line; `backward` marks nodes the
    autodiff pass derived from the forward node at that line."""
    file: str
    line: int
    function: str = ""
    backward: bool = False

    def __str__(self) -> str:
        return f"{os.path.basename(self.file)}:{self.line}" + (" (grad)" if self.backward else "")

    @property
    def full(self) -> str:
        return f"{self.file}:{self.line}" + (f" in {self.function}" if self.function else "")


class Attrs(Mapping):
    """An immutable, hashable mapping of an op's attributes."""
    __slots__ = ("_items", "_d")

    def __init__(self, d: Mapping[str, Any] | None = None):
        self._items = tuple(sorted((d or {}).items()))
        self._d = dict(self._items)

    def __getitem__(self, k):
        return self._d[k]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._items)

    def __hash__(self):
        return hash(self._items)

    def with_(self, **changes) -> "Attrs":
        """A copy with some attributes added or changed."""
        return Attrs({**self._d, **changes})

    def __eq__(self, other):
        return isinstance(other, Attrs) and self._items == other._items


@dataclass(frozen=True, eq=False)
class Node:
    """One value of the graph: `op(inputs, attrs) -> type`. Compared by identity;
    `key` gives structural identity for CSE. Behaviour lives in passes, not here."""
    op: Op
    inputs: tuple["Node", ...]
    attrs: Attrs
    type: TensorType
    loc: SourceLoc | None = field(default=None)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def key(self) -> tuple:
        return (self.op, tuple(id(i) for i in self.inputs), self.attrs)

    def replace(self, **changes) -> "Node":
        d = dict(op=self.op, inputs=self.inputs, attrs=self.attrs, type=self.type, loc=self.loc)
        d.update(changes)
        return Node(**d)

    def __repr__(self) -> str:
        return f"<Node {self.op.value}:{self.type}>"


# ---- source locations ------------------------------------------------------------------------
# Frames from these folders are graphc's own; the first frame outside them is the user's line.
_INTERNAL_DIRS: list[str] = [os.path.dirname(os.path.abspath(__file__))]
_loc_override: contextvars.ContextVar[SourceLoc | None] = contextvars.ContextVar("loc", default=None)


def register_internal_dir(path: str) -> None:
    """Frontends and backends call this so their frames are skipped when finding user lines."""
    d = os.path.dirname(os.path.abspath(path))
    if d not in _INTERNAL_DIRS:
        _INTERNAL_DIRS.append(d)


_USER_FILES: set[str] = set()


def register_user_file(path: str) -> None:
    """Model code shipped inside graphc (graphc/demo.py) calls this so its lines count as the
    user's, although its folder is internal."""
    _USER_FILES.add(os.path.abspath(path))


def user_loc() -> SourceLoc | None:
    override = _loc_override.get()
    if override is not None:
        return override
    f = sys._getframe(1)
    while f is not None:
        fn = f.f_code.co_filename
        if fn in _USER_FILES or (not any(fn.startswith(d + os.sep) for d in _INTERNAL_DIRS)
                                 and not fn.startswith("<frozen")):
            return SourceLoc(fn, f.f_lineno, f.f_code.co_name)
        f = f.f_back
    return None


@contextlib.contextmanager
def at_loc(loc: SourceLoc | None):
    """Nodes built inside this block carry `loc` (used by passes to keep provenance)."""
    tok = _loc_override.set(loc)
    try:
        yield
    finally:
        _loc_override.reset(tok)


# ---- building nodes ----------------------------------------------------------------------------
def apply(op: Op, *inputs: Node, **attrs) -> Node:
    """Build a node, inferring its type; a bad shape or dtype raises a ShapeError that names
    the op, the input shapes and the user's line."""
    d = OPS[op]
    if d.arity >= 0 and len(inputs) != d.arity:
        raise ShapeError(f"{op.value} takes {d.arity} inputs, got {len(inputs)}", stage="trace")
    try:
        t = d.infer(tuple(i.type for i in inputs), **attrs)
    except (ValueError, TypeError) as e:
        loc = user_loc()
        shapes = ", ".join(str(i.type) for i in inputs)
        raise ShapeError(f"{op.value}: {e}", stage="trace",
                         node=f"{op.value}({shapes}){_fmt_attrs(attrs)}",
                         loc=loc.full if loc else None) from None
    return Node(op, tuple(inputs), Attrs(attrs), t, user_loc())


def input_node(name: str, shape, dtype: DType, role: str = "input") -> Node:
    return apply(Op.INPUT, name=name, shape=tuple(int(s) for s in shape), dtype=dtype, role=role)


def const(value, dtype: DType | None = None) -> Node:
    return apply(Op.CONST, value=Const(value, dtype))


# ---- graphs ------------------------------------------------------------------------------------
def toposort(outputs: Iterable[Node]) -> list[Node]:
    """Nodes reachable from `outputs`, inputs before users, in a deterministic order
    (depth-first, inputs left to right). Iterative, so deep unrolled RNNs do not recurse."""
    order: list[Node] = []
    seen: set[int] = set()
    for root in outputs:
        if id(root) in seen:
            continue
        stack: list[tuple[Node, int]] = [(root, 0)]
        seen.add(id(root))
        while stack:
            node, i = stack.pop()
            if i < len(node.inputs):
                stack.append((node, i + 1))
                child = node.inputs[i]
                if id(child) not in seen:
                    seen.add(id(child))
                    stack.append((child, 0))
            else:
                order.append(node)
    return order


@dataclass(frozen=True, eq=False)
class Graph:
    """A function as a DAG: `inputs` are INPUT nodes (in call order), `outputs` any nodes.
    `print(graph)` shows the deterministic text form."""
    inputs: tuple[Node, ...]
    outputs: tuple[Node, ...]
    name: str = "f"
    output_names: tuple[str, ...] | None = None

    @property
    def nodes(self) -> list[Node]:
        # inputs first (even unused ones), then everything the outputs need
        order = toposort(self.outputs)
        seen = {id(n) for n in self.inputs}
        return list(self.inputs) + [n for n in order if id(n) not in seen]

    def with_outputs(self, outputs, output_names=None) -> "Graph":
        return Graph(self.inputs, tuple(outputs), self.name, output_names or self.output_names)

    def users(self) -> dict[int, list[Node]]:
        u: dict[int, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                u.setdefault(id(i), []).append(n)
        return u

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __str__(self) -> str:
        from graphc.printer import format_graph
        return format_graph(self)

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self)} nodes>"


def rebuild(graph: Graph, fn) -> Graph:
    """Walk the graph in order, calling `fn(node, new_inputs)`; it returns the replacement node
    (or the node itself, rebuilt with new inputs if they changed). Returns the new graph.
    This is the plain-function pass helper: nodes are never mutated."""
    new: dict[int, Node] = {}
    for n in graph.nodes:
        ins = tuple(new[id(i)] for i in n.inputs)
        new[id(n)] = fn(n, ins)
    return Graph(tuple(new[id(i)] for i in graph.inputs), tuple(new[id(o)] for o in graph.outputs),
                 graph.name, graph.output_names)


def _fmt_attrs(attrs: Mapping) -> str:
    from graphc.printer import format_attrs
    s = format_attrs(attrs)
    return f" {s}" if s else ""
