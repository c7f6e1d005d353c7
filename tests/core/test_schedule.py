"""Memory planning (graphc/passes/schedule.py, rules M1-M4), checked from the outside.

`check_memory_plan` is an independent checker: from the scheduled graph alone (kernel
order, each kernel's `buffer` offset, its result's size, `inplace`) it computes every arena
value's lifetime (from the kernel that writes it to the last kernel that reads it or a view
of it) and asserts that no two values whose lifetimes overlap share a byte of the arena,
except an in-place handover: an `inplace` elementwise kernel writing into exactly the block
of an input that dies at that kernel. It runs on the MLP training step, softmax
cross-entropy, layer norm and random programs (forward and backward); the numpy backend
with dead blocks poisoned (NaN) must still give the reference results there; and the
memory report's numbers are checked against bounds that any correct plan obeys.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

import graphc as gc
from graphc.backends.numpy import NumpyBackend
from graphc.interpret import interpret
from graphc.ops import ELEMENTWISE, Op
from graphc.passes.fusion import kernels
from graphc.passes.schedule import memory_report, plan_memory, schedule

ROOT = Path(__file__).resolve().parents[2]


def _load(name, path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module     # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


mlp = _load("example_mlp_schedule", ROOT / "examples" / "mlp.py")
rp = _load("passes_random_for_schedule", Path(__file__).with_name("test_passes_random.py"))


# ---- the checker -------------------------------------------------------------------------------
def _base(n):
    """The value whose memory `n` is: view kernels alias their source (the numpy backend
    renders them as numpy views)."""
    while n.op is Op.FUSED and n.attrs["kind"] == "view" and n.inputs:
        n = n.inputs[0]
    return n


def _reads_aligned(kernel, i) -> bool:
    """Does the kernel read input i only elementwise at the index it writes? (Then writing its
    result over that input in place is safe even for a loop that writes element by element:
    no view re-indexes the input and nothing broadcasts it.)"""
    body = kernel.attrs["body"]
    start = body.inputs[i]
    if start.shape != kernel.shape:
        return False
    users = body.users()
    stack, seen = [start], set()
    while stack:
        n = stack.pop()
        for u in users.get(id(n), []):
            if id(u) in seen:
                continue
            seen.add(id(u))
            if u.op not in ELEMENTWISE or u.shape != kernel.shape:
                return False
            stack.append(u)
    return True


def lifetimes(graph):
    """{id(value): (value, first kernel index, last kernel index)} for arena values."""
    order = kernels(graph)
    pos = {id(k): i for i, k in enumerate(order)}
    life = {}
    for k in order:
        if k.attrs["kind"] != "view" and k.attrs["buffer"] >= 0:
            life[id(k)] = [k, pos[id(k)], pos[id(k)]]
    for k in order:
        for i in k.inputs:
            b = _base(i)
            if id(b) in life:
                life[id(b)][2] = max(life[id(b)][2], pos[id(k)])
    return {key: tuple(v) for key, v in life.items()}


def check_memory_plan(graph):
    """Assert the scheduled graph's buffers are safe; returns the number of in-place kernels."""
    order = kernels(graph)
    assert order == [n for n in graph.nodes if n.op is Op.FUSED]
    assert all("buffer" in k.attrs and "inplace" in k.attrs for k in order)
    pos = {id(k): i for i, k in enumerate(order)}
    # M1: the caller's results (and whatever they alias) are never arena memory
    for o in graph.outputs:
        if o.op is Op.FUSED:
            assert _base(o).op is not Op.FUSED or _base(o).attrs["buffer"] == -1, \
                f"output {o.attrs['name']} lives in the arena"
            assert o.attrs["buffer"] == -1
    life = lifetimes(graph)
    for _, (k, _, _) in life.items():
        assert k.attrs["buffer"] % 64 == 0, "arena offsets are cache-line aligned"
    # in-place kernels: elementwise, over the block of an input that dies here, same type
    handed = {}
    n_inplace = 0
    for k in order:
        if not k.attrs["inplace"]:
            continue
        n_inplace += 1
        assert k.attrs["kind"] == "elementwise" and id(k) in life
        donors = [(j, _base(i)) for j, i in enumerate(k.inputs)
                  if id(_base(i)) in life and _base(i).attrs["buffer"] == k.attrs["buffer"]]
        assert donors, f"{k.attrs['name']} is in place but no input owns its block"
        j, d = donors[0]
        assert life[id(d)][2] == pos[id(k)], f"{k.attrs['name']} overwrites a live input"
        assert d.type.nbytes == k.type.nbytes and d.type == k.type
        assert _reads_aligned(k, j), (
            f"{k.attrs['name']} writes over input {j} while reading it through a view or "
            f"broadcast: a kernel computing element by element would read overwritten data")
        handed[id(k)] = id(d)
    # no two overlapping lifetimes share arena bytes, but for the handovers above
    vals = sorted(life.values(), key=lambda v: v[1])
    for x, (a, a0, a1) in enumerate(vals):
        ra = (a.attrs["buffer"], a.attrs["buffer"] + a.type.nbytes)
        for b, b0, b1 in vals[x + 1:]:
            if b0 > a1:
                continue                                   # a is dead before b is written
            rb = (b.attrs["buffer"], b.attrs["buffer"] + b.type.nbytes)
            if rb[0] >= ra[1] or ra[0] >= rb[1]:
                continue                                   # disjoint bytes
            assert handed.get(id(b)) == id(a) and b0 == a1, (
                f"{a.attrs['name']} (kernels {a0}..{a1}, bytes {ra}) and {b.attrs['name']} "
                f"(kernels {b0}..{b1}, bytes {rb}) are live together in shared memory")
    # the arena bound: at each kernel the values live there fit side by side
    rep = memory_report(graph)
    for t in range(len(order)):
        live = [v for v in life.values() if v[1] <= t <= v[2]]
        need = sum(v[0].type.nbytes for v in live
                   if not (v[2] == t and any(h == id(v[0]) and pos[k] == t
                                             for k, h in handed.items())))
        assert rep.arena_bytes >= need
    return n_inplace


