"""Scheduling and memory planning: the `scheduled` stage.

Kernels run in graph order. Each kernel's result is a buffer in one arena, at an offset this
pass chooses from liveness:

  M1 graph outputs (and anything a returned view aliases) get their own allocation: the
     caller keeps them.
  M2 a view kernel (reshape, permute, expand, slice) aliases its source buffer: no bytes,
     and the source stays live while the view is.
  M3 an elementwise kernel whose input buffer dies at this kernel writes in place into it
     (same size and type), the classic `x = f(x)`; such chains share one block. Only an
     input the kernel reads at the index it writes (through elementwise ops, no view, no
     broadcast): `x = f(x.T)` computed element by element would read overwritten data.
  M5 an output kernel may write into a donated input it replaces (see `donations`).
  M4 blocks are placed offline, largest first, each at the lowest offset clear of every
     block whose lifetime overlaps (greedy by size, as TFLite's planner; online first fit
     fragments).

Every kernel node of the scheduled graph carries `buffer` (arena offset, or -1 for its own
allocation) and `inplace`. `memory_report` gives peak bytes with and without planning.
"""
from __future__ import annotations

from dataclasses import dataclass

from graphc.ir import Graph, Node
from graphc.ops import ELEMENTWISE, Op

ALIGN = 64  # arena offsets are cache-line aligned


@dataclass
class MemoryReport:
    unplanned_bytes: int   # every intermediate its own allocation, none freed
    freed_peak_bytes: int  # freed after last use but never reused (what a plain interpreter gets)
    arena_bytes: int       # the planned arena: peak with reuse and in-place updates
    output_bytes: int      # results handed to the caller (not in the arena)
    kernels: int
    inplace: int

    def __str__(self) -> str:
        return (f"{self.kernels} kernels, {self.inplace} in place; intermediates: "
                f"{self.unplanned_bytes} B unplanned, {self.freed_peak_bytes} B peak when freed, "
                f"{self.arena_bytes} B planned arena; outputs {self.output_bytes} B")


def lifetimes(order: list[Node], is_view) -> tuple[dict[int, int], dict[int, int], dict[int, int]]:
    """For nodes run in `order`: (position of each, the owner of the buffer each one uses --
    itself, or for a view the owner of its source --, the position of the last read of each
    owned buffer). Shared by the planner and the statistics of graphc.report."""
    pos = {id(n): i for i, n in enumerate(order)}
    owner: dict[int, int] = {}
    for n in order:
        owner[id(n)] = owner.get(id(n.inputs[0]), id(n)) if is_view(n) and n.inputs else id(n)
    last = {id(n): pos[id(n)] for n in order if owner[id(n)] == id(n)}
    for n in order:
        for i in n.inputs:
            if id(i) in owner:
                o = owner[id(i)]
                last[o] = max(last[o], pos[id(n)])
    return pos, owner, last


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _reads_aligned(kernel: Node, j: int) -> bool:
    """Does the kernel read its input j only where it writes: every use of it in the body an
    elementwise op over the kernel's own shape (no view re-indexes it, nothing broadcasts it)?"""
    body = kernel.attrs["body"]
    x = body.inputs[j]
    if x.shape != kernel.shape:
        return False
    users = body.users()
    stack, seen = [x], set()
    while stack:
        for u in users.get(id(stack.pop()), []):
            if id(u) not in seen:
                if u.op not in ELEMENTWISE or u.shape != kernel.shape:
                    return False
                seen.add(id(u))
                stack.append(u)
    return True


def plan_memory(graph: Graph) -> dict[int, tuple[int, bool]]:
    """{id(kernel node): (arena offset or -1, in place?)} for every fused node."""
    order = [n for n in graph.nodes if n.op is Op.FUSED]
    pos, source, last = lifetimes(order, lambda n: n.attrs["kind"] == "view")
    # a view of an input or constant (its own owner) has nothing to allocate
    external = {id(n) for n in order if n.attrs["kind"] == "view" and source[id(n)] == id(n)}
    for o in graph.outputs:
        if id(o) in source:
            external.add(source[id(o)])                   # M1
    size = {id(n): _align(n.type.nbytes) for n in order}
    by_id = {id(n): n for n in order}

    # M3: chains of in-place updates share one block; a group is live from its first
    # definition to its last use
    group: dict[int, int] = {}
    inplace: set[int] = set()
    handed: set[int] = set()
    for n in order:
        b = id(n)
        if source[b] != b or b in external:
            continue
        group[b] = b
        if n.attrs["kind"] != "elementwise":
            continue
        for j, i in enumerate(n.inputs):
            ib = source.get(id(i))
            if (ib is not None and ib in group and ib not in handed and last[ib] == pos[b]
                    and size[ib] == size[b] and by_id[ib].type == n.type
                    and _reads_aligned(n, j)):
                group[b] = group[ib]
                handed.add(ib)
                inplace.add(b)
                break
    span: dict[int, list[int]] = {}
    for b, g in group.items():
        lo, hi = span.get(g, [pos[b], last[b]])
        span[g] = [min(lo, pos[b]), max(hi, last[b])]

    # M4: greedy by size, largest first, each at the lowest offset clear of every placed
    # group whose lifetime overlaps (offline, so it does not fragment like first fit)
    offset: dict[int, int] = {}
    for g in sorted(span, key=lambda g: (-size[g], span[g][0])):
        lo, hi = span[g]
        busy = sorted((offset[h], offset[h] + size[h]) for h in offset
                      if span[h][0] <= hi and lo <= span[h][1])
        at = 0
        for a, z in busy:
            if at + size[g] <= a:
                break
            at = max(at, z)
        offset[g] = at

    result: dict[int, tuple[int, bool]] = {}
    for n in order:
        b = source[id(n)]
        if b in external:
            result[id(n)] = (-1, False)
        else:
            result[id(n)] = (offset[group[b]], id(n) in inplace)
    return result


