"""A float32 GEMM written in LLVM IR (IRBuilder), BLIS-style:

    C[m0:m1, :] = A[m0:m1, :] @ B        A: M x K, B: K x N (any element strides: a transposed
                                         operand packs as well), C: M x N row-major contiguous

    for jc in 0..N step NC:                 B panel K-block x NC, packed into 16-column slivers
      for pc in 0..K step KC:               (k-major, zero-padded), once per thread
        pack B[pc:pc+kc, jc:jc+nc]
        for ic in m0..m1 step MC:           A block MC x KC, packed into 6-row slivers
          pack A[ic:ic+mc, pc:pc+kc]
          for jr in 0..nc step 16:
            for ir in 0..mc step 6:
              6x16 micro-kernel: 12 <8 x float> accumulators in registers, per k one
              broadcast of each of 6 A values and 2 vector loads of B, 12 llvm.fma.v8f32;
              C tile += (or = for the first k block) the result; edge tiles go through a
              6x16 scratch tile

Threads split the rows (m0, m1) (the caller runs one call per thread with its own packing
buffers). For a single (unbatched) GEMM on several threads, run() instead packs all of B once,
split over the threads (gc_pack_b per sliver range), waits for them, and then runs gc_sgemm
with packed=1 (bufB: that shared packed B, block (jc, pc) at jc*K + pc*ncp) on row chunks
(SPLIT per thread) that the threads take from a shared counter. The module is compiled once and cached like every kernel (memory + disk).
"""
from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass, replace

import numpy as np

from graphc import kernel as K
from graphc.ops import Op
from graphc.types import DType

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
        full = b.icmp_signed("<=", b.mul(b.add(s, c64(1)), c64(NR)), cols)
        with b.if_else(b.and_(full, b.icmp_signed("==", cs, c64(1)))) as (t, e):
            with t:
                loop(b, pb, c64(0), kc, 1, fast, "kf")
            with e:
                loop(b, pb, c64(0), kc, 1, k_body, "k")
    loop(b, pb, c64(0), nsl, 1, pb_body, "s")
    b.ret_void()

    # ---- micro-kernel: C (ldc) [+]= Ap (kc x MR) * Bp (kc x NR) ----
    uk, b = func("gc_ukernel", [fp, fp, fp, i64, i64, i1], ["Ap", "Bp", "C", "ldc", "kc", "beta"])
    uk.attributes.add("alwaysinline")
    Ap, Bp, C, ldc, kc, beta = uk.args
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
    bv = [b.load(b.bitcast(b.gep(Bp, [b.add(b.mul(k, c64(NR)), c64(8 * h))]), vp), align=4)
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
    for r in range(MR):
        for h in range(2):
            p = b.bitcast(b.gep(C, [b.add(b.mul(c64(r), ldc), c64(8 * h))]), vp)
            old = b.select(beta, b.load(p, align=4), zero)
            b.store(b.fadd(old, accs[2 * r + h]), p, align=4)
    b.ret_void()

    # ---- driver ----
    sg, b = func("gc_sgemm", [fp, fp, fp, i64, i64, i64, i64, i64, fp, fp] + [i64] * 5,
                 ["A", "B", "C", "M", "N", "K", "m0", "m1", "bufA", "bufB",
                  "rsa", "csa", "rsb", "csb", "packed"])
    A, B, C, M, N, K, m0, m1, bufA, bufB, rsa, csa, rsb, csb, packed = sg.args
    prepacked = b.icmp_signed("!=", packed, c64(0))
    with b.goto_entry_block():
        tile = b.alloca(ir.ArrayType(f32, MR * NR), name="tile")
    tp = b.bitcast(tile, fp)

    def jc_body(jc):
        nc = smin(b, c64(NC), b.sub(N, jc))

        def pc_body(pc):
            kc = smin(b, c64(KC), b.sub(K, pc))
            first = b.icmp_signed("!=", pc, c64(0))
            with b.if_then(b.not_(prepacked)):
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

                    def ir_body(ir_):
                        mr = smin(b, c64(MR), b.sub(mc, ir_))
                        asl = b.gep(bufA, [b.mul(ir_, kc)])
                        cp = b.gep(C, [b.add(b.mul(b.add(ic, ir_), N), b.add(jc, jr))])
                        full = b.and_(b.icmp_signed("==", mr, c64(MR)),
                                      b.icmp_signed("==", nr, c64(NR)))
                        with b.if_else(full) as (then, other):
                            with then:
                                b.call(uk, [asl, bsl, cp, N, kc, first])
                            with other:  # edge: through the scratch tile
                                def copy(to_tile):
                                    def rr(r):
                                        def cc(c):
                                            t = b.gep(tp, [b.add(b.mul(r, c64(NR)), c)])
                                            x = b.gep(cp, [b.add(b.mul(r, N), c)])
                                            src, dst = (x, t) if to_tile else (t, x)
                                            b.store(b.load(src), dst)
                                        loop(b, sg, c64(0), nr, 1, cc, "cc")
                                    loop(b, sg, c64(0), mr, 1, rr, "rr")
                                with b.if_then(first):
                                    copy(True)
                                b.call(uk, [asl, bsl, tp, c64(NR), kc, first])
                                copy(False)
                    loop(b, sg, c64(0), mc, MR, ir_body, "ir")
                loop(b, sg, c64(0), nc, NR, jr_body, "jr")
            loop(b, sg, m0, m1, MC, ic_body, "ic")
        loop(b, sg, c64(0), K, KC, pc_body, "pc")
    loop(b, sg, c64(0), N, NC, jc_body, "jc")
    b.ret_void()
    return str(m)


def sgemm_fn():
    """The compiled gc_sgemm as a ctypes function (compiled once, cached on disk)."""
    if not _FN:
        from graphc.backends.llvm import jit_info
        addrs, info = jit_info(_module_text(), ["gc_sgemm", "gc_pack_b"], 3, True)  # unrolled
        _FN.append(ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 3, *[ctypes.c_int64] * 5,
                                    ctypes.c_void_p, ctypes.c_void_p,
                                    *[ctypes.c_int64] * 5)(addrs["gc_sgemm"]))
        _FN.append(info)  # keeps the engine alive
        _FN.append(ctypes.CFUNCTYPE(None, ctypes.c_void_p, *[ctypes.c_int64] * 4,
                                    ctypes.c_void_p)(addrs["gc_pack_b"]))
    return _FN[0]


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


