"""Numbers for each stage, as `graphc stats` prints them, and the difference between two
stages, as `graphc viz --diff A:B` draws it.

Cost model (the one fusion uses): every kernel reads each of its distinct inputs once and
writes its result once; views (reshape, permute, expand, slice) move nothing. Before fusion,
every op is its own kernel.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from graphc.ir import Graph, Node
from graphc.ops import ELEMENTWISE, LEAF, VIEWS, Op
from graphc.passes.schedule import lifetimes, memory_report



def flops(n: Node) -> int:
    """Floating-point operations of one node (a fused node: of its body)."""
    if n.op is Op.FUSED:
        return sum(flops(m) for m in n.attrs["body"].nodes)
    if n.op is Op.MATMUL:
        return 2 * n.type.size * n.inputs[0].shape[-1]
    if n.op in (Op.SUM, Op.MAX):
        return n.inputs[0].type.size
    if n.op in ELEMENTWISE or n.op is Op.RAND:
        return n.type.size
    return 0


def is_view(n: Node) -> bool:
    return n.op in VIEWS or (n.op is Op.FUSED and n.attrs["kind"] == "view")


def ops_of(graph: Graph) -> list[Node]:
    """Every op, the bodies of fused kernels flattened."""
    out = []
    for n in graph.nodes:
        if n.op is Op.FUSED:
            out.extend(ops_of(n.attrs["body"]))
        elif n.op not in LEAF:
            out.append(n)
    return out


def peak_bytes(graph: Graph) -> int:
    """Peak bytes of intermediate results and outputs when each is freed after its last use
    (views alias their source and keep it alive)."""
    order = [n for n in graph.nodes if n.op not in LEAF]
    _, owner, end = lifetimes(order, is_view)
    for o in graph.outputs:
        if id(o) in owner:
            end[owner[id(o)]] = len(order)
    size = {id(n): n.type.nbytes for n in order if owner[id(n)] == id(n)}
    live = peak = 0
    for i, n in enumerate(order):
        live += size.get(id(n), 0)
        peak = max(peak, live)
        live -= sum(size[o] for o, e in end.items() if e == i)
    return peak


@dataclass
class StageStats:
    stage: str
    nodes: int
    kernels: int
    flops: int
    bytes_moved: int
    peak_bytes: int


def stage_stats(stage: str, graph: Graph) -> StageStats:
    kernels = [n for n in graph.nodes if n.op not in LEAF and not is_view(n)
               and n.op is not Op.GRAD]
    moved = sum(sum(i.type.nbytes for i in {id(i): i for i in k.inputs}.values()) + k.type.nbytes
                for k in kernels)
    if all("buffer" in n.attrs for n in graph.nodes if n.op is Op.FUSED) and \
            any(n.op is Op.FUSED for n in graph.nodes):
        m = memory_report(graph)
        peak = m.arena_bytes + m.output_bytes
    else:
        peak = peak_bytes(graph)
    return StageStats(stage, len(ops_of(graph)), len(kernels), sum(flops(n) for n in graph.nodes),
                      moved, peak)


def _human(n: int) -> str:
    for unit in ("", "K", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}T"


def stats_table(stages: dict[str, Graph]) -> str:
    """One row per stage: ops, kernels, FLOPs, bytes moved, peak memory."""
    rows = [stage_stats(s, g) for s, g in stages.items()]
    head = f"{'stage':<12}{'ops':>7}{'kernels':>9}{'FLOPs':>10}{'bytes moved':>13}{'peak memory':>13}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.stage:<12}{r.nodes:>7}{r.kernels:>9}{_human(r.flops):>10}"
                     f"{_human(r.bytes_moved) + 'B':>13}{_human(r.peak_bytes) + 'B':>13}")
    return "\n".join(lines)


def _signature(n: Node) -> tuple:
    from graphc.printer import format_attrs
    return (n.op, n.type, str(n.loc), format_attrs(n.attrs, n.op))


def diff(before: Graph, after: Graph) -> tuple[list[Node], list[Node]]:
    """(ops of `before` that `after` no longer has, ops `after` has that `before` did not),
    matching ops by op, type, attributes and source line (kernel bodies flattened)."""
    have = Counter(_signature(n) for n in ops_of(after))
    had = Counter(_signature(n) for n in ops_of(before))
    removed, added = [], []
    for n in ops_of(before):
        s = _signature(n)
        if have[s] > 0:
            have[s] -= 1
        else:
            removed.append(n)
    for n in ops_of(after):
        s = _signature(n)
        if had[s] > 0:
            had[s] -= 1
        else:
            added.append(n)
    return removed, added
