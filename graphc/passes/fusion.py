"""Fusion: group the simplified graph's ops into kernels, each a `fused` node whose `body`
is the subgraph it computes in one pass over memory.

The rule set (every decision is logged with the rule that made it):

  F1 graph outputs are materialised: each is the root of its own kernel.
  F2 views (reshape, permute, expand, slice) are index arithmetic: they join every kernel
     that reads them, for free.
  F3 an elementwise op (pad and concat count as elementwise: a select of reads) with one
     consuming kernel joins it (saves writing and re-reading it), if that kernel reads it
     elementwise or reduces it (not as a matmul operand), except a computed value of at
     least UPSAMPLE_MIN_ELEMENTS that the kernel reads at twice its size or more (max-pool's
     backward reads each pooled gradient 4 times: fused, its whole producer chain would run
     4 times per element).
  F4 an elementwise op read by k kernels is recomputed in each when that moves fewer bytes
     than materialising it: k * bytes(inputs) <= (k + 1) * bytes(output), and each kernel
     has recomputed fewer than RECOMPUTE_MAX_OPS ops; otherwise it is materialised. A costly
     op (exp, log, tanh, sin, cos, pow: tens of instructions per element) of
     COSTLY_MIN_ELEMENTS to COSTLY_MAX_ELEMENTS elements is materialised regardless: it
     stays in cache, so reading it back is cheaper than computing it again (an LSTM's
     gates, recomputed by each backward kernel, took 11% more of W3's step; more where a
     kernel launch is dear).
  F5 a reduction or matmul joins its single consumer as that kernel's one contraction when
     the consumer is elementwise over the same shape and the kernel's result has that shape
     too (an epilogue: bias + activation after a matmul, log after a sum; the result is not
     broadcast back inside the kernel), looking through reshapes, which keep element order;
     a kernel never holds two contractions and never
     duplicates one. An elementwise op read by several kernels is materialised, rather than
     recomputed, when that lets it be the epilogue of the contraction it reads.
  F6 a row reduction joins the kernel that broadcasts it back over its rows: a sum or max
     with keepdims over trailing axes (not all of them), read only by elementwise ops that
     lead, elementwise, to that kernel's root over the reduced operand's shape (softmax,
     log-softmax, layer norm). The lowering computes it once per row, before the row's
     elements (graphc/lower.py), so the row is read from cache, not memory, by the next
     pass. Such a kernel holds no other contraction; it may hold several row reductions.

The cost model is bytes moved: a materialised value costs one write and one read per
consuming kernel. Kernel kinds: elementwise, reduce, matmul, movement, view.
"""
from __future__ import annotations

from dataclasses import dataclass

from graphc.ir import Graph, Node, apply, at_loc, input_node
from graphc.ops import COSTLY, CONTRACTIONS, ELEMENTWISE, MOVEMENT, REDUCE, VIEWS, Op

INLINE_CONST_ELEMENTS = 16      # constants up to this size are copied into kernel bodies
RECOMPUTE_MAX_OPS = 8
COSTLY_MIN_ELEMENTS, COSTLY_MAX_ELEMENTS = 1 << 11, 1 << 16  # F4: in this range such a value
# is materialised rather than recomputed in each kernel that reads it (smaller: computing it
# again costs less than a kernel call; larger: it no longer stays in cache)
UPSAMPLE_MIN_ELEMENTS = 4096    # F3: a computed value this big is not recomputed per upsampled read


@dataclass(frozen=True)
class Decision:
    node: Node
    fused: bool
    rule: str
    reason: str


def _unique(xs):
    return list({id(x): x for x in xs}.values())


