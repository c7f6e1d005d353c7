"""Lowering: a fused graph node -> a `graphc.kernel.Kernel` (a loop nest over flat buffers).

The one technique is index propagation. `value(node, idx)` is the expression for body node
`node` at the multi-index `idx` (one index expression per axis of node.shape):

  input       Load(in_j, flat(idx))
  views       rewrite idx and ask the source: reshape (flatten, unravel), permute (reorder),
              expand and broadcasting (size-1 source axes read index 0), slice (start + i*step)
  pad/concat  Select on the index being in range, loads at a clamped index (never out of
              bounds, even in the branch that is not taken)
  elementwise Unary / Binary / Select / CastE of the operands' values at the same idx
  sum/max     emits DefAcc and a loop nest over the reduced axes, returns AccRef
  matmul      emits DefAcc and a loop over k accumulating a[..., i, k] * b[..., k, j]
              (with row_order, the default, a matmul kernel with an elementwise epilogue and
              a reduction over leading axes are lowered in row order instead:
              graphc/lower_matmul.py; a backend that maps work-items to output elements
              asks for row_order=False)
  rand        RandE(key, flat index of idx in the rand node's own shape)

A kernel is then a loop nest over its root's shape storing value(root, idx) (two exceptions:
a matmul whose result is reshaped loops over the product's shape, and a root concat on an
axis other than 0 is one nest per part: graphc/lower_matmul.py): elementwise, view and
movement kernels need nothing else; a reduction (or matmul) met on the way emits
its inner loops right before the store, so its prologue (the reduced value) is computed
inside them and its epilogue around the AccRef. Nodes read more than once in a body are
bound once with `Let` (per index), so shared subexpressions are not recomputed.

Row reductions (fusion rule F6: softmax's max and sum, layer norm's mean and variance) are
read at an index that uses only the outer loop variables. Each loop level has its own scope,
and such a reduction is emitted in the scope of the innermost loop its index uses: once per
row, before the loop over the row's elements, which then finds the row in cache. When the
reduced operand is a computed value the output reads again at its own index (softmax's
exp(x - max)), the reduction's loop also stores it in the output row ("stash"), and the
row's elements load it instead of computing it twice:

    for i0:  m = max_r x[i0, r];  s = sum_r (out[i0, r] = exp(x[i0, r] - m));
             for i1:  out[i0, i1] = out[i0, i1] / s
"""
from __future__ import annotations

import numpy as np

from graphc.errors import NoRuleError
from graphc.ir import Graph, Node, apply, at_loc, input_node
from graphc import kernel as K
from graphc.ops import BINARY, CONTRACTIONS, ELEMENTWISE, REDUCE, Op, UNARY
from graphc.passes.fusion import INLINE_CONST_ELEMENTS, kernel_kind, row_reductions
from graphc.lower_matmul import RowMatmul, acc_init
from graphc.printer import format_node, node_names


class Scope:
    """One loop level while lowering: its statements, the values bound there (memo, keyed
    by (node id, index)) and the loop variable it binds (None for the kernel's top level)."""

    def __init__(self, var: str | None):
        self.stmts: list = []
        self.memo: dict = {}
        self.var = var


