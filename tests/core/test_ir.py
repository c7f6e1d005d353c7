"""The IR: deterministic text form, the verifier, immutability, passes as pure functions,
and source locations (user lines, backward marks)."""
from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphc as gc
import graphc.pipeline as pipeline
from graphc.errors import VerifyError
from graphc.ir import Attrs, Graph, apply, const, input_node, toposort
from graphc.ops import Op
from graphc.passes.autodiff import expand_grads
from graphc.passes.simplify import cse, simplify
from graphc.types import DType, TensorType

HERE = os.path.basename(__file__)
F32 = DType.float32


def _lines_of(fn) -> set[int]:
    src, first = inspect.getsourcelines(fn)
    return set(range(first, first + len(src)))


# ---- text form -------------------------------------------------------------------------------
def model(x, w, b):
    h = gc.tanh(x @ w + b)
    return gc.sum(h * h, axis=1, keepdims=True).mean()


def _model_args():
    rng = np.random.default_rng(0)
    return rng.standard_normal((4, 3)), rng.standard_normal((3, 5)), rng.standard_normal(5)


def test_tracing_twice_gives_identical_text():
    a = str(gc.trace(model, *_model_args()))
    b = str(gc.trace(model, *_model_args()))
    assert a == b
    assert "0x" not in a  # no ids or addresses
    g1 = gc.compile(gc.grad(model, argnums=(1, 2)))
    g2 = gc.compile(gc.grad(model, argnums=(1, 2)))
    for g in (g1, g2):  # called from the same line: grad markers record the caller's line
        g(*_model_args())
    for stage in g1.stages:
        assert str(g1.graph(stage)) == str(g2.graph(stage))


def test_exact_text_of_a_tiny_graph():
    def f(a, b):
        return a + b
    line = f.__code__.co_firstlineno + 1
    g = gc.trace(f, np.float32(1), np.float32(2))
    expected = "\n".join([
        "graph f(%0:f32[] a, %1:f32[] b) {",
        f"{'  %2:f32[] = add %0 %1':<56}  # {HERE}:{line}",
        "  return %2  # out",
        "}",
    ])
    assert str(g) == expected


def test_exact_text_with_constant_and_attributes():
    def f(x):
        return gc.sum(x * 2.0, axis=0)
    line = f.__code__.co_firstlineno + 1
    g = gc.trace(f, np.ones((2, 3), np.float32))
    body = ["  %1:f32[] = const 2.", "  %2:f32[2,3] = mul %0 %1",
            "  %3:f32[3] = sum %2 axes=(0,) keepdims=False"]
    expected = "\n".join(["graph f(%0:f32[2,3] x) {"]
                         + [f"{b:<56}  # {HERE}:{line}" for b in body]
                         + ["  return %3  # out", "}"])
    assert str(g) == expected


def test_text_is_the_same_in_a_fresh_interpreter_with_another_hash_seed(tmp_path):
    script = tmp_path / "m.py"
    script.write_text(textwrap.dedent("""
        import numpy as np, graphc as gc
        def f(x, y):
            z = gc.concatenate([x, y[:, ::2]], axis=1)
            return gc.sum(gc.where(z > 0, z, 0.1 * z) ** 2)
        x, y = np.ones((2, 3)), np.ones((2, 4))
        g = gc.compile(gc.value_and_grad(f, argnums=(0, 1)))
        g(x, y)
        print("\\n".join(str(g.graph(s)) for s in g.stages))
    """))
    outs = []
    for seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    assert outs[0] == outs[1]
    assert "grad" in outs[0] and "concat" in outs[0]


# ---- the verifier ------------------------------------------------------------------------------
COMPILED = {
    "model": (model, _model_args),
    "grad_model": (gc.grad(model, argnums=(0, 1, 2)), _model_args),
    "value_and_grad_movement": (
        gc.value_and_grad(lambda x: gc.sum(gc.pad(x[::2, 1:], ((1, 1), (0, 1))) * gc.concatenate([x, x])[1:5]),
                          argnums=0),
        lambda: (np.random.default_rng(1).standard_normal((6, 4))[:3],)),
    "second_derivative": (gc.grad(gc.grad(lambda x: gc.sin(x) * x ** 3)), lambda: (0.3,)),
    "max_where_rand": (
        gc.grad(lambda x: gc.sum(gc.where(x > gc.max(x, axis=0), x, gc.exp(x))
                                 * gc.random_uniform(5, (3, 2)))),
        lambda: (np.linspace(-1, 1, 6).reshape(3, 2),)),
}


