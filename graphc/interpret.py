"""The reference interpreter: evaluates a graph node by node with each op's NumPy
reference. It is the oracle every backend is tested against."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from graphc.device import DeviceArray
from graphc.errors import GraphcError, SignatureError, VerifyError
from graphc.ir import Graph
from graphc.ops import OPS, Op
from graphc.printer import format_node, node_names


def check_args(graph: Graph, args: Sequence, stage: str = "run",
               keep_device: bool = False) -> list:
    """Check the arguments against the graph's input types (count, shape, dtype). A
    `DeviceArray` is checked by its shape and dtype; with keep_device it is returned as is
    (for a backend that reads it where it lives), else copied to a numpy array."""
    if len(args) != len(graph.inputs):
        raise SignatureError(f"{graph.name} takes {len(graph.inputs)} arguments, got {len(args)}",
                             stage=stage)
    out = []
    for n, a in zip(graph.inputs, args):
        if isinstance(a, DeviceArray):
            a.check_alive(f"argument {n.attrs['name']!r}")
            if not keep_device:
                a = np.asarray(a)
        else:
            a = np.asarray(a)
        if a.shape != n.shape or a.dtype != n.dtype.np:
            raise SignatureError(
                f"argument {n.attrs['name']!r} must be {n.type}, got "
                f"{a.dtype.name}{list(a.shape)}", stage=stage)
        out.append(a)
    return out


def interpret(graph: Graph, *args, keep: bool = False):
    """Run `graph` on numpy arrays; returns a tuple of outputs (or, with keep=True,
    also the dict of every node's value, keyed by id, for divergence finding)."""
    env: dict[int, np.ndarray] = {}
    for n, a in zip(graph.inputs, check_args(graph, args)):
        env[id(n)] = a
    names = None
    with np.errstate(all="ignore"):  # inf/nan follow IEEE, as in the compiled backends
        for n in graph.nodes:
            if n.op is Op.INPUT:
                continue
            try:
                v = np.asarray(OPS[n.op].reference(*(env[id(i)] for i in n.inputs), **n.attrs))
            except GraphcError:
                raise
            except Exception as e:
                names = names or node_names(graph)
                raise GraphcError(f"{type(e).__name__}: {e}", stage="interpret",
                                  node=format_node(n, names),
                                  loc=n.loc.full if n.loc else None) from e
            if v.shape != n.shape or v.dtype != n.dtype.np:
                names = names or node_names(graph)
                raise VerifyError(f"reference produced {v.dtype}{list(v.shape)}, expected {n.type}",
                                  stage="interpret", node=format_node(n, names))
            env[id(n)] = v
    outs = tuple(env[id(o)] for o in graph.outputs)
    return (outs, env) if keep else outs