class _Lowerer(RowMatmul):
    def __init__(self, body: Graph, name: str, stash_ok: bool = True, row_order: bool = True):
        self.body, self.name, self.row_order = body, name, row_order
        self.users = {k: len({id(u) for u in v}) for k, v in body.users().items()}
        self.buffers: list[K.Buffer] = []
        self.buf_of: dict[int, K.Buffer] = {}
        for j, n in enumerate(body.inputs):
            b = K.Buffer(f"in{j}", n.shape, n.dtype, "in")
            self.buffers.append(b)
            self.buf_of[id(n)] = b
        self.consts: list[tuple[str, object]] = []
        self.ext: dict[str, int] = {}            # loop variable -> extent
        self.scopes: list[Scope] = []  # one per loop level, innermost last
        self.counts: dict[str, int] = {}
        self.out: K.Buffer | None = None
        self.root_vars: list | None = None   # the root loop nest's variables
        self.stash_ok = stash_ok             # may the output buffer hold a row's operand?
        self.stashed: int | None = None      # id of the body node kept in the output
        self.product: tuple | None = None    # (id of the contraction, output) in its epilogue

    def fresh(self, prefix: str) -> str:
        n = self.counts.get(prefix, 0)
        self.counts[prefix] = n + 1
        return f"{prefix}{n}"

    def emit(self, s) -> None:
        self.scopes[-1].stmts.append(s)

    def loops(self, prefix: str, shape, inner, parallel: bool = False) -> tuple[list, list]:
        """Build a loop nest over `shape`; `inner(vars)` emits the innermost body. Returns
        (statements, vars). The outermost loop is marked parallel if asked. Each loop level
        has its own scope, so a value that depends only on the outer variables (a row's
        reduction, see `value`) can be emitted once per outer iteration."""
        names = [self.fresh(prefix) for _ in shape]
        for v, s in zip(names, shape):
            self.ext[v] = s
        vars_ = [K.Var(v) for v in names]
        if not names:
            self.scopes.append(Scope(None))
            inner(vars_)
            return self.scopes.pop().stmts, vars_

        def level(d: int) -> K.Loop:
            self.scopes.append(Scope(names[d]))
            if d + 1 == len(names):
                inner(vars_)
            else:
                self.emit(level(d + 1))
            body = self.scopes.pop().stmts
            return K.Loop(names[d], int(shape[d]), tuple(body), parallel and d == 0)
        return [level(0)], vars_

    # ---- index helpers ----
    def flat(self, idx, shape) -> K.Index:
        return K.flat_index(idx, shape, self.ext)

    def unravel(self, f: K.Index, shape) -> list:
        out, stride = [], 1
        strides = []
        for s in reversed(shape):
            strides.append(stride)
            stride *= s
        strides.reverse()
        for d, (s, st) in enumerate(zip(shape, strides)):
            if s == 1:
                out.append(K.Const(0))
                continue
            q = K.floordiv(f, st, self.ext)
            out.append(q if d == 0 else K.mod(q, s, self.ext))
        return out

    @staticmethod
    def bcast(idx, src_shape) -> list:
        """The index into a source broadcast to idx's shape: leading axes dropped, size-1
        axes read element 0."""
        lead = len(idx) - len(src_shape)
        return [K.Const(0) if s == 1 else idx[lead + d] for d, s in enumerate(src_shape)]

    # ---- values ----
    def value(self, n: Node, idx) -> K.Value:
        key = (id(n), tuple(idx))
        for sc in reversed(self.scopes):
            if key in sc.memo:
                return sc.memo[key]
        if id(n) == self.stashed and list(idx) == self.root_vars:  # see `stashes`
            return K.Load(self.out, self.flat(idx, n.shape))
        if self.product and id(n) == self.product[0]:  # a row-order epilogue (lower_matmul):
            return K.Load(self.product[1], self.flat(idx, n.shape))  # the result is in the output
        if n.op in REDUCE:
            # a reduction whose index uses only outer loop variables (a row's max or sum,
            # broadcast back over the row) is computed once, in the scope of the innermost
            # loop it depends on, not once per element of the inner loops (fusion rule F6);
            # values bound in the inner scopes are out of its reach there
            free = set().union(*map(K.index_vars, idx))
            at = max((k for k, sc in enumerate(self.scopes) if sc.var in free), default=0)
            if at < len(self.scopes) - 1:
                inner = self.scopes[at + 1:]
                del self.scopes[at + 1:]
                try:
                    return self.value(n, idx)
                finally:
                    self.scopes.extend(inner)
        v = self.compute(n, idx)
        if n.op in CONTRACTIONS or (
                self.users.get(id(n), 0) > 1 and not isinstance(v, (K.Lit, K.Ref, K.AccRef))):
            if not isinstance(v, (K.AccRef, K.Lit)):
                name = self.fresh("t")
                self.emit(K.Let(name, v))
                v = K.Ref(name, v.dtype)
            self.scopes[-1].memo[key] = v
        return v

    def compute(self, n: Node, idx) -> K.Value:
        op, ins = n.op, n.inputs
        if op is Op.INPUT:
            b = self.buf_of[id(n)]
            return K.Load(b, self.flat(idx, n.shape))
        if op is Op.CONST:
            arr = n.attrs["value"].array
            if arr.ndim == 0:
                return K.Lit(arr.item(), n.dtype)
            name = next((nm for nm, c in self.consts if c == n.attrs["value"]), None)
            if name is None:
                name = f"c{len(self.consts)}"
                self.consts.append((name, n.attrs["value"]))
                self.buffers.append(K.Buffer(name, n.shape, n.dtype, "const"))
            b = next(b for b in self.buffers if b.name == name)
            return K.Load(b, self.flat(idx, n.shape))
        if op.value == "stop_gradient":  # identity at run time (only its derivative is zero)
            return self.value(ins[0], idx)
        if op is Op.CAST:
            x = self.value(ins[0], idx)
            return x if x.dtype is n.dtype else K.CastE(x, n.dtype)
        if op in UNARY:
            return K.Unary(op.value, self.value(ins[0], idx))
        if op in BINARY:
            a, b = (self.value(x, self.bcast(idx, x.shape)) for x in ins)
            return K.Binary(op.value, a, b)
        if op is Op.WHERE:
            c, a, b = (self.value(x, self.bcast(idx, x.shape)) for x in ins)
            return K.Select(c, a, b)
        if op is Op.EXPAND:
            return self.value(ins[0], self.bcast(idx, ins[0].shape))
        if op is Op.RESHAPE:
            return self.value(ins[0], self.unravel(self.flat(idx, n.shape), ins[0].shape))
        if op is Op.PERMUTE:
            src = [None] * len(idx)
            for d, p in enumerate(n.attrs["perm"]):
                src[p] = idx[d]
            return self.value(ins[0], src)
        if op is Op.SLICE:
            src = [K.add(K.Const(lo), K.mul(i, st))
                   for i, lo, st in zip(idx, n.attrs["starts"], n.attrs["steps"])]
            return self.value(ins[0], src)
        if op is Op.PAD:
            x = ins[0]
            src, checks = [], []
            for i, (lo, hi), s in zip(idx, n.attrs["pads"], x.shape):
                j = K.add(i, K.Const(-lo))
                if lo or hi:
                    checks.append((i, lo, lo + s))
                    j = K.clamp(j, 0, max(s - 1, 0), self.ext)
                src.append(j)
            pad = K.Lit(np.array(n.attrs["value"], n.dtype.np).item(), n.dtype)
            if x.type.size == 0:  # nothing to read: all padding
                return pad
            inner = self.value(x, src)
            return K.Select(K.InBounds(tuple(checks)), inner, pad) if checks else inner
        if op is Op.CONCAT:
            ax = n.attrs["axis"]
            parts, off = [], 0
            for x in ins:
                parts.append((x, off))
                off += x.shape[ax]
            parts = [(x, o) for x, o in parts if x.shape[ax] > 0]
            out = None
            for x, o in reversed(parts):
                src = list(idx)
                src[ax] = K.clamp(K.add(idx[ax], K.Const(-o)), 0, x.shape[ax] - 1, self.ext)
                v = self.value(x, src)
                if out is None:
                    out = v
                else:
                    out = K.Select(K.InBounds(((idx[ax], 0, o + x.shape[ax]),)), v, out)
            return out if out is not None else K.Lit(0, n.dtype)  # empty: never read
        if op in REDUCE:
            return self.reduce(n, idx)
        if op is Op.MATMUL:
            return self.matmul(n, idx)
        if op is Op.RAND:
            key = self.value(ins[0], [])
            return K.RandE(key, self.flat(idx, n.shape), n.attrs["dtype"])
        raise NoRuleError(f"no kernel lowering for {op.value}", stage="lower",
                          hint="add it to graphc/lower.py (_Lowerer.compute)")

    def reduce(self, n: Node, idx) -> K.Value:
        x = n.inputs[0]
        axes, keep = n.attrs["axes"], n.attrs["keepdims"]
        acc = self.fresh("acc")
        self.emit(K.DefAcc(acc, n.dtype, acc_init(n.op, n.dtype)))
        red_shape = [x.shape[a] for a in axes]

        def inner(rvars):
            src, r, o = [], iter(rvars), iter(idx)
            for a in range(len(x.shape)):
                if a in axes:
                    src.append(next(r))
                    if keep:
                        next(o)
                else:
                    src.append(next(o))
            v = self.value(x, src)
            if self.stashes(n, src):
                self.emit(K.Store(self.out, self.flat(src, x.shape), v))
                self.stashed = id(x)
            self.emit(K.Accumulate(acc, "sum" if n.op is Op.SUM else "max", v))
        body, _ = self.loops("r", red_shape, inner)
        for s in body:
            self.emit(s)
        return K.AccRef(acc, n.dtype)

    def stashes(self, n: Node, src) -> bool:
        """Should row reduction n keep its operand, computed at `src`, in the output buffer?
        When the operand is a computed value shaped like the output that the root reads
        again elementwise (softmax's exp(x - max), read by the sum and by the division),
        the row's elements then load it instead of computing it a second time. Not when the
        output may share memory with an input (in place, donated): the stash would
        overwrite the row before it is read."""
        x = n.inputs[0]
        lead = len(x.shape) - len(n.attrs["axes"])
        return (self.stash_ok and self.stashed is None and self.root_vars is not None
                and x.op in ELEMENTWISE and self.users.get(id(x), 0) > 1
                and x.shape == self.out.shape and x.dtype is self.out.dtype
                and list(src[:lead]) == self.root_vars[:lead])

    def matmul(self, n: Node, idx) -> K.Value:
        a, b = n.inputs
        acc = self.fresh("acc")
        self.emit(K.DefAcc(acc, n.dtype, acc_init(n.op, n.dtype)))
        batch, i, j = list(idx[:-2]), idx[-2], idx[-1]

        def inner(kv):
            (k,) = kv
            va = self.value(a, self.bcast(batch, a.shape[:-2]) + [i, k])
            vb = self.value(b, self.bcast(batch, b.shape[:-2]) + [k, j])
            self.emit(K.Accumulate(acc, "sum", K.Binary("mul", va, vb)))
        body, _ = self.loops("k", [a.shape[-1]], inner)
        for s in body:
            self.emit(s)
        return K.AccRef(acc, n.dtype)

    def kernel(self, kind: str, provenance) -> K.Kernel:
        root = self.body.outputs[0]
        out = K.Buffer("out", root.shape, root.dtype, "out")
        self.buffers.append(out)
        if self.row_order and ((kind == "matmul" and len(root.shape) >= 2) or kind == "reduce"):
            body = self.row_matmul(out) if kind == "matmul" else self.column_reduce(out)
            if body is not None:
                return K.Kernel(self.name, tuple(self.buffers), tuple(body), kind,
                                tuple(provenance), tuple(self.consts))

        def inner(vars_):
            # size-1 axes index 0, as `bcast` reads them: the hoisted reductions and the
            # stash are then found under the same memo keys as the root's own reads
            self.root_vars = self.bcast(vars_, root.shape)
            for n in row_reductions(self.body):  # hoisted first: see `reduce` (stash)
                self.value(n, self.bcast(self.root_vars, n.shape))
            self.emit(K.Store(out, self.flat(vars_, root.shape), self.value(root, vars_)))

        def by_product(vars_):  # loops over the product's shape, the root at that position
            at = self.flat(vars_, mm.shape)
            self.emit(K.Store(out, at, self.value(root, self.unravel(at, root.shape))))
        self.out = out
        self.scopes.append(Scope(None))  # the kernel's top level (a scalar root stores here)
        mm = self.reshaped_product() if kind == "matmul" else None
        if (kind in ("elementwise", "movement") and root.op is Op.CONCAT
                and len(root.shape) >= 2 and root.attrs["axis"] != 0):
            par = self.parallel_axis(root)
            body, _ = self.loops("i", root.shape[par:par + 1],
                                 lambda v: self.concat_parts(root, out, v, par), parallel=True)
        elif mm is not None:  # the nest of a matmul (what backends block), not the reshape's
            body, _ = self.loops("i", mm.shape, by_product, parallel=True)
        else:
            body, _ = self.loops("i", root.shape, inner, parallel=True)
        top = self.scopes.pop().stmts + body
        return K.Kernel(self.name, tuple(self.buffers), tuple(top), kind, tuple(provenance),
                        tuple(self.consts))


