"""The LLVM backend's float32 GEMM as LLVM IR (IRBuilder), BLIS-style, and its ctypes entry
points (plan and threads: backends/llvm_gemm.py):

    C[m0:m1, :] = A[m0:m1, :] @ B        A: M x K, B: K x N (any element strides: a transposed
                                         operand packs as well), C: M x N row-major contiguous

    for jc in 0..N step NC:                 B panel K-block x NC, packed into 16-column slivers
      for pc in 0..K step KC:               (k-major, zero-padded; packed=1: already done;
                                             packed=2: B read in place, its rows contiguous,
                                             only an edge sliver packed)
        pack B[pc:pc+kc, jc:jc+nc]
        for ic in m0..m1 step MC:           A block MC x KC, packed into 6-row slivers
          pack A[ic:ic+mc, pc:pc+kc]
          for jr in 0..nc step 16:
            for ir in 0..mc step 6:
              6x16 micro-kernel: 12 <8 x float> accumulators in registers, per k one
              broadcast of each of 6 A values and 2 vector loads of B, 12 llvm.fma.v8f32;
              C tile += (or = for the first k block) the result; edge tiles go through a
              6x16 scratch tile (C's row stride: ldc)

gc_sgemm runs that for rows m0..m1; gc_pack_b packs a block of B (run() shares one packed B
between threads); gc_sgemm_batch runs gc_sgemm for a run of products of a batch in one call.
The module is compiled once and cached like every kernel (memory + disk).
"""
from __future__ import annotations

import ctypes

import numpy as np

MR, NR, KC, MC, NC = 6, 16, 512, 144, 2048  # KC, MC: measured best of a small sweep (1024^2, 1 thread)
_FN: list = []


