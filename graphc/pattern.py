"""Declarative rewrite rules and the one driver that applies them.

A rule is `Rule(pattern, fn, "identity it implements")`. A pattern matches a node by op and,
recursively, by its inputs; named sub-patterns bind the matched nodes, which `fn` receives
as keyword arguments (plus `node`, the matched root). `fn` returns the replacement node, or
None to decline. Commutative ops are matched in both input orders.

>>> from graphc.ops import Op
>>> x_times_one = Rule(P(Op.MUL, P.var("x"), P.const(1)), lambda x, node: x, "x*1 -> x")

The driver keeps results equal: a replacement must have the node's dtype; if its shape is
smaller but broadcasts to the node's shape, the driver expands it, otherwise it declines.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from graphc.ir import Graph, Node, apply, at_loc, rebuild
from graphc.ops import COMMUTATIVE, Op
from graphc.types import broadcast_shapes


class P:
    """A pattern: `P(op_or_ops, *input_patterns, name=...)`, `P.var(name)` (anything),
    `P.const(value)` (a constant whose every element equals value)."""

    def __init__(self, op=None, *src: "P", name: str | None = None, pred=None):
        self.ops = None if op is None else (frozenset(op) if isinstance(op, (set, frozenset, tuple))
                                            else frozenset({op}))
        self.src, self.name, self.pred = src, name, pred

    @staticmethod
    def var(name: str, pred=None) -> "P":
        return P(None, name=name, pred=pred)

    @staticmethod
    def const(value=None, name: str | None = None) -> "P":
        def pred(n: Node) -> bool:
            if value is None:
                return True
            arr = n.attrs["value"].array
            return arr.size > 0 and bool(np.all(arr == value))
        return P(Op.CONST, name=name, pred=pred)

    def match(self, n: Node, binds: dict) -> bool:
        if self.ops is not None and n.op not in self.ops:
            return False
        if self.pred is not None and not self.pred(n):
            return False
        if self.name is not None:
            if self.name in binds and binds[self.name] is not n:
                return False
            binds[self.name] = n
        if not self.src:
            return True
        if len(self.src) != len(n.inputs):
            return False
        orders = [n.inputs]
        if n.op in COMMUTATIVE and len(n.inputs) == 2:
            orders.append(n.inputs[::-1])
        for ins in orders:
            trial = dict(binds)
            if all(p.match(i, trial) for p, i in zip(self.src, ins)):
                binds.clear()
                binds.update(trial)
                return True
        return False


@dataclass
class Rule:
    pattern: P
    fn: Callable[..., Node | None]
    doc: str
    where: str = ""  # file:line of the rule, so pictures and logs can say which rule fired

    def __post_init__(self):
        if not self.where:
            f = inspect.stack()[2]
            self.where = f"{os.path.basename(f.filename)}:{f.lineno}"


def _fit(new: Node, old: Node) -> Node | None:
    """Make a replacement type-equal to the node it replaces, or refuse it."""
    if new.dtype is not old.dtype:
        return None
    if new.shape == old.shape:
        return new
    try:
        if broadcast_shapes(new.shape, old.shape) != old.shape:
            return None
    except ValueError:
        return None
    with at_loc(old.loc):
        return apply(Op.EXPAND, new, shape=old.shape)


def rewrite(graph: Graph, rules: list[Rule], log: list | None = None, max_iter: int = 8) -> Graph:
    """Apply `rules` bottom-up until nothing changes (at most `max_iter` sweeps). `log`, if
    given, receives (rule doc, rule location, node) for every rewrite made."""
    by_op: dict[Op | None, list[Rule]] = {}
    for r in rules:
        for op in (r.pattern.ops or {None}):
            by_op.setdefault(op, []).append(r)

    def fn(n: Node, ins):
        n = n if ins == n.inputs else n.replace(inputs=ins)
        for _ in range(16):  # rewrite the same node again until no rule fires
            for r in by_op.get(n.op, []) + by_op.get(None, []):
                binds: dict = {}
                if not r.pattern.match(n, binds):
                    continue
                with at_loc(n.loc):
                    out = r.fn(node=n, **binds)
                    out = _fit(out, n) if out is not None else None
                if out is not None and out is not n:
                    if log is not None:
                        log.append((r.doc, r.where, n))
                    n = out
                    break
            else:
                return n
        return n

    for _ in range(max_iter):
        new = rebuild(graph, fn)
        if [id(x) for x in new.nodes] == [id(x) for x in graph.nodes]:
            return new
        graph = new
    return graph
