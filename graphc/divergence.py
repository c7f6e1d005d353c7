"""The divergence finder: the first node, in execution order, whose value on a backend is
outside tolerance of the reference interpreter, and the first op inside it that is wrong on
exact inputs (op, shapes, the user's line).

    find_divergence(fn, args, b)  the first kernel, in execution order, whose value on backend
                                  `b` is outside tolerance, and the first op inside it that is
                                  wrong on exact inputs

How it works, for any backend: take the graph the backend compiled (the `optimized` stage:
kernels, or plain ops with passes="-fusion"), build a *probe* graph whose outputs are every
kernel's result (its memory plan redone, so nothing is overwritten), compile the probe with the
backend, run it, and compare each result with the interpreter's value for the same node of the
same graph, in execution order. For the first kernel outside tolerance, each prefix of its body
(the kernel cut off after op j, still one fused kernel) is compiled and run on the
interpreter's values of the kernel's inputs: the first op whose prefix is wrong is the culprit.
If every prefix is right on exact inputs, the kernel only amplified small upstream differences,
and the report says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from graphc import tolerances as T
from graphc.compare_base import _num, _tol_for, cones, flat_arrays
from graphc.errors import GraphcError
from graphc.frontends.api import Compiled, get_backend
from graphc.interpret import interpret
from graphc.ir import Graph, Node, apply, at_loc, input_node
from graphc.ops import Op
from graphc.passes.fusion import kernel_kind
from graphc.passes.schedule import schedule
from graphc.printer import format_node, node_names


@dataclass
class Divergence:
    """The first value, in execution order, that a backend computes outside tolerance."""
    backend: str
    graph: Graph               # the graph the backend compiled (the optimized stage)
    step: Node | None          # the kernel (fused node), or the op when unfused
    step_index: int
    steps: int
    step_diff: T.Diff | None
    step_tol: T.Tol | None
    node: Node | None          # the first wrong op (inside the kernel), None if none alone
    node_diff: T.Diff | None = None
    node_tol: T.Tol | None = None
    body: Graph | None = None  # the kernel's body, when fused
    note: str = ""

    @property
    def kernel(self) -> str | None:
        if self.step is not None and self.step.op is Op.FUSED:
            return self.step.attrs["name"]
        return None

    @property
    def op(self) -> str | None:
        return self.node.op.value if self.node is not None else None

    @property
    def loc(self):
        n = self.node if self.node is not None else self.step
        return n.loc if n is not None else None

    def highlight(self) -> list[Node]:
        return [n for n in (self.step, self.node) if n is not None]

    def draw(self, path) -> Any:
        """The compiled graph with the kernel and the op drawn with a thick red border."""
        from graphc.viz import draw
        return draw(self.graph, path=path, highlight=self.highlight())

    def report(self) -> str:
        lines = [f"divergence on backend {self.backend!r}: "
                 + ("first value outside tolerance, in execution order" if self.step is not None
                    else "no single value")]
        if self.step is not None:
            names = node_names(self.graph)
            where = f"kernel {self.kernel} ({self.step.attrs['kind']})" if self.kernel \
                else f"op {self.step.op.value}"
            lines.append(f"  {where}: step {self.step_index + 1} of {self.steps}")
            lines.append(f"    {format_node(self.step, names)}")
            if self.step.loc:
                lines.append(f"    result at {self.step.loc}")
            lines.append(f"    error: {_fmt_diff(self.step_diff, self.step_tol)}")
        if self.node is not None:
            n = self.node
            ins = ", ".join(str(i.type) for i in n.inputs)
            inside = f"first wrong op inside kernel {self.kernel}" if self.kernel \
                else "the op itself"
            lines.append(f"  {inside} (run alone on the reference's inputs): "
                         f"{n.op.value}({ins}) -> {n.type}")
            if n.loc is not None:
                lines.append(f"    at {n.loc}" + (f"  ({n.loc.full})" if n.loc.full else ""))
            else:
                lines.append("    (no source line recorded)")
            lines.append(f"    error: {_fmt_diff(self.node_diff, self.node_tol)}")
            if self.body is not None:
                ops = [m.op.value + (" <-- here" if m is n else "")
                       for m in self.body.nodes if m.op not in (Op.INPUT, Op.CONST)]
                lines.append(f"    kernel body: {', '.join(ops)}")
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)

    __str__ = report


def _fmt_diff(d: T.Diff | None, t: T.Tol | None) -> str:
    if d is None:
        return "?"
    s = f"max abs {_num(d.max_abs)}, max rel {_num(d.max_rel)} ({d.bad} of {d.size} elements " \
        f"outside) > tolerance {t}"
    return s + (f"; {d.note}" if d.note else "")


def _probe(graph: Graph, outputs: Sequence[Node]) -> Graph:
    """`graph` with `outputs` as its outputs; a fused graph gets a fresh memory plan (every
    probed result is an output, so no block is reused while someone still reads it)."""
    g = Graph(graph.inputs, tuple(outputs), f"{graph.name}_probe")
    if any(n.op is Op.FUSED for n in outputs):
        g = schedule(g)
    return g


def _steps(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes if n.op not in (Op.INPUT, Op.CONST)]


def _isolate(step: Node, inputs: list[np.ndarray], backend) -> tuple[Node | None, T.Diff | None,
                                                                        T.Tol | None]:
    """The first op of `step` that the backend computes outside tolerance from exact inputs:
    each prefix of a kernel's body (cut after op j) is compiled as one kernel and run."""
    new_in = [input_node(f"in{i}", x.shape, x.dtype) for i, x in enumerate(step.inputs)]
    if step.op is not Op.FUSED:
        alone = step.replace(inputs=tuple(new_in))
        g = Graph(tuple(new_in), (alone,), f"probe_{step.op.value}")
        got = backend.compile(g)(*inputs)[0]
        want = interpret(g, *inputs)[0]
        t = cones(g)[id(alone)].tol(alone)
        d = T.diff(got, want, t)
        return (step, d, t) if not d.ok else (None, None, None)
    body: Graph = step.attrs["body"]
    cone_of = cones(body)
    _, env = interpret(body, *inputs, keep=True)
    for j in _steps(body):
        sub = Graph(body.inputs, (j,), step.attrs["name"])
        with at_loc(step.loc):
            k = apply(Op.FUSED, *new_in, body=sub, kind=kernel_kind(sub),
                      name=step.attrs["name"], reason=f"divergence probe: prefix up to {j.op.value}")
        g = schedule(Graph(tuple(new_in), (k,), f"probe_{step.attrs['name']}"))
        got = backend.compile(g)(*inputs)[0]
        t = cone_of[id(j)].tol(j)
        d = T.diff(got, env[id(j)], t)
        if not d.ok:
            return j, d, t
    return None, None, None


