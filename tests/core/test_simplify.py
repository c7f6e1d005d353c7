"""The simplification pass (graphc/passes/simplify.py): every rule in RULES fires on a graph
built to trigger it and keeps the interpreter's result; the guards (x*0 needs x finite,
exp(log x) needs x >= 0) hold back where inf, nan or negatives can occur; CSE merges
repeated subexpressions; dead code disappears; simplify is idempotent.

Graphs are built directly in the IR (apply / input_node / const), so each one holds exactly
the pattern a rule matches, without the tracer's own shortcuts (it folds casts of constants
and drops identity reshapes before a graph is even made)."""
from __future__ import annotations

import numpy as np
import pytest

from graphc.interpret import interpret
from graphc.ir import Graph, apply, const, input_node
from graphc.ops import Op
from graphc.passes.simplify import RULES, cse, simplify
from graphc.types import DType
from graphc.verify import verify

F32, F64 = DType.float32, DType.float64
A = apply


def c32(v):
    return const(np.asarray(v, np.float32), F32)


def doc_of(i: int) -> str:
    return RULES[i].doc


# ---- inputs ------------------------------------------------------------------------------------
def normal(shape, dt, rng):
    return rng.standard_normal(shape).astype(dt.np)


def positive(shape, dt, rng):
    return rng.uniform(0.25, 3.0, shape).astype(dt.np)


def special(shape, dt, rng):
    """Values that break unguarded identities: 0, negatives, inf, nan, among normal ones."""
    a = rng.standard_normal(shape).astype(dt.np)
    flat = a.reshape(-1)
    picks = [0.0, -0.0, -1.5, np.inf, -np.inf, np.nan, 1e30]
    flat[:len(picks)] = np.asarray(picks[:flat.size], dt.np)
    return a


def boolean(shape, dt, rng):
    return rng.random(shape) < 0.5


# ---- trigger graphs ---------------------------------------------------------------------------
# name -> (input specs [(shape, dtype, maker)], builder(*inputs) -> outputs,
#          rule indices that must fire, rule indices that must NOT fire)
CASES: dict[str, tuple] = {}


def case(name, specs, fires=(), not_fires=()):
    def deco(build):
        CASES[name] = (specs, build, tuple(fires), tuple(not_fires))
        return build
    return deco


X34 = [((3, 4), F32, normal)]
X34Y34 = [((3, 4), F32, normal), ((3, 4), F32, normal)]


@case("fold", X34, fires=[0])
def _(x):
    # (c1 + c2) * exp(c3) is all constants: folded into one constant
    k = A(Op.MUL, A(Op.ADD, c32([1, 2, 3, 4]), c32([0.5, 0.5, 0.5, 0.5])), A(Op.EXP, c32(0.25)))
    return A(Op.ADD, x, k)


@case("fold-big-is-not-folded", [((3, 4), F32, normal)], not_fires=[0])
def _(x):
    # 100 elements > FOLD_MAX_ELEMENTS: the constants stay an op
    return A(Op.ADD, x, A(Op.SUM, A(Op.ADD, c32(np.ones((100, 4))), c32(np.ones((100, 4)))),
                          axes=(0,), keepdims=False))


@case("x+0", X34, fires=[1])
def _(x):
    return A(Op.TANH, A(Op.ADD, c32(0), x))   # commutative: matched in both orders


@case("x+0 broadcast back", [((4,), F32, normal)], fires=[1])
def _(x):
    # x[4] + zeros[3,4] has shape [3,4]: the driver expands x instead of dropping the shape
    return A(Op.ADD, x, c32(np.zeros((3, 4))))


@case("x-0", X34, fires=[2])
def _(x):
    return A(Op.SUB, x, c32(0))


@case("0-x", X34, fires=[3])
def _(x):
    return A(Op.SUB, c32(0), x)


@case("x*1", X34, fires=[4])
def _(x):
    return A(Op.MUL, c32(1), A(Op.SIN, x))