def _module_text() -> str:
    from llvmlite import ir
    f32, i64, i1 = ir.FloatType(), ir.IntType(64), ir.IntType(1)
    v8 = ir.VectorType(f32, 8)
    v8p = v8.as_pointer()
    fp = f32.as_pointer()
    m = ir.Module("graphc_gemm")
    from graphc.backends.llvm import _target
    m.triple, m.data_layout = _target()[1], _target()[2]
    fma = ir.Function(m, ir.FunctionType(v8, [v8, v8, v8]), "llvm.fma.v8f32")
    c64 = lambda v: ir.Constant(i64, v)  # noqa: E731

    def loop(b, fn, lo, hi, step, body, name):
        pre = b.block
        cond, bb, end = (fn.append_basic_block(f"{name}.{s}") for s in ("c", "b", "e"))
        b.branch(cond)
        b.position_at_end(cond)
        i = b.phi(i64, name)
        i.add_incoming(lo, pre)
        b.cbranch(b.icmp_signed("<", i, hi), bb, end)
        b.position_at_end(bb)
        body(i)
        i.add_incoming(b.add(i, step if isinstance(step, ir.Value) else c64(step)), b.block)
        b.branch(cond)
        b.position_at_end(end)

    def smin(b, x, y):
        return b.select(b.icmp_signed("<", x, y), x, y)

    def func(name, argtys, argnames):
        fn = ir.Function(m, ir.FunctionType(ir.VoidType(), argtys), name)
        fn.attributes.add("nounwind")
        for a, n in zip(fn.args, argnames):
            a.name = n
        for a, t in zip(fn.args, argtys):
            if t == fp:
                a.add_attribute("noalias")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        return fn, b

    # ---- pack A: rows x kc block (lda) -> slivers of MR rows, k-major, zero-padded ----
    pa, b = func("gc_pack_a", [fp, i64, i64, i64, i64, fp], ["A", "rs", "cs", "rows", "kc", "out"])
    A, rs, cs, rows, kc, out = pa.args
    nsl = b.sdiv(b.add(rows, c64(MR - 1)), c64(MR))

    def pa_body(s):
        def fast(k):  # a full sliver: no clamping, no select
            base = b.add(b.mul(b.mul(s, c64(MR)), rs), b.mul(k, cs))
            dst0 = b.mul(b.add(b.mul(s, kc), k), c64(MR))
            for r in range(MR):
                v = b.load(b.gep(A, [b.add(base, b.mul(rs, c64(r)))]))
                b.store(v, b.gep(out, [b.add(dst0, c64(r))]))

        def k_body(k):
            for r in range(MR):
                row = b.add(b.mul(s, c64(MR)), c64(r))
                ok = b.icmp_signed("<", row, rows)
                src = b.add(b.mul(smin(b, row, b.sub(rows, c64(1))), rs), b.mul(k, cs))
                v = b.load(b.gep(A, [src]))
                dst = b.add(b.mul(b.add(b.mul(s, kc), k), c64(MR)), c64(r))
                b.store(b.select(ok, v, ir.Constant(f32, 0.0)), b.gep(out, [dst]))
        with b.if_else(b.icmp_signed("<=", b.mul(b.add(s, c64(1)), c64(MR)), rows)) as (t, e):
            with t:
                loop(b, pa, c64(0), kc, 1, fast, "kf")
            with e:
                loop(b, pa, c64(0), kc, 1, k_body, "k")
    loop(b, pa, c64(0), nsl, 1, pa_body, "s")
    b.ret_void()

    # ---- pack B: kc x cols block (ldb) -> slivers of NR columns, k-major, zero-padded ----
    pb, b = func("gc_pack_b", [fp, i64, i64, i64, i64, fp], ["B", "rs", "cs", "kc", "cols", "out"])
    B, rs, cs, kc, cols, out = pb.args
    nsl = b.sdiv(b.add(cols, c64(NR - 1)), c64(NR))

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
        full = b.icmp_signed("<=", b.mul(b.add(s, c64(1)), c64(NR)), cols)
        with b.if_else(full) as (t, e):
            with t:
                with b.if_else(b.icmp_signed("==", cs, c64(1))) as (t1, e1):
                    with t1:
                        loop(b, pb, c64(0), kc, 1, fast, "kf")
                    with e1:  # 16 scalar copies per k instead of 16 clamped selects
                        loop(b, pb, c64(0), kc, 1, strided, "ks")
            with e:
                loop(b, pb, c64(0), kc, 1, k_body, "k")
    loop(b, pb, c64(0), nsl, 1, pb_body, "s")
    b.ret_void()

    # ---- micro-kernel: C (ldc) [+]= Ap (kc x MR) * Bp (kc x NR) ----
    uk, b = func("gc_ukernel", [fp, fp, fp, i64, i64, i1, i64],
                 ["Ap", "Bp", "C", "ldc", "kc", "beta", "ldb"])
    uk.attributes.add("alwaysinline")
    Ap, Bp, C, ldc, kc, beta, ldb = uk.args
    vp = v8.as_pointer()
    zero = ir.Constant(v8, [0.0] * 8)
    undef = ir.Constant(v8, ir.Undefined)
    mask0 = ir.Constant(ir.VectorType(ir.IntType(32), 8), [0] * 8)
    i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
    prefetch = ir.Function(m, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                           "llvm.prefetch.p0")
    for r in range(MR):  # the C tile's lines, to be in cache when the k loop ends
        for off in (0, NR - 1):
            cp_ = b.gep(C, [b.add(b.mul(c64(r), ldc), c64(off))])
            b.call(prefetch, [b.bitcast(cp_, i8p), ir.Constant(i32, 1), ir.Constant(i32, 3),
                              ir.Constant(i32, 1)])
    entry = b.block
    cond, body, done = (uk.append_basic_block(n) for n in ("k.c", "k.b", "k.e"))
    b.branch(cond)
    b.position_at_end(cond)
    k = b.phi(i64, "k")
    k.add_incoming(c64(0), entry)
    accs = [b.phi(v8, f"c{r}{h}") for r in range(MR) for h in range(2)]
    for a in accs:
        a.add_incoming(zero, entry)
    b.cbranch(b.icmp_signed("<", k, kc), body, done)
    b.position_at_end(body)
    bv = [b.load(b.bitcast(b.gep(Bp, [b.add(b.mul(k, ldb), c64(8 * h))]), vp), align=4)
          for h in range(2)]
    new = []
    for r in range(MR):
        a = b.load(b.gep(Ap, [b.add(b.mul(k, c64(MR)), c64(r))]))
        av = b.shuffle_vector(b.insert_element(undef, a, ir.Constant(ir.IntType(32), 0)),
                              undef, mask0)
        for h in range(2):
            new.append(b.call(fma, [av, bv[h], accs[2 * r + h]]))
    for a, nv in zip(accs, new):
        a.add_incoming(nv, body)
    k.add_incoming(b.add(k, c64(1)), body)
    b.branch(cond)
    b.position_at_end(done)
    cps = [b.bitcast(b.gep(C, [b.add(b.mul(c64(r), ldc), c64(8 * h))]), vp)
           for r in range(MR) for h in range(2)]
    with b.if_else(beta) as (then, other):  # a branch: C is not read when overwritten (K < KC:
        with then:                          # W2's 150x6400x16 product read its 3.8 MB C)
            for p, a in zip(cps, accs):
                b.store(b.fadd(b.load(p, align=4), a), p, align=4)
        with other:
            for p, a in zip(cps, accs):
                b.store(a, p, align=4)
    b.ret_void()

    # ---- driver ----
    sg, b = func("gc_sgemm", [fp, fp, fp, i64, i64, i64, i64, i64, fp, fp] + [i64] * 6,
                 ["A", "B", "C", "M", "N", "K", "m0", "m1", "bufA", "bufB",
                  "rsa", "csa", "rsb", "csb", "packed", "ldc"])
    A, B, C, M, N, K, m0, m1, bufA, bufB, rsa, csa, rsb, csb, packed, ldc = sg.args
    prepacked = b.icmp_signed("==", packed, c64(1))
    direct = b.icmp_signed("==", packed, c64(2))
    with b.goto_entry_block():
        tile = b.alloca(ir.ArrayType(f32, MR * NR), name="tile")
    tp = b.bitcast(tile, fp)

    def jc_body(jc):
        nc = smin(b, c64(NC), b.sub(N, jc))

        def pc_body(pc):
            kc = smin(b, c64(KC), b.sub(K, pc))
            first = b.icmp_signed("!=", pc, c64(0))
            with b.if_then(b.icmp_signed("==", packed, c64(0))):
                b.call(pb, [b.gep(B, [b.add(b.mul(pc, rsb), b.mul(jc, csb))]), rsb, csb, kc,
                            nc, bufB])
            # prepacked: bufB holds all of B packed, block (jc, pc) at jc*K + pc*ncp
            ncp = b.mul(b.sdiv(b.add(nc, c64(NR - 1)), c64(NR)), c64(NR))
            bB = b.select(prepacked, b.gep(bufB, [b.add(b.mul(jc, K), b.mul(pc, ncp))]), bufB)

            def ic_body(ic):
                mc = smin(b, c64(MC), b.sub(m1, ic))
                b.call(pa, [b.gep(A, [b.add(b.mul(ic, rsa), b.mul(pc, csa))]), rsa, csa, mc, kc,
                            bufA])

                def jr_body(jr):
                    nr = smin(b, c64(NR), b.sub(nc, jr))
                    bsl = b.gep(bB, [b.mul(jr, kc)])
                    ldb = c64(NR)
                    pre = b.block
                    with b.if_then(direct):  # B in place (csb == 1), an edge sliver packed
                        at = b.gep(B, [b.add(b.mul(pc, rsb), b.add(jc, jr))])
                        with b.if_then(b.icmp_signed("<", nr, c64(NR))):
                            b.call(pb, [at, rsb, csb, kc, nr, bufB])
                        edge = b.icmp_signed("<", nr, c64(NR))
                        dsl = b.select(edge, bufB, at)
                        dld = b.select(edge, c64(NR), rsb)
                        post = b.block
                    bsl_, ldb_ = b.phi(fp), b.phi(i64)
                    bsl_.add_incoming(bsl, pre)
                    bsl_.add_incoming(dsl, post)
                    ldb_.add_incoming(ldb, pre)
                    ldb_.add_incoming(dld, post)
                    bsl, ldb = bsl_, ldb_

                    def ir_body(ir_):
                        mr = smin(b, c64(MR), b.sub(mc, ir_))
                        asl = b.gep(bufA, [b.mul(ir_, kc)])
                        cp = b.gep(C, [b.add(b.mul(b.add(ic, ir_), ldc), b.add(jc, jr))])
                        full = b.and_(b.icmp_signed("==", mr, c64(MR)),
                                      b.icmp_signed("==", nr, c64(NR)))
                        with b.if_else(full) as (then, other):
                            with then:
                                b.call(uk, [asl, bsl, cp, ldc, kc, first, ldb])
                            with other:  # edge: through the scratch tile
                                def copy(to_tile):
                                    def rr(r):
                                        def cc(c):
                                            t = b.gep(tp, [b.add(b.mul(r, c64(NR)), c)])
                                            x = b.gep(cp, [b.add(b.mul(r, ldc), c)])
                                            src, dst = (x, t) if to_tile else (t, x)
                                            b.store(b.load(src), dst)
                                        loop(b, sg, c64(0), nr, 1, cc, "cc")
                                    loop(b, sg, c64(0), mr, 1, rr, "rr")
                                with b.if_then(first):
                                    copy(True)
                                b.call(uk, [asl, bsl, tp, c64(NR), kc, first, ldb])
                                copy(False)
                    loop(b, sg, c64(0), mc, MR, ir_body, "ir")
                loop(b, sg, c64(0), nc, NR, jr_body, "jr")
            loop(b, sg, m0, m1, MC, ic_body, "ic")
        loop(b, sg, c64(0), K, KC, pc_body, "pc")
    loop(b, sg, c64(0), N, NC, jc_body, "jc")
    b.ret_void()

    # ---- a batch: gc_sgemm per product t (A + offs[2t], B + offs[2t+1], C + t*M*N) ----
    # (one ctypes call for a conv's 64 small per-image products instead of 64: ~3 us each)
    bt, b = func("gc_sgemm_batch", [fp, fp, fp, i64, i64, i64, fp, fp, i64, i64, i64, i64,
                                    i64, i64.as_pointer()],
                 ["A", "B", "C", "M", "N", "K", "bufA", "bufB", "rsa", "csa", "rsb", "csb",
                  "nb", "offs"])
    A, B, C, M, N, K, bufA, bufB, rsa, csa, rsb, csb, nb, offs = bt.args

    def bt_body(t):
        oa = b.load(b.gep(offs, [b.mul(t, c64(2))]))
        ob = b.load(b.gep(offs, [b.add(b.mul(t, c64(2)), c64(1))]))
        b.call(sg, [b.gep(A, [oa]), b.gep(B, [ob]), b.gep(C, [b.mul(t, b.mul(M, N))]), M, N, K,
                    c64(0), M, bufA, bufB, rsa, csa, rsb, csb, c64(0), N])
    loop(b, bt, c64(0), nb, 1, bt_body, "t")
    b.ret_void()
    return str(m)