@pytest.mark.parametrize("name", sorted(COMPILED))
def test_every_stage_of_compiled_functions_verifies(name):
    fn, args = COMPILED[name]
    f = gc.compile(fn, backend="numpy")
    f(*args())
    stages = f.stages
    assert list(stages)[0] == "traced" and list(stages)[-1] == list(gc.STAGES)[-1]
    for stage, g in stages.items():
        assert gc.verify(g, stage) is g
        if stage != "traced":
            gc.verify(g, stage, allow_grad=False)
    has_grad = any(n.op is Op.GRAD for n in stages["traced"].nodes)
    assert ("backward" in stages) == has_grad


def _ab():
    a = input_node("a", (3,), F32)
    b = input_node("b", (3,), F32)
    return a, b


def test_verify_accepts_a_good_hand_built_graph():
    a, b = _ab()
    g = Graph((a, b), (apply(Op.MUL, apply(Op.ADD, a, b), const(2.0, F32)),))
    assert gc.verify(g) is g


def test_verify_rejects_a_wrong_recorded_type():
    a, b = _ab()
    n = apply(Op.ADD, a, b)
    bad = n.replace(type=TensorType((3,), DType.float64))
    with pytest.raises(VerifyError) as e:
        gc.verify(Graph((a, b), (bad,)), "mystage")
    msg = str(e.value)
    assert "recorded type f64[3]" in msg and "f32[3]" in msg
    assert "mystage" in msg and "add" in msg
    assert e.value.stage == "mystage"
    bad_shape = n.replace(type=TensorType((1,), F32))
    with pytest.raises(VerifyError):
        gc.verify(Graph((a, b), (bad_shape,)))


def test_verify_rejects_a_grad_node_after_backward():
    a, _ = _ab()
    y = apply(Op.SUM, apply(Op.MUL, a, a), axes=(0,), keepdims=False)
    g = Graph((a,), (apply(Op.GRAD, y, a),))
    gc.verify(g, allow_grad=True)
    with pytest.raises(VerifyError, match="grad node left after the backward stage"):
        gc.verify(g, "backward", allow_grad=False)
    # expanding it makes it valid
    gc.verify(expand_grads(g), "backward", allow_grad=False)


def test_verify_rejects_an_input_not_among_the_graph_inputs():
    a, b = _ab()
    with pytest.raises(VerifyError, match="not among the graph's inputs"):
        gc.verify(Graph((a,), (apply(Op.ADD, a, b),)))


def test_verify_rejects_other_broken_graphs():
    a, b = _ab()
    n = apply(Op.ADD, a, b)
    with pytest.raises(VerifyError, match="takes 2 inputs"):
        gc.verify(Graph((a, b), (n.replace(inputs=(a,)),)))
    a2 = input_node("a", (3,), F32)
    with pytest.raises(VerifyError, match="named 'a'"):
        gc.verify(Graph((a, a2), (apply(Op.ADD, a, a2),)))
    with pytest.raises(VerifyError, match="listed twice"):
        gc.verify(Graph((a, a), (a,)))
    with pytest.raises(VerifyError, match="must be input nodes"):
        gc.verify(Graph((n,), (n,)))
    s = apply(Op.SUM, a, axes=(0,), keepdims=False)
    with pytest.raises(VerifyError, match="type rule rejects"):
        gc.verify(Graph((a,), (s.replace(attrs=Attrs({"axes": (1,), "keepdims": False})),)))
    with pytest.raises(VerifyError, match="output_names"):
        gc.verify(Graph((a, b), (n,), output_names=("x", "y")))


def test_pipeline_verifies_after_every_stage(monkeypatch):
    def broken(g: Graph, *_) -> Graph:
        o = g.outputs[0]
        return g.with_outputs((o.replace(type=TensorType((7,), o.dtype)),))

    # a pipeline entry is (stage name, ..., function)
    entry = ("broken",) * (len(pipeline.PIPELINE[0]) - 1) + (broken,)
    monkeypatch.setattr(pipeline, "PIPELINE", pipeline.PIPELINE + [entry])
    g = gc.trace(lambda x: x * 2.0, np.ones(3))
    with pytest.raises(VerifyError) as e:
        pipeline.run_pipeline(g)
    assert e.value.stage == "broken"


