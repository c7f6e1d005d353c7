"""Skinny float32 GEMMs whose two operands are both contiguous along K (C = A @ B with A rows
and B columns contiguous: `A @ X.T`, a conv weight gradient dY @ cols^T) and whose M x N is
small against K, as dot products: no packing, split-K over threads (`run_dot`, called by
backends/llvm_gemm.run).

    gc_sdot(A, B, W, M, N, lda, ldb, k0, k1, la, sa):
      for each segment of la k of A:           A[i, k] at A + i*lda + (k // la)*sa + k % la
                                               (a conv's dY (N, C, L) read as (C, N*L) in place:
                                               la = L, sa = C*L; la = NOSEG: contiguous)
       for kb in segment step KB:              K block: the A and B rows' pieces stay in cache
        for j0 in 0..N step DN:                (rows past M or N re-read the last one: clamped
          for i0 in 0..M step DM:               pointers; their sums land in W's padding)
            DM x DN <8 x float> accumulators, per 8 k: DM + DN vector loads, DM*DN fmas;
            the last < 8 k through llvm.masked.load (no read past a row's end)
            W[i][j] = (or += after the first block) the accumulator (8 partial sums)
    gc_sdot_sum(W, nw, wstride, C, M, N, ldc):
      C[i, j] = sum over the nw partial W (one per K chunk) and the 8 lanes

W is (Mp, Np, 8) floats per K chunk, Mp, Np: M, N rounded up to DM, DN (`wsize`). Why not the
packed GEMM: it packed B column by column (a strided read per element: 1.4 ms for W2's
conv1 weight gradient, 25 x 50176, of 1.8 ms in all; with 8x8 transposes now 6 x 50176 x 25
takes 0.76 ms there, 0.30 here), and with M = 6 or 16 its edge tiles and per-K-block C
updates cost more than the few multiply-adds each B element takes part in (`dot_shape`).
"""
from __future__ import annotations

import ctypes
import functools

from graphc.backends.llvm_pool import aligned, kept_address, spread

DM, DN = 2, 5   # register tile: 10 accumulators + 2 A + 1 B vectors of the 16 ymm registers
                # (W2's M = 6, 16 and N = 25, 150 divide exactly: no padded work)
KB = 1024       # K block: (DM + DN) rows x 4 KiB per tile, reused from L1/L2 (256: 1.5x slower
                # at W2's conv1 weight gradient, 4096: 1.2x; one thread)


