"""Simplification: constant folding, algebraic identities, CSE; dead code drops out for free
(a Graph holds only what its outputs reach).

Every rule states the identity it implements. None changes a result except where its
comment says so: IEEE arithmetic makes `x*0 -> 0` wrong for inf/nan, so that rule fires
only when `x` is provably finite; `exp(log x) -> x` only when x is provably >= 0.
One IEEE detail is ignored, as most deep-learning compilers do: the sign of zero.
`x + 0 -> x`, `0 - x -> -x` and `x * 0 -> 0` can turn +0 into -0 or back (equal under ==;
visible only through 1/x = +-inf).
"""
from __future__ import annotations

import numpy as np

from graphc.ir import Graph, Node, apply, const, rebuild
from graphc.ops import ELEMENTWISE, OPS, Op
from graphc.passes.merge import merge
from graphc.pattern import P, Rule, rewrite
from graphc.types import broadcast_shapes

A = apply
FOLD_MAX_ELEMENTS = 64  # folding bigger results would bloat the program with constants

# bounded outputs, but only for a finite input: sin(inf), cos(inf) and f(nan) are nan
_FINITE_IF_INPUT_FINITE = {Op.SIN, Op.COS, Op.TANH, Op.SIGN}
_VIEW_OPS = {Op.EXPAND, Op.RESHAPE, Op.PERMUTE, Op.SLICE}


def is_finite(n: Node) -> bool:
    """Conservative: True only when every element is certainly finite."""
    if n.op is Op.CONST:
        return bool(np.all(np.isfinite(n.attrs["value"].array)))
    if n.op is Op.RAND or (n.op is Op.CAST and not n.inputs[0].dtype.is_float):
        return True
    if n.op in _FINITE_IF_INPUT_FINITE:
        return is_finite(n.inputs[0])
    if n.op in _VIEW_OPS:
        return is_finite(n.inputs[0])
    if n.op is Op.WHERE:
        return is_finite(n.inputs[1]) and is_finite(n.inputs[2])
    return False


def is_nonneg(n: Node) -> bool:
    """Conservative: True only when every element is certainly >= 0 (or nan-free and >= 0)."""
    if n.op is Op.CONST:
        return bool(np.all(n.attrs["value"].array >= 0))
    if n.op in (Op.EXP, Op.SQRT, Op.RAND):
        return True
    if n.op in _VIEW_OPS:
        return is_nonneg(n.inputs[0])
    return False


def _fold(node: Node, **_):
    if (node.op in (Op.INPUT, Op.CONST, Op.GRAD) or not node.inputs
            or not all(i.op is Op.CONST for i in node.inputs) or node.type.size > FOLD_MAX_ELEMENTS):
        return None
    with np.errstate(all="ignore"):
        value = OPS[node.op].reference(*(i.attrs["value"].array for i in node.inputs), **node.attrs)
    return const(np.asarray(value, node.dtype.np), node.dtype)


def _zeros_like(node: Node, **_):
    return const(np.zeros((), node.dtype.np), node.dtype)  # the driver expands it to the shape


def _drop_expand_operand(node: Node, **_):
    # op(expand(a), b) -> op(a, b) when implicit broadcasting still gives the same shape
    for i, x in enumerate(node.inputs):
        if x.op is Op.EXPAND:
            ins = node.inputs[:i] + (x.inputs[0],) + node.inputs[i + 1:]
            try:
                if broadcast_shapes(*(y.shape for y in ins)) == node.shape:
                    return A(node.op, *ins, **node.attrs)
            except ValueError:
                pass
    return None


def _compose_permute(node, x, **_):
    # x is bound to the inner permute's source; the inner permute is node's input
    inner, outer = node.inputs[0].attrs["perm"], node.attrs["perm"]
    perm = tuple(inner[p] for p in outer)
    src = x
    return src if perm == tuple(range(len(perm))) else A(Op.PERMUTE, src, perm=perm)


def _identity_permute(node, x, **_):
    return x if node.attrs["perm"] == tuple(range(len(x.shape))) else None


def _sum_of_size1(node, x, **_):
    # summing axes of size 1 moves no data: it is a reshape
    if all(x.shape[a] == 1 for a in node.attrs["axes"]):
        return A(Op.RESHAPE, x, shape=node.shape) if node.shape != x.shape else x
    return None


def _cast_roundtrip(node, x, **_):
    # cast(cast(x, wider), x.dtype) -> x: widening float32 -> float64 is exact
    inner = node.inputs[0]
    if x.dtype is node.dtype and inner.dtype.is_float and x.dtype.is_float \
            and inner.dtype.itemsize >= x.dtype.itemsize:
        return x
    return None


BINARY_ELEMENTWISE = {Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.POW, Op.MAXIMUM, Op.MINIMUM,
                      Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE, Op.WHERE}
x, y = P.var("x"), P.var("y")

