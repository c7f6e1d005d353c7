"""Random programs through the whole pipeline (hypothesis).

A strategy draws small programs, 3-20 ops over random shapes: unary ops, binary ops with
broadcasting (against earlier values, fresh inputs or constant arrays), scalar constants
(which make the simplifier's identities fire), where, sum/max/mean over random axes with
or without keepdims, reshape, permute, slice, pad, concat, matmul when shapes allow,
random numbers, casts, and exp/log on safe ranges. Each program
is a plain Python function over gc ops, traced like user code. For each one:

  * every stage verifies, and every stage's graph, interpreted, gives the traced graph's
    outputs;
  * the numpy backend with poisoned dead arena blocks gives the interpreter's outputs;
  * value_and_grad of the sum of the outputs, through the pipeline, matches the interpreter
    on the backward graph, stage by stage and on the numpy backend.

`programs`, `program_fn` and `program_args` are reused by test_schedule.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc.backends.numpy import NumpyBackend
from graphc.interpret import interpret
from graphc.ops import Op
from graphc.pipeline import run_pipeline
from graphc.verify import verify

MAX_SIZE = 240      # elements per value, so programs stay cheap
MAX_RANK = 4

UNARY = ["neg", "tanh", "sin", "cos", "abs", "exp", "log", "square", "f64"]
BINARY = ["add", "sub", "mul", "div", "maximum", "minimum"]
SCALARS = [0.0, 1.0, -1.0, 2.0, 0.5]
COMPARE = ["gt", "lt", "ge"]


@dataclass(frozen=True)
class Program:
    steps: tuple          # ("input", shape) or (op kind, ...operand indices, params)
    outputs: tuple        # value indices returned
    n_inputs: int

    def __repr__(self):   # what hypothesis prints for a failing example
        lines = [f"v{i} = {s}" for i, s in enumerate(self.steps)]
        return "Program(\n  " + "\n  ".join(lines) + f"\n  return {self.outputs})"


def _size(shape):
    return int(np.prod(shape, dtype=np.int64))


def _broadcast(*shapes):
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        return None


def _factor_shape(draw, size):
    """A random shape with `size` elements, rank <= MAX_RANK."""
    factors, n, p = [], size, 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    dims = draw(st.integers(1 if size > 1 else 0, MAX_RANK))
    shape = [1] * dims
    for f in draw(st.permutations(factors)):
        if dims == 0:
            break
        shape[draw(st.integers(0, dims - 1))] *= f
    if dims == 0 and size != 1:
        shape = [size]
    return tuple(shape)


@st.composite
def shapes(draw, max_rank=3):
    rank = draw(st.integers(0, max_rank))
    return tuple(draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank)))


@st.composite
def programs(draw, min_ops=3, max_ops=20):
    steps: list = [("input", draw(shapes()))]
    shape_of: list = [steps[0][1]]
    n_inputs = 1

    def add(step, shape):
        steps.append(step)
        shape_of.append(tuple(int(s) for s in shape))
        return len(steps) - 1

    def new_input(shape):
        nonlocal n_inputs
        n_inputs += 1
        return add(("input", tuple(shape)), shape)

    def partner(a):
        """A value broadcast-compatible with value a: an earlier one, or a fresh input whose
        shape is a's with leading axes dropped and some axes set to 1 (or one axis added)."""
        sa = shape_of[a]
        fits = [i for i, s in enumerate(shape_of)
                if (b := _broadcast(sa, s)) is not None
                and _size(b) <= MAX_SIZE and len(b) <= MAX_RANK]
        if fits and draw(st.booleans()):
            return draw(st.sampled_from(fits))
        drop = draw(st.integers(0, len(sa)))
        s = [1 if draw(st.integers(0, 3)) == 0 else d for d in sa[drop:]]
        if len(sa) < MAX_RANK and _size(sa) * 3 <= MAX_SIZE and draw(st.integers(0, 4)) == 0:
            s = [draw(st.integers(2, 3))] + list(sa)   # the partner broadcasts a up
        return new_input(s)

    n_ops = draw(st.integers(min_ops, max_ops))
    for _ in range(n_ops):
        # operands count back from the newest value (so simple draws make chains, not
        # dead branches), the newest one again a third of the time
        back = 0 if draw(st.integers(0, 2)) == 0 else draw(st.integers(0, len(steps) - 1))
        a = len(steps) - 1 - back
        sa = shape_of[a]
        kind = draw(st.sampled_from(["unary", "unary", "binary", "binary", "scalar", "where",
                                     "reduce", "reshape", "permute", "slice", "matmul",
                                     "array", "rand", "pad", "concat"]))
        if kind == "reduce" and sa:
            axes = tuple(sorted(draw(st.sets(st.integers(0, len(sa) - 1), min_size=1))))
            keep = draw(st.booleans())
            red = draw(st.sampled_from(["sum", "max", "mean"]))
            out = tuple(1 if i in axes else d for i, d in enumerate(sa) if keep or i not in axes)
            add(("reduce", a, red, axes, keep), out)
        elif kind == "reshape" and sa:
            target = _factor_shape(draw, _size(sa))
            add(("reshape", a, target), target)
        elif kind == "permute" and len(sa) >= 2:
            perm = tuple(draw(st.permutations(range(len(sa)))))
            add(("permute", a, perm), tuple(sa[p] for p in perm))
        elif kind == "slice" and sa:
            idx, out = [], []
            for d in sa:
                if d > 1 and draw(st.integers(0, 5)) == 0:
                    i = draw(st.integers(0, d - 1))
                    idx.append(i)                      # an integer index drops the axis
                    continue
                lo = draw(st.integers(0, d - 1))
                hi = draw(st.integers(lo + 1, d))
                step = draw(st.sampled_from([1, 1, 2]))
                idx.append((lo, hi, step))
                out.append(len(range(lo, hi, step)))
            add(("slice", a, tuple(idx)), out)
        elif kind == "matmul" and len(sa) >= 2:
            k = sa[-1]
            fits = [i for i, s in enumerate(shape_of) if len(s) >= 2 and s[-2] == k
                    and _broadcast(sa[:-2], s[:-2]) is not None
                    and _size(_broadcast(sa[:-2], s[:-2]) + (sa[-2], s[-1])) <= MAX_SIZE]
            b = draw(st.sampled_from(fits)) if fits and draw(st.booleans()) else \
                new_input((k, draw(st.integers(1, 4))))
            sb = shape_of[b]
            add(("matmul", a, b), tuple(_broadcast(sa[:-2], sb[:-2])) + (sa[-2], sb[-1]))
        elif kind == "array":
            # a numpy array the function closes over: a constant, broadcast against a
            shape = tuple(1 if draw(st.integers(0, 2)) == 0 else d for d in sa)
            seed = draw(st.integers(0, 2 ** 16))
            add(("array", draw(st.sampled_from(BINARY)), a, shape, seed), sa)
        elif kind == "rand" and _size(sa) <= MAX_SIZE:
            add(("rand", a, draw(st.integers(0, 2 ** 31))), sa)
        elif kind == "pad" and sa and _size(sa) * 3 <= MAX_SIZE:
            pads = tuple((draw(st.integers(0, 1)), draw(st.integers(0, 1))) for _ in sa)
            add(("pad", a, pads, draw(st.sampled_from([0.0, -1.0]))),
                tuple(d + lo + hi for d, (lo, hi) in zip(sa, pads)))
        elif kind == "concat" and sa and _size(sa) * 2 <= MAX_SIZE:
            axis = draw(st.integers(0, len(sa) - 1))
            fits = [i for i, s in enumerate(shape_of)
                    if len(s) == len(sa) and all(x == y for k, (x, y) in enumerate(zip(s, sa))
                                                 if k != axis)
                    and _size(sa) + _size(s) <= MAX_SIZE]
            b = draw(st.sampled_from(fits))            # a itself is always among them
            add(("concat", a, b, axis),
                tuple(d + (shape_of[b][axis] if k == axis else 0) for k, d in enumerate(sa)))
        elif kind == "binary":
            b = partner(a)
            op = draw(st.sampled_from(BINARY))
            a, b = (b, a) if draw(st.booleans()) else (a, b)
            add(("binary", op, a, b), _broadcast(shape_of[a], shape_of[b]))
        elif kind == "scalar":
            op = draw(st.sampled_from(["add", "sub", "rsub", "mul", "div", "pow"]))
            c = draw(st.sampled_from(SCALARS))
            if op in ("div", "pow") and c == 0.0:
                c = 1.0
            add(("scalar", op, a, c), sa)
        elif kind == "where":
            c = partner(a)
            x, y = partner(a), partner(a)
            out = _broadcast(shape_of[a], shape_of[c], shape_of[x], shape_of[y])
            if out is None or _size(out) > MAX_SIZE or len(out) > MAX_RANK:
                add(("unary", "tanh", a), sa)
            else:
                add(("where", draw(st.sampled_from(COMPARE)), a, c, x, y), out)
        else:
            add(("unary", draw(st.sampled_from(UNARY)), a), sa)
    # outputs: the newest value, every other value no step reads (so little is dead code),
    # and sometimes any value at all: an input, or the newest one a second time
    last = len(steps) - 1
    used = {i for step in steps for i in _operands(step)}
    outs = [last] + [i for i in range(last) if i not in used and steps[i][0] != "input"][-3:]
    if draw(st.integers(0, 3)) == 0:
        outs.append(draw(st.integers(0, last)))
    return Program(tuple(steps), tuple(outs), n_inputs)


