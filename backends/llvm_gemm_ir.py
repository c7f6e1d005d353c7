"""The LLVM backend's float32 GEMM as LLVM IR (IRBuilder), BLIS-style, and its ctypes entry
points (plan and threads: backends/llvm_gemm.py; packing routines and micro-kernels:
backends/llvm_gemm_parts.py):

    C[m0:m1, :] = A[m0:m1, :] @ B        A: M x K, B: K x N (any element strides: a transposed
                                         operand packs as well), C: M x N, rows ldc apart
                                         (C_T: stored transposed)

    for jc in 0..N step NC:                 B panel K-block x NC, packed into 16-column slivers
      for pc in 0..K step KC:               (k-major, zero-padded; packed=1: already done;
                                             packed=2: B read in place, its rows contiguous,
                                             only an edge sliver packed; packed=3: each
                                             sliver packed as it is reached, below)
        pack B[pc:pc+kc, jc:jc+nc]          (packed=0)
        for ic in m0..m1 step MC:           A block MC x KC, packed into slivers of 6 rows,
          pack A[ic:ic+mc, pc:pc+kc]        then 4 when mc = 6n + 2 or 6n + 4 (`row_split`)
          for jr in 0..nc step 16:
            (packed=3: pack this sliver into bufB, L1-hot for the row slivers below; B's rows
             contiguous: the first row sliver's micro-kernel reads B in place and stores it)
            for ir in 0..mc step 6, then 4:
              6x16 (4x16) micro-kernel: 12 (8) <8 x float> accumulators in registers, per
              k one broadcast of each of 6 (4) A values and 2 vector loads of B;
              C tile += (or = for the first k block) the result; edge tiles go through a
              6x16 scratch tile (C's row stride: ldc; with the flag C_T in `packed`, C is
              stored transposed, C[i, j] at j*ldc + i, and every tile goes through it)

gc_sgemm runs that for rows m0..m1; gc_pack_b packs a block of B (run() shares one packed B
between threads); gc_sgemm_batch runs gc_sgemm for a run of products of a batch in one call.
The module is compiled once and cached like every kernel (memory + disk). Why packed=3 and
the 4-row slivers: an LSTM's per-step 32 x 160 x 512 product packed all of B (320 KiB) per
call, a pass that left it in L2, and computed its last 2 rows as a padded 6-row sliver
(measured in backends/llvm_gemm.py, SLIVERS).
"""
from __future__ import annotations

import ctypes
import functools

import numpy as np

from graphc.backends.llvm_pool import aligned

MR, MR4, NR, KC, MC, NC = 6, 4, 16, 512, 144, 2048  # KC, MC: measured best of a small
                                                    # sweep (1024^2, 1 thread)
C_T = 4  # a flag of gc_sgemm's `packed` argument (0-3: how B is packed): C stored transposed


