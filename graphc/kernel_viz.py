"""Drawing the kernel IR (`graphc/kernel.py`) like the graph IR: each kernel is a cluster,
each loop a nested cluster labelled with its variable and extent (`parallel` marked), each
statement a node with its text, top to bottom in execution order; buffers are nodes with an
edge from every buffer a statement loads to that statement and from every store to the
buffer it writes.

    graphc viz examples/mlp.py:train_step --backend llvm --kernels -o out/kernels.svg

>>> import numpy as np, graphc as gc
>>> f = gc.compile(lambda x: gc.tanh(x) * 2.0, backend="llvm")
>>> prog = f.lower(np.ones((4, 3), np.float32)).program
>>> dot = kernels_to_dot(prog.kernels, "tanh")
>>> "for i0 < 4 (parallel)" in dot and "out[" in dot
True
"""
from __future__ import annotations

from graphc import kernel as K

MAX_LABEL = 90          # characters of a statement shown (the full text is in `graphc code`)


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("{", "\\{").replace("}", "\\}")


def _short(s: str) -> str:
    return s if len(s) <= MAX_LABEL else s[:MAX_LABEL - 3] + "..."


def _text(s) -> str:
    if isinstance(s, K.Store):
        return f"{s.buffer.name}[{s.index}] = {s.value}"
    if isinstance(s, K.Let):
        return f"{s.value.dtype.value} {s.name} = {s.value}"
    if isinstance(s, K.DefAcc):
        return f"{s.dtype.value} {s.name} = {s.init}"
    return f"{s.name} {'+' if s.op == 'sum' else 'max'}= {s.value}"  # Accumulate


def kernels_to_dot(kernels: list[K.Kernel], title: str = "") -> str:
    """DOT text for a list of kernels (one cluster each, in execution order)."""
    lines = ["digraph kernels {", '  rankdir=TB; compound=true; newrank=true;',
             '  node [fontname="Helvetica", fontsize=10];',
             f'  label="{_esc(title)} (kernel IR)"; labelloc=t;']
    count = [0]

    def fresh(prefix):
        count[0] += 1
        return f"{prefix}{count[0]}"

    for k in kernels:
        kid = fresh("k")
        buf_node = {}
        lines.append(f'  subgraph cluster_{kid} {{')
        lines.append(f'    label="kernel {_esc(k.name)} ({k.kind})\\l'
                     f'{_esc(" ".join(k.source_nodes[:1]))[:MAX_LABEL]}\\l"; '
                     f'labeljust=l; style=rounded; color="#555555";')
        for b in k.buffers:
            nid = fresh("b")
            buf_node[b.name] = nid
            shape = "box" if b.role == "out" else "ellipse"
            fill = {"out": "#fde2c8", "in": "#d8e8f8", "const": "#eeeeee"}[b.role]
            lines.append(f'    {nid} [label="{_esc(str(b))}", shape={shape}, style=filled, '
                         f'fillcolor="{fill}"];')
        edges = []
        prev = [None]   # the previous statement: an invisible edge keeps execution order top-down

        def body(stmts, indent):
            for s in stmts:
                if isinstance(s, K.Loop):
                    lid = fresh("loop")
                    par = " (parallel)" if s.parallel else ""
                    lines.append(f'{indent}subgraph cluster_{lid} {{')
                    lines.append(f'{indent}  label="for {s.var} < {s.extent}{par}"; '
                                 f'labeljust=l; style=dashed; color="#3366aa";')
                    if not s.body:
                        lines.append(f'{indent}  {lid}_empty [label="(empty)", shape=plain];')
                    body(s.body, indent + "  ")
                    lines.append(f"{indent}}}")
                    continue
                sid = fresh("s")
                lines.append(f'{indent}{sid} [label="{_esc(_short(_text(s)))}", shape=box, '
                             f'fontname="Courier", fontsize=9];')
                if prev[0] is not None:
                    edges.append(f"    {prev[0]} -> {sid} [style=invis, weight=10];")
                prev[0] = sid
                for name in sorted({b.name for b in K.loads(s)}):
                    edges.append(f'    {buf_node[name]} -> {sid} [style=dashed, '
                                  f'color="#3366aa"];')
                if isinstance(s, K.Store):
                    edges.append(f'    {sid} -> {buf_node[s.buffer.name]} [color="#cc5500"];')
        body(k.body, "    ")
        lines.extend(edges)
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"
