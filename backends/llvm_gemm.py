"""The LLVM backend's float32 matmul kernels on the packed GEMM of backends/llvm_gemm_ir.py:
plan() picks the matmul kernels it can run (operands that are kernel inputs, views of them,
or other movement-op expressions of them, copied per call: `Gather`), run() runs one.

Threads: run() hands out work as tasks (chunks) that the calling thread and the native pool's
workers take (backends/llvm_pool.py); the caller never waits for a worker to start. A
single GEMM packs all of B once into a shared buffer (parts of its slivers taken like
chunks), then computes row chunks against it (gc_sgemm with packed=1: block (jc, pc) at
jc*K + pc*ncp), unless B is small and the chunks long (SHARE_MIN, OWN_B_ROWS): then each
chunk packs B for itself. A batch of products runs in runs of whole products, one
gc_sgemm_batch call each, or, with fewer products than chunks, in row chunks of each
product with per-thread packing.

Small single products take other paths: A rows and B columns both contiguous along K with
M and M x N small against K (a conv weight gradient) run as dot products split over K
(backends/llvm_gemm_dot.py; A may be a conv's dY read in K segments, `seg_view`); one A block
(M <= MC) runs in column chunks (`_columns`), B read in place (gc_sgemm packed=2) when M <=
MR, else packed sliver by sliver as it is used (packed=3), on several threads when each
chunk gets COLUMNS_MIN_WIDTH columns (each chunk packs all of A). A product with N < 16 <= M
(a classifier's last layer) runs as C^T = B^T @ A^T that way, C written transposed (the C_T
flag). A bigger product with M <= N runs in column chunks too, each packing its own B panel
(packed=0), when they are WIDE_COLUMNS wide.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass, replace

import numpy as np

from graphc import kernel as K
from graphc.ops import OPS, Op
from graphc.types import DType

from graphc.backends import llvm_gemm_dot as D
from graphc.backends.llvm_gemm_dot import NOSEG
from graphc.backends.llvm_gemm_ir import (C_T, KC, MC, MR, NC, NR, address,
                                          batch_fn, buffer_sizes, sgemm_fn)
from graphc.backends.llvm_pool import SLOT_A, SLOT_B, Slot, kept_address, spread

MIN_M, MIN_N, MIN_WORK = 4, 8, 1 << 18   # below: the loop kernel (packing would not pay)
THREAD_WORK = 1 << 20  # multiply-adds per thread below which a GEMM stays on fewer threads
                       # (2^22 before: W3's per-step 32x160x512 and 32x512x128 products ran on
                       # one thread; 2 threads: W3's step 6.89 -> 6.19 ms, W2's 4.63 -> 4.41)


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

    ga: "Gather | None" = None  # an operand that is no view: materialised per call
    gb: "Gather | None" = None
    seg_a: tuple = (NOSEG, 0)   # A's K axis in segments (la, ss): A[i, k] at i*sa[0] +
                                # (k // la)*ss + k % la (`D.seg_view`; the dot path only)

    def __post_init__(self):  # the offsets as gc_sgemm_batch reads them: [a_off, b_off] pairs
        self.offs = np.array([self.a_off, self.b_off], np.int64).T.copy()


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


# movement ops only: a copy made with numpy is bit-exact, as the loop kernel's reads are
GATHER_OPS = frozenset({Op.RESHAPE, Op.PERMUTE, Op.EXPAND, Op.SLICE, Op.PAD, Op.CONCAT})


class Gather:
    """An operand built from kernel inputs by movement ops that strides cannot describe
    (a conv weight reshaped after a permute: (16,6,5,5) -> (16,25,6) -> (16,150)). run()
    makes it contiguous with numpy once per call (23-30 us CPU at W2's 16x150 weight), then
    the GEMM reads that copy, instead of the whole matmul staying a loop kernel."""

    def __init__(self, x, ins: list[int], inputs):
        self.nodes = _expr(x, ins, [])
        self.reads = [(ins.index(id(n)), id(n), tuple(n.shape)) for n in inputs
                      if id(n) in {id(m) for m in self.nodes}]
        self.nodes = [n for n in self.nodes if id(n) not in ins]
        self.out = x

    def __call__(self, ptrs: list[int]) -> np.ndarray:
        env = {}
        for i, key, shape in self.reads:
            n = int(np.prod(shape, dtype=np.int64))
            env[key] = np.frombuffer((ctypes.c_float * n).from_address(ptrs[i]),
                                     np.float32).reshape(shape)
        for n in self.nodes:
            env[id(n)] = OPS[n.op].reference(*(env[id(i)] for i in n.inputs), **n.attrs)
        return np.ascontiguousarray(env[id(self.out)], np.float32)


def _expr(x, ins: list[int], order: list):
    """The nodes `x` is computed from (post-order, x last) when every one is a float32
    kernel input or a GATHER_OPS node; None otherwise."""
    if x.dtype is not DType.float32 or (id(x) not in ins and x.op not in GATHER_OPS):
        return None
    if id(x) not in ins:
        for i in x.inputs:
            if _expr(i, ins, order) is None:
                return None
    if all(m is not x for m in order):
        order.append(x)
    return order


def plan(node, kernel: K.Kernel):
    """(GemmSpec, epilogue kernel or None) when a fused matmul node can run on gc_sgemm:
    one float32 matmul whose operands are kernel inputs, views of them (`_view`) or other
    movement-op expressions of them (`Gather`), followed by an elementwise epilogue
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
    ga = gb = None
    seg = (NOSEG, 0)
    if (va is None and vb is not None and vb[3][-2] == 1 and len(a.shape) == 2
            and len(b.shape) == 2):
        got = D.seg_view(a, ins, _view)  # a conv's dY read in place by the dot path
        if (got is not None and got[1][0] >= D.SEG_MIN
                and D.dot_shape(a.shape[0], b.shape[-1], a.shape[1])):
            va, seg = got
    if va is None:  # no view: a copy made per call (Gather), read contiguous
        if _expr(a, ins, []) is None:
            return None
        ga, va = Gather(a, ins, body.inputs), (None, 0, tuple(a.shape), _cstrides(a.shape))
    if vb is None:
        if _expr(b, ins, []) is None:
            return None
        gb, vb = Gather(b, ins, body.inputs), (None, 0, tuple(b.shape), _cstrides(b.shape))
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
    spec = GemmSpec(-1 if ga else ins.index(va[0]), -1 if gb else ins.index(vb[0]),
                    tuple(va[3][-2:]), tuple(vb[3][-2:]), M, N, KK, offsets(va), offsets(vb),
                    ga, gb, seg)
    return spec, (None if epi is None else replace(kernel, body=epi))


def _bufs(K_: int, N: int) -> tuple[int, int]:
    """The addresses of this thread's packing buffers (A block, B panel)."""
    na, nb = buffer_sizes(K_, N)
    return kept_address("a_block", na), kept_address("b_panel", nb)


SHARE_B = True     # multi-threaded single GEMMs: pack B once, shared by all threads
CHUNK_WORK = 1 << 21  # multiply-adds per row chunk a thread takes (~50 us): smaller chunks
                      # balance better when another process holds a core, each costs a call
                      # (no effect while MAX_CHUNKS is 1: one chunk per thread)
MAX_CHUNKS = 1     # ... per thread at most: each chunk packs its A rows against the whole
                   # shared B again, or (column chunks) all of A; on the native pool, whose
                   # caller and worker take chunks from opposite ends, 2 per thread lost at
                   # every W1/W5 shape (2 threads: 128x512x256 0.305 -> 0.287 ms, 128x784x512
                   # 0.827 -> 0.784, W1 3.29 -> 3.18 ms)
SHARE_MAX = 1 << 24  # floats (64 MiB): a bigger B keeps the per-thread packing (bounded memory)
SHARE_MIN = 1 << 18  # floats: a smaller B is packed by each row chunk for itself when chunks
OWN_B_ROWS = 128     # have this many rows (no pass behind a barrier, B L2-hot; 2 threads,
                     # W1's dW1 784x512x128 0.94 -> 0.88 ms, 512x256x128 0.45 -> 0.37)


def _pack_tasks(b, rsb, csb, N, K_, out, t, parts) -> list:
    """Pool tasks packing part t of `parts` of every (jc, pc) block of B into `out` (block
    (jc, pc) at jc*K + pc*ncp, in NR-column slivers of kc rows), splitting each block's
    slivers."""
    pack, tasks = address("gc_pack_b"), []
    for jc in range(0, N, NC):
        nc = min(NC, N - jc)
        nsl = -(-nc // NR)
        s0, s1 = nsl * t // parts, nsl * (t + 1) // parts
        if s0 >= s1:
            continue
        cols = min(nc, s1 * NR) - s0 * NR
        for pc in range(0, K_, KC):
            kc = min(KC, K_ - pc)
            tasks.append((pack, (b + 4 * (pc * rsb + (jc + s0 * NR) * csb), rsb, csb, kc, cols,
                                 out + 4 * (jc * K_ + pc * nsl * NR + s0 * NR * kc))))
    return tasks


def _nchunks(work: int, threads: int) -> int:
    """Chunks for `work` multiply-adds: about CHUNK_WORK each, at least one per thread and at
    most MAX_CHUNKS per thread (1 on one thread)."""
    return 1 if threads == 1 else max(threads, min(MAX_CHUNKS * threads, work // CHUNK_WORK))


def _chunk_rows(M: int, work: int, threads: int) -> int:
    """Rows per chunk (a multiple of MR), for `_nchunks` chunks."""
    return -(-M // (_nchunks(work, threads) * MR)) * MR


def _shared_b(a, b, c, M, N, K_, st, threads):
    """One GEMM on several threads: B packed once into a shared buffer (its slivers split
    into one part per thread), then row chunks computed against it."""
    out = kept_address("packed_b", K_ * (-(-N // NR) * NR))
    parts = max(1, min(threads, -(-N // NR)))
    pack = [t for p in range(parts) for t in _pack_tasks(b, st[2], st[3], N, K_, out, p, parts)]
    rows, fn = _chunk_rows(M, M * N * K_, threads), address("gc_sgemm")
    chunks = [(fn, (a, b, c, M, N, K_, m0, min(M, m0 + rows), SLOT_A, out, *st, 1, N))
              for m0 in range(0, M, rows)]
    spread([pack, chunks], threads, buffer_sizes(K_, N))


def run(spec: GemmSpec, ptrs: list[int], threads: int):
    """C = A @ B for every batch: as dot products (llvm_gemm_dot) for skinny products, in
    column chunks for few rows or M <= N, transposed for few columns, else in row chunks
    with B packed once or per task; chunks run on the native pool (backends/llvm_pool.py)."""
    M, N, K_ = spec.M, spec.N, spec.K
    ga = spec.ga(ptrs) if spec.ga else None  # (kept alive until the products are done)
    gb = spec.gb(ptrs) if spec.gb else None
    a = ga.ctypes.data if ga is not None else ptrs[spec.ia]
    b = gb.ctypes.data if gb is not None else ptrs[spec.ib]
    c = ptrs[-1]
    nb, asked = len(spec.a_off), threads
    work = nb * M * N * K_ // THREAD_WORK
    threads = max(1, min(asked, work, nb * -(-M // MR)))
    st = spec.sa + spec.sb
    if spec.seg_a[0] != NOSEG or (D.DOT and nb == 1 and spec.sa[1] == 1 and spec.sb[0] == 1
                                  and D.dot_shape(M, N, K_)):
        return D.run_dot(a + 4 * spec.a_off[0], b + 4 * spec.b_off[0], c, M, N, K_,
                         spec.sa[0], spec.sb[1], spec.seg_a, max(1, min(asked, work)))
    if nb == 1 and N < NR <= M and TRANSPOSE_SMALL_N:  # C^T = B^T @ A^T, C stored transposed
        tc = max(1, min(asked, work, -(-M // NR)))
        st_t = (st[3], st[2], st[1], st[0])
        direct = DIRECT and st_t[3] == 1 and N <= DIRECT_MAX_M and K_ <= DIRECT_MAX_K
        return _columns(b + 4 * spec.b_off[0], a + 4 * spec.a_off[0], c, N, M, K_, st_t, tc,
                        (2 if direct else 3) | C_T, N)
    tc = max(1, min(asked, work, -(-N // NR)))  # threads for column chunks
    direct = DIRECT and st[3] == 1 and M <= DIRECT_MAX_M and K_ <= DIRECT_MAX_K
    if nb == 1 and (direct or (SLIVERS and M <= MC and (tc == 1
                                                          or N >= COLUMNS_MIN_WIDTH * tc))):
        return _columns(a + 4 * spec.a_off[0], b + 4 * spec.b_off[0], c, M, N, K_, st, tc,
                        2 if direct else 3, N)
    if nb == 1 and tc > 1 and MC < M <= N and N >= WIDE_COLUMNS * tc:
        return _columns(a + 4 * spec.a_off[0], b + 4 * spec.b_off[0], c, M, N, K_, st, tc, 0,
                        N)
    if threads > 1 and SHARE_B and nb == 1 and K_ * (N + NR) <= SHARE_MAX and (
            K_ * (N + NR) >= SHARE_MIN or _chunk_rows(M, M * N * K_, threads) < OWN_B_ROWS):
        return _shared_b(a + 4 * spec.a_off[0], b + 4 * spec.b_off[0], c, M, N, K_, st,
                         threads)
    return _per_thread(spec, a, b, c, st, threads)


def _per_thread(spec: GemmSpec, a, b, c, st, threads: int):
    """Each task packs B for itself: a batch of products (whole products per task when
    there are enough), or one product whose B is too big (or too small) to share (row
    chunks)."""
    M, N, K_, nb = spec.M, spec.N, spec.K, len(spec.a_off)
    n = _nchunks(nb * M * N * K_, threads)
    if nb > 1 and nb >= n:  # whole products, n runs of consecutive ones, one call each
        bounds = [nb * i // n for i in range(n + 1)]
        fn, offs = address("gc_sgemm_batch"), spec.offs.ctypes.data
        tasks = [(fn, (a, b, c + 4 * t0 * M * N, M, N, K_, SLOT_A, SLOT_B, *st, t1 - t0,
                       offs + 16 * t0)) for t0, t1 in zip(bounds, bounds[1:])]
    else:
        rows, fn = -(-M // (-(-n // nb) * MR)) * MR, address("gc_sgemm")
        tasks = [(fn, (a + 4 * oa, b + 4 * ob, c + 4 * t * M * N, M, N, K_, m0,
                       min(M, m0 + rows), SLOT_A, SLOT_B, *st, 0, N))
                 for t, (oa, ob) in enumerate(zip(spec.a_off, spec.b_off))
                 for m0 in range(0, M, rows)]
    if len(tasks) == 1:
        return _one(tasks[0], K_, N)
    spread([tasks], threads, buffer_sizes(K_, N))


def _one(task, K_: int, N: int):
    """Run one task on the calling thread, on its own packing buffers (`_bufs`): no pool."""
    fn, args = task
    bufs = _bufs(K_, N)
    call = sgemm_fn() if fn == address("gc_sgemm") else batch_fn()
    call(*[bufs[a] if type(a) is Slot else a for a in args])


TRANSPOSE_SMALL_N = True  # N < 16 <= M: C^T = B^T @ A^T, run as one A block (N rows) and
                          # written transposed (flag C_T): no 16-column sliver padded from N,
                          # and A^T packed sliver by sliver, with 8x8 transposes, where packing
                          # A was one scalar copy per element (W1's 256x128x10 with A = X^T:
                          # 26.8 -> 10.6 us, W5's 256x256x10 40.1 -> 28.7, native calls)
SLIVERS = True     # one A block (M <= MC): B packed sliver by sliver as it is used (packed=3:
                   # no pass over all of B, each sliver L1-hot for its row slivers; one
                   # thread: 32x160x512 (W3) 86 -> 68 us, 128x784x512 1.38 -> 1.34 ms) ...
COLUMNS_MIN_WIDTH = 2 * NR  # ... on several threads when each gets this many columns
                   # (each column chunk packs all of A, at most MC rows; row chunks against a
                   # B packed behind a barrier were slower, 2 threads: W3's per-step 32x512x128
                   # (B^T) 83 -> 54 us, W2's 64x400x120 106 -> 74, 144^3 67 -> 55, 96x512x64
                   # 77 -> 64; 128x512x48 as fast)
WIDE_COLUMNS = 128  # M > MC: column chunks too, each packing its own B panel (mode 0), when
                    # M <= N and each is this wide (every chunk packs all of A: a thread's
                    # extra packing against its work ~ threads/N; 2 threads: W5's 256x784x512
                    # 1.25 -> 1.19 ms, 256x512x256 458 -> 437 us, 512^3 as fast; 1024x512x256,
                    # M = 4N, 2% slower in columns: kept in rows)
DIRECT = True      # B with contiguous rows read in place (packed=2) when M is at most
DIRECT_MAX_M = MR  # this (one row sliver: each B element used once; W2's 6 x 50176 x 25:
                   # 0.27 ms with packed=3, 0.25 in place; at M = 16, 2 or 3 row slivers,
                   # packed=3 is as fast, at M = 32 faster) ...
DIRECT_MAX_K = 256     # ... and K at most this (a sliver's kc rows stay in L1 between uses;
                       # 6 x 4096 x 1024: 3.8 -> 4.5 ms)


def _columns(a, b, c, M, N, K_, st, threads: int, mode: int, ldc: int):
    """C = A @ B in column chunks over threads, for M <= MC B read in place (mode 2: packing
    B would cost a pass over all of it for the few times each element is used: W2's 6 x
    50176 x 25) or packed sliver by sliver (mode 3), else (mode 0) each chunk's B panel
    packed by the chunk. Each chunk packs all of A. mode | C_T: C stored transposed (C^T's
    row stride ldc)."""
    n = _nchunks(M * N * K_, threads)
    cols = -(-N // (n * NR)) * NR
    width = cols if mode & 3 == 0 else NR  # (the B buffer: a chunk's panel, or one sliver)
    if threads == 1:  # (the common case for an LSTM's per-step products: no closures)
        return sgemm_fn()(a, b, c, M, N, K_, 0, M, *_bufs(K_, width), *st, mode, ldc)
    fn = address("gc_sgemm")
    col = ldc if mode & C_T else 1  # (C's element stride along the columns)
    spread([[(fn, (a, b + 4 * n0 * st[3], c + 4 * n0 * col, M, min(N, n0 + cols) - n0, K_, 0,
                   M, SLOT_A, SLOT_B, *st, mode, ldc)) for n0 in range(0, N, cols)]],
           threads, buffer_sizes(K_, width))