def _operands(step) -> tuple:
    kind = step[0]
    if kind == "input":
        return ()
    if kind in ("unary", "scalar", "array"):
        return (step[2],)
    if kind == "concat":
        return step[1:3]
    if kind == "binary":
        return step[2:4]
    if kind == "where":
        return step[2:6]
    if kind == "matmul":
        return step[1:3]
    return (step[1],)        # reduce, reshape, permute, slice


def _apply(step, v):
    kind = step[0]
    if kind == "unary":
        _, name, a = step
        x = v[a]
        return {"neg": lambda: -x, "tanh": lambda: gc.tanh(x), "sin": lambda: gc.sin(x),
                "cos": lambda: gc.cos(x), "abs": lambda: gc.abs(x),
                "exp": lambda: gc.exp(gc.tanh(x) * 2.0),            # bounded argument
                "log": lambda: gc.log(gc.abs(x) + 1.0),             # positive argument
                "square": lambda: x ** 2,
                "f64": lambda: (x.astype(np.float64) * 3.0).astype(np.float32)}[name]()
    if kind == "binary":
        _, name, a, b = step
        x, y = v[a], v[b]
        return {"add": lambda: x + y, "sub": lambda: x - y, "mul": lambda: x * y,
                "div": lambda: x / (gc.abs(y) + 1.0), "maximum": lambda: gc.maximum(x, y),
                "minimum": lambda: gc.minimum(x, y)}[name]()
    if kind == "scalar":
        _, name, a, c = step
        x = v[a]
        return {"add": lambda: x + c, "sub": lambda: x - c, "rsub": lambda: c - x,
                "mul": lambda: x * c, "div": lambda: x / c,
                "pow": lambda: x ** c if c in (1.0, 2.0) else (gc.abs(x) + 1.0) ** c}[name]()
    if kind == "where":
        _, cmp, a, c, x, y = step
        cond = {"gt": lambda: v[a] > v[c], "lt": lambda: v[a] < v[c],
                "ge": lambda: v[a] >= v[c]}[cmp]()
        return gc.where(cond, v[x], v[y])
    if kind == "reduce":
        _, a, red, axes, keep = step
        return getattr(gc, red)(v[a], axis=axes, keepdims=keep)
    if kind == "reshape":
        return gc.reshape(v[step[1]], step[2])
    if kind == "permute":
        return gc.transpose(v[step[1]], step[2])
    if kind == "slice":
        _, a, idx = step
        return v[a][tuple(i if isinstance(i, int) else slice(*i) for i in idx)]
    if kind == "matmul":
        return v[step[1]] @ v[step[2]]
    if kind == "array":
        _, name, a, shape, seed = step
        c = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
        return _apply(("binary", name, a, -1), {a: v[a], -1: c})
    if kind == "rand":
        _, a, key = step
        return v[a] * gc.random_uniform(key, v[a].shape)
    if kind == "pad":
        _, a, pads, value = step
        return gc.pad(v[a], pads, constant_values=value)
    if kind == "concat":
        _, a, b, axis = step
        return gc.concatenate([v[a], v[b]], axis=axis)
    raise AssertionError(step)


