"""The kernel IR and the lowering from fused nodes, with no compiled backend: every kernel
kind lowers to a verified kernel, the printed form is deterministic, and kernels run by
the pure-NumPy evaluator (`graphc.kernel.evaluate`) agree with the reference interpreter,
including index propagation through random chains of views, pads and concats."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphc as gc
from graphc import kernel as K
from graphc.errors import VerifyError
from graphc.interpret import interpret
from graphc.lower import as_kernels, lower_kernel
from graphc.ops import Op
from graphc.pipeline import run_pipeline
from graphc.printer import node_names
from graphc.types import DType


def run_kernels(graph, *args, with_inputs=False):
    """Run an optimized graph kernel by kernel with the kernel-IR evaluator: (outputs,
    kernels), or (outputs, [(kernel, its input arrays)]) with `with_inputs`."""
    graph = as_kernels(graph)
    names = node_names(graph)
    env = {id(n): np.asarray(a) for n, a in zip(graph.inputs, args)}
    kernels = []
    for n in graph.nodes:
        if n.op is Op.CONST:
            env[id(n)] = n.attrs["value"].array
        elif n.op is Op.FUSED:
            k = lower_kernel(n, names)
            ins = [env[id(i)] for i in n.inputs]
            kernels.append((k, ins) if with_inputs else k)
            env[id(n)] = K.evaluate(k, *ins)
    return tuple(env[id(o)] for o in graph.outputs), kernels


def check(fn, *args, passes=None, kinds=None):
    traced = gc.trace(fn, *args)
    want = interpret(traced, *args)
    g = run_pipeline(traced, passes)["optimized"]
    got, kernels = run_kernels(g, *args)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.dtype, b.dtype, a.shape, b.shape)
        if b.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-5 if b.dtype == np.float32 else 1e-12,
                                       atol=1e-6)
        else:
            np.testing.assert_array_equal(a, b)
    if kinds is not None:
        assert {k.kind for k in kernels} >= set(kinds), [k.kind for k in kernels]
    return kernels


rng = np.random.default_rng(0)
X = rng.standard_normal((3, 4))
Y = rng.standard_normal(4)


@pytest.mark.parametrize("name,fn,args,kind", [
    ("elementwise", lambda x, y: gc.tanh(x * y + 1.0) - x, (X, Y), "elementwise"),
    ("reduce", lambda x, y: gc.log(gc.sum(gc.exp(x) * y, axis=0)), (X, Y), "reduce"),
    ("reduce_keep_max", lambda x: gc.max(x, axis=1, keepdims=True) * 2.0, (X,), "reduce"),
    ("reduce_all", lambda x: gc.sum(x * x), (X,), "reduce"),
    ("matmul", lambda x, y: gc.tanh(x @ y.reshape(4, 1) + 1.0), (X, Y), "matmul"),
    ("matmul_batch", gc.matmul, (rng.standard_normal((2, 1, 3, 4)),
                                 rng.standard_normal((5, 4, 2))), "matmul"),
    ("movement", lambda x: gc.pad(x, ((1, 2), (0, 3)), constant_values=1.5), (X,), "movement"),
    ("concat", lambda x, y: gc.concatenate([x, x[:1], y.reshape(1, 4)]), (X, Y), "movement"),
    # concat is index arithmetic + select (fusion rule F2): it absorbs elementwise producers
    ("concat_fused", lambda x, y: gc.concatenate([x, x[:1] * 2.0, y.reshape(1, 4)]),
     (X, Y), "elementwise"),
    ("view", lambda x: gc.transpose(x), (X,), "view"),
    ("rand", lambda k: gc.random_uniform(k, (3, 5)), (np.int64(-7),), "elementwise"),
    ("ints", lambda a, b: gc.divide(a, b) * 3 - gc.maximum(a, b), (np.array([-7, 7, -8, 9, 0]),
                                            np.array([2, -2, 3, -4, 5])), None),
    ("where_bool", lambda x: gc.where(x > 0, x, -x).astype(bool), (X,), None),
])
def test_every_kernel_kind_lowers_verifies_and_evaluates(name, fn, args, kind):
    kernels = check(fn, *args, kinds=[kind] if kind else None)
    for k in kernels:
        K.verify(k)


def test_unfused_graphs_become_one_op_kernels():
    kernels = check(lambda x, y: gc.sum(gc.tanh(x * y), axis=1), X, Y, passes="-fusion")
    assert len(kernels) == 3


def test_printing_is_deterministic_and_shows_provenance():
    f = lambda x, y: gc.sum(gc.exp(x) * y, axis=0)  # noqa: E731
    texts = []
    for _ in range(2):
        g = run_pipeline(gc.trace(f, X, Y))["optimized"]
        texts.append([str(lower_kernel(n, node_names(g))) for n in g.nodes if n.op is Op.FUSED])
    assert texts[0] == texts[1]
    text = texts[0][0]
    assert "kernel k0 (reduce)" in text and "= sum" in text and "= exp" in text
    assert "test_kernel_ir.py" in text  # the user's line
    assert "for (r0 = 0; r0 < 3; r0++)" in text and "// parallel" in text


def test_reshape_round_trip_needs_no_division():
    g = run_pipeline(gc.trace(lambda x: gc.reshape(gc.reshape(x, (12,)) * 2.0, (3, 4)) + 1.0,
                              X))["optimized"]
    text = "\n".join(str(lower_kernel(n)) for n in g.nodes if n.op is Op.FUSED)
    assert "in0[i1 + i0*4]" in text  # (i0*4 + i1) // 4 and % 4 folded back to i0, i1


def test_pad_and_concat_never_read_out_of_bounds():
    # evaluate raises IndexError on any out-of-bounds load, in either select branch
    check(lambda x: gc.pad(x, ((2, 3), (4, 0))), rng.standard_normal((1, 2)))
    check(lambda a, b: gc.concatenate([a, b], axis=1), rng.standard_normal((2, 1)),
          rng.standard_normal((2, 3)))


def test_index_folding():
    ext = {"i": 3, "j": 4}
    i, j = K.Var("i"), K.Var("j")
    f = K.add(K.mul(i, 4), j)
    assert K.floordiv(f, 4, ext) == i
    assert K.mod(f, 4, ext) == j
    assert K.mod(K.add(K.mul(i, 8), j), 2, ext) == K.Mod(j, K.Const(2))
    assert K.clamp(j, 0, 3, ext) == j
    assert K.add(K.Const(2), K.Const(3)) == K.Const(5)
    assert K.bounds(K.add(K.mul(i, 4), j), ext) == (0, 11)


def test_loads_names_every_buffer_read_at_any_depth():
    f32 = DType.float32
    a, b, c, out = (K.Buffer(n, (4,), f32, r) for n, r in
                    (("a", "in"), ("b", "in"), ("c", "in"), ("out", "out")))
    i, j = K.Var("i"), K.Var("j")
    inner = K.Loop("j", 4, (K.Accumulate("s", "sum", K.Binary("mul", K.Load(b, j),
                                                               K.Unary("exp", K.Load(c, j)))),))
    body = (K.Loop("i", 4, (K.DefAcc("s", f32, 0.0), K.Let("t", K.Load(a, i)), inner,
                            K.Store(out, i, K.Binary("add", K.Ref("t", f32),
                                                     K.AccRef("s", f32))))),)
    k = K.Kernel("k", (a, b, c, out), body, "reduce")
    assert K.loads(k) == K.loads(body) == {a, b, c}
    assert K.loads(inner) == {b, c} and K.loads(inner.body[0].value.b) == {c}
    assert K.loads(body[0].body[3]) == set() and K.loads(K.Store(out, i, K.Load(out, i))) == {out}


def test_verify_rejects_broken_kernels():
    buf_in = K.Buffer("x", (4,), DType.float32, "in")
    out = K.Buffer("out", (4,), DType.float32, "out")
    good = K.Kernel("k", (buf_in, out), (K.Loop("i", 4, (
        K.Store(out, K.Var("i"), K.Load(buf_in, K.Var("i"))),), True),), "elementwise")
    K.verify(good)
    bad_var = K.Kernel("k", (buf_in, out), (K.Store(out, K.Var("i"), K.Lit(1.0, DType.float32)),),
                       "elementwise")
    with pytest.raises(VerifyError, match="outside its loop"):
        K.verify(bad_var)
    other = K.Buffer("y", (4,), DType.float32, "in")
    with pytest.raises(VerifyError, match="not declared"):
        K.verify(K.Kernel("k", (buf_in, out), (K.Loop("i", 4, (
            K.Store(out, K.Var("i"), K.Load(other, K.Var("i"))),)),), "elementwise"))
    with pytest.raises(VerifyError, match="store of float64"):
        K.verify(K.Kernel("k", (buf_in, out), (K.Store(out, K.Const(0),
                                                       K.Lit(1.0, DType.float64)),), "x"))
    with pytest.raises(VerifyError, match="add of float32 and float64"):
        K.verify(K.Kernel("k", (buf_in, out), (K.Store(out, K.Const(0), K.Binary(
            "add", K.Load(buf_in, K.Const(0)), K.Lit(1.0, DType.float64))),), "x"))
    with pytest.raises(VerifyError, match="before it is defined"):
        K.verify(K.Kernel("k", (buf_in, out), (K.Store(out, K.Const(0),
                                                       K.AccRef("acc0", DType.float32)),), "x"))
    # the pieces of a parallel loop: consecutive, at the top level
    piece = lambda v, n, par=True: K.Loop(v, n, (  # noqa: E731
        K.Store(out, K.Var(v), K.Load(buf_in, K.Var(v))),), par)
    K.verify(K.Kernel("k", (buf_in, out), (piece("i", 2), piece("j", 2)), "elementwise"))
    with pytest.raises(VerifyError, match="not consecutive"):
        K.verify(K.Kernel("k", (buf_in, out), (piece("i", 2), piece("t", 1, False),
                                                piece("j", 1)), "elementwise"))
    with pytest.raises(VerifyError, match="inside another loop"):
        K.verify(K.Kernel("k", (buf_in, out), (K.Loop("o", 1, (piece("i", 4),)),), "x"))


# ---- random chains of views and movement ops: index propagation against numpy --------------------------
@st.composite
def chains(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    steps = []
    s = shape
    for _ in range(draw(st.integers(1, 4))):
        m = draw(st.sampled_from(["reshape", "permute", "expand", "slice", "pad", "concat"]))
        if m == "reshape":
            size = int(np.prod(s))
            new = [d for d in (1, 2, 3, 4, 6) if size % d == 0]
            d = draw(st.sampled_from(new))
            steps.append((m, (d, size // d)))
            s = (d, size // d)
        elif m == "permute":
            p = tuple(draw(st.permutations(range(len(s)))))
            steps.append((m, p))
            s = tuple(s[i] for i in p)
        elif m == "expand":
            s2 = tuple(2 if d == 1 else d for d in s)
            steps.append((m, (2,) + s2))
            s = (2,) + s2
        elif m == "slice":
            sl = tuple((draw(st.integers(0, d - 1)), d, draw(st.integers(1, 2))) for d in s)
            steps.append((m, sl))
            s = tuple(len(range(a, b, c)) for a, b, c in sl)
        elif m == "pad":
            pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 1))) for _ in s)
            steps.append((m, pads))
            s = tuple(d + a + b for d, (a, b) in zip(s, pads))
        else:
            ax = draw(st.integers(0, len(s) - 1))
            steps.append((m, ax))
            s = tuple(2 * d if i == ax else d for i, d in enumerate(s))
        if int(np.prod(s)) > 64:
            break
    return shape, steps


def _apply(x, steps, lib):
    for m, a in steps:
        if m == "reshape":
            x = lib.reshape(x, a)
        elif m == "permute":
            x = lib.transpose(x, a)
        elif m == "expand":
            x = lib.broadcast_to(x, a)
        elif m == "slice":
            x = x[tuple(slice(*r) for r in a)]
        elif m == "pad":
            x = lib.pad(x, a, constant_values=-1.0)
        else:
            x = lib.concatenate([x, x * 2.0], axis=a)
    return x


@settings(max_examples=40, deadline=None)
@given(chains())
def test_index_propagation_matches_numpy(case):
    shape, steps = case
    x = np.arange(np.prod(shape), dtype=np.float64).reshape(shape) + 1.0
    want = _apply(x, steps, np) + 0.5
    g = run_pipeline(gc.trace(lambda x: _apply(x, steps, gc) + 0.5, x))["optimized"]
    (got,), _ = run_kernels(g, x)
    np.testing.assert_array_equal(got, want)


def test_kernel_ir_op_names_cover_the_elementwise_ops():
    from graphc.ops import BINARY, UNARY
    identity_or_cast = {Op.CAST} | {op for op in Op if op.value == "stop_gradient"}
    assert {op.value for op in UNARY - identity_or_cast} == K.UNARY_OPS
    assert {op.value for op in BINARY} == K.BINARY_OPS


def test_matrix_vector_product_streams_whole_rows_or_parallel_column_parts():
    # one row (an inference batch of 1): a small product has one part, whose k blocks read
    # whole rows of w (the LLVM runtime runs it on one thread anyway); the evaluator checks
    # every access stays in bounds
    x = rng.standard_normal((1, 40))
    w = rng.standard_normal((40, 192))
    b = rng.standard_normal(192)
    (k,) = check(lambda x, w, b: gc.tanh(x @ w + b), x, w, b, kinds=["matmul"])
    assert k.parallel_extent == 1, str(k)
    # from 2^20 multiply-adds, parallel parts of the columns (at most 256 wide, a multiple
    # of the 64-wide register row), so the threads share the work (lowered, not evaluated)
    for n, parts in ((1536, 6), (600, 5)):   # 600: rows of 60 columns, parts of 120
        g = run_pipeline(gc.trace(lambda x, w: x @ w, np.ones((1, 2048), np.float32),
                                  np.ones((2048, n), np.float32)))["optimized"]
        (node,) = [m for m in g.nodes if m.op is Op.FUSED]
        assert lower_kernel(node).parallel_extent == parts
    (k,) = check(lambda x, w: x @ w, rng.standard_normal((32, 40)), w)
    assert k.parallel_extent == 2   # two row blocks of 16: in parallel over rows
