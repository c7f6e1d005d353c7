"""Loop orders other than one accumulator per output element (a mixin of graphc.lower's
`_Lowerer`): a matmul kernel's inner loop streams rows of b and of the output (contiguous,
vectorisable) instead of striding down a column of b, and a reduction over leading axes adds
whole rows of its operand into the output row, then the epilogue runs over the output in
place; a matmul whose result is reshaped loops over the product's shape; a concatenation
loops over each part, in parallel over a long axis. The LLVM
backend runs the kernels of this shape on its packed GEMM (backends/llvm_gemm.py, which
recognises the nest) or, small, as loops with the output row held in registers."""
from __future__ import annotations

import numpy as np

from graphc import kernel as K
from graphc.ir import Node
from graphc.ops import ELEMENTWISE, REDUCE, Op


SPLIT_COLUMNS_WORK = 1 << 20  # multiply-adds from which a one-row product's columns are split
                              # into parts of at most 256 (`RowMatmul.row_matmul`); a backend
                              # may spread kernels over threads from the same work


def acc_init(op: Op, dtype):
    """The accumulator's start: 0 for sums and matmuls, the lowest value for max."""
    if op is Op.MAX:
        return float("-inf") if dtype.is_float else int(np.iinfo(dtype.np).min)
    return 0.0 if dtype.is_float else 0


def _tile(n: int, target: int) -> int:
    """The largest divisor of n not above target (loop extents stay static, no remainders)."""
    return next(d for d in range(min(n, target), 0, -1) if n % d == 0) if n else 1


def epilogue_keeps_order(body, node) -> bool:
    """Is every op after `node` in the kernel body elementwise over the root's size, or a
    reshape (which keeps element order)? Then the root's element at each flat position is
    a function of the node's element at the same position (an epilogue in place)."""
    root, after = body.outputs[0], {id(node)}
    for n in body.nodes:
        if any(id(i) in after for i in n.inputs):
            if n.op is not Op.RESHAPE and (n.op not in ELEMENTWISE
                                           or n.type.size != root.type.size):
                return False
            after.add(id(n))
    return True