def program_fn(prog: Program):
    """The program as a Python function of its inputs, over gc ops."""
    def fn(*xs):
        xs = iter(xs)
        v = []
        for step in prog.steps:
            v.append(next(xs) if step[0] == "input" else _apply(step, v))
        return tuple(v[o] for o in prog.outputs)
    fn.__name__ = "random_program"
    return fn


def loss_fn(prog: Program):
    f = program_fn(prog)

    def loss(*xs):
        total = None
        for o in f(*xs):
            s = gc.sum(o) if o.shape else o
            total = s if total is None else total + s
        return total
    return loss


def grad_fn(prog: Program):
    return gc.value_and_grad(loss_fn(prog), argnums=tuple(range(prog.n_inputs)))


def program_args(prog: Program, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) if s else np.float32(rng.standard_normal())
            for kind, *rest in prog.steps if kind == "input" for s in [rest[0]]]


def assert_close(got, want, what):
    assert len(got) == len(want), what
    for i, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, (what, i, g.shape, w.shape)
        scale = max(1.0, float(np.max(np.abs(w[np.isfinite(w)]), initial=0.0)))
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6 * scale, equal_nan=True,
                                   err_msg=f"{what}, output {i}")


def check_stages(graph, args, passes=None):
    """Every stage verifies and interprets to the oracle's outputs; the poisoned numpy run too.
    The oracle is the first interpretable stage (the traced graph, or the backward graph
    when the traced one holds grad markers). Returns the stages."""
    stages = run_pipeline(graph, passes)
    oracle_stage = "backward" if "backward" in stages else "traced"
    want = interpret(stages[oracle_stage], *args)
    for name, g in stages.items():
        verify(g, name, allow_grad=(name == "traced"))
        if name == "traced" and oracle_stage == "backward":
            continue
        assert_close(interpret(g, *args), want, f"stage {name}")
    program = NumpyBackend(poison=True).compile(stages["optimized"])
    assert_close(program(*args), want, "numpy backend, poisoned arena")
    return stages


SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@settings(max_examples=250, **SETTINGS)
@given(prog=programs(), passes=st.sampled_from([None, None, None, "-cse", "-rules", "-fusion",
                                                 "-memory", "-simplify"]))
def test_random_programs_through_every_stage(prog, passes):
    fn = program_fn(prog)
    args = program_args(prog)
    graph = gc.trace(fn, *args)
    check_stages(graph, args, passes)


@settings(max_examples=120, **SETTINGS)
@given(prog=programs(max_ops=14))
def test_random_programs_gradients(prog):
    args = program_args(prog, seed=1)
    graph = gc.trace(grad_fn(prog), *args)
    assert any(n.op is Op.GRAD for n in graph.nodes)
    stages = check_stages(graph, args)
    # and the compiled function (the numpy backend, default options) against the eager
    # reference path of value_and_grad (the interpreter, op by op)
    value, grads = gc.compile(grad_fn(prog))(*args)
    ref_value, ref_grads = grad_fn(prog)(*args)
    assert_close((value,) + tuple(grads), (ref_value,) + tuple(ref_grads), "compiled grad")
    assert "backward" in stages


def test_strategy_covers_every_kind():
    """The strategy is not degenerate: across a fixed sample every step kind occurs, and the
    simplifier's rules, CSE and fusion all have something to do."""
    seen: set = set()

    @settings(max_examples=60, **SETTINGS)
    @given(prog=programs())
    def collect(prog):
        for s in prog.steps:
            seen.add(s[0] if s[0] not in ("unary", "binary") else f"{s[0]}:{s[1]}")

    collect()
    kinds = {k.split(":")[0] for k in seen}
    assert kinds >= {"input", "unary", "binary", "scalar", "where", "reduce", "reshape",
                     "permute", "slice", "matmul", "array", "rand", "pad", "concat"}, kinds
    assert {f"unary:{u}" for u in ("exp", "log")} <= seen
