"""The packed GEMM of the LLVM backend (backends/llvm_gemm.py, llvm_gemm_ir.py) against
numpy: odd sizes, edge tiles, several K blocks, batched and broadcast operands, operands
copied because no view describes them, fused epilogues, threads, and a training step whose
matmuls run on it (thresholds lowered so small cases take the path); the skinny paths: dot
products for K-contiguous operands (llvm_gemm_dot.py) and B read in place; 4-row tail slivers,
B packed sliver by sliver (packed=3) and the transposing pack of llvm_gemm_parts.py."""
import numpy as np
import pytest

import graphc as gc

L = pytest.importorskip("graphc.backends.llvm")
from graphc.backends import llvm_gemm as G  # noqa: E402
from graphc.backends.llvm_gemm_ir import sgemm  # noqa: E402


@pytest.fixture
def always_gemm(monkeypatch):
    monkeypatch.setattr(G, "MIN_M", 1)
    monkeypatch.setattr(G, "MIN_N", 1)
    monkeypatch.setattr(G, "MIN_WORK", 1)


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (3, 5, 7), (17, 17, 17), (6, 16, 16),
                                   (1000, 3, 17), (17, 600, 1000), (97, 513, 33)])
def test_sgemm_direct(M, K, N):
    rng = np.random.default_rng(M * 7 + K + N)
    a, b = _rand(rng, M, K), _rand(rng, K, N)
    c = np.full((M, N), np.nan, np.float32)
    sgemm(a, b, c, 0, M)
    np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=1e-4 * np.sqrt(K))
    c2 = np.full((M, N), 7.0, np.float32)  # a row range leaves the rest alone
    sgemm(a, b, c2, M // 2, M)
    np.testing.assert_allclose(c2[M // 2:], (a @ b)[M // 2:], rtol=1e-4, atol=1e-4 * np.sqrt(K))
    assert (c2[:M // 2] == 7.0).all()


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("M,K,N", [(1, 3, 1000), (3, 1000, 17), (1000, 17, 3), (130, 260, 70)])
def test_matmul_epilogue_through_gemm(always_gemm, M, K, N, threads):
    rng = np.random.default_rng(M + K + N)
    a, b, c = _rand(rng, M, K), _rand(rng, K, N), _rand(rng, N)
    f = gc.compile(lambda a, b, c: gc.maximum(a @ b + c, 0.0) * 2.0,
                   backend=L.LLVMBackend(threads=threads))
    prog = f.lower(a, b, c).program
    assert any(s.gemm is not None for s in prog.steps)
    np.testing.assert_allclose(f(a, b, c), np.maximum(a @ b + c, 0) * 2, rtol=1e-4,
                               atol=1e-4 * np.sqrt(K))


@pytest.mark.parametrize("sa,sb", [((3, 40, 50), (3, 50, 60)), ((40, 50), (2, 3, 50, 60)),
                                   ((2, 1, 17, 5), (3, 5, 9)), ((4, 7, 8), (8, 3))])
def test_batched_and_broadcast(always_gemm, sa, sb):
    rng = np.random.default_rng(len(sa) * 10 + len(sb))
    a, b = _rand(rng, *sa), _rand(rng, *sb)
    f = gc.compile(lambda a, b: a @ b, backend="llvm")
    assert any(s.gemm is not None for s in f.lower(a, b).program.steps)
    np.testing.assert_allclose(f(a, b), a @ b, rtol=1e-4, atol=1e-4)


def _run_single(M, K, N, ta, tb, threads):
    """One M x K x N product through run() (A, B transposed in memory when ta, tb), checked
    against numpy; the output starts as NaN so any element left unwritten shows."""
    rng = np.random.default_rng(M + K + N)
    a, b = _rand(rng, M, K), _rand(rng, K, N)
    aa = np.ascontiguousarray(a.T) if ta else a
    bb = np.ascontiguousarray(b.T) if tb else b
    c = np.full((M, N), np.nan, np.float32)
    spec = G.GemmSpec(0, 1, (1, M) if ta else (K, 1), (1, K) if tb else (N, 1), M, N, K,
                      [0], [0])
    G.run(spec, [aa.ctypes.data, bb.ctypes.data, c.ctypes.data], threads)
    np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=1e-4 * np.sqrt(K))


def test_large_default_thresholds_use_gemm():
    rng = np.random.default_rng(1)
    a, b = _rand(rng, 200, 300), _rand(rng, 300, 100)
    f = gc.compile(lambda a, b: a @ b, backend="llvm")
    assert [s.gemm is not None for s in f.lower(a, b).program.steps] == [True]
    np.testing.assert_allclose(f(a, b), a @ b, rtol=1e-4, atol=1e-3)
    off = gc.compile(lambda a, b: a @ b, backend=L.LLVMBackend(gemm=False))
    assert [s.gemm for s in off.lower(a, b).program.steps] == [None]


def test_training_step_gradients_through_gemm(always_gemm):
    def loss(W1, W2, X, Y):
        h = gc.tanh(X @ W1)
        z = h @ W2
        z = z - gc.max(z, axis=1, keepdims=True)
        return -gc.sum(Y * (z - gc.log(gc.sum(gc.exp(z), axis=1, keepdims=True)))) / X.shape[0]
    rng = np.random.default_rng(3)
    args = (_rand(rng, 13, 21) * 0.3, _rand(rng, 21, 5) * 0.3, _rand(rng, 19, 13),
            np.eye(5, dtype=np.float32)[rng.integers(0, 5, 19)])
    step = lambda *a: gc.value_and_grad(loss, argnums=(0, 1))(*a)  # noqa: E731
    got = gc.compile(step, backend="llvm")(*args)
    want = gc.compile(step, backend="numpy")(*args)
    for g, w in zip(np.concatenate([np.ravel(x) for x in _flat(got)]),
                    np.concatenate([np.ravel(x) for x in _flat(want)])):
        assert abs(g - w) <= 1e-4 + 1e-3 * abs(w)


def _flat(x):
    if isinstance(x, (tuple, list)):
        return [v for e in x for v in _flat(e)]
    return [np.asarray(x)]


@pytest.mark.parametrize("ta,tb", [(True, False), (False, True), (True, True)])
def test_transposed_operands(always_gemm, ta, tb):
    rng = np.random.default_rng(7)
    x, y = _rand(rng, 37, 23), _rand(rng, 23, 41)
    xs = np.ascontiguousarray(x.T) if ta else x   # stored transposed, used as x
    ys = np.ascontiguousarray(y.T) if tb else y
    fa = (lambda v: gc.transpose(v)) if ta else (lambda v: v)
    fb = (lambda v: gc.transpose(v)) if tb else (lambda v: v)
    f = gc.compile(lambda p, q: fa(p) @ fb(q) - 1.0, backend="llvm")
    assert any(s.gemm is not None for s in f.lower(xs, ys).program.steps)
    np.testing.assert_allclose(f(xs, ys), x @ y - 1, rtol=1e-4, atol=1e-4)
    c = np.empty((37, 41), np.float32)
    sgemm(xs.T if ta else xs, ys.T if tb else ys, c, 0, 37)  # strided views directly
    np.testing.assert_allclose(c, x @ y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("M,K,N,ta,tb", [(97, 1033, 2100, False, False),
                                         (130, 517, 2049, True, False),
                                         (301, 64, 33, False, True), (7, 700, 16, True, True)])
def test_run_threads_shared_b(monkeypatch, share, threads, M, K, N, ta, tb):
    """run() on several threads: B packed once and shared (several N and K blocks, edge
    slivers split between threads, transposed operands) or packed per thread (whatever B's
    size and N: SHARE_MIN off, column chunks off)."""
    monkeypatch.setattr(G, "THREAD_WORK", 1)
    monkeypatch.setattr(G, "SHARE_B", share)
    monkeypatch.setattr(G, "SHARE_MIN", 0)
    monkeypatch.setattr(G, "COLUMNS_MIN_WIDTH", 1 << 30)
    monkeypatch.setattr(G, "WIDE_COLUMNS", 1 << 30)
    _run_single(M, K, N, ta, tb, threads)


VIEW_CASES = {  # operands read in place through views of the kernel inputs (llvm_gemm._view)
    "row block of a 3-d input": (lambda x, w: x[2] @ w, ((5, 17, 9), (9, 13))),
    "column slice (an LSTM gate)": (lambda x, w: x[:, 8:20] @ w, ((17, 32), (12, 7))),
    "transposed slice": (lambda x, w: gc.transpose(x[1]) @ w, ((3, 11, 19), (11, 5))),
    "strided slice": (lambda x, w: x[::2, 1::3] @ w, ((33, 30), (10, 6))),
    "reshape of a contiguous block": (lambda x, w: gc.reshape(x[1:3], (22, 9)) @ w,
                                      ((4, 11, 9), (9, 8))),
    "broadcast batch": (lambda x, w: gc.broadcast_to(x, (3, 7, 10)) @ w, ((7, 10), (3, 10, 4))),
    "slice of a batch, both sides": (lambda x, w: x[:, 1:] @ w[1:, :, 2:], ((4, 6, 5), (5, 5, 9))),
}


@pytest.mark.parametrize("case", list(VIEW_CASES))
def test_view_operands_read_in_place(always_gemm, case):
    fn, shapes = VIEW_CASES[case]
    rng = np.random.default_rng(len(case))
    x, w = (_rand(rng, *s) for s in shapes)
    f = gc.compile(lambda x, w: fn(x, w) * 2.0, backend="llvm")
    steps = f.lower(x, w).program.steps
    assert any(s.gemm is not None for s in steps), case
    want = np.asarray(fn(x, w)) * 2.0
    np.testing.assert_allclose(f(x, w), want, rtol=1e-4, atol=1e-4)


def _conv_weight(w):  # W2's conv weight as its matmul reads it: (16,6,5,5) -> (16, 25*6)
    return gc.reshape(gc.transpose(gc.reshape(w, (1, 16, 6, 25)), (0, 1, 3, 2)), (16, 150))


GATHER_CASES = {  # operands no strides describe (llvm_gemm.Gather): copied, then the GEMM
    "reshape of a non-contiguous view": (lambda x, w: gc.reshape(x[:, 2:], (3, 12)) @ w,
                                         ((6, 8), (12, 5)), "a"),
    "conv weight (permuted reshape), broadcast over a batch":
        (lambda w, x: _conv_weight(w) @ gc.reshape(x, (4, 150, 9)),
         ((16, 6, 5, 5), (4, 150, 3, 3)), "a"),
    "its transpose, the input gradient's operand":
        (lambda w, x: gc.transpose(_conv_weight(w)) @ x, ((16, 6, 5, 5), (3, 16, 7)), "a"),
    "B a permuted reshape": (lambda x, w: x @ gc.reshape(gc.transpose(w, (0, 2, 1)), (15, 4)),
                             ((7, 15), (5, 4, 3)), "b"),
}


@pytest.mark.parametrize("case", list(GATHER_CASES))
def test_operands_that_are_no_view_are_gathered(always_gemm, case):
    fn, shapes, side = GATHER_CASES[case]
    rng = np.random.default_rng(len(case))
    x, w = (_rand(rng, *s) for s in shapes)
    f = gc.compile(lambda x, w: fn(x, w) - 1.0, backend="llvm")
    specs = [s.gemm for s in f.lower(x, w).program.steps if s.gemm is not None]
    assert len(specs) == 1 and (specs[0].ga if side == "a" else specs[0].gb) is not None, case
    want = gc.compile(lambda x, w: fn(x, w) - 1.0, backend="numpy")(x, w)
    np.testing.assert_allclose(f(x, w), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("nb,M,K,N", [(64, 16, 100, 150), (3, 40, 20, 30), (5, 7, 9, 33),
                                     (2, 40, 20, 30)])
def test_run_batches_over_threads(monkeypatch, threads, nb, M, K, N):
    """A batch of products: runs of whole products per call (gc_sgemm_batch) when there are
    more products than chunks, row chunks of each product otherwise (2 chunks per thread
    here, so that small chunks are made: MAX_CHUNKS is 1 by default)."""
    monkeypatch.setattr(G, "THREAD_WORK", 1)
    monkeypatch.setattr(G, "CHUNK_WORK", 1000)
    monkeypatch.setattr(G, "MAX_CHUNKS", 2)
    rng = np.random.default_rng(nb + M)
    a, bt = _rand(rng, nb, M, K), _rand(rng, nb, N, K)   # B transposed: strided packing
    c = np.full((nb, M, N), np.nan, np.float32)
    spec = G.GemmSpec(0, 1, (K, 1), (1, K), M, N, K, [t * M * K for t in range(nb)],
                      [t * N * K for t in range(nb)])
    G.run(spec, [a.ctypes.data, bt.ctypes.data, c.ctypes.data], threads)
    np.testing.assert_allclose(c, a @ bt.transpose(0, 2, 1), rtol=1e-4, atol=1e-4 * np.sqrt(K))


# ---- skinny products: dot products for K-contiguous operands, B read in place ----
from graphc.backends import llvm_gemm_dot as D  # noqa: E402
from graphc.backends.llvm_gemm_dot import DM, DN, sdot  # noqa: E402


@pytest.mark.parametrize("M,N,K,chunks", [(6, 25, 5000, 1), (16, 150, 1030, 1), (1, 1, 1, 1),
                                          (3, 7, 13, 1), (DM + 1, DN + 2, 2500, 3),
                                          (7, 9, 520, 2)])
def test_sdot_direct(M, N, K, chunks):
    """gc_sdot + gc_sdot_sum: edge tiles (M, N not multiples of the register tile), a K tail
    not a multiple of 8 (masked loads), K split into chunks, several K blocks."""
    rng = np.random.default_rng(M * 31 + N + K)
    a = _rand(rng, M, K + 3)[:, :K]   # rows contiguous, row stride != K
    bt = _rand(rng, N, K)
    c = np.full((M, N), np.nan, np.float32)
    sdot(a, bt, c, chunks)
    np.testing.assert_allclose(c, a @ bt.T, rtol=1e-4, atol=1e-4 * np.sqrt(K))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("M,N,K", [(6, 25, 5003), (16, 150, 6400), (5, 3, 9000)])
def test_run_dot_path(monkeypatch, threads, M, N, K):
    """run() takes the dot path for A rows and B columns contiguous along K (a conv weight
    gradient), split over K on several threads; with DOT off the packed GEMM agrees."""
    monkeypatch.setattr(G, "THREAD_WORK", 1)
    monkeypatch.setattr(D, "DOT_CHUNK", 1000)
    rng = np.random.default_rng(M + N + K)
    a, bt = _rand(rng, M, K), _rand(rng, N, K)
    spec = G.GemmSpec(0, 1, (K, 1), (1, K), M, N, K, [0], [0])
    calls = []
    monkeypatch.setattr(D, "run_dot", lambda *a, f=D.run_dot: calls.append(1) or f(*a))
    for dot in (True, False):
        monkeypatch.setattr(D, "DOT", dot)
        c = np.full((M, N), np.nan, np.float32)
        G.run(spec, [a.ctypes.data, bt.ctypes.data, c.ctypes.data], threads)
        np.testing.assert_allclose(c, a @ bt.T, rtol=1e-4, atol=1e-4 * np.sqrt(K))
    assert calls == [1]


@pytest.mark.parametrize("M,K,N,ta,tb,path", [
    (128, 784, 512, False, False, "columns"), (128, 256, 512, False, True, "columns"),
    (130, 300, 261, True, False, "columns"), (64, 400, 120, False, False, "columns"),
    (784, 128, 512, True, False, "rows"), (512, 128, 250, True, False, "rows"),
    (256, 784, 512, False, False, "columns"), (256, 512, 256, False, False, "columns"),
    (200, 784, 300, False, False, "columns"), (400, 1024, 300, False, False, "shared"),
    (1024, 512, 256, False, False, "rows")])
def test_run_two_threads_path(monkeypatch, M, K, N, ta, tb, path):
    """W1's, W2's and W5's products on two threads: in column chunks when M <= MC and each
    chunk is COLUMNS_MIN_WIDTH wide, or M <= N and each is WIDE_COLUMNS wide; else in row
    chunks: of at least OWN_B_ROWS rows that pack B for themselves when B is under
    SHARE_MIN floats (W1's dW1 = x.T @ dz), else against a B packed once and shared."""
    took = []
    monkeypatch.setattr(G, "_columns", lambda *a, f=G._columns: took.append("columns") or f(*a))
    monkeypatch.setattr(G, "_shared_b", lambda *a, f=G._shared_b: took.append("shared") or f(*a))
    monkeypatch.setattr(G, "_per_thread",
                        lambda *a, f=G._per_thread: took.append("rows") or f(*a))
    _run_single(M, K, N, ta, tb, 2)
    assert set(took) == {path}


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("M,K,N,ta,tb", [(150, 600, 2100, False, False), (301, 517, 700, True, True),
                                         (200, 64, 4111, False, True)])
def test_run_wide_columns(monkeypatch, threads, M, K, N, ta, tb):
    """M > MC, M <= N: column chunks that each pack their own B panel (mode 0) and all of A
    (A blocks of MC rows, K in KC blocks, a chunk across the NC boundary, edge slivers,
    transposed operands)."""
    monkeypatch.setattr(G, "THREAD_WORK", 1)
    monkeypatch.setattr(G, "WIDE_COLUMNS", 16)
    modes = _column_modes(monkeypatch)
    _run_single(M, K, N, ta, tb, threads)
    assert modes == [0]


def _column_modes(monkeypatch) -> list:
    """A list that records the `packed` mode (flags included) of every `_columns` call."""
    modes = []
    monkeypatch.setattr(G, "_columns", lambda *a, f=G._columns: modes.append(a[-2]) or f(*a))
    return modes


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("M,K,N,ta,tb", [(256, 128, 10, True, False), (256, 256, 10, False, False),
                                         (128, 10, 7, False, True), (16, 600, 15, False, False),
                                         (1000, 3, 1, True, True), (37, 513, 4, False, False)])
def test_small_n_runs_transposed(monkeypatch, threads, M, K, N, ta, tb):
    """N < 16 <= M (a classifier's last layer and its gradients): C^T = B^T @ A^T as one A
    block of N rows (`_columns`), C written transposed (the C_T flag: every tile through
    the scratch tile); B^T read in place (mode 2) when A is transposed and N <= MR."""
    monkeypatch.setattr(G, "THREAD_WORK", 1)
    modes = _column_modes(monkeypatch)
    _run_single(M, K, N, ta, tb, threads)
    direct = ta and N <= G.MR and K <= G.DIRECT_MAX_K
    assert modes == [(2 if direct else 3) | G.C_T]
    rng = np.random.default_rng(M)
    a, b = _rand(rng, M, K), _rand(rng, K, N)
    c = np.full((M, N), np.nan, np.float32)  # (b.T @ a.T).T, as sgemm's c with C_T
    sgemm(np.ascontiguousarray(b.T), a.T, c, 0, N, mode=3 | G.C_T)
    np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=1e-4 * np.sqrt(K))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("M,K,N,two", [(6, 25, 5000, [2]), (16, 150, 1030, [3]), (1, 7, 40, [2]),
                                       (13, 256, 33, []), (32, 160, 70, [3]), (144, 9, 20, [])])
def test_run_b_read_in_place(monkeypatch, threads, M, K, N, two):
    """One A block (M <= MC), B's rows contiguous: in column chunks over threads, gc_sgemm
    reads B in place (packed=2) when M <= MR, else packs it sliver by sliver (packed=3, the
    first row sliver's micro-kernel copying it; on two threads only when each chunk gets
    COLUMNS_MIN_WIDTH = 32 columns: `two`); an edge sliver (N not a multiple of 16) packed;
    B a row slice of a wider array (row stride != N)."""
    monkeypatch.setattr(G, "THREAD_WORK", 1)
    monkeypatch.setattr(G, "CHUNK_WORK", 1000)
    monkeypatch.setattr(G, "MAX_CHUNKS", 2)
    rng = np.random.default_rng(M + K + N)
    a, bw = _rand(rng, M, K), _rand(rng, K, N + 5)
    calls = _column_modes(monkeypatch)
    c = np.full((M, N), np.nan, np.float32)
    spec = G.GemmSpec(0, 1, (K, 1), (N + 5, 1), M, N, K, [0], [0])
    G.run(spec, [a.ctypes.data, bw.ctypes.data, c.ctypes.data], threads)
    np.testing.assert_allclose(c, a @ bw[:, :N], rtol=1e-4, atol=1e-4 * np.sqrt(K))
    assert calls == (two if threads == 2 else [2] if M <= G.MR else [3])
    c2 = np.full((M, N), np.nan, np.float32)
    sgemm(a, bw[:, :N], c2, 0, M, mode=2)
    np.testing.assert_allclose(c2, a @ bw[:, :N], rtol=1e-4, atol=1e-4 * np.sqrt(K))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n,c,hw,k", [(4, 3, 12, 5), (6, 16, 10, 7)])
def test_conv_weight_gradient_reads_dy_in_place(always_gemm, monkeypatch, threads, n, c, hw, k):
    """dY (n, c, h, w) permuted to (c, n*h*w) @ cols^T: A is read in segments of h*w by the
    dot path (llvm_gemm_dot.seg_view), not copied (no Gather); h*w = 100 leaves a masked tail
    in every segment."""
    monkeypatch.setattr(G, "THREAD_WORK", 1)
    monkeypatch.setattr(D, "DOT_CHUNK", 64)
    monkeypatch.setattr(D, "SEG_MIN", 64)
    monkeypatch.setattr(D, "DOT_MIN_K", 64)
    rng = np.random.default_rng(n * c)
    dy, cols = _rand(rng, n, c, hw, hw), _rand(rng, k, n * hw * hw)
    fn = lambda dy, cols: gc.reshape(gc.transpose(dy, (1, 0, 2, 3)),  # noqa: E731
                                     (c, n * hw * hw)) @ gc.transpose(cols) + 1.0
    f = gc.compile(fn, backend=L.LLVMBackend(threads=threads))
    specs = [s.gemm for s in f.lower(dy, cols).program.steps if s.gemm is not None]
    assert len(specs) == 1 and specs[0].ga is None and specs[0].seg_a == (hw * hw, c * hw * hw)
    want = dy.transpose(1, 0, 2, 3).reshape(c, -1) @ cols.T + 1.0
    np.testing.assert_allclose(f(dy, cols), want, rtol=1e-4, atol=1e-3)


# ---- one A block: rows in 6- and 4-row slivers, B packed sliver by sliver ----
from graphc.backends.llvm_gemm_ir import MR, MR4, NR, compiled, row_split  # noqa: E402


def test_row_split():
    """M = 6n + 2 or 6n + 4 ends in 4-row slivers (32 = 4*6 + 2*4): no padded edge sliver."""
    assert [row_split(m) for m in (32, 30, 28, 8, 4, 2, 7, 13, 144)] == \
        [24, 30, 24, 0, 0, 2, 7, 13, 144]
    for m in range(1, 200):
        e6 = row_split(m)
        assert e6 % MR == 0 or e6 == m
        assert (m - e6) % MR4 == 0 and m - e6 <= 2 * MR4


@pytest.mark.parametrize("mode", [0, 3])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("M,K,N", [(32, 160, 512), (32, 37, 40), (4, 9, 16), (8, 600, 33),
                                   (10, 5, 17), (20, 531, 50), (146, 8, 16), (2, 3, 5)])
def test_sgemm_tail_slivers_and_per_sliver_packing(M, K, N, tb, mode):
    """4-row tail slivers (full and N-edge tiles), row ranges starting mid-matrix, and
    packed=3: B packed per sliver, by the first micro-kernel as it reads (rows contiguous)
    or by the transposing copy (B = X.T, K not a multiple of 8: a scalar tail)."""
    rng = np.random.default_rng(M * 13 + K + N)
    a = _rand(rng, M, K)
    b = _rand(rng, N, K).T if tb else _rand(rng, K, N)
    for m0 in (0, M // 2):
        c = np.full((M, N), 7.0, np.float32)
        sgemm(a, b, c, m0, M, mode=mode)
        np.testing.assert_allclose(c[m0:], (a @ b)[m0:], rtol=1e-4, atol=1e-4 * np.sqrt(K))
        assert (c[:m0] == 7.0).all()


@pytest.mark.parametrize("kc,cols", [(19, 37), (8, 16), (3, 5)])
def test_pack_b_transposed(kc, cols):
    """gc_pack_b of B = X.T (columns contiguous): 8x8 transposes, a k tail, an edge sliver
    zero-padded; the layout is NR-column slivers, k-major."""
    from graphc.backends.llvm_pool import aligned
    x = _rand(np.random.default_rng(kc), cols, kc)
    nsl = -(-cols // NR)
    out = aligned(nsl * NR * kc)
    compiled()["gc_pack_b"](x.ctypes.data, 1, kc, kc, cols, out.ctypes.data)
    want = np.zeros((kc, nsl * NR), np.float32)
    want[:, :cols] = x.T
    got = out.reshape(nsl, kc, NR).transpose(1, 0, 2).reshape(kc, nsl * NR)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("tb", [False, True])
def test_run_small_m_packs_per_sliver(monkeypatch, threads, tb):
    """An LSTM's per-step products (32 x 160 x 512, dh = dgates @ Wh.T: 32 x 512 x 128 with B
    transposed) run with B packed per sliver, not on the dot path (M > DOT_MAX_M whatever
    K); on two threads in column chunks too."""
    monkeypatch.setattr(G, "THREAD_WORK", 1)
    monkeypatch.setattr(D, "DOT_MIN_K", 1)
    M, K, N = (32, 512, 128) if tb else (32, 160, 512)
    rng = np.random.default_rng(K)
    a, bx = _rand(rng, M, K), _rand(rng, N, K) if tb else _rand(rng, K, N)
    modes, dots = _column_modes(monkeypatch), []
    monkeypatch.setattr(D, "run_dot", lambda *a, f=D.run_dot: dots.append(1) or f(*a))
    spec = G.GemmSpec(0, 1, (K, 1), (1, K) if tb else (N, 1), M, N, K, [0], [0])
    c = np.full((M, N), np.nan, np.float32)
    G.run(spec, [a.ctypes.data, bx.ctypes.data, c.ctypes.data], threads)
    np.testing.assert_allclose(c, a @ (bx.T if tb else bx), rtol=1e-4, atol=1e-4 * np.sqrt(K))
    assert modes == [3] and dots == []