def donations(graph: Graph) -> dict[int, int]:
    """M5: {id(kernel): index of a graph input it may overwrite}. A kernel whose result is a
    graph output writes into a *donated* input (the caller gave it up, as with
    `jax.jit(donate_argnums=...)`) of the same type, when only its elementwise part reads
    that input, where it writes, and no later kernel reads it: the optimizer update
    `w = w - lr * g`, often the epilogue of the matmul or sum that made g, in place. A backend
    honours `donated` only if its kernels read the epilogue's inputs before writing."""
    order = [n for n in graph.nodes if n.op is Op.FUSED]
    pos = {id(n): i for i, n in enumerate(order)}
    last_read: dict[int, int] = {}
    for n in order:
        for i in n.inputs:
            last_read[id(i)] = pos[id(n)]
    outs = {id(o) for o in graph.outputs}
    index = {id(x): k for k, x in enumerate(graph.inputs)}
    given: set[int] = set()
    result: dict[int, int] = {}
    for n in order:
        if id(n) not in outs or n.attrs["kind"] not in ("elementwise", "matmul", "reduce"):
            continue
        for j, i in enumerate(n.inputs):
            if (i.op is Op.INPUT and i.attrs.get("role") == "donated" and id(i) not in given
                    and id(i) not in outs and last_read[id(i)] == pos[id(n)]
                    and i.type == n.type and _reads_aligned(n, j)):
                result[id(n)] = index[id(i)]
                given.add(id(i))
                break
    return result


def schedule(graph: Graph) -> Graph:
    """The `scheduled` stage: the fused graph with each kernel's buffer decision recorded."""
    plan = plan_memory(graph)
    donate = donations(graph)
    new: dict[int, Node] = {}
    for n in graph.nodes:
        ins = tuple(new[id(i)] for i in n.inputs)
        m = n if ins == n.inputs else n.replace(inputs=ins)
        if n.op is Op.FUSED:
            off, inplace = plan[id(n)]
            extra = {"donated": donate[id(n)]} if id(n) in donate else {}
            m = m.replace(attrs=m.attrs.with_(buffer=off, inplace=inplace, **extra))
        new[id(n)] = m
    return Graph(tuple(new[id(i)] for i in graph.inputs), tuple(new[id(o)] for o in graph.outputs),
                 graph.name, graph.output_names)


def memory_report(graph: Graph) -> MemoryReport:
    """Peak intermediate bytes without planning, with frees only, and with the arena plan."""
    order = [n for n in graph.nodes if n.op is Op.FUSED]
    outs = {id(o) for o in graph.outputs}
    plan = {id(n): (n.attrs.get("buffer", -1), n.attrs.get("inplace", False)) for n in order} \
        if all("buffer" in n.attrs for n in order) else plan_memory(graph)
    # intermediates: not the caller's (outputs, and what a returned view aliases: M1)
    inter = [n for n in order if id(n) not in outs and n.attrs["kind"] != "view"
             and plan[id(n)][0] >= 0]
    unplanned = sum(_align(n.type.nbytes) for n in inter)
    pos = {id(n): i for i, n in enumerate(order)}
    last = {id(n): pos[id(n)] for n in inter}
    for n in order:
        for i in n.inputs:
            if id(i) in last:
                last[id(i)] = max(last[id(i)], pos[id(n)])
    size = {id(n): _align(n.type.nbytes) for n in inter}
    live = peak = 0
    for n in order:
        live += size.get(id(n), 0)
        peak = max(peak, live)
        for i in dict.fromkeys(id(i) for i in n.inputs):
            if i in last and last[i] == pos[id(n)]:
                live -= size[i]
    arena = max((off + _align(n.type.nbytes) for n in order
                 for off, _ in [plan[id(n)]] if off >= 0), default=0)
    return MemoryReport(unplanned, peak, arena,
                        sum(o.type.nbytes for o in graph.outputs),
                        len(order), sum(1 for n in order if plan[id(n)][1]))
