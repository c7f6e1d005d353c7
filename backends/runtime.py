"""What every kernel backend's runtime does the same way, whatever runs the kernels:

    kernel_nodes(graph, row_order)  the scheduled graph's fused nodes, in run order, with
                          their kernels (row_order: see graphc.lower.lower_kernel)
    arena_offset(node)    where the memory plan put a kernel's result (-1: its own buffer)
    arena_bytes(nodes)    the size of the intermediate arena the plan asks for
    host_outputs(...)     the graph's outputs as fresh numpy arrays (inputs and constants
                          returned unchanged are copied, so callers never alias)
    cache_dir(sub)        the on-disk cache folder for compiled code (None: caching off)

The OpenCL backend uses all of it; the LLVM backend all but host_outputs (it fills its
arena's output views itself: llvm_runtime.LLVMProgram).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from graphc.ir import Graph, Node
from graphc.lower import as_kernels, lower_kernel
from graphc.ops import Op
from graphc.printer import node_names


def kernel_nodes(graph: Graph, row_order: bool = True):
    """(graph with every op in a kernel, fused nodes in run order, their kernel IR);
    row_order: see `graphc.lower.lower_kernel`."""
    graph = as_kernels(graph)
    names = node_names(graph)
    nodes = [n for n in graph.nodes if n.op is Op.FUSED]
    return graph, nodes, [lower_kernel(n, names, row_order) for n in nodes]


def arena_offset(node: Node) -> int:
    """Byte offset of the node's result in the arena, or -1 when it gets its own buffer.
    View kernels copy (the plan lets them alias their source; we never write there)."""
    return node.attrs.get("buffer", -1) if node.attrs["kind"] != "view" else -1


def arena_bytes(nodes) -> int:
    return max((arena_offset(n) + n.type.nbytes for n in nodes if arena_offset(n) >= 0),
               default=0)


def host_outputs(graph: Graph, value) -> tuple:
    """The outputs: `value(node)` (a fresh numpy array) for kernel results; an input or a
    constant returned as is is copied from `value(node)` (None for a constant)."""
    outs = []
    for o in graph.outputs:
        if o.op is Op.FUSED:
            outs.append(value(o))
        else:
            v = value(o)
            outs.append(np.array(v if v is not None else o.attrs["value"].array))
    return tuple(outs)


def cache_dir(sub: str) -> Path | None:
    """Where a backend keeps compiled code between runs: $GRAPHC_CACHE_DIR/sub (default
    $XDG_CACHE_HOME/graphc, i.e. ~/.cache/graphc); None when GRAPHC_CACHE_DIR is off/0/none."""
    d = os.environ.get("GRAPHC_CACHE_DIR")
    if d is not None and d.strip().lower() in ("", "off", "0", "none"):
        return None
    if d is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "graphc")
    return Path(d) / sub
