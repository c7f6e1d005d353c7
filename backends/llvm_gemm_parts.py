"""Building blocks of the GEMM module of backends/llvm_gemm_ir.py as LLVM IR (IRBuilder): its
packing routines and micro-kernels.

    gc_pack_a{h}(A, rs, cs, rows, kc, out)  A block -> slivers of h rows (h = 6, 4), k-major,
                                            zero-padded
    gc_pack_b(B, rs, cs, kc, cols, out)     B block -> slivers of 16 columns, k-major,
                                            zero-padded (rows contiguous: 8-wide copies;
                                            columns contiguous, B = X.T: 8x8 transposes)
    gc_ukernel{mr}[c](Ap, Bp, C, ldc, kc, beta, ldb, Bc)
                                            C (mr x 16, row stride ldc) = or += Ap (kc x mr)
                                            Bp (kc x 16, row stride ldb); c: also stores the B
                                            rows it reads at Bc (packs B's sliver while the
                                            first row sliver uses it)
"""
from __future__ import annotations

from llvmlite import ir

from graphc.backends.llvm_gemm_ir import NR


class Builder:
    """The module being built: its types, intrinsics and IR helpers."""

    def __init__(self, m: ir.Module):
        f32, i64, i32, i1 = ir.FloatType(), ir.IntType(64), ir.IntType(32), ir.IntType(1)
        v8 = ir.VectorType(f32, 8)
        self.m = m
        self.types = (f32, i64, i32, i1, f32.as_pointer(), v8, v8.as_pointer(),
                      ir.IntType(8).as_pointer())
        self.fma = ir.Function(m, ir.FunctionType(v8, [v8, v8, v8]), "llvm.fma.v8f32")
        self.prefetch = ir.Function(m, ir.FunctionType(ir.VoidType(), [self.types[-1], i32,
                                                                        i32, i32]),
                                    "llvm.prefetch.p0")

    def c64(self, v: int):
        return ir.Constant(self.types[1], v)

    def loop(self, b, fn, lo, hi, step, body, name):
        """for i in lo..hi step: body(i)."""
        pre = b.block
        cond, bb, end = (fn.append_basic_block(f"{name}.{s}") for s in ("c", "b", "e"))
        b.branch(cond)
        b.position_at_end(cond)
        i = b.phi(self.types[1], name)
        i.add_incoming(lo, pre)
        b.cbranch(b.icmp_signed("<", i, hi), bb, end)
        b.position_at_end(bb)
        body(i)
        i.add_incoming(b.add(i, step if isinstance(step, ir.Value) else self.c64(step)), b.block)
        b.branch(cond)
        b.position_at_end(end)

    @staticmethod
    def smin(b, x, y):
        return b.select(b.icmp_signed("<", x, y), x, y)

    def func(self, name, argtys, argnames):
        """A void function (pointer arguments noalias) and a builder at its entry."""
        fn = ir.Function(self.m, ir.FunctionType(ir.VoidType(), argtys), name)
        fn.attributes.add("nounwind")
        for a, n in zip(fn.args, argnames):
            a.name = n
        for a, t in zip(fn.args, argtys):
            if t == self.types[4]:
                a.add_attribute("noalias")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        return fn, b


def pack_a(x: Builder, h: int):
    """gc_pack_a{h}: rows x kc of A (strides rs, cs) -> slivers of h rows."""
    f32, i64, i32, i1, fp, v8, v8p, i8p = x.types
    c64, loop, smin, func = x.c64, x.loop, x.smin, x.func
    pa, b = func(f"gc_pack_a{h}", [fp, i64, i64, i64, i64, fp],
                 ["A", "rs", "cs", "rows", "kc", "out"])
    A, rs, cs, rows, kc, out = pa.args
    nsl = b.sdiv(b.add(rows, c64(h - 1)), c64(h))

    def pa_body(s):
        def fast(k):  # a full sliver: no clamping, no select
            base = b.add(b.mul(b.mul(s, c64(h)), rs), b.mul(k, cs))
            dst0 = b.mul(b.add(b.mul(s, kc), k), c64(h))
            for r in range(h):
                v = b.load(b.gep(A, [b.add(base, b.mul(rs, c64(r)))]))
                b.store(v, b.gep(out, [b.add(dst0, c64(r))]))

        def k_body(k):
            for r in range(h):
                row = b.add(b.mul(s, c64(h)), c64(r))
                ok = b.icmp_signed("<", row, rows)
                src = b.add(b.mul(smin(b, row, b.sub(rows, c64(1))), rs), b.mul(k, cs))
                v = b.load(b.gep(A, [src]))
                dst = b.add(b.mul(b.add(b.mul(s, kc), k), c64(h)), c64(r))
                b.store(b.select(ok, v, ir.Constant(f32, 0.0)), b.gep(out, [dst]))
        full = b.icmp_signed("<=", b.mul(b.add(s, c64(1)), c64(h)), rows)
        with b.if_else(full) as (t, e):
            with t:
                loop(b, pa, c64(0), kc, 1, fast, "kf")
            with e:
                loop(b, pa, c64(0), kc, 1, k_body, "k")
    loop(b, pa, c64(0), nsl, 1, pa_body, "s")
    b.ret_void()
    return pa


