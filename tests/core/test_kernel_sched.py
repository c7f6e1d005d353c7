"""Schedule transformations on the kernel IR (graphc/kernel_sched.py): each one returns a
verified kernel that the pure-NumPy evaluator shows stores the same values; partition folds
the bounds checks of concatenations and paddings away, piece by piece."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import kernel as K, kernel_layout as KL, kernel_sched as S
from graphc.pipeline import run_pipeline

from test_kernel_ir import run_kernels

rng = np.random.default_rng(0)


def kernels_of(fn, *args):
    """(kernel, its input arrays) for every fused kernel of fn's optimized graph, in order."""
    return run_kernels(run_pipeline(gc.trace(fn, *args))["optimized"], *args,
                       with_inputs=True)[1]


def same(k1, k2, ins):
    a, b = K.evaluate(k1, *ins), K.evaluate(k2, *ins)
    np.testing.assert_array_equal(a, b)


def loops(body):
    for s in body:
        if isinstance(s, K.Loop):
            yield s
            yield from loops(s.body)


def selects(v) -> int:
    if isinstance(v, K.Select):
        return 1 + selects(v.cond) + selects(v.a) + selects(v.b)
    return sum(selects(getattr(v, f)) for f in ("x", "a", "b") if hasattr(v, f)
               and hasattr(getattr(v, f), "dtype"))


def body_selects(body) -> int:
    n = 0
    for s in body:
        if isinstance(s, K.Loop):
            n += body_selects(s.body)
        elif isinstance(s, (K.Store, K.Let)):
            n += selects(s.value)
    return n


X = rng.standard_normal((5, 12)).astype(np.float32)
GATES = [rng.standard_normal((5, 4)).astype(np.float32) for _ in range(3)]


def gate_concat(a, b, c):
    """An LSTM's gate gradient: the gradient of slicing gates out of one row is a sum of
    padded pieces with different math (a concatenation proper lowers to separate loops)."""
    return (gc.pad(gc.tanh(a), ((0, 0), (0, 8))) + gc.pad(gc.exp(b) * 2.0, ((0, 0), (4, 4)))
            + gc.pad(a * c, ((0, 0), (8, 0))))


