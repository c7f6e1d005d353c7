"""Simplification: fold small constant subgraphs, merge common subexpressions, drop dead code.

Dead-code elimination is free: a Graph holds only what its outputs reach. CSE matters
most after autodiff, whose rules rebuild values the forward graph already has (e.g. the
same `transpose(W)` or `1 - tanh(x)^2` pieces): equal (op, inputs, attrs) become one node.
"""
from __future__ import annotations

import numpy as np

from graphc.ir import Graph, Node, const, at_loc, rebuild
from graphc.ops import OPS, Op

FOLD_MAX_ELEMENTS = 64  # folding bigger results would bloat the program with constants


def fold_constants(graph: Graph) -> Graph:
    def fn(n: Node, ins):
        n = n if ins == n.inputs else n.replace(inputs=ins)
        if (n.op in (Op.INPUT, Op.CONST, Op.GRAD) or not ins
                or not all(i.op is Op.CONST for i in ins) or n.type.size > FOLD_MAX_ELEMENTS):
            return n
        with np.errstate(all="ignore"):
            value = OPS[n.op].reference(*(i.attrs["value"].array for i in ins), **n.attrs)
        with at_loc(n.loc):
            return const(np.asarray(value, n.dtype.np), n.dtype)
    return rebuild(graph, fn)


def cse(graph: Graph) -> Graph:
    table: dict[tuple, Node] = {}

    def fn(n: Node, ins):
        n = n if ins == n.inputs else n.replace(inputs=ins)
        if n.op is Op.INPUT:
            return n
        return table.setdefault(n.key, n)
    return rebuild(graph, fn)


def simplify(graph: Graph) -> Graph:
    return cse(fold_constants(graph))