@case("x*-1", X34, fires=[5])
def _(x):
    return A(Op.MUL, A(Op.COS, x), c32(-1))


@case("x*0 finite", [((3, 4), F32, special)], fires=[6])
def _(x):
    # a bool cast to float is 0 or 1, whatever x holds
    return A(Op.ADD, x, A(Op.MUL, A(Op.CAST, A(Op.GT, x, c32(0)), dtype=F32), c32(0)))


@case("x*0 finite through views", [((3, 4), F32, special)], fires=[6])
def _(x):
    # where() of finite constants is finite whatever x holds; views keep it finite
    s = A(Op.WHERE, A(Op.GT, x, c32(0)), c32(1), c32(2))
    return A(Op.ADD, x, A(Op.MUL, A(Op.PERMUTE, A(Op.EXPAND, s, shape=(4, 3, 4)), perm=(2, 1, 0)),
                          c32(0)))


@case("x*0 guard: log may be -inf/nan", [((3, 4), F32, special)], not_fires=[6])
def _(x):
    return A(Op.MUL, A(Op.LOG, x), c32(0))


@case("x*0 guard: an input may be inf/nan", [((3, 4), F32, special)], not_fires=[6])
def _(x):
    return A(Op.MUL, c32(0), x)


@case("x*0 guard: sin(inf) and tanh(nan) are nan", [((3, 4), F32, special)], not_fires=[6])
def _(x):
    return A(Op.ADD, A(Op.MUL, A(Op.SIN, x), c32(0)), A(Op.MUL, c32(0), A(Op.TANH, x)))


@case("x*0 finite: sin of a finite value", [((3, 4), F32, special)], fires=[6])
def _(x):
    return A(Op.MUL, A(Op.SIN, A(Op.COS, A(Op.CAST, A(Op.GT, x, c32(0)), dtype=F32))), c32(0))


@case("x*0 guard: exp may overflow", [((3, 4), F32, special)], not_fires=[6])
def _(x):
    return A(Op.MUL, A(Op.EXP, x), c32(0))


@case("x/1", X34, fires=[7])
def _(x):
    return A(Op.DIV, x, c32(1))


@case("x**1", X34, fires=[8])
def _(x):
    return A(Op.POW, x, c32(1))


@case("--x", X34, fires=[9])
def _(x):
    return A(Op.NEG, A(Op.NEG, A(Op.EXP, x)))


@case("-x*-y", X34Y34, fires=[10])
def _(x, y):
    return A(Op.MUL, A(Op.NEG, x), A(Op.NEG, y))


@case("x+-y", X34Y34, fires=[11])
def _(x, y):
    return A(Op.ADD, A(Op.NEG, y), x)


@case("x--y", X34Y34, fires=[12])
def _(x, y):
    return A(Op.SUB, x, A(Op.NEG, y))


@case("log(exp x)", X34, fires=[13])
def _(x):
    return A(Op.LOG, A(Op.EXP, x))


@case("exp(log x), x = sqrt(.)", [((3, 4), F32, special)], fires=[14])
def _(x):
    # sqrt of a negative is nan, and exp(log(nan)) is nan too: the identity still holds
    return A(Op.EXP, A(Op.LOG, A(Op.SQRT, x)))


@case("exp(log x), x = exp(.)", [((3, 4), F32, normal)], fires=[14])
def _(x):
    e = A(Op.EXP, x)
    return A(Op.EXP, A(Op.LOG, A(Op.RESHAPE, e, shape=(12,))))


@case("exp(log x) guard: x may be negative", [((3, 4), F32, special)], not_fires=[14])
def _(x):
    return A(Op.EXP, A(Op.LOG, x))


@case("exp(log x) guard: sin may be negative", X34, not_fires=[14])
def _(x):
    return A(Op.EXP, A(Op.LOG, A(Op.SIN, x)))