def check_report(graph):
    rep = memory_report(graph)
    order = kernels(graph)
    assert rep.kernels == len(order)
    assert rep.inplace == sum(1 for k in order if k.attrs["inplace"])
    assert 0 <= rep.arena_bytes <= rep.unplanned_bytes
    assert rep.freed_peak_bytes <= rep.unplanned_bytes
    if rep.inplace == 0:
        # without handovers, a value and the inputs dying at its kernel are all live there:
        # the peak of freeing-after-last-use is a lower bound of any arena
        assert rep.arena_bytes >= rep.freed_peak_bytes
    assert rep.output_bytes == sum(o.type.nbytes for o in graph.outputs)
    # the report recomputes the plan when given an unscheduled (fused) graph: same numbers
    assert str(rep)
    return rep


def check_poisoned(stages, args, rtol=1e-5, atol=1e-6):
    want = interpret(stages.get("backward", stages["traced"]), *args)
    program = NumpyBackend(poison=True).compile(stages["scheduled"])
    got = program(*args)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    return program


# ---- the graphs --------------------------------------------------------------------------------
rng = np.random.default_rng(0)
X = rng.standard_normal((64, 48)).astype(np.float32)
G = rng.standard_normal(48).astype(np.float32)
Y = np.eye(48, dtype=np.float32)[rng.integers(0, 48, 64)]


def softmax_ce(z, onehot):
    z = z - gc.max(z, axis=1, keepdims=True)
    log_probs = z - gc.log(gc.sum(gc.exp(z), axis=1, keepdims=True))
    return -gc.sum(onehot * log_probs) / z.shape[0]


def layer_norm(x, g, b):
    m = gc.mean(x, axis=-1, keepdims=True)
    v = gc.var(x, axis=-1, keepdims=True)
    return gc.tanh((x - m) / gc.sqrt(v + 1e-5) * g + b) @ gc.transpose(x) * 0.5


def ce_grad(z, onehot):
    return gc.value_and_grad(softmax_ce)(z, onehot)


def ln_grad(x, g, b):
    return gc.value_and_grad(lambda x, g, b: gc.sum(layer_norm(x, g, b) ** 2),
                             argnums=(0, 1, 2))(x, g, b)


def _flat(args):
    from graphc.frontends import pytree
    return [np.asarray(a) for a in pytree.flatten(tuple(args))[0]]


