"""Merging sums of matmuls (the `merge` sub-pass of the `simplified` stage).

A sum of matmuls is one matmul of concatenations:

    A1 @ B1 + A2 @ B2 + ... = concat(A1, A2, ...; axis -1) @ concat(B1, B2, ...; axis -2)

An unrolled RNN's weight gradient is such a sum, one small-K matmul per time step (W3 of
benchmarks/workloads.py: 32 of 32x32 @ 32x512 for the input weights, 31 of 128x32 @ 32x512
for the recurrent ones), and so is a step's forward `x_t @ Wx + h @ Wh`. Merged, each is
one GEMM over K = 1024, 992 or 160, which writes its result once instead of once per term
and calls the GEMM once. The weights' concat [Wx; Wh] is the same node in every step (CSE),
computed once per call; the gradients' concat(dg_0..dg_31) is shared by both weight
gradients, the recurrent one reading the run dg_1..dg_31 as a slice (a view: no copy).

When it pays: the terms are matmuls whose only use is this sum of same-typed float values,
each with K <= SMALL_K (a longer contraction already amortises writing its result, and
concatenating would copy large operands); a longer sum is merged in runs of K <= MAX_K.
The order of the additions changes: results differ in the last bits, as with any
reassociation. Measured on W3 (CPU time of a call on one thread, medians of 21 interleaved
runs): 483 -> 425 kernels, 18.6 -> 14.7 ms.
Not merged: sums of reductions (the bias gradient's 31 column sums). As one column sum over
the 1024-row concat it took about 2 ms of CPU time against 0.6 ms for the 31 small ones,
whose blocks stay in cache (measured when the reduce kernel walked a column at a time;
column sums now add whole rows, `lower_matmul.column_reduce`: not measured again).
Nor the inputs' projections x_t @ Wx as one (T*B) x I @ Wx up front (B packed once, no
[x_t, h] copies): 394 instead of 425 kernels, but no faster (15.5 vs 15.4 ms).
"""
from __future__ import annotations

from graphc.ir import Graph, Node, apply, at_loc, rebuild
from graphc.ops import Op
from graphc.pattern import P, Rule, rewrite

A = apply
SMALL_K = 256    # a term with a bigger contraction is left alone
MAX_K = 4096     # a merged contraction is at most this long (longer sums: several runs);
# it bounds the concatenations' memory, which keeps every term's operands alive at once

MATMUL_SUM = Rule(P(Op.ADD), lambda node: None,
                  "A1@B1 + A2@B2 -> concat(A1, A2) @ concat(B1; B2)  (small K)")
CONCAT_SLICE = Rule(P(Op.CONCAT), lambda node: None,
                    "concat(run of another concat's inputs) -> slice of it")


def _flatten_concat(node: Node, **_):
    # concat(a, concat(b, c), d) along one axis is concat(a, b, c, d)
    axis = node.attrs["axis"]
    if not any(i.op is Op.CONCAT and i.attrs["axis"] == axis for i in node.inputs):
        return None
    ins = []
    for i in node.inputs:
        ins.extend(i.inputs if i.op is Op.CONCAT and i.attrs["axis"] == axis else (i,))
    return A(Op.CONCAT, *ins, axis=axis)


def _concat_of_permutes(node: Node, **_):
    # concat(permute(x_i, p); axis a) = permute(concat(x_i; axis p[a]), p): the transposed
    # operands of a merged weight gradient (x_t^T) become one transpose of a concatenation
    ins = node.inputs
    if len(ins) < 2 or any(i.op is not Op.PERMUTE for i in ins):
        return None
    perm = ins[0].attrs["perm"]
    if any(i.attrs["perm"] != perm for i in ins):
        return None
    inner = A(Op.CONCAT, *(i.inputs[0] for i in ins), axis=perm[node.attrs["axis"]])
    return A(Op.PERMUTE, inner, perm=perm)


def _block(n: Node):
    """(source, first row, end row) when n is rows [lo, hi) of a tensor along axis 0, all
    of its other axes, maybe reshaped: a contiguous block of the source's memory."""
    s = n.inputs[0] if n.op is Op.RESHAPE else n
    if s.op is not Op.SLICE or any(st != 1 for st in s.attrs["steps"]):
        return None
    x, starts, stops = s.inputs[0], s.attrs["starts"], s.attrs["stops"]
    if not x.shape or any(a != 0 or b != d for a, b, d in zip(starts[1:], stops[1:], x.shape[1:])):
        return None
    return x, starts[0], stops[0]