@case("where(c,x,x)", [((3, 4), F32, normal), ((3, 4), DType.bool, boolean)], fires=[15])
def _(x, c):
    return A(Op.WHERE, c, A(Op.TANH, x), A(Op.TANH, x))   # CSE first makes the branches one


@case("where(c,x,x) broadcast", [((4,), F32, normal), ((3, 4), DType.bool, boolean)], fires=[15])
def _(x, c):
    t = A(Op.TANH, x)
    return A(Op.WHERE, c, t, t)


@case("reshape(reshape)", X34, fires=[16])
def _(x):
    return A(Op.TANH, A(Op.RESHAPE, A(Op.RESHAPE, x, shape=(2, 6)), shape=(4, 3)))


@case("reshape to own shape", X34, fires=[17])
def _(x):
    return A(Op.EXP, A(Op.RESHAPE, x, shape=(3, 4)))


@case("reshape(reshape) back to x", X34, fires=[16, 17])
def _(x):
    return A(Op.RESHAPE, A(Op.RESHAPE, x, shape=(12,)), shape=(3, 4))


@case("permute(permute)", [((2, 3, 4), F32, normal)], fires=[18])
def _(x):
    return A(Op.PERMUTE, A(Op.PERMUTE, x, perm=(1, 2, 0)), perm=(0, 2, 1))


@case("permute(permute) = identity", [((2, 3, 4), F32, normal)], fires=[18])
def _(x):
    return A(Op.SIN, A(Op.PERMUTE, A(Op.PERMUTE, x, perm=(1, 2, 0)), perm=(2, 0, 1)))


@case("identity permute", X34, fires=[19])
def _(x):
    return A(Op.COS, A(Op.PERMUTE, x, perm=(0, 1)))


@case("expand(expand)", [((4,), F32, normal)], fires=[20])
def _(x):
    return A(Op.EXPAND, A(Op.EXPAND, x, shape=(3, 4)), shape=(2, 3, 4))


@case("expand to own shape", X34, fires=[21])
def _(x):
    return A(Op.EXPAND, A(Op.TANH, x), shape=(3, 4))


@case("op(expand a, b)", [((4,), F32, normal), ((3, 4), F32, normal)], fires=[22])
def _(x, y):
    return A(Op.MUL, A(Op.EXPAND, x, shape=(3, 4)), y)


@case("op(expand a, b) keeps needed expand", [((4,), F32, normal), ((4,), F32, normal)],
      not_fires=[22])
def _(x, y):
    # dropping the expand would shrink the result to [4]: the rule declines
    return A(Op.ADD, A(Op.EXPAND, x, shape=(3, 4)), y)


@case("where(expand c, ...)", [((4,), DType.bool, boolean), ((3, 4), F32, normal)], fires=[22])
def _(c, y):
    return A(Op.WHERE, A(Op.EXPAND, c, shape=(3, 4)), y, A(Op.NEG, y))


@case("cast to own dtype", X34, fires=[23])
def _(x):
    return A(Op.CAST, x, dtype=F32)


@case("cast roundtrip f32->f64->f32", X34, fires=[24])
def _(x):
    return A(Op.CAST, A(Op.CAST, x, dtype=F64), dtype=F32)


@case("cast roundtrip narrowing is kept", [((3, 4), F64, normal)], not_fires=[24])
def _(x):
    # f64 -> f32 -> f64 loses bits: not an identity
    return A(Op.CAST, A(Op.CAST, x, dtype=F32), dtype=F64)


@case("stop_gradient is the identity after autodiff", X34, fires=[26])
def _(x):
    return A(Op.MUL, A(Op.STOP_GRADIENT, x), x)


@case("sum over size-1 axes", [((3, 1, 4), F32, normal)], fires=[25])
def _(x):
    return A(Op.SUM, x, axes=(1,), keepdims=False)


@case("sum over size-1 axes, keepdims", [((3, 1, 4), F32, normal)], fires=[25])
def _(x):
    return A(Op.TANH, A(Op.SUM, x, axes=(1,), keepdims=True))


