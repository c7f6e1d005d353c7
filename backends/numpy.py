"""The NumPy backend: renders a graph as readable Python source, one statement per node,
each annotated with the node it came from and the user's line, and runs it with exec()
under a recognisable file name (so tracebacks and linecache show the generated code).
"""
from __future__ import annotations

import hashlib
import linecache
import re

import numpy as np

from graphc.errors import GraphcError
from graphc.interpret import check_args
from graphc.ir import Graph, Node, register_internal_dir
from graphc.ops import Op, ref_rand
from graphc.printer import format_node, node_names, format_value
from graphc.types import DType

register_internal_dir(__file__)

def _np_dtype(dtype) -> str:
    return "np.bool_" if dtype.name == "bool" else f"np.{dtype.name}"


def _slices(starts, stops, steps) -> str:
    parts = []
    for lo, hi, st in zip(starts, stops, steps):
        s = f"{lo or ''}:{hi}" + (f":{st}" if st != 1 else "")
        parts.append(s)
    return ", ".join(parts) + ("," if len(parts) == 1 else "")


def _lit(v) -> str:
    """A Python literal for a scalar; inf and nan have none (repr gives a bare `inf`)."""
    if isinstance(v, float) and not np.isfinite(v):
        return f"float({str(v)!r})"
    return repr(v)


def _pad(x, pads, value):
    """Constant padding: fill, then copy the interior (several times faster than np.pad)."""
    x = np.asarray(x)
    out = np.full(tuple(s + lo + hi for s, (lo, hi) in zip(x.shape, pads)), value, x.dtype)
    out[tuple(slice(lo, lo + s) for s, (lo, _) in zip(x.shape, pads))] = x
    return out


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
    Op.STOP_GRADIENT: lambda n, a: a[0],  # identity at run time
    Op.SUM: lambda n, a: (f"np.sum({a[0]}, axis={format_value(n.attrs['axes'])}, "
                          f"keepdims={n.attrs['keepdims']}, dtype={_np_dtype(n.dtype)})"),
    Op.MAX: lambda n, a: (f"np.max({a[0]}, axis={format_value(n.attrs['axes'])}, "
                          f"keepdims={n.attrs['keepdims']})"),
    Op.RESHAPE: lambda n, a: f"np.reshape({a[0]}, {format_value(n.attrs['shape'])})",
    Op.PERMUTE: lambda n, a: f"np.transpose({a[0]}, {format_value(n.attrs['perm'])})",
    Op.EXPAND: lambda n, a: f"np.broadcast_to({a[0]}, {format_value(n.attrs['shape'])})",
    Op.SLICE: lambda n, a: f"{a[0]}[{_slices(n.attrs['starts'], n.attrs['stops'], n.attrs['steps'])}]",
    Op.PAD: lambda n, a: f"_pad({a[0]}, {format_value(n.attrs['pads'])}, {_lit(n.attrs['value'])})",
    Op.CONCAT: lambda n, a: f"np.concatenate(({', '.join(a)},), axis={n.attrs['axis']})",
    # the one definition of the counter-based generator lives in graphc.ops
    Op.RAND: lambda n, a: (f"_rand({a[0]}, shape={format_value(n.attrs['shape'])}, "
                           f"dtype=_DType.{n.attrs['dtype'].name})"),
}
# INPUT, CONST and FUSED (its body) are handled by the render loop; GRAD never reaches a backend.
NOT_LOWERED = {Op.INPUT, Op.CONST, Op.GRAD, Op.FUSED}


def _ident(name: str) -> str:
    s = re.sub(r"\W", "_", name)
    reserved = ("np", "_idiv", "_pad", "_consts", "_rand", "_DType")
    return s if s.isidentifier() and s not in reserved else f"in_{s}"


