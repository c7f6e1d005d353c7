"""The NumPy backend: renders a graph as readable Python source, one statement per node,
each annotated with the node it came from and the user's line, and runs it with exec()
under a recognisable file name (so tracebacks and linecache show the generated code).
"""
from __future__ import annotations

import hashlib
import linecache
import re
import sys

import numpy as np

from graphc.errors import GraphcError
from graphc.interpret import check_args
from graphc.ir import Graph, Node, register_internal_dir
from graphc.ops import Op, ref_rand
from graphc.printer import format_node, node_names, format_value
from graphc.types import DType

register_internal_dir(__file__)

INLINE_CONST_ELEMENTS = 1  # constants up to this size are written into the source


def _np_dtype(dtype) -> str:
    return "np.bool_" if dtype.name == "bool" else f"np.{dtype.name}"


def _slices(starts, stops, steps) -> str:
    parts = []
    for lo, hi, st in zip(starts, stops, steps):
        s = f"{lo or ''}:{hi}" + (f":{st}" if st != 1 else "")
        parts.append(s)
    return ", ".join(parts) + ("," if len(parts) == 1 else "")


def _idiv(a, b):
    """Integer division truncating toward zero, as C and the compiled backends do."""
    return (np.sign(a) * np.sign(b) * (np.abs(a) // np.maximum(np.abs(b), 1))).astype(a.dtype)


_FUNCS = {Op.NEG: "np.negative", Op.EXP: "np.exp", Op.LOG: "np.log", Op.SQRT: "np.sqrt",
          Op.SIN: "np.sin", Op.COS: "np.cos", Op.TANH: "np.tanh", Op.ABS: "np.abs",
          Op.SIGN: "np.sign", Op.RECIP: "np.reciprocal", Op.ADD: "np.add", Op.SUB: "np.subtract",
          Op.MUL: "np.multiply", Op.POW: "np.power", Op.MAXIMUM: "np.maximum",
          Op.MINIMUM: "np.minimum", Op.LT: "np.less", Op.LE: "np.less_equal",
          Op.GT: "np.greater", Op.GE: "np.greater_equal", Op.EQ: "np.equal",
          Op.NE: "np.not_equal", Op.WHERE: "np.where", Op.MATMUL: "np.matmul"}


def _call(fn):
    return lambda n, a: f"{fn}({', '.join(a)})"


# One lowering per op: (node, argument expressions) -> expression.
LOWER = {
    **{op: _call(fn) for op, fn in _FUNCS.items()},
    Op.DIV: lambda n, a: f"{'_idiv' if n.dtype.is_int else 'np.divide'}({a[0]}, {a[1]})",
    Op.CAST: lambda n, a: f"np.asarray({a[0]}).astype({_np_dtype(n.attrs['dtype'])})",
    Op.SUM: lambda n, a: (f"np.sum({a[0]}, axis={format_value(n.attrs['axes'])}, "
                          f"keepdims={n.attrs['keepdims']}, dtype={_np_dtype(n.dtype)})"),
    Op.MAX: lambda n, a: (f"np.max({a[0]}, axis={format_value(n.attrs['axes'])}, "
                          f"keepdims={n.attrs['keepdims']})"),
    Op.RESHAPE: lambda n, a: f"np.reshape({a[0]}, {format_value(n.attrs['shape'])})",
    Op.PERMUTE: lambda n, a: f"np.transpose({a[0]}, {format_value(n.attrs['perm'])})",
    Op.EXPAND: lambda n, a: f"np.broadcast_to({a[0]}, {format_value(n.attrs['shape'])})",
    Op.SLICE: lambda n, a: f"{a[0]}[{_slices(n.attrs['starts'], n.attrs['stops'], n.attrs['steps'])}]",
    Op.PAD: lambda n, a: (f"np.pad({a[0]}, {format_value(n.attrs['pads'])}, "
                          f"constant_values={n.attrs['value']!r})"),
    Op.CONCAT: lambda n, a: f"np.concatenate(({', '.join(a)},), axis={n.attrs['axis']})",
    # the one definition of the counter-based generator lives in graphc.ops
    Op.RAND: lambda n, a: (f"_rand({a[0]}, shape={format_value(n.attrs['shape'])}, "
                           f"dtype=_DType.{n.attrs['dtype'].name})"),
}
# INPUT and CONST are handled by the render loop; GRAD never reaches a backend.
NOT_LOWERED = {Op.INPUT, Op.CONST, Op.GRAD}


def _ident(name: str) -> str:
    s = re.sub(r"\W", "_", name)
    reserved = ("np", "_idiv", "_consts", "_rand", "_DType")
    return s if s.isidentifier() and s not in reserved else f"in_{s}"


class NumpyProgram:
    """A compiled graph: `source` is the generated Python; calling it checks the arguments
    against the graph's input types, then runs the generated function."""

    def __init__(self, graph: Graph, source: str, fn, filename: str, line_nodes: dict[int, Node]):
        self.graph, self.source, self._fn = graph, source, fn
        self.filename, self._line_nodes = filename, line_nodes

    def __call__(self, *arrays):
        args = check_args(self.graph, arrays)
        try:
            with np.errstate(all="ignore"):  # IEEE inf/nan, like the compiled backends
                outs = self._fn(*args)
        except Exception as e:
            node = self._failing_node(e)
            if node is None:
                raise
            names = node_names(self.graph)
            raise GraphcError(f"{type(e).__name__}: {e}", stage="run (numpy)",
                              node=format_node(node, names),
                              loc=node.loc.full if node.loc else None) from e
        return tuple(np.asarray(o) for o in outs)

    def _failing_node(self, e):
        tb = e.__traceback__
        node = None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == self.filename:
                node = self._line_nodes.get(tb.tb_lineno)
            tb = tb.tb_next
        return node


class NumpyBackend:
    name = "numpy"

    def available(self):
        return True, f"numpy {np.__version__}"

    def render(self, graph: Graph) -> tuple[str, dict, dict[int, Node]]:
        names = node_names(graph)
        var: dict[int, str] = {}
        consts: dict[str, np.ndarray] = {}
        used = set()
        for n in graph.inputs:
            v = _ident(n.attrs["name"])
            while v in used:
                v += "_"
            used.add(v)
            var[id(n)] = v
        # liveness: free each intermediate after its last use (keeps peak memory down)
        order = [n for n in graph.nodes if n.op is not Op.INPUT]
        last_use: dict[int, int] = {}
        for i, n in enumerate(order):
            for x in n.inputs:
                last_use[id(x)] = i
        keep = {id(o) for o in graph.outputs} | {id(n) for n in graph.inputs}

        header = [f"# generated by graphc's numpy backend from graph {graph.name!r}",
                  "# each statement: the node it computes and the user's line it came from"]
        sig = ", ".join(var[id(n)] for n in graph.inputs)
        body, line_nodes = [], {}
        lineno = len(header) + 1 + 1  # first body line (after the def)
        for i, n in enumerate(order):
            v = f"v{names[id(n)][1:]}"
            var[id(n)] = v
            if n.op is Op.CONST:
                arr = n.attrs["value"].array
                if arr.size <= INLINE_CONST_ELEMENTS and arr.ndim == 0:
                    expr = f"{_np_dtype(n.dtype)}({arr.item()!r})"
                else:
                    expr = f"_consts[{v!r}]"
                    consts[v] = arr
            else:
                expr = LOWER[n.op](n, [var[id(x)] for x in n.inputs])
            comment = format_node(n, names) + (f"  @ {n.loc}" if n.loc else "")
            body.append(f"    {v} = {expr}  # {comment}")
            line_nodes[lineno] = n
            lineno += 1
            dead = [var[id(x)] for x in dict.fromkeys(n.inputs, None)
                    if last_use.get(id(x)) == i and id(x) not in keep]
            if dead:
                body.append(f"    del {', '.join(dead)}")
                lineno += 1
        outs = ", ".join(var[id(o)] for o in graph.outputs)
        src = "\n".join(header + [f"def {graph.name}({sig}):"] + body +
                        [f"    return ({outs}{',' if len(graph.outputs) == 1 else ''})", ""])
        return src, consts, line_nodes

    def compile(self, graph: Graph) -> NumpyProgram:
        src, consts, line_nodes = self.render(graph)
        digest = hashlib.sha1(src.encode()).hexdigest()[:10]
        filename = f"<graphc:numpy:{graph.name}:{digest}>"
        linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
        scope = {"np": np, "_idiv": _idiv, "_consts": consts, "_rand": ref_rand, "_DType": DType}
        exec(compile(src, filename, "exec"), scope)  # noqa: S102 - our own generated code
        return NumpyProgram(graph, src, scope[graph.name], filename, line_nodes)