def sgemm(a: np.ndarray, b: np.ndarray, c: np.ndarray, m0: int, m1: int, bufs=None):
    """c[m0:m1] = a[m0:m1] @ b for 2-D float32 arrays, a and b with any element strides, c
    C-contiguous (a testing entry point)."""
    M, K = a.shape
    N = b.shape[1]
    ba, bb = bufs or buffers(K, N)
    st = [s // 4 for s in a.strides + b.strides]
    sgemm_fn()(a.ctypes.data, b.ctypes.data, c.ctypes.data, M, N, K, m0, m1,
               ba.ctypes.data, bb.ctypes.data, *st, 0)


# ---- use in the backend: a matmul kernel = GEMM + its elementwise epilogue ----------------------
MIN_M, MIN_N, MIN_WORK = 4, 8, 1 << 18   # below: the loop kernel (packing would not pay)
THREAD_WORK = 1 << 22  # multiply-adds per thread below which a GEMM stays on fewer threads
                       # (a thread hand-off can cost ~1 ms on a loaded machine)


@dataclass
class GemmSpec:
    ia: int            # kernel argument index of A and B
    ib: int
    sa: tuple          # (row stride, column stride) of A and of B, in elements
    sb: tuple
    M: int
    N: int
    K: int
    a_off: list        # per output batch: element offset into A, B
    b_off: list


def _split(kernel: K.Kernel):
    """The row_matmul kernel's body without zero-init and accumulation: the epilogue loops
    only (None when there is no epilogue); False when the body is not that shape."""
    def walk(body):
        if len(body) == 1 and isinstance(body[0], K.Loop):
            inner = body[0].body
            if (len(inner) in (2, 3) and all(isinstance(s, K.Loop) for s in inner)
                    and inner[0].var.startswith("j") and inner[1].var.startswith("k")):
                return ((replace(body[0], body=(inner[2],)),) if len(inner) == 3 else None)
            sub = walk(inner)
            return sub if sub in (None, False) else (replace(body[0], body=sub),)
        return False
    return walk(kernel.body)


def _cstrides(shape) -> tuple:
    """Row-major element strides."""
    return tuple(int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape)))