def wsize(M: int, N: int) -> int:
    """Floats of one K chunk's partial sums W."""
    return -(-M // DM) * DM * -(-N // DN) * DN * 8


def _module_text() -> str:
    from llvmlite import ir
    f32, i64, i32, i1 = ir.FloatType(), ir.IntType(64), ir.IntType(32), ir.IntType(1)
    v8, m8 = ir.VectorType(f32, 8), ir.VectorType(i1, 8)
    fp, vp = f32.as_pointer(), ir.VectorType(f32, 8).as_pointer()
    from graphc.backends.llvm import new_module
    m = new_module("graphc_gemm_dot")
    fma = ir.Function(m, ir.FunctionType(v8, [v8, v8, v8]), "llvm.fma.v8f32")
    mload = ir.Function(m, ir.FunctionType(v8, [vp, i32, m8, v8]), "llvm.masked.load.v8f32.p0")
    c64 = lambda v: ir.Constant(i64, v)  # noqa: E731
    zero = ir.Constant(v8, [0.0] * 8)
    lanes = ir.Constant(ir.VectorType(i64, 8), list(range(8)))
    undef64 = ir.Constant(ir.VectorType(i64, 8), ir.Undefined)

    def loop(b, fn, lo, hi, step, body, name, carried=()):
        """for i in lo..hi step: body(i, *carried) -> new carried values; returns the final."""
        pre = b.block
        cond, bb, end = (fn.append_basic_block(f"{name}.{s}") for s in ("c", "b", "e"))
        b.branch(cond)
        b.position_at_end(cond)
        i = b.phi(i64, name)
        i.add_incoming(lo, pre)
        phis = [b.phi(v.type) for v in carried]
        for p, v in zip(phis, carried):
            p.add_incoming(v, pre)
        b.cbranch(b.icmp_signed("<", i, hi), bb, end)
        b.position_at_end(bb)
        new = body(i, *phis) or ()
        i.add_incoming(b.add(i, step if isinstance(step, ir.Value) else c64(step)), b.block)
        for p, v in zip(phis, new):
            p.add_incoming(v, b.block)
        b.branch(cond)
        b.position_at_end(end)
        return phis

    def smin(b, x, y):
        return b.select(b.icmp_signed("<", x, y), x, y)

    def func(name, argtys, argnames):
        fn = ir.Function(m, ir.FunctionType(ir.VoidType(), argtys), name)
        fn.attributes.add("nounwind")
        for a, n in zip(fn.args, argnames):
            a.name = n
            if a.type == fp:
                a.add_attribute("noalias")
        return fn, ir.IRBuilder(fn.append_basic_block("entry"))

    # ---- gc_sdot: partial sums of k0 <= k < k1 into W ----
    fn, b = func("gc_sdot", [fp, fp, fp] + [i64] * 8,
                 ["A", "B", "W", "M", "N", "lda", "ldb", "k0", "k1", "la", "sa"])
    A0, B, W, M, N, lda, ldb, k0, k1, la, sa = fn.args
    Np = b.mul(b.sdiv(b.add(N, c64(DN - 1)), c64(DN)), c64(DN))

    def seg_body(sg):  # K segment sg of A: k in [sg*la, (sg+1)*la) at A0 + sg*sa + k % la
        lo, hi = b.mul(sg, la), b.mul(b.add(sg, c64(1)), la)
        lo = b.select(b.icmp_signed("<", lo, k0), k0, lo)
        hi = smin(b, hi, k1)
        A = b.gep(A0, [b.sub(b.mul(sg, sa), b.mul(sg, la))])  # indexed with k below
        loop(b, fn, lo, hi, KB, lambda kb: kb_body(kb, hi, A), "kb")

    def kb_body(kb, k1, A):
        ke = smin(b, b.add(kb, c64(KB)), k1)
        kv = b.add(kb, b.mul(b.sdiv(b.sub(ke, kb), c64(8)), c64(8)))  # end of the full vectors
        first = b.icmp_signed("==", kb, k0)

        def j_body(j0):
            bs = [b.gep(B, [b.mul(smin(b, b.add(j0, c64(c)), b.sub(N, c64(1))), ldb)])
                  for c in range(DN)]

            def i_body(i0):
                as_ = [b.gep(A, [b.mul(smin(b, b.add(i0, c64(r)), b.sub(M, c64(1))), lda)])
                       for r in range(DM)]

                def step(loadf):
                    def body(k, *acc):
                        av = [loadf(p, k) for p in as_]
                        out = list(acc)
                        for c in range(DN):
                            bv = loadf(bs[c], k)
                            for r in range(DM):
                                out[r * DN + c] = b.call(fma, [av[r], bv, out[r * DN + c]])
                        return out
                    return body
                full = lambda p, k: b.load(b.bitcast(b.gep(p, [k]), vp), align=4)  # noqa: E731
                acc = loop(b, fn, kb, kv, 8, step(full), "k", [zero] * (DM * DN))
                # the tail (< 8 k): masked loads read nothing past ke
                left = b.sub(ke, kv)
                splat = b.shuffle_vector(b.insert_element(undef64, left, ir.Constant(i32, 0)),
                                         undef64, ir.Constant(ir.VectorType(i32, 8), [0] * 8))
                mask = b.icmp_signed("<", lanes, splat)
                tail = lambda p, k: b.call(mload, [b.bitcast(b.gep(p, [k]), vp),  # noqa: E731
                                                   ir.Constant(i32, 4), mask, zero])
                pre = b.block
                with b.if_then(b.icmp_signed(">", left, c64(0))):
                    new = step(tail)(kv, *acc)
                    post = b.block
                merged = []
                for a, n in zip(acc, new):
                    phi = b.phi(v8)
                    phi.add_incoming(a, pre)
                    phi.add_incoming(n, post)
                    merged.append(phi)
                for r in range(DM):  # W: stored by the first K block, added to after
                    for c in range(DN):
                        at = b.mul(b.add(b.mul(b.add(i0, c64(r)), Np), b.add(j0, c64(c))), c64(8))
                        p = b.bitcast(b.gep(W, [at]), vp)
                        v = merged[r * DN + c]  # (W's old contents unread when first: select)
                        b.store(b.select(first, v, b.fadd(b.load(p, align=32), v)), p, align=32)
            loop(b, fn, c64(0), M, DM, i_body, "i")
        loop(b, fn, c64(0), N, DN, j_body, "j")
    loop(b, fn, b.sdiv(k0, la), b.add(b.sdiv(b.sub(k1, c64(1)), la), c64(1)), 1, seg_body, "sg")
    b.ret_void()

    # ---- gc_sdot_sum: C = the sum of nw partial W and of their 8 lanes ----
    fn, b = func("gc_sdot_sum", [fp, i64, i64, fp, i64, i64, i64],
                 ["W", "nw", "wstride", "C", "M", "N", "ldc"])
    W, nw, wstride, C, M, N, ldc = fn.args
    Np = b.mul(b.sdiv(b.add(N, c64(DN - 1)), c64(DN)), c64(DN))

    def row(i):
        def col(j):
            at = b.mul(b.add(b.mul(i, Np), j), c64(8))
            tot, = loop(b, fn, c64(0), nw, 1, lambda t, s: [b.fadd(s, b.load(b.bitcast(
                b.gep(W, [b.add(at, b.mul(t, wstride))]), vp), align=32))], "t", [zero])
            h = b.extract_element(tot, ir.Constant(i32, 0))
            for lane in range(1, 8):
                h = b.fadd(h, b.extract_element(tot, ir.Constant(i32, lane)))
            b.store(h, b.gep(C, [b.add(b.mul(i, ldc), j)]))
        loop(b, fn, c64(0), N, 1, col, "j")
    loop(b, fn, c64(0), M, 1, row, "i")
    b.ret_void()
    return str(m)


@functools.cache
def _compiled() -> dict:
    """The module's functions (backends/llvm.py's jit_functions), compiled on first use."""
    from graphc.backends.llvm import jit_functions
    p, i = ctypes.c_void_p, ctypes.c_int64
    return jit_functions(_module_text(), {"gc_sdot": (p, p, p, *[i] * 8),
                                          "gc_sdot_sum": (p, i, i, p, i, i, i)}, 3)


def dot_fns():
    """(gc_sdot, gc_sdot_sum) as ctypes functions (compiled once, cached like every kernel)."""
    f = _compiled()
    return f["gc_sdot"], f["gc_sdot_sum"]


NOSEG = 1 << 60  # la for an A contiguous along all of K: one segment


def sdot(a, bt, c, chunks: int = 1, seg=None):
    """c = a @ bt.T for 2-D float32 arrays whose rows are contiguous, c C-contiguous, K split
    into `chunks` partial sums (a testing entry point). seg=(la, sa): `a` is instead the
    address-ordered A0 of a segmented A: A[i, k] = A0[i*lda + (k // la)*sa + k % la], K
    given by bt."""
    M, (N, K) = a.shape[0], bt.shape
    assert a.strides[1] == bt.strides[1] == 4 and c.strides == (4 * N, 4)
    ws = wsize(M, N)
    w = aligned(ws * chunks)
    dot, total = dot_fns()
    for t in range(chunks):
        dot(a.ctypes.data, bt.ctypes.data, w.ctypes.data + 4 * ws * t, M, N,
            a.strides[0] // 4, bt.strides[0] // 4, K * t // chunks, K * (t + 1) // chunks,
            *(seg or (NOSEG, 0)))
    total(w.ctypes.data, chunks, ws, c.ctypes.data, M, N, N)


DOT = True           # skinny products on gc_sdot (backends/llvm_gemm.run) ...
DOT_MAX_MN = 4096    # ... when M * N is at most this (W is 8 floats per output: 128 KiB) ...
DOT_MIN_K = 2048     # ... and K at least this ... (64x400x120: 0.26 ms here, 0.15 ms packed)
DOT_MAX_M = 16       # ... and M at most this: the packed GEMM's B packed sliver by sliver
                     # (a transposing copy) is faster from M = 24 or K <= 1024 (one thread,
                     # us: 32x512x128 61 vs 80 here, 16x512x128 35 vs 48, 24x1024x96 73 vs
                     # 83; here faster: 16x2048x128 148 vs 168, 6x4096x128 124 vs 165)
DOT_CHUNK = 2048     # K per split-K chunk at least (each chunk's W is summed at the end)
MAX_CHUNKS = 2       # K chunks per thread at most
SEG_MIN = 256        # a segmented A (la < K) only with segments this long: W2's conv2 dY
                     # (la = 100, a masked tail each) took 1.20 ms, copied first 0.95; conv1's
                     # (la = 784) 0.44 ms, copied first 0.56 (la = 256: 0.50 vs 0.56)


def dot_shape(M: int, N: int, K: int) -> bool:
    """M, and M x N against K, small (the operands' layout checked by the caller)."""
    return M * N <= DOT_MAX_MN and K >= DOT_MIN_K and M <= DOT_MAX_M


def run_dot(a, b, c, M, N, K, lda, ldb, seg, threads: int):
    """C (M x N, contiguous) = A @ B as dot products: A rows at a + 4*i*lda, B columns at
    b + 4*j*ldb, both contiguous along K (A in segments: seg = (la, sa)). K is split into
    chunks (one W each, up to MAX_CHUNKS per thread) run on the pool's threads
    (backends/llvm_pool.py), then summed."""
    n = 1 if threads == 1 else max(1, min(MAX_CHUNKS * threads, K // DOT_CHUNK))
    ws = wsize(M, N)
    w = kept_address("dot_sums", n * ws)
    dot, total = dot_fns()
    bounds = [K * t // n // 8 * 8 for t in range(n)] + [K]  # 8-aligned: full vectors
    if n == 1:
        dot(a, b, w, M, N, lda, ldb, 0, K, *seg)
    else:
        fn = _compiled()["addrs"]["gc_sdot"]   # (the pool calls addresses)
        spread([[(fn, (a, b, w + 4 * ws * t, M, N, lda, ldb, k0, k1, *seg))
                 for t, (k0, k1) in enumerate(zip(bounds, bounds[1:]))]], threads)
    total(w, n, ws, c, M, N, N)


def seg_view(x, ins: list[int], view):
    """((input id, offset, (M, K), (row stride, 1)), (la, sa)) when a 2-D `x` is a reshape of
    a view whose K axis splits into an outer axis (stride sa) and a contiguous inner one of
    la elements: W2's conv weight gradient reads dY (64, 6, 28, 28) permuted to (6, 64*784)
    this way, instead of a 1.2 MB copy (0.38 ms) per step. None otherwise. `view`:
    llvm_gemm._view (the plain strided view of `x`'s input)."""
    from graphc.ops import Op
    if x.op is not Op.RESHAPE or len(x.shape) != 2:
        return None
    src = view(x.inputs[0], ins)
    if src is None:
        return None
    i, off, shape, strides = src
    axes = [(n, st) for n, st in zip(shape, strides) if n != 1]
    M, K_ = x.shape
    rows, cut = 1, 0
    while cut < len(axes) and rows < M:
        rows *= axes[cut][0]
        cut += 1
    if rows != M or cut > 1:  # M is one source axis
        return None
    rs = axes[0][1] if cut else 0
    merged: list = []
    for n, st in axes[cut:]:  # merge K's axes where they are contiguous with the next
        if merged and merged[-1][1] == n * st:
            merged[-1] = (merged[-1][0] * n, st)
        else:
            merged.append((n, st))
    if len(merged) != 2 or merged[1][1] != 1:
        return None
    return (i, off, (M, K_), (rs, 1)), (merged[1][0], merged[0][1])
