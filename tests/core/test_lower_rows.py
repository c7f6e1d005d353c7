"""Lowering of row reductions (fusion rule F6) and of matmul epilogues through reshapes
(graphc/lower.py): the kernel IR's shape is asserted, and its values checked with the
kernel-IR evaluator against the interpreter."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import kernel as K
from graphc.lower import lower_kernel
from graphc.ops import Op
from graphc.pipeline import run_pipeline

from test_kernel_ir import check

rng = np.random.default_rng(5)
X = rng.standard_normal((6, 40)).astype(np.float32)


def softmax(x):
    e = gc.exp(x - gc.max(x, axis=-1, keepdims=True))
    return e / gc.sum(e, axis=-1, keepdims=True)


def top_statements(k: K.Kernel) -> list:
    """The statements inside the kernel's parallel loop."""
    (outer,) = [s for s in k.body if isinstance(s, K.Loop)]
    return list(outer.body)


def test_softmax_rows_reduce_once_then_divide_the_stashed_exps():
    (k,) = check(softmax, X)
    kinds = [type(s).__name__ for s in top_statements(k)]
    # per row: max (DefAcc + loop), sum (DefAcc + loop, storing each exp), then the row loop
    assert kinds == ["DefAcc", "Loop", "DefAcc", "Loop", "Loop"], kinds
    sum_loop, row_loop = top_statements(k)[3], top_statements(k)[4]
    assert any(isinstance(s, K.Store) for s in sum_loop.body)          # the stash
    assert "exp" not in str(K.format_stmts((row_loop,)))                # read back, not redone


@pytest.mark.parametrize("shape", [(1, 10), (6, 1, 40), (1, 1, 7)])
def test_size_one_axes_still_reduce_each_row_once(shape):
    # a batch-1 softmax: the hoisted max/sum and the root's reads of them index the size-1
    # axis the same way (0), so each is computed once and the exps are stashed, not redone
    x = rng.standard_normal(shape).astype(np.float32)
    (k,) = check(softmax, x)
    text = str(k)
    assert text.count("-inf;") == 1 and text.count("= 0.0;") == 1, text
    assert text.count("exp(") == 1, text


def test_no_stash_when_the_output_may_share_memory_with_an_input():
    g = run_pipeline(gc.trace(softmax, X))["optimized"]
    (node,) = [n for n in g.nodes if n.op is Op.FUSED]
    k = lower_kernel(node.replace(attrs=node.attrs.with_(inplace=True)))
    sum_loop, row_loop = top_statements(k)[3], top_statements(k)[4]
    assert not any(isinstance(s, K.Store) for s in sum_loop.body)
    assert "exp" in str(K.format_stmts((row_loop,)))


@pytest.mark.parametrize("fn", [
    lambda x: x - gc.log(gc.sum(gc.exp(x), axis=-1, keepdims=True)),           # log-softmax
    lambda x: (x - gc.mean(x, axis=-1, keepdims=True))
    / gc.sqrt(gc.var(x, axis=-1, keepdims=True) + 1e-5),                       # layer norm
    lambda x: gc.exp(x) * gc.max(gc.exp(x), axis=-1, keepdims=True),            # max of a stash
], ids=["log_softmax", "layer_norm", "exp_times_max"])
def test_row_kernels_match_the_interpreter(fn):
    ks = check(fn, X)
    assert len(ks) == 1


def test_row_reduction_over_two_trailing_axes():
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    (k,) = check(lambda x: x / gc.sum(gc.exp(x), axis=(1, 2), keepdims=True), x)
    assert k.parallel_extent == 3


def test_matmul_epilogue_through_a_reshape_keeps_the_row_form():
    # a conv weight gradient: (O, C*k*k) product reshaped to the weight's (O, C, k, k) for
    # its SGD update: the product stays one GEMM-shaped nest, the epilogue runs over it
    w = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    a = rng.standard_normal((4, 30)).astype(np.float32)
    b = rng.standard_normal((30, 12)).astype(np.float32)
    f = lambda w, a, b: w - 0.1 * gc.reshape(a @ b, w.shape)  # noqa: E731
    (k,) = check(f, w, a, b)
    assert k.kind == "matmul"
    pytest.importorskip("graphc.backends.llvm")
    from graphc.backends import llvm_gemm
    assert llvm_gemm._split(k) not in (None, False)   # zero-init, k loop, then the epilogue
    # big enough for the packed GEMM: LeNet's second conv (16 x 6*5*5 weights)
    w = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    a = rng.standard_normal((16, 200)).astype(np.float32)
    b = rng.standard_normal((200, 150)).astype(np.float32)
    fn = gc.compile(f, backend="llvm")
    prog = fn.lower(w, a, b).program
    assert any(s.gemm is not None for s in prog.steps)
    np.testing.assert_allclose(fn(w, a, b), w - 0.1 * (a @ b).reshape(w.shape), rtol=1e-5,
                               atol=1e-5)