@case("sum over a real axis is kept", [((3, 2, 4), F32, normal)], not_fires=[25])
def _(x):
    return A(Op.SUM, x, axes=(1,), keepdims=False)


def build(name):
    specs, fn, fires, not_fires = CASES[name]
    ins = [input_node(f"in{i}", s, dt) for i, (s, dt, _) in enumerate(specs)]
    outs = fn(*ins)
    outs = outs if isinstance(outs, tuple) else (outs,)
    return Graph(tuple(ins), outs, name.replace(" ", "_")), specs, fires, not_fires


def make_args(specs, seed=0):
    rng = np.random.default_rng(seed)
    return [mk(s, dt, rng) for s, dt, mk in specs]


def assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, equal_nan=True)


def run_case(name):
    g, specs, fires, not_fires = build(name)
    log: list = []
    s = simplify(verify(g), log=log)
    verify(s, "simplified", allow_grad=False)
    fired = {doc for doc, _, _ in log}
    for seed in range(3):
        args = make_args(specs, seed)
        assert_same(interpret(s, *args), interpret(g, *args))
    return g, s, log, fired, fires, not_fires


@pytest.mark.parametrize("name", list(CASES))
def test_rule_fires_and_keeps_the_result(name):
    g, s, log, fired, fires, not_fires = run_case(name)
    for i in fires:
        assert doc_of(i) in fired, f"{doc_of(i)!r} did not fire on {name}; fired: {fired}"
    for i in not_fires:
        assert doc_of(i) not in fired, f"{doc_of(i)!r} fired on {name} but must not"
    # every log entry names a rule and its location, and the node it rewrote
    by_doc = {r.doc: r.where for r in RULES}
    for doc, where, node in log:
        assert by_doc[doc] == where and node.op is not Op.INPUT


def test_every_rule_fires_somewhere():
    fired = set()
    for name in CASES:
        fired |= run_case(name)[3]
    missing = [r.doc for r in RULES if r.doc not in fired]
    assert not missing, f"rules no trigger graph fires: {missing}"


def test_rule_docs_are_unique():
    # the log identifies rules by doc: two rules with one doc would hide one of them
    assert len({r.doc for r in RULES}) == len(RULES)


def test_guarded_rules_keep_inf_and_nan():
    # the unguarded identity would give 0 (resp. x) where IEEE gives nan: check the values
    g, _, _, _ = build("x*0 guard: log may be -inf/nan")
    s = simplify(g)
    x = np.array([[0.0, -1.0, np.inf, np.nan], [1.0, 2.0, 3.0, 4.0], [5, 6, 7, 8]], np.float32)
    (out,) = interpret(s, x)
    assert np.isnan(out[0]).all() and (out[1:] == 0).all()
    g, _, _, _ = build("exp(log x) guard: x may be negative")
    (out,) = interpret(simplify(g), x)
    assert np.isnan(out[0, 1]) and out[0, 2] == np.inf and out[1, 1] == np.float32(2.0)


# ---- CSE ---------------------------------------------------------------------------------------
def count(graph, op):
    return sum(1 for n in graph.nodes if n.op is op)


def test_cse_merges_duplicated_subexpressions():
    x = input_node("x", (3, 4), F32)
    y = input_node("y", (3, 4), F32)
    t1, t2 = A(Op.TANH, x), A(Op.TANH, x)
    e1 = A(Op.EXP, A(Op.MUL, t1, y))
    e2 = A(Op.EXP, A(Op.MUL, t2, y))       # same expression, built twice
    g = Graph((x, y), (A(Op.ADD, e1, e2), A(Op.SUB, e2, t1)))
    assert count(g, Op.TANH) == 2 and count(g, Op.EXP) == 2
    for s in (cse(g), simplify(g)):
        assert count(s, Op.TANH) == 1 and count(s, Op.EXP) == 1 and count(s, Op.MUL) == 1
        args = make_args([((3, 4), F32, normal)] * 2)
        assert_same(interpret(s, *args), interpret(g, *args))
    # off: both copies stay
    assert count(simplify(g, use_cse=False), Op.TANH) == 2