# ---- immutability, passes as functions -----------------------------------------------------------
def test_nodes_graphs_and_attrs_are_immutable():
    a, b = _ab()
    n = apply(Op.ADD, a, b)
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.op = Op.SUB
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.inputs = (b, a)
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.type = TensorType((3,), DType.float64)
    assert isinstance(n.inputs, tuple)
    g = Graph((a, b), (n,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.outputs = (a,)
    with pytest.raises(TypeError):
        a.attrs["name"] = "z"
    assert n.loc is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.loc.line = 1
    # replace builds a new node and leaves the old one alone
    m = n.replace(op=Op.SUB)
    assert m is not n and n.op is Op.ADD and m.op is Op.SUB and m.inputs is n.inputs


def test_simplify_returns_a_new_graph_and_leaves_the_old_one_unchanged():
    def f(x, y):
        return (x * y + 0.0) + (x * y) * 1.0
    g = gc.trace(f, np.ones(3), np.ones(3))
    before, nodes_before = str(g), list(g.nodes)
    new = simplify(g)
    assert new is not g
    assert str(g) == before
    assert [id(n) for n in g.nodes] == [id(n) for n in nodes_before]
    assert str(new) != before and len(new) < len(g)
    # both compute the same thing
    x, y = np.array([1.0, 2.0, 3.0]), np.array([-1.0, 0.5, 4.0])
    np.testing.assert_array_equal(gc.interpret(g, x, y)[0], gc.interpret(new, x, y)[0])
    # cse merges the two x*y
    merged = cse(g)
    assert sum(n.op is Op.MUL for n in merged.nodes) < sum(n.op is Op.MUL for n in g.nodes)
    assert str(g) == before


def test_expand_grads_returns_a_new_graph_and_leaves_the_old_one_unchanged():
    g = gc.trace(gc.grad(lambda x: gc.sum(gc.tanh(x))), np.ones(3))
    before = str(g)
    assert any(n.op is Op.GRAD for n in g.nodes)
    new = expand_grads(g)
    assert new is not g and str(g) == before
    assert not any(n.op is Op.GRAD for n in new.nodes)
    assert any(n.op is Op.GRAD for n in g.nodes)
    # a graph without grad markers is returned as it is
    plain = gc.trace(lambda x: x + 1.0, np.ones(2))
    assert expand_grads(plain) is plain


# ---- source locations ---------------------------------------------------------------------------
def test_every_traced_node_records_this_files_line():
    g = gc.trace(model, *_model_args())
    model_lines = _lines_of(model)
    for n in g.nodes:
        assert n.loc is not None, n
        assert n.loc.file == __file__, n.loc
        assert not n.loc.backward
        if n.op is not Op.INPUT:
            assert n.loc.line in model_lines, (n, n.loc)
            assert n.loc.function == "model"
    # the matmul is on model's first body line, the sum on its second
    first = model.__code__.co_firstlineno
    by_op = {n.op: n.loc.line for n in g.nodes}
    assert by_op[Op.MATMUL] == first + 1 and by_op[Op.TANH] == first + 1
    assert by_op[Op.SUM] == first + 2
    assert f"# {HERE}:{first + 1}" in str(g)


def test_backward_nodes_are_marked_and_point_at_their_forward_line():
    f = gc.compile(gc.grad(model, argnums=(1, 2)))
    f(*_model_args())
    traced, backward = f.stages["traced"], f.stages["backward"]
    traced_ids = {id(n) for n in traced.nodes}
    new = [n for n in backward.nodes if id(n) not in traced_ids]
    assert len(new) > 5
    lines = _lines_of(model)
    for n in new:
        assert n.loc is not None and n.loc.backward, n
        assert n.loc.file == __file__ and n.loc.line in lines
    for n in backward.nodes:
        if id(n) in traced_ids:
            assert not n.loc.backward
    assert "(grad)" in str(backward)
    assert "(grad)" not in str(traced)


def test_toposort_orders_inputs_before_users_and_handles_deep_graphs():
    a = input_node("a", (), F32)
    x = a
    for _ in range(5000):  # deeper than Python's recursion limit
        x = apply(Op.NEG, x)
    order = toposort([x])
    assert len(order) == 5001 and order[0] is a and order[-1] is x
    pos = {id(n): i for i, n in enumerate(order)}
    assert all(pos[id(i)] < pos[id(n)] for n in order for i in n.inputs)
    out = gc.interpret(Graph((a,), (x,)), np.float32(2))[0]
    assert out == np.float32(2)


def test_graph_nodes_lists_unused_inputs_first():
    a, b = _ab()
    g = Graph((a, b), (apply(Op.NEG, a),))
    assert g.nodes[:2] == [a, b] and len(g) == 3
    assert "%1:f32[3] b" in str(g)