def plan(graph: Graph) -> tuple[set[int], dict[int, set[int]], list[Decision]]:
    """Decide which nodes are materialised (kernel roots) and which kernels the others join."""
    users = {k: _unique(v) for k, v in graph.users().items()}
    outputs = {id(o) for o in graph.outputs}
    roots: set[int] = set()
    member_of: dict[int, set[int]] = {}     # non-root node -> roots of the kernels it joins
    contraction: dict[int, bool] = {}        # root -> kernel already holds a contraction
    recomputed: dict[int, int] = {}          # root -> ops it recomputes (shared with others)
    accepts: dict[int, bool] = {}            # may an elementwise producer join at this node?
    rows: dict[int, bool] = {}               # root -> kernel holds row reductions (F6)
    log: list[Decision] = []
    by_id = {id(n): n for n in graph.nodes}

    def kernels(u: Node) -> set[int]:
        return {id(u)} if id(u) in roots else member_of[id(u)]

    def root(n: Node, rule: str, why: str):
        roots.add(id(n))
        contraction[id(n)] = n.op in CONTRACTIONS
        rows[id(n)] = False
        recomputed[id(n)] = 0
        accepts[id(n)] = n.op in ELEMENTWISE | REDUCE | MOVEMENT | {Op.RAND}
        log.append(Decision(n, False, rule, why))

    def join(n: Node, ks: set[int], rule: str, why: str):
        member_of[id(n)] = ks
        us = users.get(id(n), [])
        accepts[id(n)] = (n.op in ELEMENTWISE | REDUCE | {Op.RAND, Op.PAD, Op.CONCAT} or
                          (n.op in VIEWS and all(accepts[id(u)] for u in us)))
        if n.op in CONTRACTIONS:
            for k in ks:
                if rule == "F6":
                    rows[k] = True
                else:
                    contraction[k] = True
        if len(ks) > 1:
            for k in ks:
                recomputed[k] += 1
        log.append(Decision(n, True, rule, why))

    for n in reversed(graph.nodes):
        if n.op in (Op.INPUT, Op.CONST):
            continue
        us = users.get(id(n), [])
        ks = set().union(*(kernels(u) for u in us)) if us else set()
        if id(n) in outputs or not us:
            root(n, "F1", "graph output")
        elif n.op in VIEWS:
            join(n, ks, "F2", f"view: index arithmetic inside {len(ks)} kernel(s)")
        elif n.op in CONTRACTIONS and _row_reduction(n, us, ks, by_id, users, kernels) \
                and not contraction[next(iter(ks))]:
            join(n, ks, "F6", f"row {n.op.value} over axes {list(n.attrs['axes'])}: computed "
                              f"once per row inside the kernel that broadcasts it back")
        elif n.op in CONTRACTIONS:
            u = us[0]
            if len(us) != 1:
                root(n, "F5", f"{len(us)} consumers: a contraction is never recomputed")
            elif not ((u.op in ELEMENTWISE and u.shape == n.shape)
                      or (u.op is Op.RESHAPE and u.type.size == n.type.size)):
                root(n, "F5", f"consumer {u.op.value}{list(u.shape)} is not an elementwise "
                              f"epilogue over {list(n.shape)}")
            elif len(ks) != 1 or any(contraction[k] or rows[k] for k in ks):
                root(n, "F5", "the consumer's kernel already holds a contraction or is shared")
            elif by_id[next(iter(ks))].type.size != n.type.size:
                root(n, "F5", f"the consumer's kernel broadcasts the result back to "
                              f"{list(by_id[next(iter(ks))].shape)}")
            else:
                join(n, ks, "F5", f"epilogue {u.op.value} fused after the {n.op.value}")
        elif n.op in ELEMENTWISE or n.op in (Op.RAND, Op.PAD, Op.CONCAT):
            bad = [u for u in us if not accepts[id(u)]]
            if bad:
                root(n, "F3", f"read by {bad[0].op.value} as an operand, which takes "
                              f"materialised inputs")
            elif n.op is Op.RAND and any(u.shape != n.shape for u in us):
                root(n, "F3", "random numbers are generated at their own shape")
            elif (len(ks) == 1 and n.type.size >= UPSAMPLE_MIN_ELEMENTS
                  and by_id[next(iter(ks))].type.size >= 2 * n.type.size
                  and any(i.op not in (Op.INPUT, Op.CONST) for i in n.inputs)):
                ratio = by_id[next(iter(ks))].type.size / n.type.size
                root(n, "F3", f"its kernel computes {ratio:.1f}x as many elements: "
                              f"fused, it would be recomputed for each (an upsampling)")
            elif len(ks) == 1:
                join(n, ks, "F3", f"one consuming kernel: saves writing and re-reading "
                                  f"{n.type.nbytes} bytes")
            else:
                k = len(ks)
                out_b = n.type.nbytes
                in_b = sum(i.type.nbytes for i in n.inputs if i.op is not Op.CONST)
                epilogue_of = [i for i in n.inputs if i.op in CONTRACTIONS and i.shape == n.shape
                               and len(users.get(id(i), [])) == 1]
                if epilogue_of:
                    root(n, "F5", f"materialised as the epilogue of the {epilogue_of[0].op.value} "
                                  f"it reads ({k} kernels read it)")
                elif k * in_b > (k + 1) * out_b:
                    root(n, "F4", f"{k} kernels read it: recomputing reads {k * in_b} bytes, "
                                  f"materialising moves {(k + 1) * out_b}")
                elif n.op in COSTLY and COSTLY_MIN_ELEMENTS <= n.type.size <= COSTLY_MAX_ELEMENTS:
                    root(n, "F4", f"{n.op.value} is costly to compute: materialised once "
                                  f"({n.type.nbytes} bytes, cache-sized) for {k} kernels")
                elif any(recomputed[x] >= RECOMPUTE_MAX_OPS for x in ks):
                    root(n, "F4", f"recompute budget ({RECOMPUTE_MAX_OPS} ops) spent")
                else:
                    join(n, ks, "F4", f"recomputed in {k} kernels: reads {k * in_b} bytes "
                                      f"instead of moving {(k + 1) * out_b}")
        else:
            root(n, "F1", f"{n.op.value} is its own kernel")
    log.reverse()
    return roots, member_of, log


