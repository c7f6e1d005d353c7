"""Reverse-mode autodiff as a graph transform.

`vjp(y, wrt)` walks the graph from `y` backwards and builds, as ordinary nodes of the same
IR, the cotangent of every node that depends on a `wrt` node. Three things happen in the
driver, not in the rules: cotangents over fan-out are summed; a cotangent whose shape is
the broadcast of an input's shape is summed back to that shape (`sum_to`); and nodes get
the source line of the forward node they differentiate, marked `(grad)`.

The backward stage (`expand_grads`) replaces every `grad y wrt x` marker the tracer
recorded with the cotangent of x, so the backward graph prints, verifies, optimises,
compiles and draws like the forward one, and can itself be differentiated.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from graphc.errors import NoRuleError
from graphc.ir import Graph, Node, apply, at_loc, const, rebuild, toposort
from graphc.ops import LEAF, Op
from graphc.types import DType

A = apply


def _s(v, like: Node) -> Node:
    """A scalar constant of `like`'s dtype (broadcasts in binary ops)."""
    return const(v, like.dtype)


def zeros(shape, dtype: DType) -> Node:
    return A(Op.EXPAND, const(0, dtype), shape=tuple(shape))


def sum_to(g: Node, shape: tuple[int, ...]) -> Node:
    """Sum a broadcast cotangent back to `shape` (the one place unbroadcasting happens)."""
    if g.shape == shape:
        return g
    lead = len(g.shape) - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape)
                                      if s == 1 and g.shape[lead + i] != 1)
    r = A(Op.SUM, g, axes=axes, keepdims=True) if axes else g
    return A(Op.RESHAPE, r, shape=shape) if r.shape != shape else r


def _keepdims(g: Node, x: Node, axes, keepdims) -> Node:
    """A reduction's cotangent, reshaped so that it broadcasts against the reduced input."""
    if keepdims:
        return g
    return A(Op.RESHAPE, g, shape=tuple(1 if i in axes else s for i, s in enumerate(x.shape)))


def _mT(x: Node) -> Node:
    perm = tuple(range(len(x.shape) - 2)) + (len(x.shape) - 1, len(x.shape) - 2)
    return A(Op.PERMUTE, x, perm=perm)


def _max_vjp(g, out, x, y):
    # ties split the cotangent evenly (as JAX and PyTorch do for maximum/minimum)
    eq = A(Op.EQ, x, y)
    half = A(Op.MUL, g, _s(0.5, g))
    zero = _s(0, g)
    gx = A(Op.WHERE, A(Op.EQ, out, x), A(Op.WHERE, eq, half, g), zero)
    gy = A(Op.WHERE, A(Op.EQ, out, y), A(Op.WHERE, eq, half, g), zero)
    return gx, gy


def _reduce_max_vjp(g, out, x, axes, keepdims):
    # every maximal element of a window shares the cotangent equally
    o = _keepdims(out, x, axes, keepdims)
    mask = A(Op.EQ, x, o)
    count = A(Op.SUM, A(Op.CAST, mask, dtype=x.dtype), axes=axes, keepdims=True)
    share = A(Op.DIV, _keepdims(g, x, axes, keepdims), count)
    return (A(Op.WHERE, mask, share, _s(0, x)),)


def _slice_vjp(g, out, x, starts, stops, steps):
    # scatter g back into zeros: interleave zeros for strides, then pad to the input's size
    for a, (lo, st) in enumerate(zip(starts, steps)):
        n = g.shape[a]
        if st > 1 and n > 0:
            s = g.shape
            g = A(Op.RESHAPE, g, shape=s[:a] + (n, 1) + s[a + 1:])
            g = A(Op.PAD, g, pads=tuple((0, st - 1) if i == a + 1 else (0, 0)
                                        for i in range(len(s) + 1)), value=0.0)
            g = A(Op.RESHAPE, g, shape=s[:a] + (n * st,) + s[a + 1:])
            size = (n - 1) * st + 1
            g = A(Op.SLICE, g, starts=(0,) * len(s), stops=g.shape[:a] + (size,) + g.shape[a + 1:],
                  steps=(1,) * len(s))
    pads = tuple((lo, x.shape[a] - lo - g.shape[a]) for a, lo in enumerate(starts))
    return (A(Op.PAD, g, pads=pads, value=0.0),)


