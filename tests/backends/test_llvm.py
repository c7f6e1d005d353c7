"""The LLVM backend against the reference interpreter: every op (the numpy backend's case
table), gradients, odd sizes, broadcasting, non-contiguous inputs, special values, RAND
bit for bit, threads, the verified module text, and examples/mlp.py's training step.

The backend is not registered yet: it is used as an object, gc.compile(fn, backend=BE)."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc import kernel as K
from graphc.interpret import interpret
from graphc.ops import Op, ref_rand
from graphc.types import DType

llvm_backend = pytest.importorskip("graphc.backends.llvm")
from test_numpy_backend import CASES, _check_equal, _ops_in, _params, random_case  # noqa: E402

BE = llvm_backend.LLVMBackend()
ROOT = Path(__file__).resolve().parents[2]


def _verify_module(fc):
    import llvmlite.binding as llvm
    llvm.parse_assembly(fc.source).verify()  # the annotated source is valid, verified IR


def test_backend_is_available():
    ok, why = BE.available()
    assert ok, why
    assert "LLVM" in why


def test_cases_cover_every_op():
    assert set(CASES) == set(Op) - {Op.INPUT, Op.CONST, Op.GRAD}


@pytest.mark.parametrize("op,fn,makers,dt", _params())
def test_op_through_llvm_backend_equals_interpreter(op, fn, makers, dt, request):
    rng = np.random.default_rng(zlib.crc32(request.node.callspec.id.encode()))
    args = tuple(m(rng, dt) for m in makers)
    fc = gc.compile(fn, backend=BE)
    got = fc(*args)
    assert op in _ops_in(fc.graph("optimized")) or op.value == "stop_gradient"  # simplified away
    want = interpret(gc.trace(fn, *args), *args)[0]
    _check_equal(got, want)
    _verify_module(fc)


# ---- gradients -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_random_programs_and_their_gradients(seed):
    program, args, want, vg, want_v, want_g = random_case(seed)
    got = gc.compile(program, backend=BE)(*args)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-13)
    got_v, got_g = gc.compile(vg, backend=BE)(*args)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-12)
    for g, w in zip(got_g, want_g):
        np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-12)


# ---- sizes, layouts, special values ---------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 17, 1000])
def test_odd_sizes(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    w = rng.standard_normal((3, n)).astype(np.float32)

    def f(x, w):
        y = gc.exp(gc.tanh(x * 0.5)) - 1.0
        return y, gc.sum(y, axis=0), gc.max(x, axis=1), x @ w, gc.pad(x, ((1, 0), (2, 1)))
    got = gc.compile(f, backend=BE)(x, w)
    want = interpret(gc.trace(f, x, w), x, w)
    for g, v in zip(got, want):
        assert g.shape == v.shape and g.dtype == v.dtype
        np.testing.assert_allclose(g, v, rtol=1e-5, atol=2e-5)


def test_non_contiguous_inputs_are_copied():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 3))
    b = rng.standard_normal((4, 6))[::2, 1::2]  # strided view (2, 3)
    f = gc.compile(lambda x, y: (x * 2.0 + 1.0, y @ x.T), backend=BE)
    xt = a.T.copy().T  # same values as a, Fortran order
    got = f(xt, b)
    np.testing.assert_allclose(got[0], a * 2 + 1, rtol=1e-15)
    np.testing.assert_allclose(got[1], b @ a.T, rtol=1e-13)
    got2 = f(rng.standard_normal((3, 5)).T, b)  # a transposed array
    assert got2[0].shape == (5, 3)


def test_wrong_arguments_are_rejected():
    f = gc.compile(lambda x: x + 1.0, backend=BE)
    prog = f.lower(np.zeros(3)).program
    with pytest.raises(gc.SignatureError):
        prog(np.zeros(4))
    with pytest.raises(gc.SignatureError):
        prog(np.zeros(3, np.float32))


def test_special_values_follow_numpy():
    nan, inf = np.nan, np.inf
    x = np.array([nan, 1.0, -0.0, 0.0, inf, -inf, -2.5, nan])
    y = np.array([1.0, nan, 0.0, -1.0, nan, 2.0, 3.0, nan])

    def f(x, y):
        return (gc.maximum(x, y), gc.minimum(x, y), gc.sign(x), gc.abs(x), x != y, x == y,
                x < y, gc.max(gc.reshape(x, (2, 4)), axis=1), x.astype(bool), x.astype(np.int32) * 0)
    got = gc.compile(f, backend=BE)(x, y)
    want = interpret(gc.trace(f, x, y), x, y)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_integer_division_truncates_and_never_traps():
    a = np.array([-7, 7, -7, 7, 5, 0, -2**31, -2**31, 9], np.int32)
    b = np.array([2, 2, -2, -2, 0, 0, -1, 1, 3], np.int32)
    f = lambda a, b: (gc.divide(a, b), gc.sign(a), gc.abs(a), -a, a.astype(np.float64))  # noqa
    got = gc.compile(f, backend=BE)(a, b)
    want = interpret(gc.trace(f, a, b), a, b)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


# ---- random numbers, threads --------------------------------------------------------------------------
@pytest.mark.parametrize("key,shape,dtype", [(0, (7,), "float32"), (-5, (3, 4), "float64"),
                                             (2**40 + 3, (300, 301), "float32"),
                                             (np.int32(-9), (17,), "float64")])
def test_rand_is_bit_exact(key, shape, dtype):
    key = np.asarray(key) if isinstance(key, np.integer) else np.int64(key)
    got = gc.compile(lambda k: gc.random_uniform(k, shape, dtype=dtype), backend=BE)(key)
    want = ref_rand(int(key), shape, DType[dtype])
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_large_kernels_split_over_threads_agree(monkeypatch):
    from graphc.backends import llvm_runtime
    monkeypatch.setattr(llvm_runtime, "PARALLEL_MIN_WORK", 1 << 12)  # these sizes split
    rng = np.random.default_rng(3)
    x = rng.standard_normal((513, 700))
    w = rng.standard_normal((700, 65))
    f = lambda x, w: (gc.tanh(x) * 2.0 + x, gc.sum(x * x, axis=1), x @ w)  # noqa: E731
    for threads in (1, 2, 3):
        fc = gc.compile(f, backend=llvm_backend.LLVMBackend(threads=threads))
        steps = fc.lower(x, w).program.steps
        assert max(s.chunks for s in steps) == min(threads, 3), [s.chunks for s in steps]
        got = fc(x, w)
        np.testing.assert_allclose(got[0], np.tanh(x) * 2 + x, rtol=1e-14)
        np.testing.assert_allclose(got[1], np.sum(x * x, axis=1), rtol=1e-12)
        np.testing.assert_allclose(got[2], x @ w, rtol=1e-10, atol=1e-12)


def test_costly_math_counts_towards_threading():
    # exp(x - max(x)) over 256x1024: 524K iterations, half of them an exp, so it splits; the
    # same loops without the exp stay on one thread (both under PARALLEL_MIN_WORK counted as
    # plain iterations)
    from graphc.backends import llvm_runtime
    x = np.ones((256, 1024), np.float32)
    chunks = {}
    for name, f in (("exp", lambda x: gc.exp(x - gc.max(x, axis=1, keepdims=True))),
                    ("plain", lambda x: x - gc.max(x, axis=1, keepdims=True))):
        steps = gc.compile(f, backend=llvm_backend.LLVMBackend(threads=2)).lower(x).program.steps
        chunks[name] = max(s.chunks for s in steps)
    assert x.size * 2 < llvm_runtime.PARALLEL_MIN_WORK
    assert chunks == {"exp": 2, "plain": 1}


def test_work_weighs_costly_math_where_it_runs():
    from graphc import kernel as K
    from graphc.backends.llvm_runtime import COSTLY_WEIGHT as W, _work
    from graphc.types import DType
    buf = K.Buffer("x", (4, 3), DType.float32, "in")
    out = K.Buffer("out", (4, 3), DType.float32, "out")
    ld = K.Load(buf, K.Var("j"))
    e = K.Unary("exp", ld)
    inner = lambda v: K.Loop("j", 3, (K.Store(out, K.Var("j"), v),))  # noqa: E731
    assert _work((K.Loop("i", 4, (inner(ld),)),)) == 4 * 3
    assert _work((K.Loop("i", 4, (inner(K.Binary("add", e, e)),)),)) == 4 * 3 * W  # one exp
    assert _work((K.Loop("i", 4, (K.Let("t", e), inner(ld))),)) == 4 * (W + 3)


def test_fast_math_option():
    x = np.random.default_rng(0).standard_normal((64, 33)).astype(np.float32)
    f = gc.compile(lambda x: gc.sum(gc.exp(x) * x, axis=1), backend=llvm_backend.LLVMBackend(
        fast_math=True))
    np.testing.assert_allclose(f(x), np.sum(np.exp(x) * x, axis=1), rtol=1e-4)
    assert "fast" in f.source


# ---- source, cache, unfused graphs, memory plan --------------------------------------------------------
def test_source_shows_kernel_ir_nodes_and_verified_llvm_ir():
    def f(x, w, b):
        h = gc.maximum(x @ w + b, 0.0)
        return gc.sum(h * h) / 2.0, h[:, ::2]
    fc = gc.compile(f, backend=BE)
    rng = np.random.default_rng(0)
    fc(rng.standard_normal((2, 3)), rng.standard_normal((3, 4)), rng.standard_normal(4))
    src = fc.source
    for n in fc.graph("optimized").nodes:
        if n.op is Op.FUSED:
            assert f"; // kernel {n.attrs['name']} ({n.attrs['kind']})" in src
            assert f'define void @"{n.attrs["name"]}"(' in src
    assert "matmul" in src and "test_llvm.py:" in src and "for (" in src
    _verify_module(fc)


def test_compile_cache_reuses_machine_code():
    f = lambda x: gc.exp(x) * 3.0 + 1.0  # noqa: E731
    x = np.arange(5.0)
    p1 = gc.compile(f, backend=BE).lower(x).program
    from graphc.backends.llvm_cache import _MEMORY  # key -> compiled module
    n = len(_MEMORY)
    p2 = gc.compile(f, backend=BE).lower(x).program
    assert len(_MEMORY) == n
    assert [s.fn for s in p1.steps][0] is not None
    np.testing.assert_allclose(p2(x)[0], np.exp(x) * 3 + 1, rtol=1e-15)


def test_without_fusion_every_op_is_a_kernel():
    f = lambda x, y: gc.sum(gc.tanh(x * y), axis=1) + 1.0  # noqa: E731
    x, y = np.ones((3, 4)), np.arange(4.0)
    fc = gc.compile(f, backend=BE, passes="-fusion")
    np.testing.assert_allclose(fc(x, y), np.tanh(x * y).sum(1) + 1, rtol=1e-14)


def test_inputs_untouched_and_calls_independent():
    def hazards(x, y):
        t = x * 2.0
        u = gc.exp(t)
        s = u + t
        return s, gc.sum(s * t.T.T, axis=0), t[::2] - 1.0, gc.tanh(u) * y, x
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    x0 = x.copy()
    fc = gc.compile(hazards, backend=BE)
    want = interpret(gc.trace(hazards, x, y), x, y)
    first = fc(x, y)
    for _ in range(2):
        for g, w in zip(fc(x, y), want):
            np.testing.assert_allclose(g, w, rtol=1e-14)
    np.testing.assert_array_equal(x, x0)
    assert first[4] is not x  # an input returned is a copy
    for g, w in zip(first, want):
        np.testing.assert_allclose(g, w, rtol=1e-14)


def test_empty_arrays():
    x, w = np.zeros((0, 3)), np.ones((3, 2))
    f = lambda x, w: (x * 2.0, gc.sum(x, axis=0), x @ w, gc.pad(x, ((1, 1), (0, 0))))  # noqa: E731
    got = gc.compile(f, backend=BE)(x, w)
    want = interpret(gc.trace(f, x, w), x, w)
    for g, v in zip(got, want):
        assert g.shape == v.shape
        np.testing.assert_array_equal(g, v)


def test_several_constant_arguments_keep_their_order():
    # constants too big to inline are kernel arguments; each must reach its own parameter
    # (a regression: with two or more, their addresses were once swapped)
    rng = np.random.default_rng(11)
    c1, c2, c3 = (rng.standard_normal(40) for _ in range(3))
    f = lambda x: (x * c1 + c2) * c3 - c1  # noqa: E731
    x = rng.standard_normal(40)
    prog = gc.compile(f, backend=BE).lower(x).program
    assert len(prog.consts) >= 2
    np.testing.assert_allclose(gc.compile(f, backend=BE)(x), (x * c1 + c2) * c3 - c1,
                               rtol=1e-14)


# ---- batch-1 inference: the one-row matmul kernel and the per-call path ----------------------
def test_one_row_matmul_keeps_its_output_row_in_registers():
    # the accumulation loop gets llvm.loop metadata (backends/llvm_loops.py): vectorised,
    # then fully unrolled, so its output row is loop-carried vector values, not memory
    import re
    rng = np.random.default_rng(5)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((1, 784), (784, 512), 512))
    fc = gc.compile(lambda x, w, b: gc.maximum(x @ w + b, 0.0), backend=BE)
    np.testing.assert_allclose(fc(x, w, b), np.maximum(x @ w + b, 0), rtol=1e-4, atol=1e-4)
    assert "llvm.loop.vectorize.followup_all" in fc.source
    prog = fc.lower(x, w, b).program
    assert re.search(r"phi <\d+ x float>", llvm_backend.optimized_ir(prog.module_text))


def test_exp_and_tanh_loops_compute_two_vectors_an_iteration():
    # llvm.loop.interleave.count 2 (backends/llvm_loops.py): the vector loop stores two
    # vectors an iteration; a loop without exp or tanh keeps the cost model's choice
    import re
    x = np.random.default_rng(6).standard_normal(1000).astype(np.float32)
    for f, metadata in ((lambda x: gc.tanh(x * 0.5 + 1.0) * gc.exp(-(x * x)), True),
                        (lambda x: gc.log(gc.abs(x) + 1.0), False)):
        fc = gc.compile(f, backend=BE)
        np.testing.assert_allclose(fc(x), interpret(gc.trace(f, x), x)[0], rtol=1e-5, atol=1e-6)
        assert ("llvm.loop.interleave.count" in fc.source) == metadata
        opt = llvm_backend.optimized_ir(fc.lower(x).program.module_text)
        widths = [int(w) for w in re.findall(r"store <(\d+) x float>", opt)]
        stores = widths.count(max(widths))  # the main vector loop's (not an epilogue's)
        assert stores == (2 if metadata else 1), stores
    f64 = gc.compile(gc.exp, backend=BE)   # float64 exp calls libm: no hint
    np.testing.assert_allclose(f64(x.astype(np.float64)), np.exp(x.astype(np.float64)), rtol=1e-14)
    assert "llvm.loop.interleave.count" not in f64.source


def test_multi_pass_rows_prefetch_the_row_two_ahead(monkeypatch):
    # backends/llvm_rows.py: a parallel loop making several passes over its row (softmax:
    # max, exp and sum, division) prefetches the row PREFETCH_AHEAD on, a line at a time;
    # one-pass loops, rows under PREFETCH_BYTES, column walks and (last case, at the
    # default PREFETCH_BUFFER) inputs that fit in cache do not
    from graphc.backends import llvm_rows
    monkeypatch.setattr(llvm_rows, "PREFETCH_BUFFER", 0)
    sm = lambda x, axis=1: (lambda e: e / gc.sum(e, axis=axis, keepdims=True))(  # noqa: E731
        gc.exp(x - gc.max(x, axis=axis, keepdims=True)))
    rng = np.random.default_rng(8)
    x32 = rng.standard_normal((37, 300)).astype(np.float32)
    cases = [(sm, (x32,), 1),
             (sm, (rng.standard_normal((37, 300)),), 1),                    # float64 rows
             (lambda x, m: sm(gc.where(m, x, -30.0)), (x32, x32 > 0), 2),  # float32 and bool
             (sm, (rng.standard_normal((50, 10)).astype(np.float32),), 0),  # 40-byte rows
             (lambda x: sm(x, 0), (rng.standard_normal((300, 37)).astype(np.float32),), 0),
             (lambda x: gc.exp(x) * 2.0, (x32,), 0),
             (sm, (x32,), None)]
    for f, xs, n in cases:
        if n is None:
            monkeypatch.undo()
            n = 0
        fc = gc.compile(f, backend=BE)
        tol = 1e-5 if xs[0].dtype == np.float32 else 1e-12
        np.testing.assert_allclose(fc(*xs), interpret(gc.trace(f, *xs), *xs)[0], rtol=tol,
                                   atol=tol)
        prog = fc.lower(*xs).program
        rows = [r for k in prog.kernels for s in k.body if isinstance(s, K.Loop)
                for r in llvm_rows.prefetch_rows(s)]
        assert len(rows) == n and prog.module_text.count("call void @\"llvm.prefetch") == n
        for buf, lo, size, stride in rows:
            assert (buf.role, lo, size, stride) == ("in", 0, 300, 300)
        if n:
            assert f"add i64 %\"i0\", {llvm_rows.PREFETCH_AHEAD}" in prog.module_text


@pytest.mark.parametrize("threads", [1, 3])
def test_softmax_divides_the_row_before_in_its_exp_pass(monkeypatch, threads):
    # backends/llvm_rows.py `pipelined`: the division of row i - 1 runs in the loop that
    # computes exp of row i; bit for bit the unpipelined result, for chunks of 1-4 rows
    # that start anywhere (threads 3, PARALLEL_MIN_WORK 1: each chunk has its first row
    # alone and its last row's division after it), a temperature in the sum, and tanh
    from graphc.backends import llvm_codegen, llvm_rows, llvm_runtime
    monkeypatch.setattr(llvm_runtime, "PARALLEL_MIN_WORK", 1)
    def sm(x):
        e = gc.exp(x - gc.max(x, axis=1, keepdims=True))
        return e / gc.sum(e, axis=1, keepdims=True)
    rng = np.random.default_rng(9)
    cases = [(sm, (2, 33)), (sm, (5, 300)), (sm, (11, 17)),
             (lambda x: (lambda e: e / (gc.sum(e, axis=1, keepdims=True) * 2.0 + 1.0))(
                 gc.exp(x - gc.max(x, axis=1, keepdims=True))), (7, 40)),
             (lambda x: gc.tanh(x) / gc.sum(gc.tanh(x), axis=1, keepdims=True), (6, 24))]
    for f, shape in cases:
        x = rng.standard_normal(shape).astype(np.float32)
        fc = gc.compile(f, backend=BE.__class__(threads=threads))
        prog = fc.lower(x).program
        loops = [s for k in prog.kernels for s in k.body if isinstance(s, K.Loop)]
        assert any(llvm_rows.pipelined(s) for s in loops)
        assert ".fused" in prog.module_text
        got = fc(x)
        assert max(st.chunks for st in prog.steps) == min(threads, shape[0])
        monkeypatch.setattr(llvm_codegen, "pipelined", lambda loop: False)
        plain = gc.compile(f, backend=BE.__class__(threads=threads))
        assert ".fused" not in plain.lower(x).program.module_text
        np.testing.assert_array_equal(got, plain(x))
        np.testing.assert_allclose(got, interpret(gc.trace(f, x), x)[0], rtol=1e-5, atol=1e-7)
        monkeypatch.setattr(llvm_codegen, "pipelined", llvm_rows.pipelined)
    # not pipelined: a division over columns (rows are not the iteration's own), no exp or
    # tanh in the pass before, no division in the last pass
    for f in (lambda x: (lambda e: e / gc.sum(e, axis=0, keepdims=True))(gc.exp(x)),
              lambda x: x / gc.sum(x, axis=1, keepdims=True),
              lambda x: gc.exp(x) - gc.sum(gc.exp(x), axis=1, keepdims=True)):
        x = rng.standard_normal((9, 20)).astype(np.float32)
        prog = gc.compile(f, backend=BE).lower(x).program
        assert ".fused" not in prog.module_text
        assert not any(llvm_rows.pipelined(s) for k in prog.kernels for s in k.body
                       if isinstance(s, K.Loop))


@pytest.mark.parametrize("m, k, n, dt", [(1, 784, 512, np.float32), (1, 2048, 600, np.float32),
                                         (3, 37, 130, np.float64), (1, 256, 10, np.float32),
                                         (2, 5, 192, np.float32), (1, 13, 1, np.float64)])
def test_small_row_count_matmuls(m, k, n, dt):
    # one part of whole rows, column parts from 2^20 multiply-adds (600: rows of 60), a
    # remainder after the vector loop (10, 130), several rows, a prime k
    rng = np.random.default_rng(m * k + n)
    x, w, b = rng.standard_normal((m, k)).astype(dt), rng.standard_normal((k, n)).astype(dt), \
        rng.standard_normal(n).astype(dt)
    got = gc.compile(lambda x, w, b: gc.tanh(x @ w + b), backend=BE)(x, w, b)
    tol = 1e-4 if dt == np.float32 else 1e-12
    np.testing.assert_allclose(got, np.tanh(x @ w + b), rtol=tol, atol=tol)


def test_arena_is_reused_and_results_stay_independent():
    f = lambda x: gc.tanh(x) @ x + 1.0  # noqa: E731  (tanh(x) is an intermediate in the arena)
    x1, x2 = np.arange(9.0).reshape(3, 3) / 10, np.ones((3, 3))
    prog = gc.compile(f, backend=BE).lower(x1).program
    assert prog.arena_bytes > 0 and not prog.arena_out
    r1 = prog(x1)[0]
    r2 = prog(x2)[0]
    assert len(prog.spare) == 1  # one arena, handed from call to call
    np.testing.assert_allclose(r1, np.tanh(x1) @ x1 + 1, rtol=1e-14)
    np.testing.assert_allclose(r2, np.tanh(x2) @ x2 + 1, rtol=1e-14)


def test_dropped_outputs_are_reused_and_held_ones_never_overwritten():
    import weakref
    from graphc.backends.llvm_runtime import RECYCLE
    assert RECYCLE >= 2  # (a GIL build: reference counts tell what the caller holds)
    f = gc.compile(lambda x: (x * 2.0, gc.sum(x)), backend=BE)
    xs = [np.full(1000, float(i), np.float32) for i in range(12)]
    refs, held, kept = [], [], []
    for i, x in enumerate(xs):
        doubled, total = f(x)  # the training loop's shape: the last results held while
        refs.append(weakref.ref(doubled))              # the next call runs
        if i == 4:
            kept.append(doubled[::2])  # a view holds its base
        if i == 7:
            held.append((doubled, total))
        if i >= RECYCLE + 1 and i not in (4 + RECYCLE, 7 + RECYCLE):
            # the buffer of the call RECYCLE back, dropped since, is this call's
            assert refs[i - RECYCLE]() is doubled, i
    assert refs[4]() is not None and refs[4]() is not refs[4 + RECYCLE]()
    np.testing.assert_array_equal(kept[0], 8.0)
    np.testing.assert_array_equal(held[0][0], 14.0)
    assert float(held[0][1]) == 7000.0
    np.testing.assert_array_equal(doubled, 22.0)


def test_concurrent_calls_each_get_their_own_arena():
    from concurrent.futures import ThreadPoolExecutor
    f = lambda x: gc.exp(gc.tanh(x) * 2.0) @ x  # noqa: E731
    prog = gc.compile(f, backend=BE).lower(np.ones((8, 8))).program
    xs = [np.random.default_rng(i).standard_normal((8, 8)) for i in range(4)]

    def work(x):
        return all(np.allclose(prog(x)[0], np.exp(np.tanh(x) * 2) @ x, rtol=1e-13)
                   for _ in range(200))
    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, xs))


def test_inputs_off_the_fast_path_are_checked_and_converted():
    f = lambda x, s: x * 2.0 + s  # noqa: E731
    x = np.arange(6.0).reshape(2, 3)
    prog = gc.compile(f, backend=BE).lower(x, np.float64(1)).program
    ro = x.copy()
    ro.flags.writeable = False  # (the kernels only read it)
    np.testing.assert_array_equal(prog(ro, np.array(1.0))[0], x * 2 + 1)
    np.testing.assert_array_equal(prog(x.tolist(), 1.0)[0], x * 2 + 1)  # lists, Python scalars
    np.testing.assert_array_equal(prog(np.asfortranarray(x), np.array(1.0))[0], x * 2 + 1)
    for bad in ((x,), (x, np.array(1.0), x), (x.T, np.array(1.0)),
                (x.astype(np.float32), np.array(1.0)), (x, np.array([1.0]))):
        with pytest.raises(gc.SignatureError):
            prog(*bad)


def test_array_addresses_read_from_the_object_match_ctypes():
    from graphc.backends.llvm_runtime import _DATA_AT, address, addresses
    x = np.arange(24.0).reshape(4, 6)
    arrays = [x, x[1:], x[:, 2:], x.T, np.array(3.0), np.zeros((0, 3)), x[::2].copy(),
              np.ones(5, np.float32)[2:], np.frombuffer(b"abcdefgh", np.uint8)]
    assert _DATA_AT is not None  # (None: the layout check failed, .ctypes.data is used)
    assert [address(a) for a in arrays] == addresses(arrays) == [a.ctypes.data for a in arrays]


def test_compiled_call_cache_keys_on_structure_shape_and_dtype():
    from collections import namedtuple
    P = namedtuple("P", "w b")
    fc = gc.compile(lambda p, x: x @ p["w"] + p["b"][0], backend=BE)
    p = {"w": np.ones((3, 2)), "b": [np.ones(2)]}
    x = np.ones((1, 3))
    for _ in range(2):
        np.testing.assert_array_equal(fc(p, x), np.full((1, 2), 4.0))
    assert len(fc._cache) == 1
    fc(p, x.astype(np.float32))              # another dtype: another specialisation
    fc({"w": p["w"], "b": (np.ones(2),)}, x)   # a tuple for the list: another structure
    assert len(fc._cache) == 3
    g = gc.compile(lambda p, x: x @ p.w + p.b, backend=BE)
    np.testing.assert_array_equal(g(P(np.ones((3, 2)), 1.0), x), np.full((1, 2), 4.0))


def test_repeated_calls_skip_flattening_and_checks_but_never_a_changed_signature(monkeypatch):
    # the fast path (pytree.matcher, LLVMProgram.call_exact) for the last call's signature;
    # anything else the matcher does not accept goes the checked way
    from graphc.frontends import api, pytree
    fc = gc.compile(lambda p, x, n: x @ p["w"] * n + p["b"][0], backend=BE)
    p = {"w": np.ones((3, 2), np.float32), "b": [np.ones(2, np.float32)]}
    x = np.ones((4, 3), np.float32)
    np.testing.assert_array_equal(fc(p, x, 2), np.full((4, 2), 7.0))
    slow, flatten = [], pytree.flatten  # (the calls' flattening, not the tracer's)
    monkeypatch.setattr(api.pytree, "flatten", lambda tree, **k: slow.extend(
        [1] * (k.get("with_paths") is False)) or flatten(tree, **k))
    for k in range(3):
        np.testing.assert_array_equal(fc(p, x + k, 2), np.full((4, 2), 7.0 + 6 * k))
    assert slow == []
    others = [({"b": p["b"], "w": p["w"]}, x, 2),           # the dict's keys in another order
              (p, x, 3),                                    # another static value
              (p, x.astype(np.float64), 2),                 # another dtype
              (p, np.ones((5, 3), np.float32), 2),          # another shape
              (p, np.ones((3, 4), np.float32).T, 2),        # not C-contiguous
              ({"w": p["w"], "b": (p["b"][0],)}, x, 2)]     # a tuple for the list
    for args in others:
        want = args[1] @ args[0]["w"] * args[2] + args[0]["b"][0]
        np.testing.assert_allclose(fc(*args), want, rtol=1e-6)
        assert fc(p, x, 2).shape == (4, 2)  # back to the first signature
    # (the transposed x has the first signature: its call is checked and copied, the next
    # one takes the fast path again)
    assert len(slow) == 2 * len(others) - 1 and len(fc._cache) == 6


def test_runs_of_loop_kernels_are_called_by_one_driver(monkeypatch):
    # loop kernels around a packed GEMM step (called from Python): the two after it are one
    # driver run, the one before it is called alone (a run has at least two kernels)
    from graphc.backends import llvm_driver, llvm_runtime
    assert llvm_driver.runs_of([True, True, False, True, False, True, True, True]) == \
        [[0, 1], [5, 6, 7]]
    f = lambda x, w: (gc.tanh(gc.exp(x * 0.1) + 1.0) @ w * 2.0 + 1.0,  # noqa: E731
                      gc.sum(gc.exp(x), axis=0) - x[0], x * 3.0)
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((64, 64)).astype(np.float32), \
        rng.standard_normal((64, 64)).astype(np.float32)
    on = gc.compile(f, backend=BE)
    prog = on.lower(x, w).program
    assert any(s.gemm is not None for s in prog.steps)
    assert sum(d is not None for d, _, _ in prog.plan) == 1
    assert len(prog.plan) < len(prog.steps)
    monkeypatch.setattr(llvm_runtime, "DRIVERS", False)
    off = gc.compile(f, backend=llvm_backend.LLVMBackend())
    assert all(d is None for d, _, _ in off.lower(x, w).program.plan)
    for _ in range(2):
        for a, b in zip(on(x, w), off(x, w)):
            np.testing.assert_array_equal(a, b)
