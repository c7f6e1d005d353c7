"""The merge sub-pass of the simplified stage (graphc/passes/merge.py): a sum of small-K
matmuls becomes one matmul of concatenations, with the same values; it holds back where a
term has another use, a K is large or the terms do not line up; its concat rules
(flattening, transposes, blocks of one tensor, runs of another concat) keep the values;
and on an unrolled LSTM training step it merges the per-step weight gradients and the
forward `x_t @ Wx + h @ Wh`, leaving fewer kernels, equal results and a fixed point."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import graphc as gc

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks/
from benchmarks.workloads import lstm_last_state  # noqa: E402  (the W3 benchmark's LSTM)
from graphc.interpret import interpret
from graphc.ir import Graph, apply, input_node
from graphc.ops import Op
from graphc.passes.merge import (CONCAT_RULES, CONCAT_SLICE, MATMUL_SUM, SMALL_K,
                                 share_concats)
from graphc.passes.simplify import simplify
from graphc.types import DType
from graphc.verify import verify

F32 = DType.float32
A = apply
rng = np.random.default_rng(0)


def count(graph, op):
    return sum(1 for n in graph.nodes if n.op is op)


def inputs(*shapes):
    return [input_node(f"in{i}", s, F32) for i, s in enumerate(shapes)]


def same_values(g, s, rtol=1e-5, atol=1e-5):
    args = [rng.standard_normal(n.shape).astype(np.float32) for n in g.inputs]
    for got, want in zip(interpret(s, *args), interpret(g, *args)):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def simplified(g):
    log: list = []
    s = simplify(verify(g), log=log)
    verify(s, "simplified", allow_grad=False)
    same_values(g, s)
    return s, [doc for doc, _, _ in log]


# ---- the sum of matmuls ------------------------------------------------------------------------
def test_sum_of_matmuls_is_one_matmul_of_concats():
    a1, b1, a2, b2, a3, b3, c = inputs((4, 3), (3, 5), (4, 2), (2, 5), (4, 6), (6, 5), (5,))
    # a bias in the middle of the sum stays a term of its own
    y = A(Op.ADD, A(Op.ADD, A(Op.ADD, A(Op.MATMUL, a1, b1), c), A(Op.MATMUL, a2, b2)),
          A(Op.MATMUL, a3, b3))
    s, fired = simplified(Graph((a1, b1, a2, b2, a3, b3, c), (A(Op.TANH, y),)))
    assert MATMUL_SUM.doc in fired
    assert count(s, Op.MATMUL) == 1 and count(s, Op.CONCAT) == 2
    (mm,) = [n for n in s.nodes if n.op is Op.MATMUL]
    assert mm.inputs[0].shape == (4, 11) and mm.inputs[1].shape == (11, 5)


def test_batched_terms_and_transposed_operands():
    # x_t^T @ g_t over steps, batched: the transposes become one transpose of a concat
    xs = inputs(*[(2, 3, 4)] * 3)
    gs = [input_node(f"g{i}", (2, 3, 5), F32) for i in range(3)]
    terms = [A(Op.MATMUL, A(Op.PERMUTE, x, perm=(0, 2, 1)), g) for x, g in zip(xs, gs)]
    y = A(Op.ADD, A(Op.ADD, terms[0], terms[1]), terms[2])
    s, fired = simplified(Graph(tuple(xs + gs), (y,)))
    assert MATMUL_SUM.doc in fired and count(s, Op.MATMUL) == 1
    assert "concat(permute x_i) -> permute(concat x_i)" in fired


def test_guards_hold_the_rewrite_back():
    a1, b1, a2, b2 = inputs((4, 3), (3, 5), (4, 2), (2, 5))
    m1, m2 = A(Op.MATMUL, a1, b1), A(Op.MATMUL, a2, b2)
    # m1 is also an output: merging would compute it twice
    s, fired = simplified(Graph((a1, b1, a2, b2), (A(Op.ADD, m1, m2), m1)))
    assert MATMUL_SUM.doc not in fired and count(s, Op.MATMUL) == 2
    # the same matmul added to itself has two uses
    s, fired = simplified(Graph((a1, b1), (A(Op.ADD, m1, m1),)))
    assert MATMUL_SUM.doc not in fired
    # a long contraction is left alone
    k = SMALL_K + 1
    c1, d1, c2, d2 = inputs((2, k), (k, 3), (2, 4), (4, 3))
    y = A(Op.ADD, A(Op.MATMUL, c1, d1), A(Op.MATMUL, c2, d2))
    s, fired = simplified(Graph((c1, d1, c2, d2), (y,)))
    assert MATMUL_SUM.doc not in fired and count(s, Op.MATMUL) == 2
    # rows that differ: the A operands cannot be concatenated (the sum broadcasts)
    e1, f1, e2, f2 = inputs((1, 3), (3, 5), (4, 2), (2, 5))
    y = A(Op.ADD, A(Op.MATMUL, e1, f1), A(Op.MATMUL, e2, f2))
    s, fired = simplified(Graph((e1, f1, e2, f2), (y,)))
    assert MATMUL_SUM.doc not in fired


def test_off_by_name():
    a1, b1, a2, b2 = inputs((4, 3), (3, 5), (4, 2), (2, 5))
    g = Graph((a1, b1, a2, b2), (A(Op.ADD, A(Op.MATMUL, a1, b1), A(Op.MATMUL, a2, b2)),))
    assert count(simplify(g, use_merge=False), Op.MATMUL) == 2
    assert count(simplify(g), Op.MATMUL) == 1


# ---- the concat rules --------------------------------------------------------------------------
def test_concat_rules_keep_the_values():
    from graphc.pattern import rewrite
    a, b, c = inputs((2, 3), (4, 3), (1, 3))
    x = input_node("x", (5, 2, 3), F32)
    flat = A(Op.CONCAT, a, A(Op.CONCAT, b, c, axis=0), axis=0)
    perm = A(Op.CONCAT, A(Op.PERMUTE, a, perm=(1, 0)), A(Op.PERMUTE, b, perm=(1, 0)), axis=1)
    rows = [A(Op.RESHAPE, A(Op.SLICE, x, starts=(t, 0, 0), stops=(t + 1, 2, 3), steps=(1, 1, 1)),
              shape=(2, 3)) for t in range(1, 4)]
    blocks = A(Op.CONCAT, *rows, axis=0)               # x[1:4] reshaped: no copy
    backwards = A(Op.CONCAT, *rows[::-1], axis=0)      # not x's memory order: stays
    g = Graph((a, b, c, x), (flat, perm, blocks, backwards))
    log: list = []
    s = rewrite(g, CONCAT_RULES, log)
    same_values(g, s, rtol=0, atol=0)
    assert {doc for doc, _, _ in log} == {r.doc for r in CONCAT_RULES}
    assert [o.op for o in s.outputs] == [Op.CONCAT, Op.PERMUTE, Op.RESHAPE, Op.CONCAT]
    assert len(s.outputs[0].inputs) == 3


def test_a_run_of_another_concat_is_a_slice_of_it():
    a, b, c, d = inputs((2, 3), (1, 3), (4, 3), (2, 3))
    short = A(Op.CONCAT, b, c, axis=0)
    long = A(Op.CONCAT, a, b, c, d, axis=0)
    g = Graph((a, b, c, d), (A(Op.TANH, short), A(Op.EXP, long)))
    log: list = []
    s = share_concats(g, log)
    same_values(g, s, rtol=0, atol=0)
    assert [doc for doc, _, _ in log] == [CONCAT_SLICE.doc]
    assert count(s, Op.CONCAT) == 1 and count(s, Op.SLICE) == 1
    # a longer concat that reads the shorter one is not its source (that would be a cycle)
    e = A(Op.CONCAT, a, b, axis=0)
    f = A(Op.CONCAT, a, b, A(Op.NEG, e), axis=0)
    g = Graph((a, b, c, d), (f,))
    assert share_concats(g) is g
    h = A(Op.CONCAT, a, b, e, axis=0)                   # reads e itself, e's inputs first
    g = Graph((a, b, c, d), (h,))
    assert share_concats(g) is g


# ---- an unrolled LSTM --------------------------------------------------------------------------
def lstm_loss(p, x):
    return gc.sum(lstm_last_state(p, x) ** 2)


def lstm_args(T=5, B=3, I=4, H=6):
    r = np.random.default_rng(1)
    p = {"Wx": r.standard_normal((I, 4 * H)).astype(np.float32) * 0.3,
         "Wh": r.standard_normal((H, 4 * H)).astype(np.float32) * 0.3,
         "b": r.standard_normal(4 * H).astype(np.float32) * 0.1}
    return p, r.standard_normal((T, B, I)).astype(np.float32)


def test_lstm_weight_gradients_merge_into_one_matmul_each():
    step = gc.value_and_grad(lstm_loss)
    args = lstm_args()
    on = gc.compile(step, backend="numpy")
    off = gc.compile(step, backend="numpy", passes="-merge")
    (l1, g1), (l0, g0) = on(*args), off(*args)
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=1e-4, atol=1e-5)
    s1, s0 = on.stages["simplified"], off.stages["simplified"]
    T = args[1].shape[0]
    # off: T forward x_t @ Wx, T-1 h @ Wh, T-1 dh, T + (T-1) weight-gradient terms
    assert count(s0, Op.MATMUL) == 5 * T - 3
    # on: step 0's x_0 @ Wx, T-1 [x_t, h] @ [Wx; Wh], T-1 dh, one per weight gradient
    assert count(s1, Op.MATMUL) == 2 * T + 1
    # the shared concat of the step gradients is made once; x's rows are x itself
    assert count(s1, Op.CONCAT) == T - 1 + 2 + 1   # [x_t, h] per step, [Wx; Wh], h's, dg's
    assert len(on.stages["fused"].nodes) < len(off.stages["fused"].nodes)
    # a fixed point: a second simplify rewrites nothing
    log: list = []
    simplify(s1, log=log)
    assert not log, [d for d, _, _ in log]


def test_a_long_sum_is_merged_in_runs_of_at_most_max_k():
    from graphc.passes.merge import MAX_K
    n = MAX_K // SMALL_K + 4          # one run of MAX_K, then a run of 4 terms
    xs = [input_node(f"x{i}", (SMALL_K, 2), F32) for i in range(n)]
    gs = [input_node(f"g{i}", (SMALL_K, 3), F32) for i in range(n)]
    terms = [A(Op.MATMUL, A(Op.PERMUTE, x, perm=(1, 0)), g) for x, g in zip(xs, gs)]
    y = terms[0]
    for t in terms[1:]:
        y = A(Op.ADD, y, t)
    s, fired = simplified(Graph(tuple(xs + gs), (y,)))
    ks = sorted(m.inputs[0].shape[-1] for m in s.nodes if m.op is Op.MATMUL)
    assert ks == [4 * SMALL_K, MAX_K]
    log: list = []
    simplify(s, log=log)
    assert not log