def pack_b(x: Builder):
    """gc_pack_b: kc x cols of B (strides rs, cs) -> slivers of NR columns."""
    f32, i64, i32, i1, fp, v8, v8p, i8p = x.types
    c64, loop, smin, func = x.c64, x.loop, x.smin, x.func
    pb, b = func("gc_pack_b", [fp, i64, i64, i64, i64, fp], ["B", "rs", "cs", "kc", "cols", "out"])
    B, rs, cs, kc, cols, out = pb.args
    nsl = b.sdiv(b.add(cols, c64(NR - 1)), c64(NR))
    kc8 = b.mul(b.sdiv(kc, c64(8)), c64(8))

    def pb_body(s):
        def fast(k):  # a full sliver of contiguous columns: two 8-wide copies
            src = b.gep(B, [b.add(b.mul(k, rs), b.mul(s, c64(NR)))])
            dst = b.gep(out, [b.mul(b.add(b.mul(s, kc), k), c64(NR))])
            for h in range(NR // 8):
                v = b.load(b.bitcast(b.gep(src, [c64(8 * h)]), v8p), align=4)
                b.store(v, b.bitcast(b.gep(dst, [c64(8 * h)]), v8p), align=4)

        def k_body(k):
            for c in range(NR):
                col = b.add(b.mul(s, c64(NR)), c64(c))
                ok = b.icmp_signed("<", col, cols)
                src = b.add(b.mul(k, rs), b.mul(smin(b, col, b.sub(cols, c64(1))), cs))
                v = b.load(b.gep(B, [src]))
                dst = b.add(b.mul(b.add(b.mul(s, kc), k), c64(NR)), c64(c))
                b.store(b.select(ok, v, ir.Constant(f32, 0.0)), b.gep(out, [dst]))

        def strided(k):  # a full sliver of strided columns (a transposed B): no clamping
            src = b.add(b.mul(k, rs), b.mul(b.mul(s, c64(NR)), cs))
            dst = b.mul(b.add(b.mul(s, kc), k), c64(NR))
            for c in range(NR):
                v = b.load(b.gep(B, [b.add(src, b.mul(cs, c64(c)))]))
                b.store(v, b.gep(out, [b.add(dst, c64(c))]))

        def tr8(k):  # columns contiguous along k (B = X.T): 8 k x 8 columns per transpose,
            for h in range(NR // 8):  # 8 vector loads and stores instead of 64 scalar ones
                src = b.add(k, b.mul(b.add(b.mul(s, c64(NR)), c64(8 * h)), cs))
                rows_ = [b.load(b.bitcast(b.gep(B, [b.add(src, b.mul(cs, c64(i)))]), v8p),
                                align=4) for i in range(8)]
                dst = b.add(b.mul(b.add(b.mul(s, kc), k), c64(NR)), c64(8 * h))
                for j, v in enumerate(transpose8(b, rows_)):
                    b.store(v, b.bitcast(b.gep(out, [b.add(dst, c64(NR * j))]), v8p), align=4)
        full = b.icmp_signed("<=", b.mul(b.add(s, c64(1)), c64(NR)), cols)
        with b.if_else(full) as (t, e):
            with t:
                with b.if_else(b.icmp_signed("==", cs, c64(1))) as (t1, e1):
                    with t1:
                        loop(b, pb, c64(0), kc, 1, fast, "kf")
                    with e1:
                        tr = b.icmp_signed("==", rs, c64(1))
                        loop(b, pb, c64(0), b.select(tr, kc8, c64(0)), 8, tr8, "kt")
                        loop(b, pb, b.select(tr, kc8, c64(0)), kc, 1, strided, "ks")
            with e:
                loop(b, pb, c64(0), kc, 1, k_body, "k")
    loop(b, pb, c64(0), nsl, 1, pb_body, "s")
    b.ret_void()
    return pb


def ukernel(x: Builder, mr: int, copy: bool):
    """gc_ukernel{mr}, with copy gc_ukernel{mr}c: mr x 16, 2*mr <8 x float> accumulators
    (Zen 3 keeps its two FMA pipes busy with 8: mr = 4 too), per k one broadcast of each of
    mr A values, 2 vector loads of B, 2*mr llvm.fma.v8f32; inlined into the driver."""
    f32, i64, i32, i1, fp, v8, v8p, i8p = x.types
    c64, func, fma, prefetch = x.c64, x.func, x.fma, x.prefetch
    uk, b = func(f"gc_ukernel{mr}{'c' * copy}", [fp, fp, fp, i64, i64, i1, i64, fp],
                 ["Ap", "Bp", "C", "ldc", "kc", "beta", "ldb", "Bc"])
    uk.attributes.add("alwaysinline")
    Ap, Bp, C, ldc, kc, beta, ldb, Bc = uk.args
    vp = v8.as_pointer()
    zero = ir.Constant(v8, [0.0] * 8)
    undef = ir.Constant(v8, ir.Undefined)
    mask0 = ir.Constant(ir.VectorType(i32, 8), [0] * 8)
    for r in range(mr):  # the C tile's lines, to be in cache when the k loop ends
        for off in (0, NR - 1):
            cp_ = b.gep(C, [b.add(b.mul(c64(r), ldc), c64(off))])
            b.call(prefetch, [b.bitcast(cp_, i8p), ir.Constant(i32, 1),
                              ir.Constant(i32, 3), ir.Constant(i32, 1)])
    entry = b.block
    cond, body, done = (uk.append_basic_block(n) for n in ("k.c", "k.b", "k.e"))
    b.branch(cond)
    b.position_at_end(cond)
    k = b.phi(i64, "k")
    k.add_incoming(c64(0), entry)
    accs = [b.phi(v8, f"c{r}{h}") for r in range(mr) for h in range(2)]
    for a in accs:
        a.add_incoming(zero, entry)
    b.cbranch(b.icmp_signed("<", k, kc), body, done)
    b.position_at_end(body)
    bv = [b.load(b.bitcast(b.gep(Bp, [b.add(b.mul(k, ldb), c64(8 * h))]), vp), align=4)
          for h in range(2)]
    for h in range(2 * copy):  # (a packed sliver: NR floats per k)
        b.store(bv[h], b.bitcast(b.gep(Bc, [b.add(b.mul(k, c64(NR)), c64(8 * h))]), vp),
                align=4)
    new = []
    for r in range(mr):
        a = b.load(b.gep(Ap, [b.add(b.mul(k, c64(mr)), c64(r))]))
        av = b.shuffle_vector(b.insert_element(undef, a, ir.Constant(i32, 0)), undef,
                              mask0)
        for h in range(2):
            new.append(b.call(fma, [av, bv[h], accs[2 * r + h]]))
    for a, nv in zip(accs, new):
        a.add_incoming(nv, body)
    k.add_incoming(b.add(k, c64(1)), body)
    b.branch(cond)
    b.position_at_end(done)
    cps = [b.bitcast(b.gep(C, [b.add(b.mul(c64(r), ldc), c64(8 * h))]), vp)
           for r in range(mr) for h in range(2)]
    with b.if_else(beta) as (then, other):  # a branch: C is not read when overwritten
        with then:                          # (K < KC: W2's 150x6400x16 read its 3.8 MB C)
            for p, a in zip(cps, accs):
                b.store(b.fadd(b.load(p, align=4), a), p, align=4)
        with other:
            for p, a in zip(cps, accs):
                b.store(a, p, align=4)
    b.ret_void()
    return uk


def transpose8(b, rows: list) -> list:
    """The 8x8 transpose of 8 <8 x float> rows (unpack, shufps, 128-bit lane swap shuffles)."""
    def sh(x, y, mask):
        return b.shuffle_vector(x, y, ir.Constant(ir.VectorType(ir.IntType(32), 8), mask))
    t = [sh(rows[i & ~1], rows[i | 1], [0, 8, 1, 9, 4, 12, 5, 13] if i % 2 == 0 else
            [2, 10, 3, 11, 6, 14, 7, 15]) for i in range(8)]   # t[2p], t[2p+1]: rows 2p, 2p+1
    lo, hi = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
    s = [sh(t[g + (j >> 1)], t[g + 2 + (j >> 1)], hi if j & 1 else lo)
         for g in (0, 4) for j in range(4)]   # s[g + j]: k = j, j + 4 of rows g .. g + 3
    return [sh(s[j % 4], s[4 + j % 4], [0, 1, 2, 3, 8, 9, 10, 11] if j < 4 else
               [4, 5, 6, 7, 12, 13, 14, 15]) for j in range(8)]