RULES = [
    Rule(P(ELEMENTWISE | {Op.SUM, Op.MAX, Op.RESHAPE, Op.PERMUTE, Op.SLICE, Op.PAD, Op.CONCAT,
                          Op.MATMUL}), _fold, "op(consts) -> const  (small results only)"),
    Rule(P(Op.ADD, x, P.const(0)), lambda x, node: x, "x + 0 -> x"),
    Rule(P(Op.SUB, x, P.const(0)), lambda x, node: x, "x - 0 -> x"),
    Rule(P(Op.SUB, P.const(0), x), lambda x, node: A(Op.NEG, x), "0 - x -> -x"),
    Rule(P(Op.MUL, x, P.const(1)), lambda x, node: x, "x * 1 -> x"),
    Rule(P(Op.MUL, x, P.const(-1)), lambda x, node: A(Op.NEG, x), "x * -1 -> -x"),
    Rule(P(Op.MUL, P.var("x", is_finite), P.const(0)), _zeros_like, "x * 0 -> 0  (x finite)"),
    Rule(P(Op.DIV, x, P.const(1)), lambda x, node: x, "x / 1 -> x"),
    Rule(P(Op.POW, x, P.const(1)), lambda x, node: x, "x ** 1 -> x"),
    Rule(P(Op.NEG, P(Op.NEG, x)), lambda x, node: x, "--x -> x"),
    Rule(P(Op.MUL, P(Op.NEG, x), P(Op.NEG, y)), lambda x, y, node: A(Op.MUL, x, y), "-x * -y -> x*y"),
    Rule(P(Op.ADD, x, P(Op.NEG, y)), lambda x, y, node: A(Op.SUB, x, y), "x + -y -> x - y"),
    Rule(P(Op.SUB, x, P(Op.NEG, y)), lambda x, y, node: A(Op.ADD, x, y), "x - -y -> x + y"),
    Rule(P(Op.LOG, P(Op.EXP, x)), lambda x, node: x, "log(exp x) -> x  (also avoids overflow)"),
    Rule(P(Op.EXP, P(Op.LOG, P.var("x", is_nonneg))), lambda x, node: x, "exp(log x) -> x  (x >= 0)"),
    Rule(P(Op.WHERE, P.var("c"), x, x), lambda c, x, node: x, "where(c, x, x) -> x"),
    Rule(P(Op.RESHAPE, P(Op.RESHAPE, x)), lambda x, node: A(Op.RESHAPE, x, shape=node.shape),
         "reshape(reshape x) -> reshape x"),
    Rule(P(Op.RESHAPE, x), lambda x, node: x if x.shape == node.shape else None,
         "reshape x to its own shape -> x"),
    Rule(P(Op.PERMUTE, P(Op.PERMUTE, x)), _compose_permute, "permute(permute x) -> permute x"),
    Rule(P(Op.PERMUTE, x), _identity_permute, "identity permute -> x"),
    Rule(P(Op.EXPAND, P(Op.EXPAND, x)), lambda x, node: A(Op.EXPAND, x, shape=node.shape),
         "expand(expand x) -> expand x"),
    Rule(P(Op.EXPAND, x), lambda x, node: x if x.shape == node.shape else None,
         "expand x to its own shape -> x"),
    Rule(P(BINARY_ELEMENTWISE), _drop_expand_operand, "op(expand a, b) -> op(a, b)  (broadcasting)"),
    Rule(P(Op.CAST, x), lambda x, node: x if x.dtype is node.dtype else None, "cast to own dtype -> x"),
    Rule(P(Op.CAST, P(Op.CAST, x)), _cast_roundtrip, "cast(cast(x, wider), dtype x) -> x"),
    Rule(P(Op.SUM, x), _sum_of_size1, "sum over size-1 axes -> reshape"),
    # simplification runs after the backward stage, where stop_gradient has done its work
    Rule(P(Op.STOP_GRADIENT, x), lambda x, node: x, "stop_gradient(x) -> x  (after autodiff)"),
]


def cse(graph: Graph) -> Graph:
    """Common-subexpression elimination: nodes with equal (op, inputs, attrs) become one."""
    table: dict[tuple, Node] = {}

    def fn(n: Node, ins):
        n = n if ins == n.inputs else n.replace(inputs=ins)
        return n if n.op is Op.INPUT else table.setdefault(n.key, n)
    return rebuild(graph, fn)


def simplify(graph: Graph, log: list | None = None, use_cse: bool = True,
             use_rules: bool = True, use_merge: bool = True) -> Graph:
    """The `simplified` stage: rules, CSE and the merging of sums of contractions
    (graphc/passes/merge.py), alternated until none changes the graph. Merging runs after
    CSE, whose shared nodes it must see to know which terms have no other use."""
    for _ in range(4):
        before = [id(n) for n in graph.nodes]
        if use_rules:
            graph = rewrite(graph, RULES, log)
        if use_cse:
            graph = cse(graph)
        if use_merge:
            graph = merge(graph, log)
            if use_cse:
                graph = cse(graph)
        if [id(n) for n in graph.nodes] == before:
            break
    return graph