def _concat_vjp(g, out, *xs, axis):
    grads, off = [], 0
    for x in xs:
        starts = tuple(off if i == axis else 0 for i in range(len(x.shape)))
        stops = tuple(off + x.shape[i] if i == axis else s for i, s in enumerate(g.shape))
        grads.append(A(Op.SLICE, g, starts=starts, stops=stops, steps=(1,) * len(g.shape)))
        off += x.shape[axis]
    return tuple(grads)


def _pow_vjp(g, out, x, y):
    gx = A(Op.MUL, g, A(Op.MUL, y, A(Op.POW, x, A(Op.SUB, y, _s(1, y)))))
    # d/dy x**y = x**y log x; taken as 0 where x <= 0 (JAX's convention at x = 0)
    safe_log = A(Op.LOG, A(Op.WHERE, A(Op.GT, x, _s(0, x)), x, _s(1, x)))
    gy = A(Op.MUL, g, A(Op.MUL, out, safe_log))
    return gx, gy


# One rule per op: rule(g, out, *inputs, **attrs) -> one cotangent (or None) per input.
VJP = {
    Op.NEG: lambda g, o, x: (A(Op.NEG, g),),                                  # d(-x) = -1
    Op.EXP: lambda g, o, x: (A(Op.MUL, g, o),),                               # d e^x = e^x
    Op.LOG: lambda g, o, x: (A(Op.DIV, g, x),),                               # d log x = 1/x
    Op.SQRT: lambda g, o, x: (A(Op.DIV, g, A(Op.MUL, o, _s(2, o))),),         # 1/(2 sqrt x)
    Op.SIN: lambda g, o, x: (A(Op.MUL, g, A(Op.COS, x)),),                    # cos x
    Op.COS: lambda g, o, x: (A(Op.NEG, A(Op.MUL, g, A(Op.SIN, x))),),         # -sin x
    Op.TANH: lambda g, o, x: (A(Op.MUL, g, A(Op.SUB, _s(1, o), A(Op.MUL, o, o))),),  # 1 - tanh^2
    Op.ABS: lambda g, o, x: (A(Op.MUL, g, A(Op.SIGN, x)),),                   # sign x (0 at 0)
    Op.SIGN: lambda g, o, x: (None,),                                         # flat almost everywhere
    Op.RECIP: lambda g, o, x: (A(Op.NEG, A(Op.MUL, g, A(Op.MUL, o, o))),),    # -1/x^2
    Op.CAST: lambda g, o, x, dtype: (A(Op.CAST, g, dtype=x.dtype) if x.dtype.is_float else None,),
    Op.STOP_GRADIENT: lambda g, o, x: (None,),                                # by definition
    Op.ADD: lambda g, o, x, y: (g, g),
    Op.SUB: lambda g, o, x, y: (g, A(Op.NEG, g)),
    Op.MUL: lambda g, o, x, y: (A(Op.MUL, g, y), A(Op.MUL, g, x)),
    Op.DIV: lambda g, o, x, y: (A(Op.DIV, g, y), A(Op.NEG, A(Op.DIV, A(Op.MUL, g, o), y))),
    Op.POW: _pow_vjp,
    Op.MAXIMUM: _max_vjp,
    Op.MINIMUM: _max_vjp,  # same rule: the cotangent goes to whichever input equals the output
    **{op: (lambda g, o, x, y: (None, None)) for op in (Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE)},
    Op.WHERE: lambda g, o, c, x, y: (None, A(Op.WHERE, c, g, _s(0, g)), A(Op.WHERE, c, _s(0, g), g)),
    Op.SUM: lambda g, o, x, axes, keepdims: (A(Op.EXPAND, _keepdims(g, x, axes, keepdims),
                                               shape=x.shape),),
    Op.MAX: _reduce_max_vjp,
    Op.RESHAPE: lambda g, o, x, shape: (A(Op.RESHAPE, g, shape=x.shape),),
    Op.PERMUTE: lambda g, o, x, perm: (A(Op.PERMUTE, g, perm=tuple(int(i) for i in np.argsort(perm))),),
    Op.EXPAND: lambda g, o, x, shape: (g,),  # sum_to in the driver does the reduction
    Op.SLICE: _slice_vjp,
    Op.PAD: lambda g, o, x, pads, value: (A(Op.SLICE, g, starts=tuple(lo for lo, _ in pads),
                                            stops=tuple(lo + s for (lo, _), s in zip(pads, x.shape)),
                                            steps=(1,) * len(pads)),),
    Op.CONCAT: _concat_vjp,
    Op.MATMUL: lambda g, o, x, y: (A(Op.MATMUL, g, _mT(y)), A(Op.MATMUL, _mT(x), g)),
    Op.RAND: lambda g, o, key, shape, dtype: (None,),  # the key is an integer: no gradient
}
# INPUT and CONST are leaves; GRAD markers are expanded before any sweep reaches them;
# fused kernels exist only after the backward stage.
NOT_DIFFERENTIATED = LEAF | {Op.GRAD, Op.FUSED}