class NumpyProgram:
    """A compiled graph: `source` is the generated Python; calling it checks the arguments
    against the graph's input types, then runs the generated function."""

    def __init__(self, graph: Graph, source: str, fn, filename: str, line_nodes: dict[int, Node]):
        self.graph, self.source, self._fn = graph, source, fn
        self.filename, self._line_nodes = filename, line_nodes
        # arguments the program writes into (donated, memory-plan rule M5)
        self._donated = sorted({n.attrs["donated"] for n in graph.nodes
                                if n.op is Op.FUSED and "donated" in n.attrs})

    def __call__(self, *arrays):
        args = check_args(self.graph, arrays)
        for k in self._donated:  # only overwrite what can safely be overwritten
            a = args[k]
            if (not a.flags.writeable or not a.flags.c_contiguous
                    or any(b is a for j, b in enumerate(args) if j != k)):
                args[k] = a.copy()
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


# ufunc-backed ops can write into a given buffer (`out=`); others allocate their result
_OUT_OK = {op for op, fn in _FUNCS.items() if fn not in ("np.where",)} | {Op.SUM, Op.MAX}
_FRESH = (set(_FUNCS) | {Op.SUM, Op.MAX, Op.CAST, Op.PAD, Op.CONCAT, Op.DIV, Op.RAND}) - {Op.WHERE}
_VIEW = {Op.RESHAPE, Op.PERMUTE, Op.EXPAND, Op.SLICE}


class _Stmt:
    __slots__ = ("var", "node", "args", "expr", "comment", "fresh", "out")

    def __init__(self, var, node, args, expr, comment):
        self.var, self.node, self.args, self.expr, self.comment = var, node, args, expr, comment
        self.fresh = node.op in _FRESH and node.shape != ()  # a new array nobody else sees
        self.out = None