CASES = {
    "elementwise": (lambda x: gc.tanh(x * 2.0) + 1.0, (X,)),
    "reduce": (lambda x: gc.sum(x * x, axis=1), (X,)),
    "matmul": (lambda x: x @ x.T, (X,)),
    "pad sum": (gate_concat, tuple(GATES)),
    "pad": (lambda x: gc.pad(gc.exp(x), ((1, 2), (3, 0))), (X,)),
    "4-d with bias": (lambda x, b: gc.where(x > 0.0, x + b, 0.0),
                      (rng.standard_normal((2, 3, 4, 5)).astype(np.float32),
                       rng.standard_normal((3, 1, 1)).astype(np.float32))),
    "strided": (lambda x: x[:, :, ::2, 1::2] * 2.0,
                (rng.standard_normal((2, 3, 4, 6)).astype(np.float32),)),
    "multi-axis reduce": (lambda x: gc.sum(x, axis=(1, 2, 3)),  # integers: any order is exact
                          (rng.integers(-4, 5, (2, 3, 4, 5)).astype(np.float32),)),
    "row softmax": (lambda x: gc.exp(x) / gc.sum(gc.exp(x), axis=-1, keepdims=True), (X,)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_transformation_keeps_the_values(case):
    fn, args = CASES[case]
    for k, ins in kernels_of(fn, *args):
        same(k, S.simplify(k), ins)
        same(k, S.partition(k), ins)
        same(k, KL.collapse(k), ins)
        same(k, KL.collapse(S.partition(k)), ins)
        for lp in loops(k.body):
            for f in (1, 3, 4, lp.extent + 1):
                same(k, S.split(k, lp.var, f), ins)
            if lp.extent <= 12:
                same(k, S.unroll(k, lp.var), ins)
            if len(lp.body) == 1 and isinstance(lp.body[0], K.Loop):
                same(k, S.reorder(k, lp.var, lp.body[0].var), ins)


def test_split_makes_tiles_and_a_tail():
    (k, ins), = kernels_of(lambda x: x * 2.0, rng.standard_normal(10).astype(np.float32))
    var = next(loops(k.body)).var
    t = S.split(k, var, 4)
    got = [(lp.var, lp.extent) for lp in loops(t.body)]
    assert got == [(f"{var}_o", 2), (f"{var}_i", 4), (f"{var}_t", 2)], got
    assert next(loops(t.body)).parallel == next(loops(k.body)).parallel
    same(k, t, ins)


def test_unroll_and_reorder_shapes():
    (k, ins), = kernels_of(lambda x: x + 1.0, rng.standard_normal((3, 4)).astype(np.float32))
    outer, inner = [lp.var for lp in loops(k.body)][:2]
    r = S.reorder(k, outer, inner)
    assert [lp.var for lp in loops(r.body)][:2] == [inner, outer]
    u = S.unroll(k, inner)
    assert [lp.var for lp in loops(u.body)] == [outer]
    assert sum(isinstance(s, K.Store) for s in next(loops(u.body)).body) == 4
    same(k, r, ins)
    same(k, u, ins)
    with pytest.raises(ValueError, match="no loop"):
        S.split(k, "nope", 2)


def test_partition_folds_every_select_of_a_padded_sum():
    ks = [(k, ins) for k, ins in kernels_of(gate_concat, *GATES) if body_selects(k.body)]
    assert ks, "the padded sum should lower to selects"
    for k, ins in ks:
        p = S.partition(k)
        assert body_selects(p.body) == 0, str(p)
        assert len(list(loops(p.body))) > len(list(loops(k.body)))
        # each piece reads only its own part: no clamps left in any index
        assert "min(" not in str(p).split("{", 1)[1] and "max(" not in str(p).split("{", 1)[1]
        same(k, p, ins)


def test_partition_leaves_parity_tests_and_keeps_the_parallel_loop_in_pieces():
    x = rng.standard_normal(9).astype(np.float32)
    for k, ins in kernels_of(lambda x: gc.pad(x[::2] * 3.0, (0, 4)), x):
        assert [lp.parallel for lp in k.body] == [True]
        p = S.partition(k, max_pieces=3)
        assert [(lp.extent, lp.parallel) for lp in p.body] == [(5, True), (4, True)]
        assert p.parallel_extent == k.parallel_extent == 9
        assert body_selects(p.body) == 0
        same(k, p, ins)
    # the gradient of x[::2]: a parity test (changing 8 times) is left to the code
    (k, ins), = kernels_of(lambda x: gc.grad(lambda x: gc.sum(x[::2] * 3.0))(x), x)
    assert "%2" in str(k) and body_selects(k.body) == 1
    p = S.partition(k, max_pieces=3)
    assert [lp.parallel for lp in p.body] == [True] and body_selects(p.body) == 1
    same(k, p, ins)


ROWS = [rng.standard_normal((n, 6)).astype(np.float32) for n in (5, 7, 2, 9, 1, 4)]


def concat_rows(*xs):
    """An LSTM's weight gradient reads its steps' gate gradients concatenated along rows, the
    parallel loop of the concat's kernel."""
    return gc.concatenate([x * 2.0 for x in xs], axis=0)


def test_partition_splits_the_parallel_loop_of_a_row_concat():
    (k, ins), = [(k, i) for k, i in kernels_of(concat_rows, *ROWS) if body_selects(k.body)]
    p = S.partition(k)
    assert [(lp.extent, lp.parallel) for lp in p.body] == [(len(x), True) for x in ROWS]
    assert body_selects(p.body) == 0 and p.parallel_extent == k.parallel_extent == 28
    assert [lp.parallel for lp in KL.collapse(p).body] == [True] * 6  # (pieces keep rows)
    assert all(len(lp.body) == 1 and isinstance(lp.body[0], K.Loop)
               for lp in KL.collapse(p).body)
    same(k, p, ins)
    assert len(S.partition(k, parallel_pieces=3).body) == 3


@pytest.mark.parametrize("threads,chunks", [(1, 1), (3, 3)])
def test_llvm_splits_a_parallel_range_across_the_pieces(monkeypatch, threads, chunks):
    # chunks of the 28 rows (0-9, 9-18, 18-28) start and end inside pieces
    L = pytest.importorskip("graphc.backends.llvm")
    from graphc.backends import llvm_runtime
    monkeypatch.setattr(llvm_runtime, "PARALLEL_MIN_WORK", 1)
    f = gc.compile(concat_rows, backend=L.LLVMBackend(threads=threads))
    prog = f.lower(*ROWS).program
    (step,) = [s for s in prog.steps if sum(lp.parallel for lp in s.kernel.body) == 6]
    assert step.chunks == chunks and step.extent == 28
    np.testing.assert_array_equal(f(*ROWS), np.concatenate(ROWS) * 2)


def test_partition_is_used_by_the_llvm_backend():
    L = pytest.importorskip("graphc.backends.llvm")
    f = gc.compile(gate_concat, backend="llvm")
    prog = f.lower(*GATES).program
    assert all(body_selects(k.body) == 0 for k in prog.kernels)
    np.testing.assert_allclose(f(*GATES), gate_concat(*GATES), rtol=1e-6)
    g = gc.compile(gate_concat, backend=L.LLVMBackend(partition=False))
    assert any(body_selects(k.body) for k in g.lower(*GATES).program.kernels)
    np.testing.assert_array_equal(f(*GATES), g(*GATES))


def test_collapse_merges_contiguous_loops_only():
    # [2,3,4,5] with a [3,1,1] bias: the three inner loops walk x and out contiguously, but
    # the bias index is the channel (i1) alone: i2 and i3 merge (20), i1 stays, and the
    # parallel loop over the batch stays parallel
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    (k, ins), = kernels_of(lambda x, b: x + b, x, rng.standard_normal((3, 1, 1)).astype(np.float32))
    c = KL.collapse(k)
    assert [(lp.extent, lp.parallel) for lp in loops(c.body)] == [(2, True), (3, False), (20, False)]
    same(k, c, ins)
    # without the bias everything is one loop (the parallel one, over all 120 elements)
    (k, ins), = kernels_of(lambda x: x * 2.0, x)
    assert [(lp.extent, lp.parallel) for lp in loops(KL.collapse(k).body)] == [(120, True)]
    # a stride-2 read is not linear in the merged index: those loops stay apart
    (k, ins), = kernels_of(lambda x: x[:, :, :, ::2] + 1.0, x)
    assert [lp.extent for lp in loops(KL.collapse(k).body)] == [24, 3]


def test_redirect_reads_the_output_buffer():
    (k, ins), = kernels_of(lambda x: gc.tanh(x) + x, X)
    r = KL.redirect(k, "in0", "out")
    body = str(r).split(") {", 1)[1]
    assert "in0[" not in body and body.count("out[") == 2, body


def test_in_place_kernels_get_noalias_pointers_on_llvm():
    # u = t * 2 over a dying temporary t is written in place (M3); the LLVM backend reads t
    # through the output's name, so the kernel gets noalias pointers
    pytest.importorskip("graphc.backends.llvm")
    from graphc.backends.llvm_runtime import _separate

    def f(x, y, w):  # as test_schedule's chain over a temporary
        t = gc.exp(x) + gc.exp(y)
        return (t * (1.0 / gc.sum(t, axis=0, keepdims=True))) @ w
    x = rng.standard_normal((256, 256)).astype(np.float32)
    fn = gc.compile(f, backend="llvm")
    prog = fn.lower(x, x, x).program
    inplace = [s for s in prog.steps if s.node.attrs.get("inplace")]
    assert inplace and all(_separate(s.node, s.kernel) and not _separate(s.node)
                           for s in inplace)
    t = np.exp(x) + np.exp(x)
    np.testing.assert_allclose(fn(x, x, x), (t / t.sum(0, keepdims=True)) @ x, rtol=1e-4,
                               atol=1e-6)
