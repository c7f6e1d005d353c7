"""The fusion pass (graphc/passes/fusion.py): kernel counts for known patterns, asserted
exactly, each with the reason it follows from rules F1-F6; and for every pattern the
invariants of a fused graph: it verifies, it holds only inputs, constants and kernels, no
contraction (matmul/sum/max) is duplicated or dropped, no kernel holds two (besides the row
reductions of F6, computed once per row before the row's elements), every kernel
says why it exists, every op of the simplified graph is computed somewhere, and the
results equal the interpreter's on the unfused graph (and the numpy backend's)."""
from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.backends.numpy import NumpyBackend
from graphc.interpret import interpret
from graphc.ops import CONTRACTIONS, ELEMENTWISE, VIEWS, Op
from graphc.passes.fusion import fuse, kernels, plan, reduces_rows, row_reductions
from graphc.report import diff
from graphc.verify import verify

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"elementwise", "reduce", "matmul", "movement", "view"}


def load_mlp():
    spec = importlib.util.spec_from_file_location("example_mlp_fusion", ROOT / "examples" / "mlp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lower(fn, *args, passes=None):
    return gc.compile(fn, backend="reference", passes=passes).lower(*args)


def flat_args(args):
    from graphc.frontends import pytree
    return [np.asarray(x) for x in pytree.flatten(tuple(args))[0]]


def contractions(graph) -> Counter:
    return Counter(n.op for n in graph.nodes if n.op in CONTRACTIONS)


@pytest.mark.parametrize("shape, axes, keep, want", [
    ((4, 5), (1,), True, True), ((2, 3, 4), (1, 2), True, True), ((2, 3, 4), (2,), True, True),
    ((4, 5), (0,), True, False), ((4, 5), (0, 1), True, False), ((4, 5), (1,), False, False),
    ((2, 3, 4), (0, 2), True, False)])
def test_reduces_rows_means_trailing_axes_some_not_all_keepdims(shape, axes, keep, want):
    x = np.ones(shape, np.float32)
    for red in (gc.sum, gc.max):
        g = gc.trace(lambda x: red(x, axis=axes, keepdims=keep), x)
        (n,) = [n for n in g.nodes if n.op in (Op.SUM, Op.MAX)]
        assert reduces_rows(n) is want


def body_contractions(fused) -> Counter:
    c: Counter = Counter()
    for k in kernels(fused):
        c += contractions(k.attrs["body"])
    return c


def check_fused(entry, args, rtol=1e-5, atol=1e-6):
    """The invariants every fused graph must satisfy; returns its kernels."""
    stages = entry.stages
    simplified, fused = stages["simplified"], stages["fused"]
    verify(fused, "fused", allow_grad=False)     # recurses into every kernel body
    ks = kernels(fused)
    assert all(n.op in (Op.INPUT, Op.CONST, Op.FUSED) for n in fused.nodes)
    assert len({k.attrs["name"] for k in ks}) == len(ks)
    for k in ks:
        body = k.attrs["body"]
        assert k.attrs["reason"].strip(), f"kernel {k.attrs['name']} records no reason"
        assert k.attrs["kind"] in KINDS
        rows = row_reductions(body)
        assert sum(contractions(body).values()) - len(rows) <= 1, \
            f"{k.attrs['name']} holds two contractions"
        assert not rows or Op.MATMUL not in {n.op for n in body.nodes}
        ops = {n.op for n in body.nodes} - {Op.INPUT, Op.CONST}
        if Op.MATMUL in ops:
            assert k.attrs["kind"] == "matmul"
        elif ops & {Op.SUM, Op.MAX}:
            assert k.attrs["kind"] == "reduce"
        assert not any(n.op is Op.FUSED for n in body.nodes)
        assert body.outputs[0].type == k.type
    # no contraction duplicated (recomputed) or dropped
    assert body_contractions(fused) == contractions(simplified)
    # every op is computed by some kernel; what fusion adds are recomputed copies of cheap
    # elementwise ops and views, never anything new
    removed, added = diff(simplified, fused)
    assert not removed, f"ops lost by fusion: {removed}"
    assert all(n.op in ELEMENTWISE | VIEWS for n in added), added
    # the plan decided every op, with a rule
    _, _, decisions = plan(simplified)
    decided = {id(d.node) for d in decisions}
    assert all(id(n) in decided for n in simplified.nodes if n.op not in (Op.INPUT, Op.CONST))
    assert {d.rule for d in decisions} <= {"F1", "F2", "F3", "F4", "F5", "F6"}
    assert all(d.reason for d in decisions)
    # results: the interpreter on the fused graph (it runs kernel bodies) against the
    # interpreter on the unfused graph, and the numpy backend on the final graph
    flat = flat_args(args)
    want = interpret(simplified, *flat)
    want0 = interpret(stages.get("backward", stages["traced"]), *flat)
    got = interpret(fused, *flat)
    program = NumpyBackend(poison=True).compile(stages["optimized"])
    got_np = program(*flat)
    for w0, w, g, gn in zip(want0, want, got, got_np):
        np.testing.assert_allclose(w, w0, rtol=rtol, atol=atol)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
        np.testing.assert_allclose(gn, w, rtol=rtol, atol=atol)
    return ks


# ---- the patterns ------------------------------------------------------------------------------
rng = np.random.default_rng(0)
X = rng.standard_normal((16, 32)).astype(np.float32)
W = rng.standard_normal((32, 24)).astype(np.float32)
B = rng.standard_normal(24).astype(np.float32)
G = rng.standard_normal(32).astype(np.float32)
Y = np.eye(32, dtype=np.float32)[rng.integers(0, 32, 16)]


def chain8(x):
    y = x * 2.0
    y = y + 1.0
    y = gc.tanh(y)
    y = gc.exp(y)
    y = y - 3.0
    y = gc.sin(y)
    y = gc.abs(y)
    return gc.sqrt(y)


def matmul_bias_relu(x, w, b):
    z = x @ w + b
    return gc.where(z > 0, z, 0.0)


def softmax(x):
    e = gc.exp(x - gc.max(x, axis=-1, keepdims=True))
    return e / gc.sum(e, axis=-1, keepdims=True)


def log_softmax(x):
    z = x - gc.max(x, axis=-1, keepdims=True)
    return z - gc.log(gc.sum(gc.exp(z), axis=-1, keepdims=True))


def layer_norm(x, g, b):
    m = gc.mean(x, axis=-1, keepdims=True)
    v = gc.var(x, axis=-1, keepdims=True)
    return (x - m) / gc.sqrt(v + 1e-5) * g + b


def softmax_ce(z, onehot):
    z = z - gc.max(z, axis=1, keepdims=True)
    log_probs = z - gc.log(gc.sum(gc.exp(z), axis=1, keepdims=True))
    return -gc.sum(onehot * log_probs) / z.shape[0]


def test_elementwise_chain_is_one_kernel():
    # 8 elementwise ops on one input: each has exactly one consumer, already in the kernel
    # of the output (F1), so each joins it (F3): one kernel, elementwise
    e = lower(chain8, X)
    assert sum(1 for n in e.stages["simplified"].nodes if n.op in ELEMENTWISE) == 8
    (k,) = check_fused(e, (X,))
    assert k.attrs["kind"] == "elementwise"
    assert sum(1 for n in k.attrs["body"].nodes if n.op in ELEMENTWISE) == 8


def test_matmul_bias_relu_is_one_matmul_kernel():
    # where(z > 0, z, 0) is the output (F1); z = matmul + b feeds gt and where, both in that
    # kernel, so the add joins (F3); the matmul's one consumer is that add, elementwise over
    # the matmul's own shape, and the kernel's result has that shape: an epilogue (F5)
    e = lower(matmul_bias_relu, X, W, B)
    (k,) = check_fused(e, (X, W, B))
    assert k.attrs["kind"] == "matmul"
    ops = Counter(n.op for n in k.attrs["body"].nodes)
    assert ops[Op.MATMUL] == 1 and ops[Op.ADD] == 1 and ops[Op.WHERE] == 1 and ops[Op.GT] == 1


def kernel_ir(entry, k):
    from graphc.lower import lower_kernel
    (node,) = [n for n in kernels(entry.stages["scheduled"]) if n.attrs["name"] == k.attrs["name"]]
    return lower_kernel(node)


def test_softmax_is_one_kernel():
    # sum(e) is read by div[16,32], which broadcasts it back over the rows it reduced, and so
    # is max(x) by sub (through exp, sum and div, all in the output's kernel): both are row
    # reductions (F6) of the output kernel (F1), with x - max and exp joining it (F3).
    # Lowered, each row computes its max, then its sum of exp(x - max), keeping each exp in
    # the output row (the stash), then divides the row in place: one exp per element
    e = lower(softmax, X)
    (k,) = check_fused(e, (X,))
    assert k.attrs["kind"] == "reduce"
    assert [d.rule for d in plan(e.stages["simplified"])[2]
            if d.node.op in (Op.SUM, Op.MAX)] == ["F6", "F6"]
    text = str(kernel_ir(e, k))
    assert text.count("exp(") == 1 and "out[i1 + i0*32] = out[i1 + i0*32] / acc1" in text, text


def test_log_softmax_is_one_kernel():
    # as softmax: both row reductions join the output kernel (F6); z = x - max is computed
    # in the sum's loop and again for the output (its exp is not what the output reads, so
    # nothing is stashed)
    e = lower(log_softmax, X)
    (k,) = check_fused(e, (X,))
    assert k.attrs["kind"] == "reduce"
    assert "out[r" not in str(kernel_ir(e, k))


def test_layer_norm_is_one_kernel():
    # mean = sum / n and var = sum((x - mean)^2) / n are both read only through elementwise
    # ops that end in the output, which broadcasts them back over the rows: row reductions
    # of the output kernel (F6). The variance's operand reads the mean (another row
    # reduction of the same kernel, computed before it)
    e = lower(layer_norm, X, G, G)
    (k,) = check_fused(e, (X, G, G))
    assert k.attrs["kind"] == "reduce"
    assert len(row_reductions(k.attrs["body"])) == 2


def test_row_reduction_not_fused_where_it_would_be_recomputed():
    # reduced over the leading axis (batch norm's statistics): broadcast back along axis 0,
    # which is the outer loop: not a row reduction, its own kernel (F5)
    e = lower(lambda x: x - gc.sum(x, axis=0, keepdims=True), X)
    assert len(check_fused(e, (X,))) == 2
    # the transposed result (square, so the shapes alone do not tell): the row index of the
    # max would be the inner loop variable
    sq = np.ascontiguousarray(X[:, :16])
    e = lower(lambda x: gc.transpose(x - gc.max(x, axis=1, keepdims=True)), sq)
    assert len(check_fused(e, (sq,))) == 2
    # a full reduction broadcast back: no row to compute it once for
    e = lower(lambda x: x / gc.sum(x, axis=(0, 1), keepdims=True), X)
    assert len(check_fused(e, (X,))) == 2


def test_softmax_cross_entropy_is_three_kernels():
    # max (broadcast back by sub: F5) -> kernel 1; sum(exp z) (broadcast back by the
    # log-prob sub: F5) -> kernel 2; the loss sum(onehot * log_probs) with its neg and div
    # epilogue is the scalar output (F1), so the final reduction lives in the output kernel
    # -> kernel 3; z is recomputed in kernels 2 and 3 (F4)
    e = lower(softmax_ce, X, Y)
    ks = check_fused(e, (X, Y))
    assert [k.attrs["kind"] for k in ks] == ["reduce", "reduce", "reduce"]


def test_mlp_training_step_kernels():
    # examples/mlp.py train_step: 4 -> 8 tanh -> 3, softmax CE, backward, SGD. 11 kernels:
    #   forward: matmul+bias+tanh (F5 epilogue, F3), matmul+bias (F5; materialised because
    #     several kernels read the logits), max, sum(exp) and the loss (as softmax CE
    #     above): 5
    #   backward of the CE: one kernel for the logits' gradient, with the sum of the onehot
    #     term, and the two sums of the gradient through the stabilising max (mathematically
    #     zero, but autodiff does not know) as its row reductions (F6): 1
    #   backward of the layers and SGD: dW2 matmul + SGD epilogue, dh matmul + tanh' epilogue,
    #     dW1 matmul + SGD epilogue (F5; the weights are outputs, F1), and for each bias a
    #     sum over the batch with the SGD update as its epilogue (F5 looks through the
    #     reshape between them, which keeps element order): 3 + 2 = 5. Total 11.
    mlp = load_mlp()
    args = mlp.EXAMPLES["train_step"]
    e = lower(mlp.train_step, *args)
    ks = check_fused(e, args, rtol=1e-4, atol=1e-6)
    assert len(ks) == 11
    kinds = Counter(k.attrs["kind"] for k in ks)
    assert kinds == {"matmul": 5, "reduce": 6}, kinds
    # one kernel per matmul: forward 2, backward 3
    assert body_contractions(e.stages["fused"])[Op.MATMUL] == 5
    assert sum(len(row_reductions(k.attrs["body"])) for k in ks) == 3


def adam_update(params, grads, m, v, t):
    """Adam over every parameter, by hand: returns {name: (param, m, v)}."""
    b1, b2, lr, eps = 0.9, 0.999, 1e-3, 1e-8
    out = {}
    for k in params:
        mk = b1 * m[k] + (1 - b1) * grads[k]
        vk = b2 * v[k] + (1 - b2) * grads[k] * grads[k]
        m_hat = mk / (1 - b1 ** t)
        v_hat = vk / (1 - b2 ** t)
        out[k] = (params[k] - lr * m_hat / (gc.sqrt(v_hat) + eps), mk, vk)
    return out


def test_adam_update_is_three_kernels_per_parameter():
    # per parameter, the new m, v and parameter are graph outputs: three kernels (F1). The new
    # m and v are read by their own output kernel and by the parameter's: as outputs they are
    # materialised anyway, so the parameter kernel reads them (a kernel never recomputes
    # another root). The bias corrections 1 - b**t are scalars recomputed in every
    # parameter kernel (F4: cheaper than materialising them)
    mlp = load_mlp()
    params = mlp.init_params()
    r = np.random.default_rng(3)
    grads = {k: r.standard_normal(p.shape).astype(np.float32) for k, p in params.items()}
    m = {k: r.standard_normal(p.shape).astype(np.float32) * 0.1 for k, p in params.items()}
    v = {k: r.random(p.shape).astype(np.float32) * 0.01 for k, p in params.items()}
    args = (params, grads, m, v, np.float32(3))
    e = lower(adam_update, *args)
    ks = check_fused(e, args, rtol=1e-5, atol=1e-7)
    assert len(ks) == 3 * len(params) == 12
    assert all(k.attrs["kind"] == "elementwise" for k in ks)
    assert all(k.attrs["buffer"] == -1 for k in kernels(e.stages["scheduled"]))  # all outputs
    # against a hand-written Adam step
    got = gc.compile(adam_update)(*args)
    for k, p in params.items():
        mk = 0.9 * m[k] + 0.1 * grads[k]
        vk = 0.999 * v[k] + 0.001 * grads[k] ** 2
        pk = p - 1e-3 * (mk / (1 - 0.9 ** 3)) / (np.sqrt(vk / (1 - 0.999 ** 3)) + 1e-8)
        np.testing.assert_allclose(got[k][0], pk, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got[k][1], mk, rtol=1e-5, atol=1e-7)


# ---- the rules one at a time --------------------------------------------------------------------
def test_reduction_with_elementwise_epilogue_is_one_kernel():
    # F5: log(sum(x)) with the result not broadcast back: one reduce kernel
    e = lower(lambda x: gc.log(gc.sum(gc.exp(x), axis=1, keepdims=True)), X)
    (k,) = check_fused(e, (X,))
    assert k.attrs["kind"] == "reduce"


def test_two_contractions_never_share_a_kernel():
    # sum(x @ w): the sum's input is a matmul, which is not elementwise: the matmul is a
    # kernel of its own and the sum another (F5)
    e = lower(lambda x, w: gc.sum(x @ w, axis=1), X, W)
    ks = check_fused(e, (X, W))
    assert [k.attrs["kind"] for k in ks] == ["matmul", "reduce"]


def test_matmul_operand_is_materialised():
    # tanh(x) read by a matmul as an operand: F3 roots it (a matmul takes materialised inputs)
    e = lower(lambda x, w: gc.tanh(x) @ w, X, W)
    ks = check_fused(e, (X, W))
    assert [k.attrs["kind"] for k in ks] == ["elementwise", "matmul"]


def test_recompute_versus_materialise():
    # F4: a cheap op of one input read by two kernels is recomputed in both; an op of two
    # big inputs whose result is read by two kernels is materialised (recomputing would read
    # 2 * 2 inputs, materialising moves 3 outputs' worth)
    def cheap(x):
        t = gc.exp(x)
        return gc.sum(t, axis=1), gc.max(t, axis=0)

    def dear(x, y):
        t = x * y
        return gc.sum(t, axis=1), gc.max(t, axis=0)

    ks = check_fused(lower(cheap, X), (X,))
    assert len(ks) == 2 and all(any(n.op is Op.EXP for n in k.attrs["body"].nodes) for k in ks)
    ks = check_fused(lower(dear, X, X), (X, X))
    assert len(ks) == 3 and ks[0].attrs["kind"] == "elementwise"
    assert "F4" in ks[0].attrs["reason"]


def test_upsampled_read_materialises_its_producer():
    # F3: a computed value read by one kernel at 4x its size (max-pool's backward pattern:
    # each element feeds a 2x2 block) gets its own kernel when it has at least
    # UPSAMPLE_MIN_ELEMENTS elements; a small one stays fused (recomputing it is cheap)
    from graphc.passes.fusion import UPSAMPLE_MIN_ELEMENTS

    def upsample(a, b):
        t = gc.tanh(a) * gc.exp(b)              # the producer: computed, not an input
        n, m = t.shape
        up = gc.broadcast_to(gc.reshape(t, (n, 1, m, 1)), (n, 2, m, 2))
        return gc.reshape(up, (2 * n, 2 * m)) * 3.0

    big = rng.standard_normal((64, 64)).astype(np.float32)
    assert big.size >= UPSAMPLE_MIN_ELEMENTS
    ks = check_fused(lower(upsample, big, big), (big, big))
    assert [k.attrs["kind"] for k in ks] == ["elementwise", "elementwise"]
    assert "upsampling" in ks[0].attrs["reason"] and ks[0].shape == (64, 64)
    small = big[:8, :8].copy()
    ks = check_fused(lower(upsample, small, small), (small, small))
    assert len(ks) == 1


def test_fusion_off_keeps_one_op_per_node():
    e = lower(softmax, X, passes="-fusion")
    assert "fused" not in e.stages and "scheduled" not in e.stages
    assert not any(n.op is Op.FUSED for n in e.stages["optimized"].nodes)


def test_fuse_log_lists_a_decision_per_op():
    simplified = lower(layer_norm, X, G, G).stages["simplified"]
    log: list = []
    fuse(simplified, log=log)
    ops = [n for n in simplified.nodes if n.op not in (Op.INPUT, Op.CONST)]
    assert {id(d.node) for d in log} == {id(n) for n in ops}


# ---- the benchmark (benchmarks/passes.py) keeps running ------------------------------------------
def test_passes_benchmark_runs_quick(capsys):
    """Tiny sizes, one round: checks the benchmark still builds, agrees with its hand-written
    NumPy (it asserts that before timing) and prints its table. Asserts nothing about time."""
    import sys
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import passes as bench
    rows = bench.main([], quick=True)
    out = capsys.readouterr().out
    problems = {r.problem for r in rows}
    assert len(problems) == (2 if bench.has_conv2d() else 1)
    for p in problems:
        impls = [r.impl for r in rows if r.problem == p]
        assert impls == ["numpy by hand"] + [label for label, _ in bench.CONFIGS]
        assert p in out
    for r in rows:
        assert r.median_s > 0
        if r.impl != "numpy by hand":
            assert r.ops > 0 and r.kernels > 0 and r.peak_bytes > 0
    fused = {r.problem: r.kernels for r in rows if r.impl == "graphc, all passes"}
    unfused = {r.problem: r.kernels for r in rows if r.impl == "graphc, -fusion"}
    assert all(fused[p] < unfused[p] for p in fused)


def test_costly_ops_read_by_two_kernels_are_materialised_when_cache_sized():
    # exp(x) read by two kernels (a column sum and an elementwise output): by bytes alone it
    # would be recomputed in both (F4); an exp costs tens of instructions per element, so at
    # 4096 elements (in cache) it is computed once. At 256 elements computing it twice costs
    # less than another kernel call: recomputed
    def f(x):
        e = gc.exp(x)
        return gc.sum(e, axis=0), e * 2.0
    for n, exps in ((64, 1), (16, 2)):
        x = rng.standard_normal((n, n)).astype(np.float32)
        e = lower(f, x)
        ks = check_fused(e, (x,))
        assert sum(1 for k in ks for m in k.attrs["body"].nodes if m.op is Op.EXP) == exps
        if exps == 1:
            assert any("costly" in d.reason for d in plan(e.stages["simplified"])[2])