def reduces_rows(n: Node) -> bool:
    """Is n a sum or max with keepdims over trailing axes of its operand, some but not all
    (a row's max or sum, as softmax and layer norm take them)?"""
    if n.op not in REDUCE or not n.attrs["keepdims"]:
        return False
    axes, nd = sorted(n.attrs["axes"]), len(n.inputs[0].shape)
    return bool(axes) and len(axes) < nd and axes == list(range(nd - len(axes), nd))


def row_reductions(body: Graph) -> list[Node]:
    """The row reductions F6 put in a kernel body: those over an operand shaped like the
    kernel's result (the lowering computes them once per row)."""
    root = body.outputs[0]
    return [n for n in body.nodes if reduces_rows(n) and n.inputs[0].shape == root.shape]


def _row_reduction(n: Node, us, ks: set[int], by_id, users, kernels) -> bool:
    """F6: is reduction n read only by broadcasting it back over the rows it reduced, inside
    one kernel whose root iterates over n's operand shape, through elementwise ops only? Then
    its index in that kernel uses only the outer (row) loop variables."""
    if len(ks) != 1 or not reduces_rows(n):
        return False
    x = n.inputs[0]
    axes = sorted(n.attrs["axes"])
    root = by_id[next(iter(ks))]
    if root.shape != x.shape:
        return False

    def leads(u: Node) -> bool:  # u reaches the root elementwise, in that kernel only
        if kernels(u) != ks:
            return False
        if u.op in REDUCE:  # another row reduction of that kernel (layer norm's variance)
            return sorted(u.attrs["axes"]) == axes and u.attrs["keepdims"] and u.shape == n.shape
        if u.op not in ELEMENTWISE or u.shape not in (x.shape, n.shape):
            return False
        return u is root or all(leads(w) for w in users.get(id(u), []))
    return all(leads(u) for u in us)


def kernel_kind(body: Graph) -> str:
    ops = {n.op for n in body.nodes} - {Op.INPUT, Op.CONST}
    if Op.MATMUL in ops:
        return "matmul"
    if ops & REDUCE:
        return "reduce"
    if ops <= MOVEMENT and ops & {Op.PAD, Op.CONCAT}:
        return "movement"
    if ops <= VIEWS:
        return "view"
    return "elementwise"


def fuse(graph: Graph, log: list | None = None) -> Graph:
    """The `fused` stage: every op ends up in exactly one kernel (views and cheap elementwise
    ops may be recomputed in several); the graph holds inputs, constants and fused nodes."""
    roots, _, decisions = plan(graph)
    if log is not None:
        log.extend(decisions)
    reasons: dict[int, list[str]] = {}
    for d in decisions:
        reasons.setdefault(id(d.node), []).append(f"{d.rule}: {d.reason}")
    new: dict[int, Node] = {}
    count = 0
    for r in graph.nodes:
        if r.op in (Op.INPUT, Op.CONST):
            new[id(r)] = r
            continue
        if id(r) not in roots:
            continue
        ext: list[Node] = []      # outer nodes the kernel reads
        body_in: dict[int, Node] = {}
        body: dict[int, Node] = {}

        def build(n: Node) -> Node:
            if id(n) in body:
                return body[id(n)]
            if n is not r and (id(n) in roots or n.op is Op.INPUT or
                               (n.op is Op.CONST and n.type.size > INLINE_CONST_ELEMENTS)):
                if id(n) not in body_in:
                    ext.append(new[id(n)])
                    with at_loc(n.loc):
                        body_in[id(n)] = input_node(f"in{len(ext) - 1}", n.shape, n.dtype)
                return body_in[id(n)]
            out = n if n.op is Op.CONST else n.replace(inputs=tuple(build(i) for i in n.inputs))
            body[id(n)] = out
            return out

        stack, order, seen = [r], [], set()
        while stack:  # iterative post-order, so long chains do not hit the recursion limit
            n = stack.pop()
            if id(n) in seen:
                order.append(n)
                continue
            seen.add(id(n))
            stack.append(n)
            if n is r or not (id(n) in roots or n.op in (Op.INPUT, Op.CONST)):
                stack.extend(i for i in reversed(n.inputs) if id(i) not in seen)
        for n in order:
            build(n)
        name = f"k{count}"
        count += 1
        body_graph = Graph(tuple(body_in.values()), (body[id(r)],), name)
        members = [n for n in body_graph.nodes if n.op not in (Op.INPUT, Op.CONST)]
        why = "; ".join(dict.fromkeys(x for m in order if id(m) in body
                                      for x in reasons.get(id(m), [])))
        with at_loc(r.loc):
            new[id(r)] = apply(Op.FUSED, *ext, body=body_graph, kind=kernel_kind(body_graph),
                               name=name, reason=why or f"{len(members)} op(s)")
    return Graph(graph.inputs, tuple(new[id(o)] for o in graph.outputs), graph.name,
                 graph.output_names)


def kernels(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes if n.op is Op.FUSED]