def _module_text() -> str:
    from llvmlite import ir

    from graphc.backends import llvm_gemm_parts as P
    from graphc.backends.llvm import new_module
    m = new_module("graphc_gemm")
    x = P.Builder(m)
    f32, i64, _, i1, fp, _, _, _ = x.types
    c64, loop, smin, func = x.c64, x.loop, x.smin, x.func
    pa6, pa4, pb = P.pack_a(x, MR), P.pack_a(x, MR4), P.pack_b(x)
    uk6, uk4, uk6c, uk4c = (P.ukernel(x, mr, c) for c in (0, 1) for mr in (MR, MR4))

    # ---- driver ----
    sg, b = func("gc_sgemm", [fp, fp, fp, i64, i64, i64, i64, i64, fp, fp] + [i64] * 6,
                 ["A", "B", "C", "M", "N", "K", "m0", "m1", "bufA", "bufB",
                  "rsa", "csa", "rsb", "csb", "packed", "ldc"])
    A, B, C, M, N, K, m0, m1, bufA, bufB, rsa, csa, rsb, csb, flags, ldc = sg.args
    packed = b.and_(flags, c64(3))
    # C_T: C stored transposed, C[i, j] at j*ldc + i; every tile goes through the scratch tile
    trc = b.icmp_signed("!=", b.and_(flags, c64(C_T)), c64(0))
    rs_c, cs_c = b.select(trc, c64(1), ldc), b.select(trc, ldc, c64(1))
    prepacked = b.icmp_signed("==", packed, c64(1))
    per_sliver = b.icmp_signed(">=", packed, c64(2))
    each = b.icmp_signed("==", packed, c64(3))
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
                # rows [0, e6) in 6-row slivers, [e6, mc) in 4-row ones (`row_split`)
                rem = b.srem(mc, c64(MR))
                two = b.and_(b.icmp_signed("==", rem, c64(2)), b.icmp_signed(">=", mc, c64(8)))
                e6 = b.select(b.icmp_signed("==", rem, c64(4)), b.sub(mc, c64(4)),
                              b.select(two, b.sub(mc, c64(8)), mc))
                at_a = b.gep(A, [b.add(b.mul(ic, rsa), b.mul(pc, csa))])
                b.call(pa6, [at_a, rsa, csa, e6, kc, bufA])
                b.call(pa4, [b.gep(at_a, [b.mul(e6, rsa)]), rsa, csa, b.sub(mc, e6), kc,
                             b.gep(bufA, [b.mul(e6, kc)])])

                def jr_body(jr):
                    nr = smin(b, c64(NR), b.sub(nc, jr))
                    bsl = b.gep(bB, [b.mul(jr, kc)])
                    ldb = c64(NR)
                    pre = b.block
                    with b.if_then(per_sliver):  # 2: B in place (csb == 1), an edge sliver
                        at = b.gep(B, [b.add(b.mul(pc, rsb),   # packed; 3: each sliver packed
                                             b.mul(b.add(jc, jr), csb))])  # here (L1-hot)
                        edge = b.icmp_signed("<", nr, c64(NR))
                        # 3, B rows contiguous, tile 0 full: its micro-kernel packs as it reads
                        fz_ = b.and_(b.and_(b.and_(each, b.not_(trc)),  # (C_T: no full tile)
                                            b.icmp_signed("==", csb, c64(1))),
                                     b.and_(b.not_(edge), b.or_(b.icmp_signed(">=", e6, c64(MR)),
                                                               b.icmp_signed("==", e6, c64(0)))))
                        own = b.or_(edge, b.and_(each, b.not_(fz_)))
                        with b.if_then(own):
                            b.call(pb, [at, rsb, csb, kc, nr, bufB])
                        dsl = b.select(b.or_(own, fz_), bufB, at)
                        dld = b.select(b.or_(own, fz_), c64(NR), rsb)
                        post = b.block
                    bsl_, ldb_, fz, at_ = b.phi(fp), b.phi(i64), b.phi(i1), b.phi(fp)
                    for phi, x, y in ((bsl_, bsl, dsl), (ldb_, ldb, dld),
                                      (fz, ir.Constant(i1, 0), fz_), (at_, bsl, at)):
                        phi.add_incoming(x, pre)
                        phi.add_incoming(y, post)
                    bsl, ldb = bsl_, ldb_

                    def tiles(lo, hi, h, uk, ukc):
                        def ir_body(ir_):
                            mr = smin(b, c64(h), b.sub(hi, ir_))
                            asl = b.gep(bufA, [b.mul(ir_, kc)])
                            cp = b.gep(C, [b.add(b.mul(b.add(ic, ir_), rs_c),
                                                 b.mul(b.add(jc, jr), cs_c))])
                            full = b.and_(b.and_(b.icmp_signed("==", mr, c64(h)),
                                                 b.icmp_signed("==", nr, c64(NR))),
                                          b.not_(trc))
                            with b.if_else(full) as (then, other):
                                with then:
                                    with b.if_else(b.and_(fz, b.icmp_signed("==", ir_, c64(0)))) \
                                            as (t2, e2):
                                        with t2:
                                            b.call(ukc, [asl, at_, cp, ldc, kc, first, rsb, bufB])
                                        with e2:
                                            b.call(uk, [asl, bsl, cp, ldc, kc, first, ldb, bufB])
                                with other:  # edge: through the scratch tile
                                    def copy(to_tile):
                                        def rr(r):
                                            def cc(c):
                                                t = b.gep(tp, [b.add(b.mul(r, c64(NR)), c)])
                                                x = b.gep(cp, [b.add(b.mul(r, rs_c),
                                                                     b.mul(c, cs_c))])
                                                src, dst = (x, t) if to_tile else (t, x)
                                                b.store(b.load(src), dst)
                                            loop(b, sg, c64(0), nr, 1, cc, "cc")
                                        loop(b, sg, c64(0), mr, 1, rr, "rr")
                                    with b.if_then(first):
                                        copy(True)
                                    b.call(uk, [asl, bsl, tp, c64(NR), kc, first, ldb, bufB])
                                    copy(False)
                        loop(b, sg, lo, hi, h, ir_body, f"ir{h}")
                    tiles(c64(0), e6, MR, uk6, uk6c)
                    tiles(e6, mc, MR4, uk4, uk4c)
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