def vjp(y: Node, wrt: list[Node], seed: Node | None = None) -> dict[int, Node | None]:
    """Cotangents of `wrt` nodes for output `y` (seed: cotangent of y, default 1 for a scalar).
    Returns {id(w): node or None (None: y does not depend on w)}."""
    order = toposort([y])
    wrt_ids = {id(w) for w in wrt}
    needs: set[int] = set()  # nodes on a path from some wrt node to y
    for n in order:
        if id(n) in wrt_ids or any(id(i) in needs for i in n.inputs):
            needs.add(id(n))
    ct: dict[int, Node] = {}
    if id(y) in needs:
        with at_loc(_bwd_loc(y)):
            ct[id(y)] = seed if seed is not None else (
                _s(1, y) if y.shape == () else A(Op.EXPAND, _s(1, y), shape=y.shape))
    result: dict[int, Node | None] = {id(w): None for w in wrt}
    for n in reversed(order):
        g = ct.pop(id(n), None)
        if g is None:
            continue
        if id(n) in wrt_ids:
            result[id(n)] = g
        if n.op in LEAF or not n.dtype.is_float:
            continue
        rule = VJP.get(n.op)
        if rule is None:
            raise NoRuleError(f"no VJP rule for {n.op.value}", stage="backward",
                              loc=n.loc.full if n.loc else None,
                              hint="add it to VJP in graphc/passes/autodiff.py")
        with at_loc(_bwd_loc(n)):
            grads = rule(g, n, *n.inputs, **n.attrs)
            for inp, gi in zip(n.inputs, grads):
                if gi is None or id(inp) not in needs or not inp.dtype.is_float:
                    continue
                gi = sum_to(gi, inp.shape)
                if gi.dtype is not inp.dtype:
                    gi = A(Op.CAST, gi, dtype=inp.dtype)
                ct[id(inp)] = A(Op.ADD, ct[id(inp)], gi) if id(inp) in ct else gi
    return result


def expand_grads(graph: Graph) -> Graph:
    """The `backward` stage: replace each `grad y wrt x` node by the cotangent of x.
    All grads of one y are derived in one sweep, so value_and_grad over many
    parameters costs one backward pass."""
    groups: dict[int, list[Node]] = {}
    for n in graph.nodes:
        if n.op is Op.GRAD:
            groups.setdefault(id(n.inputs[0]), []).append(n.inputs[1])
    if not groups:
        return graph
    done: dict[int, Node] = {}  # id(old node) -> new node, filled as rebuild walks
    sweeps: dict[int, dict[int, Node | None]] = {}

    def fn(n: Node, ins: tuple[Node, ...]) -> Node:
        if n.op is Op.GRAD:
            y, x = ins
            if id(y) not in sweeps:
                wrt = [done[id(w)] for w in groups[id(n.inputs[0])] if id(w) in done]
                sweeps[id(y)] = vjp(y, wrt)
            g = sweeps[id(y)].get(id(x))
            if g is None:
                with at_loc(_bwd_loc(n)):
                    g = zeros(x.shape, x.dtype)
            new = g
        else:
            new = n if ins == n.inputs else n.replace(inputs=ins)
        done[id(n)] = new
        return new

    return rebuild(graph, fn)


def _bwd_loc(n: Node):
    return replace(n.loc, backward=True) if n.loc is not None else None