def test_conv_products_are_single_matmuls_with_the_batch_among_the_columns():
    # conv2d (groups 1): im2col (C*k*k, N*L), so the forward product, the weight gradient
    # and the input gradient are each one 2-d matmul (no per-sample products summed over
    # the batch); the values are test_conv.py's business, the shapes are this test's
    import graphc.nn.functional as F
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    loss = lambda x, w: gc.sum(F.conv2d(x, w, padding=1) ** 2)  # noqa: E731
    g = run_pipeline(gc.trace(gc.value_and_grad(loss, (0, 1)), x, w))["simplified"]
    mms = [n for n in g.nodes if n.op is Op.MATMUL]
    assert len(mms) == 3 and all(len(n.shape) == 2 for n in mms), [n.shape for n in mms]
    assert sorted(n.shape for n in mms) == [(5, 27), (5, 256), (27, 256)]


@pytest.mark.parametrize("fn,shape", [
    (lambda x: gc.sum(x, axis=0), (7, 33)),                                  # a bias gradient
    (lambda x: 1.0 - 0.1 * gc.sum(x * 2.0, axis=0, keepdims=True), (5, 16)),  # + SGD epilogue
    (lambda x: gc.max(x, axis=(0, 1)), (3, 4, 5)),                           # two leading axes
    (lambda x: gc.sum(gc.exp(x), axis=0), (4, 3, 2, 5)),                     # a 3-d row
], ids=["sum", "epilogue", "max2", "row3d"])
def test_leading_axis_reductions_accumulate_whole_rows(fn, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    (k,) = check(fn, x)
    text = str(k).split(") {", 1)[1]
    assert "acc" not in text, text          # no per-element accumulator walking a column
    assert k.parallel_extent == 1


def test_leading_axis_max_propagates_nan():
    x = rng.standard_normal((6, 8)).astype(np.float32)
    x[3, 2] = np.nan
    (k,) = check(lambda x: gc.max(x, axis=0), x)
    got = K.evaluate(k, x)
    assert np.isnan(got[2]) and not np.isnan(np.delete(got, 2)).any()
    pytest.importorskip("graphc.backends.llvm")
    out = gc.compile(lambda x: gc.max(x, axis=0), backend="llvm")(x)
    np.testing.assert_array_equal(out, np.max(x, axis=0))


def test_per_element_matmul_loops_over_the_product_not_its_reshape():
    # the OpenCL backend lowers matmul kernels one accumulator per element and blocks that
    # nest (opencl_matmul.match); with a reshape epilogue the nest must be the product's
    # (4, 12), not the weight's (4, 3, 2, 2), or it ran unblocked (W2 on OpenCL: 25 ms)
    w = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    a = rng.standard_normal((4, 30)).astype(np.float32)
    b = rng.standard_normal((30, 12)).astype(np.float32)
    g = run_pipeline(gc.trace(lambda w, a, b: w - 0.1 * gc.reshape(a @ b, w.shape), w, a, b))
    (node,) = [n for n in g["optimized"].nodes if n.op is Op.FUSED]
    k = lower_kernel(node, row_order=False)
    assert k.kind == "matmul"
    outer = k.body[0]
    assert (outer.extent, outer.body[0].extent) == (4, 12)
    ins = [{id(i): x for i, x in zip(g["optimized"].inputs, (w, a, b))}[id(i)]
           for i in node.inputs]
    np.testing.assert_allclose(K.evaluate(k, *ins), w - 0.1 * (a @ b).reshape(w.shape),
                               rtol=1e-5, atol=1e-5)
    from graphc.backends.opencl_matmul import match
    assert match(k) is not None


def test_concat_of_one_channel_runs_in_parallel_over_the_batch():
    # conv im2col over one input channel: the concat's root is (1, k*k, N, H, W); its
    # parallel loop is the batch (N), not the length-1 channel axis
    import graphc.nn.functional as F
    x = rng.standard_normal((16, 1, 6, 6)).astype(np.float32)
    w = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    ks = check(lambda x, w: F.conv2d(x, w), x, w)
    (mv,) = [k for k in ks if k.kind == "movement"]
    assert mv.parallel_extent == 16