def row_split(mc: int) -> int:
    """e6: rows [0, e6) of an A block run in 6-row slivers, [e6, mc) in 4-row ones, so that
    an M of 6n + 2 or 6n + 4 has no padded edge sliver (32 = 4*6 + 2*4; the driver's IR
    computes the same)."""
    rem = mc % MR
    return mc - 4 if rem == 4 else mc - 8 if rem == 2 and mc >= 8 else mc


@functools.cache
def compiled() -> dict:
    """The module's functions (backends/llvm.py's jit_functions), compiled on first use:
    gc_sgemm, gc_pack_b (B, rs, cs, kc, cols, out) and gc_sgemm_batch by name, "addrs"."""
    from graphc.backends.llvm import jit_functions
    p, i = ctypes.c_void_p, ctypes.c_int64
    # O2 with unrolling: as fast as O3 on 1024^2, 128x784x512 and 32x160x512 (same GFLOP/s
    # within noise) and compiled in 0.65 s instead of 1.4 s, most of W1's first call
    return jit_functions(_module_text(), {
        "gc_sgemm": (p, p, p, *[i] * 5, p, p, *[i] * 6),
        "gc_pack_b": (p, *[i] * 4, p),
        "gc_sgemm_batch": (p, p, p, *[i] * 3, p, p, *[i] * 5, p)}, 2, True)


def sgemm_fn():
    """The compiled gc_sgemm as a ctypes function (compiled once, cached on disk)."""
    return compiled()["gc_sgemm"]


def address(name: str) -> int:
    """The address of gc_sgemm, gc_pack_b or gc_sgemm_batch (a pool task's function)."""
    return compiled()["addrs"][name]


def batch_fn():
    """The compiled gc_sgemm_batch (A, B, C, M, N, K, bufA, bufB, rsa, csa, rsb, csb, nb,
    offs) as a ctypes function: whole products t < nb, offs = int64 [a_off, b_off] pairs."""
    return compiled()["gc_sgemm_batch"]


def buffer_sizes(K: int, N: int) -> tuple[int, int]:
    """Floats of one thread's packing buffers (A block, B panel) for a product's K and N."""
    kc = min(KC, K)
    return MC * kc, kc * (-(-min(NC, N) // NR) * NR)


def buffers(K: int, N: int):
    """Packing buffers for one thread: (A block, B panel)."""
    na, nb = buffer_sizes(K, N)
    return aligned(na), aligned(nb)


def sgemm(a: np.ndarray, b: np.ndarray, c: np.ndarray, m0: int, m1: int, bufs=None,
          mode: int = 0):
    """c[m0:m1] = a[m0:m1] @ b for 2-D float32 arrays, a and b with any element strides, c
    C-contiguous (a testing entry point); mode 2 reads B in place (its rows contiguous),
    mode 3 packs B sliver by sliver; mode | C_T: c (N x M) gets (a @ b).T."""
    M, K = a.shape
    N = b.shape[1]
    ba, bb = bufs or buffers(K, N)
    st = [s // 4 for s in a.strides + b.strides]
    sgemm_fn()(a.ctypes.data, b.ctypes.data, c.ctypes.data, M, N, K, m0, m1,
               ba.ctypes.data, bb.ctypes.data, *st, mode, M if mode & C_T else N)