def sgemm_fn():
    """The compiled gc_sgemm as a ctypes function (compiled once, cached on disk)."""
    if not _FN:
        from graphc.backends.llvm import jit_info
        addrs, info = jit_info(_module_text(), ["gc_sgemm", "gc_pack_b", "gc_sgemm_batch"], 3,
                               True)  # unrolled
        _FN.append(ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 3, *[ctypes.c_int64] * 5,
                                    ctypes.c_void_p, ctypes.c_void_p,
                                    *[ctypes.c_int64] * 6)(addrs["gc_sgemm"]))
        _FN.append(info)  # keeps the engine alive
        _FN.append(ctypes.CFUNCTYPE(None, ctypes.c_void_p, *[ctypes.c_int64] * 4,
                                    ctypes.c_void_p)(addrs["gc_pack_b"]))
        _FN.append(ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 3, *[ctypes.c_int64] * 3,
                                    ctypes.c_void_p, ctypes.c_void_p, *[ctypes.c_int64] * 5,
                                    ctypes.c_void_p)(addrs["gc_sgemm_batch"]))
    return _FN[0]


def batch_fn():
    """The compiled gc_sgemm_batch (A, B, C, M, N, K, bufA, bufB, rsa, csa, rsb, csb, nb,
    offs) as a ctypes function: whole products t < nb, offs = int64 [a_off, b_off] pairs."""
    sgemm_fn()
    return _FN[3]