def test_cse_merges_equal_constants_and_respects_attrs():
    x = input_node("x", (2, 3), F32)
    a = A(Op.ADD, x, c32([1, 2, 3]))
    b = A(Op.ADD, x, c32([1, 2, 3]))            # equal constant, another node: merged
    c = A(Op.SUM, x, axes=(0,), keepdims=True)
    d = A(Op.SUM, x, axes=(1,), keepdims=True)  # other attrs: not merged
    g = cse(Graph((x,), (A(Op.MUL, a, b), A(Op.ADD, c, d))))
    assert count(g, Op.ADD) == 2 and count(g, Op.SUM) == 2 and count(g, Op.CONST) == 1


def test_cse_does_not_merge_inputs():
    x = input_node("x", (3,), F32)
    y = input_node("y", (3,), F32)   # same type, another argument
    g = cse(Graph((x, y), (A(Op.SUB, x, y),)))
    assert count(g, Op.INPUT) == 2
    (out,) = interpret(g, np.ones(3, np.float32), np.zeros(3, np.float32))
    assert (out == 1).all()


# ---- dead code ---------------------------------------------------------------------------------
def test_dead_code_disappears():
    x = input_node("x", (3, 4), F32)
    z = input_node("z", (3, 4), F32)
    unused = A(Op.EXP, A(Op.COS, z))                   # never reaches an output
    big = A(Op.CAST, A(Op.GT, A(Op.MUL, A(Op.TANH, x), A(Op.EXP, x)), c32(0)), dtype=F32)
    out = A(Op.ADD, z, A(Op.MUL, big, c32(0)))        # (0 or 1) * 0: the whole branch dies
    cond = A(Op.LT, A(Op.SIN, x), A(Op.COS, z))
    out2 = A(Op.WHERE, cond, A(Op.NEG, z), A(Op.NEG, z))  # where(c, t, t): c's branch dies
    g = Graph((x, z), (out, out2))
    assert unused not in g.nodes
    s = simplify(g)
    ops = {n.op for n in s.nodes}
    assert not ops & {Op.SIN, Op.COS, Op.TANH, Op.EXP, Op.MUL, Op.GT, Op.LT, Op.WHERE}, str(s)
    assert [n.op for n in s.inputs] == [Op.INPUT, Op.INPUT]   # unused inputs stay
    args = make_args([((3, 4), F32, normal)] * 2)
    assert_same(interpret(s, *args), interpret(g, *args))


# ---- idempotence -------------------------------------------------------------------------------
def _structure(g: Graph) -> str:
    return str(g)


@pytest.mark.parametrize("name", list(CASES))
def test_simplify_is_idempotent(name):
    g, _, _, _ = build(name)
    once = simplify(g)
    log: list = []
    twice = simplify(once, log=log)
    assert not log, f"a second simplify still rewrote: {[d for d, _, _ in log]}"
    assert [id(n) for n in twice.nodes] == [id(n) for n in once.nodes]
    assert _structure(twice) == _structure(once)


def test_simplify_is_idempotent_on_the_mlp_training_step():
    import importlib.util
    from pathlib import Path

    import graphc as gc
    from graphc.passes.autodiff import expand_grads
    path = Path(__file__).resolve().parents[2] / "examples" / "mlp.py"
    spec = importlib.util.spec_from_file_location("example_mlp_simplify", path)
    mlp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mlp)
    g = expand_grads(gc.trace(mlp.train_step, *mlp.EXAMPLES["train_step"]))
    once = simplify(g)
    log: list = []
    twice = simplify(once, log=log)
    assert not log and _structure(twice) == _structure(once)
    assert len(once.nodes) < len(g.nodes)