CASES = {
    "mlp train_step": (mlp.train_step, mlp.EXAMPLES["train_step"]),
    "softmax CE": (softmax_ce, (X, Y)),
    "softmax CE + grad": (ce_grad, (X, Y)),
    "layer norm": (layer_norm, (X, G, G)),
    "layer norm + grad": (ln_grad, (X, G, G)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_memory_plan_never_shares_live_memory(name):
    fn, args = CASES[name]
    stages = gc.compile(fn, backend="reference").lower(*args).stages
    check_memory_plan(stages["scheduled"])
    check_report(stages["scheduled"])
    check_poisoned(stages, _flat(args), rtol=1e-4, atol=1e-5)


def test_mlp_plan_reuses_memory():
    stages = gc.compile(mlp.train_step).lower(*mlp.EXAMPLES["train_step"]).stages
    rep = check_report(stages["scheduled"])
    assert rep.arena_bytes < rep.unplanned_bytes            # reuse happened
    life = lifetimes(stages["scheduled"])
    offsets = [v[0].attrs["buffer"] for v in life.values()]
    assert len(set(offsets)) < len(offsets)                 # some block holds two values


def test_report_on_fused_graph_matches_scheduled():
    stages = gc.compile(mlp.train_step).lower(*mlp.EXAMPLES["train_step"]).stages
    a, b = memory_report(stages["fused"]), memory_report(stages["scheduled"])
    assert (a.unplanned_bytes, a.freed_peak_bytes, a.arena_bytes, a.inplace) == \
        (b.unplanned_bytes, b.freed_peak_bytes, b.arena_bytes, b.inplace)
    plan = plan_memory(stages["fused"])
    assert sorted(plan.values()) == sorted((k.attrs["buffer"], k.attrs["inplace"])
                                           for k in kernels(stages["scheduled"]))


# ---- in place ----------------------------------------------------------------------------------
N = 256
BIG = rng.standard_normal((N, N)).astype(np.float32)


def chain_over_temporary(x, y, w):
    # t = exp(x) + exp(y) is read by two kernels (the column sum and the division) and
    # recomputing it would read twice its bytes: it is materialised (F4), a 256 KB
    # temporary. u = t / colsum is elementwise, the last reader of t, same type: it is
    # written into t's block (M3), and feeds a matmul (so it is materialised too).
    # (A sum over the leading axis: a row sum would be a row reduction of u's kernel, F6.
    # t * (1 / colsum) rather than t / colsum: the numpy backend writes ufunc results into
    # the arena, and renders divide without `out=`)
    t = gc.exp(x) + gc.exp(y)
    u = t * (1.0 / gc.sum(t, axis=0, keepdims=True))
    return u @ w


def test_inplace_for_an_elementwise_chain_over_a_large_temporary():
    stages = gc.compile(chain_over_temporary).lower(BIG, BIG, BIG).stages
    g = stages["scheduled"]
    ks = kernels(g)
    assert [k.attrs["kind"] for k in ks] == ["elementwise", "reduce", "elementwise", "matmul"]
    t, _, u, _ = ks
    assert u.attrs["inplace"] and u.attrs["buffer"] == t.attrs["buffer"] >= 0
    assert check_memory_plan(g) == 1
    rep = check_report(g)
    assert rep.inplace == 1
    # t and u share one 256 KB block: the arena holds it once, plus the row sums
    assert rep.arena_bytes == N * N * 4 + 1024
    assert rep.arena_bytes < rep.freed_peak_bytes
    check_poisoned(stages, [BIG, BIG, BIG], rtol=1e-4, atol=1e-6)
    # the generated code really writes u over t
    src = NumpyBackend().compile(g).source
    assert src.count(f"_arena[{t.attrs['buffer']}:{t.attrs['buffer'] + N * N * 4}]") >= 2


def test_no_inplace_when_the_input_lives_on():
    # t is read again after u: u must not take its block
    def f(x, y, w):
        t = gc.exp(x) + gc.exp(y)
        u = t / gc.sum(t, axis=1, keepdims=True)
        return (u @ w) * gc.max(t, axis=1, keepdims=True)

    stages = gc.compile(f).lower(BIG, BIG, BIG).stages
    assert check_memory_plan(stages["scheduled"]) == 0
    check_poisoned(stages, [BIG, BIG, BIG], rtol=1e-4, atol=1e-6)


def test_no_inplace_over_an_input_read_through_a_view():
    # u reads t transposed: writing u[i, j] over t[i, j] would destroy t[i, j] before u[j, i]
    # reads it, in any backend that computes a kernel element by element (numpy copies
    # overlapping operands, which hides the hazard and wastes the block)
    def f(x, y, w):
        t = gc.exp(x) + gc.exp(y)
        u = gc.transpose(t) * (1.0 / gc.sum(t, axis=0, keepdims=True))
        return u @ w

    stages = gc.compile(f).lower(BIG, BIG, BIG).stages
    ks = kernels(stages["scheduled"])
    assert [k.attrs["kind"] for k in ks] == ["elementwise", "reduce", "elementwise", "matmul"]
    assert not ks[2].attrs["inplace"]
    assert check_memory_plan(stages["scheduled"]) == 0
    check_poisoned(stages, [BIG, BIG, BIG], rtol=1e-4, atol=1e-6)


def test_outputs_and_views_of_outputs_stay_out_of_the_arena():
    def f(x, w):
        h = gc.tanh(x @ w)
        return gc.transpose(h), gc.reshape(h * 2.0, (-1,)), h @ gc.transpose(w)

    stages = gc.compile(f).lower(X, X.T.copy()).stages
    check_memory_plan(stages["scheduled"])
    check_poisoned(stages, [X, X.T.copy()], rtol=1e-4, atol=1e-5)


def test_schedule_is_identity_on_kernel_order():
    stages = gc.compile(layer_norm).lower(X, G, G).stages
    a = [k.attrs["name"] for k in kernels(stages["fused"])]
    b = [k.attrs["name"] for k in kernels(schedule(stages["fused"]))]
    assert a == b


# ---- random programs -----------------------------------------------------------------------------
@settings(max_examples=100, **rp.SETTINGS)
@given(prog=rp.programs())
def test_memory_plan_on_random_programs(prog):
    args = rp.program_args(prog)
    stages = gc.compile(rp.program_fn(prog), backend="reference").lower(*args).stages
    check_memory_plan(stages["scheduled"])
    check_report(stages["scheduled"])
    check_poisoned(stages, args)


@settings(max_examples=100, **rp.SETTINGS)
@given(prog=rp.programs(max_ops=14))
def test_memory_plan_on_random_backward_graphs(prog):
    args = rp.program_args(prog, seed=2)
    stages = gc.compile(rp.grad_fn(prog), backend="reference").lower(*args).stages
    check_memory_plan(stages["scheduled"])
    check_report(stages["scheduled"])
    check_poisoned(stages, args, rtol=1e-5, atol=1e-5)