def packb_fn():
    """The compiled gc_pack_b (B, rs, cs, kc, cols, out) as a ctypes function."""
    sgemm_fn()
    return _FN[2]


def buffers(K: int, N: int):
    """Packing buffers for one thread: (A block, B panel)."""
    kc = min(KC, K)
    nc = -(-min(NC, N) // NR) * NR
    return _aligned(MC * kc), _aligned(kc * nc)


def _aligned(n: int) -> np.ndarray:
    """n float32, 64-byte aligned (a packed B row of 16 floats is one cache line)."""
    raw = np.empty(n + 16, np.float32)
    skip = (-raw.ctypes.data % 64) // 4
    return raw[skip:skip + n]


def sgemm(a: np.ndarray, b: np.ndarray, c: np.ndarray, m0: int, m1: int, bufs=None,
          mode: int = 0):
    """c[m0:m1] = a[m0:m1] @ b for 2-D float32 arrays, a and b with any element strides, c
    C-contiguous (a testing entry point); mode 2 reads B in place (its columns contiguous)."""
    M, K = a.shape
    N = b.shape[1]
    ba, bb = bufs or buffers(K, N)
    st = [s // 4 for s in a.strides + b.strides]
    sgemm_fn()(a.ctypes.data, b.ctypes.data, c.ctypes.data, M, N, K, m0, m1,
               ba.ctypes.data, bb.ctypes.data, *st, mode, N)