def _concat_of_blocks(node: Node, **_):
    # concat(x[0:1] reshaped, x[1:2] reshaped, ...; axis 0) lays the blocks end to end in
    # memory, as x itself does: it is reshape(x[0:n]) (the merged gradient's x_t^T operands)
    if node.attrs["axis"] != 0:
        return None
    blocks = [_block(i) for i in node.inputs]
    if any(b is None for b in blocks) or any(b[0] is not blocks[0][0] for b in blocks):
        return None
    if any(b[2] != c[1] for b, c in zip(blocks, blocks[1:])):
        return None
    x, lo, hi = blocks[0][0], blocks[0][1], blocks[-1][2]
    if (lo, hi) != (0, x.shape[0]):
        x = A(Op.SLICE, x, starts=(lo,) + (0,) * (len(x.shape) - 1), stops=(hi,) + x.shape[1:],
              steps=(1,) * len(x.shape))
    return A(Op.RESHAPE, x, shape=node.shape)


CONCAT_RULES = [
    Rule(P(Op.CONCAT), _flatten_concat, "concat(.., concat(..), ..) -> concat(..)  (same axis)"),
    Rule(P(Op.CONCAT), _concat_of_permutes, "concat(permute x_i) -> permute(concat x_i)"),
    Rule(P(Op.CONCAT), _concat_of_blocks, "concat(x[0:1], x[1:2], ..) -> reshape(x[0:n])"),
]


def _value(n: Node) -> Node:
    while n.op in (Op.PERMUTE, Op.RESHAPE):
        n = n.inputs[0]
    return n


def merge_sums(graph: Graph, log: list | None = None) -> Graph:
    """Rewrite every sum (a tree of same-typed ADDs, each inner one used only by the tree)
    whose terms include two or more matmuls that line up into one matmul per run."""
    users = graph.users()
    outputs = {id(o) for o in graph.outputs}
    order = {id(n): k for k, n in enumerate(graph.nodes)}

    def only_use(n: Node) -> bool:  # used exactly once (a duplicate input counts twice)
        return len(users.get(id(n), ())) == 1 and id(n) not in outputs

    def inner(i: Node, parent: Node) -> bool:
        return i.op is Op.ADD and i.type == parent.type and only_use(i)

    absorbed = {id(i) for n in graph.nodes if n.op is Op.ADD for i in n.inputs if inner(i, n)}
    new: dict[int, Node] = {}

    def terms(root: Node) -> list[Node]:
        # the tree's leaves, left to right (iterative: a 32-step gradient sum is 32 deep)
        out, stack = [], [(root, None)]
        while stack:
            n, parent = stack.pop()
            if parent is not None and not inner(n, parent):
                out.append(n)
                continue
            stack.extend((i, n) for i in reversed(n.inputs))
        return out

    def group_of(t: Node, root: Node):
        """The merge group of a term, or None when it stays a term of its own."""
        if (t.op is Op.MATMUL and t.type == root.type and t.dtype.is_float and only_use(t)
                and t.inputs[0].shape[-1] <= SMALL_K):
            # terms merge when A agrees except in K, and so does B (batch dims included)
            a, b = t.inputs
            return a.shape[:-1], b.shape[:-2] + b.shape[-1:]
        return None

    def runs(cs: list[Node]) -> list[list[Node]]:
        # One order for every sum, so that sums sharing operands concatenate them alike
        # (then equal concats are one node, or one is a slice of another): by the graph
        # places of the operands' values, B's first, last place first. The weight gradients
        # of an unrolled loop share B (the step's gradient), and the backward graph holds
        # the last step's first: the terms come in step order, as x_0..x_T lie in memory.
        cs = sorted(cs, key=lambda c: [-order[id(_value(i))] for i in c.inputs[::-1]])
        # then cut into runs of K <= MAX_K: every run but the last has K > MAX_K - SMALL_K,
        # so at most one small term is left and a second pass merges nothing
        out, k = [[]], 0
        for c in cs:
            if k + c.inputs[0].shape[-1] > MAX_K:
                out, k = out + [[]], 0
            out[-1].append(c)
            k += c.inputs[0].shape[-1]
        return [r for r in out if len(r) > 1]

    def merged(run: list[Node], root: Node) -> Node:
        a = [new[id(c.inputs[0])] for c in run]
        b = [new[id(c.inputs[1])] for c in run]
        if log is not None:
            log.append((MATMUL_SUM.doc, MATMUL_SUM.where, root))
        return A(Op.MATMUL, A(Op.CONCAT, *a, axis=len(a[0].shape) - 1),
                 A(Op.CONCAT, *b, axis=len(b[0].shape) - 2))

    def fn(n: Node, ins):
        res = n if ins == n.inputs else n.replace(inputs=ins)
        if n.op is Op.ADD and id(n) not in absorbed and n.dtype.is_float:
            ts = terms(n)
            groups: dict = {}
            for t in ts:
                g = group_of(t, n)
                if g is not None:
                    groups.setdefault(g, []).append(t)
            with at_loc(n.loc):
                done: set[int] = set()
                parts: list[Node] = []
                for members in groups.values():
                    for run in (runs(members) if len(members) > 1 else []):
                        parts.append(merged(run, n))
                        done |= {id(t) for t in run}
                if parts:
                    parts += [new[id(t)] for t in ts if id(t) not in done]
                    res = parts[0]
                    for p in parts[1:]:
                        res = A(Op.ADD, res, p)
        new[id(n)] = res
        return res

    return rebuild(graph, fn)