def _view(x, ins: list[int]):
    """(input id, element offset, shape, strides) when `x` reads a kernel input through views
    only (slice with positive steps, permute, expand, reshape of a contiguous view): the
    GEMM then reads that input in place with these strides, instead of the loop kernel
    (an LSTM's x[t] @ Wx, a transposed slice in its backward pass). None otherwise."""
    if id(x) in ins:
        return id(x), 0, tuple(x.shape), _cstrides(x.shape)
    if x.op not in (Op.SLICE, Op.PERMUTE, Op.EXPAND, Op.RESHAPE):
        return None
    src = _view(x.inputs[0], ins)
    if src is None:
        return None
    i, off, shape, strides = src
    if x.op is Op.PERMUTE:
        perm = x.attrs["perm"]
        return i, off, tuple(shape[p] for p in perm), tuple(strides[p] for p in perm)
    if x.op is Op.SLICE:
        starts, steps = x.attrs["starts"], x.attrs["steps"]
        if any(s <= 0 for s in steps):
            return None
        off += sum(s * st for s, st in zip(starts, strides))
        return i, off, tuple(x.shape), tuple(st * s for st, s in zip(strides, steps))
    if x.op is Op.EXPAND:
        lead = len(x.shape) - len(shape)
        full = (0,) * lead + tuple(0 if n != m else st for n, m, st in
                                   zip(shape, x.shape[lead:], strides))
        return i, off, tuple(x.shape), full
    # RESHAPE: only of a view that is contiguous (size-1 axes aside)
    want = 1
    for n, st in zip(reversed(shape), reversed(strides)):
        if n != 1 and st != want:
            return None
        want *= n
    return i, off, tuple(x.shape), _cstrides(x.shape)


def plan(node, kernel: K.Kernel):
    """(GemmSpec, epilogue kernel or None) when a fused matmul node can run on gc_sgemm:
    one float32 matmul whose operands are kernel inputs or views of them (`_view`), followed
    by an elementwise epilogue
    (the row_matmul shape of graphc.lower); None otherwise."""
    if kernel.kind != "matmul":
        return None
    body = node.attrs["body"]
    mms = [n for n in body.nodes if n.op is Op.MATMUL]
    if len(mms) != 1:
        return None
    mm = mms[0]
    ins = [id(n) for n in body.inputs]

    a, b = mm.inputs
    if mm.dtype is not DType.float32 or len(a.shape) < 2 or len(b.shape) < 2:
        return None
    va, vb = _view(a, ins), _view(b, ins)
    if va is None or vb is None:
        return None
    M, KK, N = a.shape[-2], a.shape[-1], b.shape[-1]
    batch = tuple(mm.shape[:-2])
    nb = int(np.prod(batch, dtype=np.int64))
    if M < MIN_M or N < MIN_N or KK < 1 or nb * M * N * KK < MIN_WORK:
        return None  # (a batch of small products counts whole: a conv's weight gradient)
    epi = _split(kernel)
    if epi is False:
        return None

    def offsets(view):  # per output batch: the element offset of its (rows x cols) matrix
        _, off, shape, strides = view
        bs, bst = shape[:-2], strides[:-2]
        idx = np.full(bs, off, np.int64)
        for ax, (n, st) in enumerate(zip(bs, bst)):
            idx = idx + (np.arange(n, dtype=np.int64) * st).reshape(
                (1,) * ax + (n,) + (1,) * (len(bs) - ax - 1))
        return np.broadcast_to(idx, batch).reshape(nb).tolist()
    spec = GemmSpec(ins.index(va[0]), ins.index(vb[0]), tuple(va[3][-2:]), tuple(vb[3][-2:]),
                    M, N, KK, offsets(va), offsets(vb))
    return spec, (None if epi is None else replace(kernel, body=epi))


_TLS = threading.local()