class NumpyBackend:
    """Options: `inplace` (reuse dying temporaries with out=), `arena` (honour the memory
    plan of the scheduled stage), `poison` (fill arena blocks with NaN once they die: a
    test of the plan)."""
    name = "numpy"

    def __init__(self, inplace: bool = True, arena: bool = True, poison: bool = False):
        self.inplace, self.arena, self.poison = inplace, arena, poison

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
        stmts: list = []  # _Stmt, or ("kernel", node) comment lines
        literals: set[str] = set()

        def emit(g: Graph, vmap: dict[int, str], prefix: str, gnames):
            for n in g.nodes:
                if n.op is Op.INPUT:
                    continue
                v = f"{prefix}{gnames[id(n)][1:]}"
                if n.op is Op.FUSED:
                    body = n.attrs["body"]
                    stmts.append(("kernel", n))
                    bmap = {id(b): vmap[id(x)] for b, x in zip(body.inputs, n.inputs)}
                    emit(body, bmap, f"{n.attrs['name']}_", node_names(body))
                    last = stmts[-1]
                    vmap[id(n)] = bmap[id(body.outputs[0])]
                    if isinstance(last, _Stmt) and last.node is body.outputs[0]:
                        last.var = v  # the kernel's result takes the outer name
                        vmap[id(n)] = v
                        if n.attrs.get("buffer", -1) >= 0 and self.arena:
                            last.out = (n.attrs["buffer"], n.type)
                        elif "donated" in n.attrs and self.arena:  # M5: into the argument
                            last.out = ("donated", var[id(graph.inputs[n.attrs["donated"]])])
                    continue
                if n.op is Op.CONST:
                    arr = n.attrs["value"].array
                    if arr.ndim == 0:  # scalars are written into the expressions that use them
                        vmap[id(n)] = f"{_np_dtype(n.dtype)}({_lit(arr.item())})"
                        literals.add(vmap[id(n)])
                        continue
                    expr = f"_consts[{v!r}]"
                    consts[v] = arr
                    args = []
                else:
                    args = [vmap[id(x)] for x in n.inputs]
                    expr = None
                comment = format_node(n, gnames) + (f"  @ {n.loc}" if n.loc else "")
                st = _Stmt(v, n, args, expr, comment)
                stmts.append(st)
                vmap[id(n)] = v

        emit(graph, var, "v", names)
        code = [s for s in stmts if isinstance(s, _Stmt)]
        # temporaries stop being private once a view of them exists
        viewed = {a for s in code if s.node.op in _VIEW for a in s.args}
        last_use: dict[str, int] = {}
        for i, s in enumerate(code):
            for a in s.args:
                last_use[a] = i
        keep = {var[id(o)] if id(o) in var else None for o in graph.outputs}
        keep |= {var[id(n)] for n in graph.inputs}
        fresh = {}
        lines, line_nodes = [], {}
        header = [f"# generated by graphc's numpy backend from graph {graph.name!r}",
                  "# each statement: the node it computes and the user's line it came from"]
        arena_bytes = max((s.out[0] + s.out[1].nbytes for s in code
                           if s.out and s.out[0] != "donated" and s.node.op in _OUT_OK
                           and s.node.shape != ()), default=0)
        if arena_bytes:
            lines.append(f"    _arena = np.empty({arena_bytes}, np.uint8)  # the memory plan")
        block_of: dict[str, tuple[int, int]] = {}
        idx = 0
        for s in stmts:
            if not isinstance(s, _Stmt):
                k = s[1]
                lines.append(f"    # kernel {k.attrs['name']} ({k.attrs['kind']}): "
                             f"{k.attrs['reason'][:150]}")
                continue
            n = s.node
            expr = s.expr if s.expr is not None else LOWER[n.op](n, s.args)
            target = None
            if s.out and s.out[0] == "donated":
                if n.op in _OUT_OK and n.shape != ():
                    target = s.out[1]
            elif s.out and n.op in _OUT_OK and n.shape != ():
                off, t = s.out
                target = f"_arena[{off}:{off + t.nbytes}].view({_np_dtype(t.dtype)}).reshape({format_value(t.shape)})"
                block_of[s.var] = (off, t.nbytes)
            elif self.inplace and n.op in _OUT_OK and n.op not in (Op.SUM, Op.MAX) and n.shape != ():
                for a in s.args:  # reuse a private temporary that dies here
                    # never an arena block: the plan frees it after `a`'s last use, so a
                    # value written into it must not outlive `a` (it may be an output)
                    if (fresh.get(a) is not None and last_use.get(a) == idx and a not in viewed
                            and a not in keep and a not in block_of and fresh[a] == n.type):
                        target = a
                        break
            if target is not None:
                expr = expr[:-1] + f", out={target})"
                if target in block_of:  # the block now holds the new value
                    block_of[s.var] = block_of.pop(target)
            fresh[s.var] = n.type if (s.fresh and s.var not in viewed) else None
            if target in fresh:
                fresh[s.var] = n.type
            if n.op in _VIEW and s.args and s.args[0] in block_of:
                block_of[s.var] = block_of[s.args[0]]  # a view keeps its base's block alive
            lines.append(f"    {s.var} = {expr}  # {s.comment}")
            line_nodes[len(header) + 1 + len(lines)] = n
            dead = [a for a in dict.fromkeys(s.args)
                    if last_use.get(a) == idx and a not in keep and a not in literals]
            if dead:
                lines.append(f"    del {', '.join(dead)}")
                if self.poison:
                    for a in dead:
                        o, nb = block_of.pop(a, (None, 0))
                        if o is not None and not any(o < o2 + n2 and o2 < o + nb
                                                     for o2, n2 in block_of.values()):
                            lines.append(f"    _arena[{o}:{o + nb}] = 0xFF  # poison: {a} died")
            idx += 1
        outs = ", ".join(var[id(o)] for o in graph.outputs)
        sig = ", ".join(var[id(n)] for n in graph.inputs)
        src = "\n".join(header + [f"def {graph.name}({sig}):"] + lines +
                        [f"    return ({outs}{',' if len(graph.outputs) == 1 else ''})", ""])
        return src, consts, line_nodes

    def compile(self, graph: Graph) -> NumpyProgram:
        src, consts, line_nodes = self.render(graph)
        digest = hashlib.sha1(src.encode()).hexdigest()[:10]
        filename = f"<graphc:numpy:{graph.name}:{digest}>"
        linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
        scope = {"np": np, "_idiv": _idiv, "_pad": _pad, "_consts": consts, "_rand": ref_rand,
                 "_DType": DType}
        exec(compile(src, filename, "exec"), scope)  # noqa: S102 - our own generated code
        return NumpyProgram(graph, src, scope[graph.name], filename, line_nodes)