def share_concats(graph: Graph, log: list | None = None) -> Graph:
    """A concat whose inputs are a contiguous run of a longer concat's inputs (same axis)
    becomes a slice of the longer one: the recurrent weight gradient's concat(dg_1..dg_31)
    reads the input weights' concat(dg_0..dg_31) instead of copying the same rows again."""
    nodes = graph.nodes
    order = {id(n): k for k, n in enumerate(nodes)}
    concats = [n for n in nodes if n.op is Op.CONCAT]
    replace: dict[int, tuple[Node, int]] = {}  # id(short concat) -> (long concat, offset)
    for s in concats:
        ids, ax = [id(i) for i in s.inputs], s.attrs["axis"]
        for big in sorted(concats, key=lambda c: -len(c.inputs)):  # the longest first
            # every input of `big` precedes `s`, so `big` cannot depend on `s` (no cycle)
            if (big is s or big.attrs["axis"] != ax or len(big.inputs) <= len(ids)
                    or id(big) in replace or any(order[id(i)] >= order[id(s)] for i in big.inputs)):
                continue
            bids = [id(i) for i in big.inputs]
            k = next((k for k in range(len(bids) - len(ids) + 1) if bids[k:k + len(ids)] == ids),
                     None)
            if k is not None:
                replace[id(s)] = (big, sum(i.shape[ax] for i in big.inputs[:k]))
                break
    if not replace:
        return graph
    new: dict[int, Node] = {}

    def rebuilt(n: Node) -> Node:
        # a long concat may follow the short one in graph order: build it on first demand
        if id(n) not in new:
            ins = tuple(new[id(i)] for i in n.inputs)
            new[id(n)] = n if ins == n.inputs else n.replace(inputs=ins)
        return new[id(n)]

    def fn(n: Node, ins):
        if id(n) in new:
            return new[id(n)]
        if id(n) not in replace:
            return rebuilt(n)
        big, off = replace[id(n)]
        big, ax = rebuilt(big), n.attrs["axis"]
        with at_loc(n.loc):
            out = A(Op.SLICE, big, starts=tuple(off if a == ax else 0 for a in range(len(n.shape))),
                    stops=tuple(off + d if a == ax else d for a, d in enumerate(n.shape)),
                    steps=(1,) * len(n.shape))
        if log is not None:
            log.append((CONCAT_SLICE.doc, CONCAT_SLICE.where, n))
        new[id(n)] = out
        return out

    return rebuild(graph, fn)


def merge(graph: Graph, log: list | None = None) -> Graph:
    """The merge sub-pass: sums of matmuls merged, then the concat rules, then runs of
    concatenations shared (CSE, run by the caller, makes equal ones one node)."""
    graph = merge_sums(graph, log)
    graph = rewrite(graph, CONCAT_RULES, log)
    return share_concats(graph, log)