class RowMatmul:
    """`row_matmul`, `parallel_axis`, `column_reduce`, `reshaped_product` and `concat_parts`,
    for a lowerer with `body`, `value`, `loops`, `emit`, `flat`, `unravel`, `bcast`,
    `fresh` and `product` (graphc.lower._Lowerer)."""

    def row_matmul(self, out: K.Buffer) -> list | None:
        """A matmul kernel in loop order (batch..., i) k j, accumulating into the output
        row: the inner loop streams rows of b and out (contiguous, vectorisable) instead of
        striding down a column of b. Then the epilogue runs over the row in place. Only when
        the epilogue reads the product elementwise at its own position (through reshapes,
        which keep element order: a weight gradient reshaped to the weight's shape for its
        SGD update) and keeps its dtype; None otherwise (the caller falls back to one
        accumulator per output element)."""
        root = self.body.outputs[0]
        mms = [n for n in self.body.nodes if n.op is Op.MATMUL]
        if (len(mms) != 1 or mms[0].dtype is not root.dtype or len(mms[0].shape) < 2
                or mms[0].type.size != root.type.size):
            return None
        mm = mms[0]
        if not epilogue_keeps_order(self.body, mm):
            return None
        a, b = mm.inputs
        zero = K.Lit(acc_init(Op.MATMUL, mm.dtype), mm.dtype)
        M, N, KK = mm.shape[-2], mm.shape[-1], a.shape[-1]
        bi, bk, bj = _tile(M, 16), _tile(KK, 128), _tile(N, 256)
        nbatch = int(np.prod(mm.shape[:-2], dtype=np.int64))
        # one row block in all (an inference batch of 1: a matrix-vector product): the
        # parallel loop runs over parts of the columns (bw wide) instead, so the threads
        # share the work. Each k block of 8 rows then streams its rows across the part, 64
        # columns at a time (a row a CPU backend can keep in registers over the k loop).
        # Full rows are read fastest (784x512 on one thread: 29 us against 36 us in two
        # 256-wide parts and 42 us in 64-wide column blocks down all of k), so a product
        # under SPLIT_COLUMNS_WORK has one part of all N columns.
        by_cols = nbatch * (M // bi) < 2 and _tile(N, 64) < N
        bw = N
        if by_cols:
            bj, bk = _tile(N, 64), _tile(KK, 8)
            if M * N * KK >= SPLIT_COLUMNS_WORK:
                bw = bj * _tile(N // bj, max(1, 256 // bj))  # a multiple of bj, <= 256

        def block(outer):  # outer = [column part] + batch... + [row block]
            part = outer[0] if by_cols else None
            outer = outer[1:] if by_cols else outer
            batch = list(outer[:-1])
            row = lambda ii: K.add(K.mul(outer[-1], bi), ii)  # noqa: E731
            at = lambda ii, j: self.flat(batch + [row(ii), j], mm.shape)  # noqa: E731
            col = (lambda jv: K.add(K.mul(part, bw), jv)) if by_cols else (lambda jv: jv)

            def nest(prefixes, shape, inner):
                for s in self.loops(prefixes, shape, inner)[0]:
                    self.emit(s)
            nest("j", [bi, bw], lambda v: self.emit(K.Store(out, at(v[0], col(v[1])), zero)))

            def tile(v):  # one (k block, j block) tile for every row of the row block
                kb, jb, ii, kk = v
                i, k = row(ii), K.add(K.mul(kb, bk), kk)
                va = self.value(a, self.bcast(batch, a.shape[:-2]) + [i, k])
                if not isinstance(va, (K.Ref, K.Lit)):
                    name = self.fresh("t")
                    self.emit(K.Let(name, va))
                    va = K.Ref(name, va.dtype)

                def inner(jv):
                    j = col(K.add(K.mul(jb, bj), jv[0]))
                    vb = self.value(b, self.bcast(batch, b.shape[:-2]) + [k, j])
                    self.emit(K.Store(out, at(ii, j), K.Binary(
                        "add", K.Load(out, at(ii, j)), K.Binary("mul", va, vb))))
                nest("j", [bj], inner)
            nest("k", [KK // bk, bw // bj, bi, bk], tile)
            if root is not mm:
                def epilogue(v):
                    idx = batch + [row(v[0]), col(v[1])]
                    if root.shape != mm.shape:  # the root's index of the same position
                        idx = self.unravel(at(v[0], col(v[1])), root.shape)
                    self.emit(K.Store(out, at(v[0], col(v[1])), self.value(root, idx)))
                self.product = (id(mm), out)
                nest("j", [bi, bw], epilogue)
                self.product = None
        shape = ((N // bw,) if by_cols else ()) + mm.shape[:-2] + (M // bi,)
        return self.loops("i", shape, block, parallel=True)[0]

    def column_reduce(self, out: K.Buffer) -> list | None:
        """A reduction over leading axes (a bias gradient: the sum over the batch) in row
        order: the output row starts at the initial value, each row of the operand is added
        (or max-ed) into it, then the epilogue runs over it in place. The inner loop walks
        a row of the operand and the output contiguously (vectorisable); one accumulator per
        output element instead walked a column, a stride of a whole row per step (W3's
        31 bias gradients of 32x512: 20 us each). None when the kernel is not that shape."""
        root = self.body.outputs[0]
        reds = [n for n in self.body.nodes if n.op in REDUCE]
        if len(reds) != 1:
            return None
        red = reds[0]
        x = red.inputs[0]
        axes = sorted(red.attrs["axes"])
        lead = len(axes)
        if (axes != list(range(lead)) or lead == len(x.shape) or not red.dtype.is_float
                or red.dtype is not root.dtype or red.type.size != root.type.size):
            return None
        if not epilogue_keeps_order(self.body, red):
            return None
        tail = x.shape[lead:]
        init = K.Lit(acc_init(red.op, red.dtype), red.dtype)
        step = "maximum" if red.op is Op.MAX else "add"
        at = lambda t: self.flat(t, tail)  # noqa: E731  (the output's flat position)

        def nest(prefix, shape, inner):
            for s in self.loops(prefix, shape, inner)[0]:
                self.emit(s)

        def body(_):
            nest("j", tail, lambda t: self.emit(K.Store(out, at(t), init)))

            def rows(r):
                def acc(t):
                    v = self.value(x, list(r) + list(t))
                    self.emit(K.Store(out, at(t), K.Binary(step, K.Load(out, at(t)), v)))
                nest("j", tail, acc)
            nest("r", x.shape[:lead], rows)
            if root is not red:
                def epilogue(t):
                    idx = self.unravel(at(t), root.shape)
                    self.emit(K.Store(out, at(t), self.value(root, idx)))
                self.product = (id(red), out)
                nest("j", tail, epilogue)
                self.product = None
        return self.loops("i", [1], body, parallel=True)[0]

    def reshaped_product(self) -> Node | None:
        """The kernel's matmul when the root is that product reshaped (and elementwise after:
        a conv weight gradient's SGD update in the weight's shape), keeping element order;
        else None."""
        root = self.body.outputs[0]
        mms = [n for n in self.body.nodes if n.op is Op.MATMUL]
        if len(mms) != 1 or mms[0].shape == root.shape or mms[0].type.size != root.type.size:
            return None
        return mms[0] if epilogue_keeps_order(self.body, mms[0]) else None

    def concat_parts(self, root: Node, out: K.Buffer, outer, par: int) -> None:
        """A root concat (axis > 0) as one loop nest per part, inside the parallel loop over
        axis `par` (outer = [its variable]): each element computes only its own part (not a
        select over all parts)."""
        ax, off = root.attrs["axis"], 0
        for x in root.inputs:
            if x.shape[ax] == 0:
                continue

            def inner(vs, x=x, off=off):
                idx = list(vs[:par]) + list(outer) + list(vs[par:])
                dst = list(idx)
                dst[ax] = K.add(idx[ax], K.Const(off))
                self.emit(K.Store(out, self.flat(dst, root.shape), self.value(x, idx)))
            for st in self.loops("j", x.shape[:par] + x.shape[par + 1:], inner)[0]:
                self.emit(st)
            off += x.shape[ax]

    @staticmethod
    def parallel_axis(root: Node) -> int:
        """The concat's axis to run in parallel: 0, unless axis 0 is shorter than 8 (conv's
        im2col over one input channel is (1, k*k, N, H, W): one work-item did it all); then
        the first axis of at least 8 that is not the concat's."""
        if root.shape[0] >= 8:
            return 0
        return next((d for d, n in enumerate(root.shape)
                     if d != root.attrs["axis"] and n >= 8), 0)