def _bufs(K_: int, N: int):
    """This thread's packing buffers, kept and grown as needed (never freed mid-call)."""
    kc, nc = min(KC, K_), -(-min(NC, N) // NR) * NR
    got = getattr(_TLS, "bufs", None)
    if got is None or got[0].size < MC * kc or got[1].size < kc * nc:
        old = (0, 0) if got is None else (got[0].size, got[1].size)
        _TLS.bufs = got = (_aligned(max(MC * kc, old[0])), _aligned(max(kc * nc, old[1])))
    return got


def _call(a, b, c, M, N, K_, m0, m1, strides):
    ba, bb = _bufs(K_, N)
    sgemm_fn()(a, b, c, M, N, K_, m0, m1, ba.ctypes.data, bb.ctypes.data, *strides, 0)


SHARE_B = True     # multi-threaded single GEMMs: pack B once, shared by all threads
SPLIT = 2          # ... and split M into SPLIT x threads chunks that threads take in turn
SHARE_MAX = 1 << 24  # floats (64 MiB): a bigger B keeps the per-thread packing (bounded memory)


def _packed(n: int) -> np.ndarray:
    """The calling thread's buffer for a whole packed B (kept and grown; the caller waits
    for every worker before it returns, so reuse on its next call is safe)."""
    got = getattr(_TLS, "packed", None)
    if got is None or got.size < n:
        _TLS.packed = got = _aligned(n)
    return got


def _pack_part(b, rsb, csb, N, K_, out, t, parts):
    """Pack part t of `parts` of every (jc, pc) block of B into `out` (block (jc, pc) at
    jc*K + pc*ncp, in NR-column slivers of kc rows), splitting each block's slivers."""
    pack = packb_fn()
    for jc in range(0, N, NC):
        nc = min(NC, N - jc)
        nsl = -(-nc // NR)
        s0, s1 = nsl * t // parts, nsl * (t + 1) // parts
        if s0 >= s1:
            continue
        cols = min(nc, s1 * NR) - s0 * NR
        for pc in range(0, K_, KC):
            kc = min(KC, K_ - pc)
            pack(b + 4 * (pc * rsb + (jc + s0 * NR) * csb), rsb, csb, kc, cols,
                 out + 4 * (jc * K_ + pc * nsl * NR + s0 * NR * kc))


def _run_shared(a, b, c, M, N, K_, st, threads, chunks, pool):
    """One GEMM on `threads` threads: B packed once (split over the threads), then the
    row chunks computed against it, taken in turn from a shared counter."""
    import itertools
    out = _packed(K_ * (-(-N // NR) * NR)).ctypes.data
    rsb, csb = st[2], st[3]
    futs = [pool().submit(_pack_part, b, rsb, csb, N, K_, out, t, threads)
            for t in range(1, threads)]
    _pack_part(b, rsb, csb, N, K_, out, 0, threads)
    for f in futs:
        f.result()
    rows = -(-M // (chunks * MR)) * MR
    starts = list(range(0, M, rows))
    counter = itertools.count()  # next() is atomic under the GIL
    fn = sgemm_fn()

    def work():
        ba = _bufs(K_, N)[0].ctypes.data
        while (i := next(counter)) < len(starts):
            m0 = starts[i]
            fn(a, b, c, M, N, K_, m0, min(M, m0 + rows), ba, out, *st, 1)
    futs = [pool().submit(work) for _ in range(1, threads)]
    work()
    for f in futs:
        f.result()


def run(spec: GemmSpec, ptrs: list[int], threads: int, pool):
    """C = A @ B for every batch, rows split over threads (ctypes releases the GIL)."""
    M, N, K_ = spec.M, spec.N, spec.K
    a, b, c = ptrs[spec.ia], ptrs[spec.ib], ptrs[-1]
    chunks = max(1, min(threads, (M * N * K_) // THREAD_WORK, -(-M // MR)))
    st = spec.sa + spec.sb
    if SHARE_B and chunks > 1 and len(spec.a_off) == 1 and K_ * (N + NR) <= SHARE_MAX:
        nth = chunks
        chunks = max(1, min(SPLIT * chunks, -(-M // MR)))
        return _run_shared(a + 4 * spec.a_off[0], b + 4 * spec.b_off[0], c, M, N, K_, st,
                           nth, chunks, pool)
    rows = -(-M // (chunks * MR)) * MR
    tasks = [(a + 4 * oa, b + 4 * ob, c + 4 * t * M * N, M, N, K_, m0, min(M, m0 + rows), st)
             for t, (oa, ob) in enumerate(zip(spec.a_off, spec.b_off))
             for m0 in range(0, M, rows)]
    futs = [pool().submit(_call, *t) for t in tasks[1:]] if len(tasks) > 1 else []
    _call(*tasks[0])
    for f in futs:
        f.result()
