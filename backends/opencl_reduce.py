"""Work-group reductions for the OpenCL backend (`graphc.backends.opencl`).

A reduce kernel with few outputs and a long reduced iteration space (a full reduction to a
scalar, a long axis reduced to a handful of values) runs one work-group of `wg_size`
work-items per output element instead of one work-item: each work-item accumulates a strided
slice of the (flattened) reduced loops into its private accumulator, the partials meet in a
tree reduction in __local memory (barriers, OpenCL 1.2: no work-group built-ins), and
work-item 0 runs the epilogue and stores. Sums change their order (exact for integers, within
tolerance for floats); max keeps the NaN-propagating `gc_max` helper.

`r` below is the `OpenCLRenderer` (its dialect, expression rendering and the thresholds
`wg_size`, `wg_min_extent`, `wg_min_ratio`).
"""
from __future__ import annotations

import math

from graphc import kernel as K
from graphc.backends.opencl_render import _strip, _unflatten
from graphc.types import DType


def plan(r, k: K.Kernel):
    """The plan of a work-group reduction for `k` ({acc name: (dtype, op)}), or None when
    `k` keeps the plain mapping. The work-item body (after `launch`'s output loops) must be
    DefAcc / Let statements and reduction loop nests (perfect nests of sequential loops whose
    innermost body is Lets and Accumulates), then an epilogue of Lets and Stores; each
    accumulator is fed by one nest that does not read it back."""
    if k.kind != "reduce" or r.wg_size < 2:
        return None
    loops, body = r.launch(k)
    n_out = math.prod(lp.extent for lp in loops) if loops else 1
    accs: dict[str, tuple] = {}
    defined: dict[str, DType] = {}
    longest, seen_store = 0, False
    for s in body:
        if isinstance(s, K.DefAcc):
            if seen_store or s.dtype is DType.bool or s.name in defined:
                return None
            defined[s.name] = s.dtype
        elif isinstance(s, K.Let):
            continue
        elif isinstance(s, K.Store):
            seen_store = True
        elif isinstance(s, K.Loop):
            if seen_store or s.parallel:
                return None
            nest = _nest(s)
            if nest is None:
                return None
            vars_, inner = nest
            mine: dict[str, str] = {}
            for st in inner:
                if isinstance(st, K.Accumulate):
                    if st.name not in defined or st.name in accs or \
                            mine.get(st.name, st.op) != st.op or st.op not in ("sum", "max"):
                        return None
                    mine[st.name] = st.op
                elif not isinstance(st, K.Let):
                    return None
            for st in inner:   # a nest never reads back what it accumulates
                if any(isinstance(v, K.AccRef) and v.name in mine for v in K.walk(st.value)):
                    return None
            if not mine:
                return None
            for name, op in mine.items():
                accs[name] = (defined[name], op)
            longest = max(longest, math.prod(lp.extent for lp in vars_))
        else:
            return None
    if not accs or not seen_store or n_out == 0:
        return None
    if longest < r.wg_min_extent or n_out * r.wg_min_ratio > longest:
        return None
    return accs

def render(r, k: K.Kernel, accs: dict, lines: list[str]) -> str:
    loops, body = r.launch(k)
    it, ws = r.index_type, r.wg_size
    lines[-1] = lines[-1].replace(f"{r.kernel_prefix} ",
                                  f"{r.kernel_prefix} __attribute__((reqd_work_group_size"
                                  f"({ws}, 1, 1))) ", 1)
    lines.append(f"  /* a work-group reduction: one work-group of {ws} work-items per output"
                 f" element */")
    for name, (dt, _) in accs.items():
        lines.append(f"  __local {r.types[dt]} gc_red_{name}[{ws}];")
    lines.append(f"  {it} gc_lid = get_local_id(0);")
    if loops:
        total = math.prod(lp.extent for lp in loops)
        lines.append(f"  {it} gid = get_group_id(0);")
        lines += _unflatten("gid", loops, it, "  ")
    tail = 0   # statements after the last reduction nest: work-item 0 only
    for i, s in enumerate(body):
        if isinstance(s, K.Loop):
            tail = i + 1
    for s in body[:tail]:
        if not isinstance(s, K.Loop):
            lines += r.stmts([s], "  ")
            continue
        vars_, inner = _nest(s)
        total = math.prod(lp.extent for lp in vars_)
        lines.append(f"  for ({it} gc_r = gc_lid; gc_r < {total}; gc_r += {ws}) {{")
        lines += _unflatten("gc_r", vars_, it, "    ")
        lines += r.stmts(inner, "    ")
        lines.append("  }")
        mine = [st.name for st in inner if isinstance(st, K.Accumulate)]
        mine = list(dict.fromkeys(mine))
        for name in mine:
            lines.append(f"  gc_red_{name}[gc_lid] = {name};")
        lines.append("  barrier(CLK_LOCAL_MEM_FENCE);")
        lines.append(f"  for ({it} gc_s = {ws // 2}; gc_s > 0; gc_s >>= 1) {{")
        lines.append("    if (gc_lid < gc_s) {")
        for name in mine:
            dt, op = accs[name]
            a = K.AccRef(f"gc_red_{name}[gc_lid]", dt)
            b = K.AccRef(f"gc_red_{name}[gc_lid + gc_s]", dt)
            comb = r.value(K.Binary("add" if op == "sum" else "maximum", a, b))
            lines.append(f"      gc_red_{name}[gc_lid] = {_strip(comb)};")
        lines.append("    }")
        lines.append("    barrier(CLK_LOCAL_MEM_FENCE);")
        lines.append("  }")
        for name in mine:   # every work-item sees the total (a later nest may read it)
            lines.append(f"  {name} = gc_red_{name}[0];")
    lines.append("  if (gc_lid != 0) return;")
    lines += r.stmts(body[tail:], "  ")
    lines.append("}")
    return "\n".join(lines)


def _nest(lp: K.Loop):
    """(the loops, the innermost body) of a perfect nest of sequential loops whose innermost
    body holds no loop; None otherwise."""
    loops = [lp]
    body = list(lp.body)
    while len(body) == 1 and isinstance(body[0], K.Loop):
        loops.append(body[0])
        body = list(body[0].body)
    if any(isinstance(s, K.Loop) for s in body) or any(x.parallel for x in loops):
        return None
    return loops, body