def lower_kernel(fused: Node, names: dict | None = None, row_order: bool = True) -> K.Kernel:
    """The kernel for one fused node; `names` (the outer graph's node names) makes the
    provenance lines match the printed graph. `row_order=False` keeps one accumulator per
    output element for matmuls and reductions over leading axes, instead of the row-order
    loops of graphc/lower_matmul.py that suit a CPU thread walking rows (for a backend that
    maps work-items to output elements)."""
    body = fused.attrs["body"]
    bnames = node_names(body)
    head = format_node(fused, names or {})
    prov = [head + (f"  @ {fused.loc}" if fused.loc else "")]
    prov += ["  " + format_node(n, bnames) + (f"  @ {n.loc}" if n.loc else "")
             for n in body.nodes if n.op is not Op.INPUT]
    stash_ok = not fused.attrs.get("inplace", False) and "donated" not in fused.attrs
    k = _Lowerer(body, fused.attrs["name"], stash_ok, row_order).kernel(fused.attrs["kind"], prov)
    return K.verify(k)


def as_kernels(graph: Graph) -> Graph:
    """A graph whose ops are not fused (the pipeline ran with passes="-fusion"): every op
    becomes its own one-op kernel, so a kernel backend can run it. Fused graphs pass through."""
    if all(n.op in (Op.INPUT, Op.CONST, Op.FUSED) for n in graph.nodes):
        return graph
    new: dict[int, Node] = {}
    count = 0
    for n in graph.nodes:
        if n.op in (Op.INPUT, Op.CONST, Op.FUSED):
            new[id(n)] = n if n.op is not Op.FUSED else n.replace(
                inputs=tuple(new[id(i)] for i in n.inputs))
            continue
        ext, body_ins, inner = [], [], []
        for i in n.inputs:
            if i.op is Op.CONST and i.type.size <= INLINE_CONST_ELEMENTS:
                inner.append(i)
                continue
            with at_loc(i.loc):
                bi = input_node(f"in{len(ext)}", i.shape, i.dtype)
            ext.append(new[id(i)])
            body_ins.append(bi)
            inner.append(bi)
        root = n.replace(inputs=tuple(inner))
        body = Graph(tuple(body_ins), (root,), f"k{count}")
        with at_loc(n.loc):
            new[id(n)] = apply(Op.FUSED, *ext, body=body, kind=kernel_kind(body),
                               name=f"k{count}", reason="one op (fusion off)")
        count += 1
    return Graph(graph.inputs, tuple(new[id(o)] for o in graph.outputs), graph.name,
                 graph.output_names)