def find_divergence(fn_or_compiled, args, backend=None, *, passes: str | None = None,
                    tol=None) -> Divergence | None:
    """The first node, in execution order, whose value on `backend` is outside tolerance of the
    reference interpreter's value for the same node of the same graph (see the module doc).
    None when every kernel and every output agree. `fn_or_compiled`: a function, or a Compiled
    (its backend and passes are the defaults). `tol` forces a class name or Tol."""
    compiled = None
    if isinstance(fn_or_compiled, Compiled):
        fn = fn_or_compiled.fn
        if backend is None and passes is None:
            compiled = fn_or_compiled  # reuse its cache
        backend = fn_or_compiled.backend if backend is None else backend
        passes = fn_or_compiled.passes if passes is None else passes
    else:
        fn = fn_or_compiled
    if backend is None:
        raise GraphcError("find_divergence needs a backend", stage="compare")
    be = get_backend(backend)
    bname = getattr(be, "name", type(be).__name__)
    args = tuple(args)
    entry = (compiled or Compiled(fn, be, passes=passes)).lower(*args)
    graph = entry.stages["optimized"]
    arrays = flat_arrays(args)
    outs, env = interpret(graph, *arrays, keep=True)
    cone_of = cones(graph)
    steps = _steps(graph)
    # every kernel's result, kept
    probe = _probe(graph, steps)
    got = be.compile(probe)(*arrays) if steps else ()
    for i, (s, g) in enumerate(zip(steps, got)):
        t = _tol_for(s, cone_of, tol)
        d = T.diff(g, env[id(s)], t)
        if d.ok:
            continue
        node, nd, nt = _isolate(s, [env[id(x)] for x in s.inputs], be)
        note = ""
        if node is None:
            note = ("every op of this kernel is right when run alone on exact inputs: its "
                    "error is the amplification of smaller differences in its inputs "
                    "(ill-conditioned), or comes from how the ops interact in the full kernel")
        return Divergence(bname, graph, s, i, len(steps), d, t, node, nd, nt,
                          s.attrs["body"] if s.op is Op.FUSED else None, note)
    # every kernel agrees when its result is kept: do the real program's outputs?
    real = entry.program(*arrays)
    for k, (o, g, w) in enumerate(zip(graph.outputs, real, outs)):
        t = _tol_for(o, cone_of, tol)
        d = T.diff(g, w, t)
        if not d.ok:
            idx = next((i for i, s in enumerate(steps) if s is o), -1)
            if o.op in (Op.INPUT, Op.CONST):
                what = "input" if o.op is Op.INPUT else "constant"
                note = (f"output {k} is a graph {what} returned unchanged (no kernel computes "
                        f"it), and the backend returns it wrongly"
                        + (f": {d.note}" if d.note else ""))
            else:
                note = ("every kernel is right when its result is kept as an output, but the "
                        "program's outputs are not: buffers are reused or written in place "
                        "wrongly (the memory plan)" + (f"; {d.note}" if d.note else ""))
            return Divergence(bname, graph, o if idx >= 0 else None, idx, len(steps), d, t, None,
                              note=note)
    return None
