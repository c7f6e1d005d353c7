"""The numpy backend against the reference interpreter: every op through
gc.compile(backend="numpy"), gradients, the generated source, tracebacks, and the
per-signature cache."""
from __future__ import annotations

import linecache
import os
import traceback
import zlib

import numpy as np
import pytest

import graphc as gc
import graphc.backends.numpy as numpy_backend
from graphc.interpret import interpret
from graphc.ops import Op
from graphc.printer import format_node, node_names

from compare_helpers import b, key, maker_r, nz, pos

HERE = os.path.basename(__file__)
F32, F64, I32, I64 = np.float32, np.float64, np.int32, np.int64
FLOATS = (F32, F64)
ALL = (F32, F64, I32, I64)


def r(*shape):
    return maker_r(*shape, normal=True)


# op -> [(name, fn, makers, dtypes)]
CASES = {
    Op.NEG: [("neg", lambda x: -x, (r(3, 4),), ALL)],
    Op.EXP: [("exp", gc.exp, (r(3, 4),), FLOATS)],
    Op.LOG: [("log", gc.log, (pos(3, 4),), FLOATS)],
    Op.SQRT: [("sqrt", gc.sqrt, (pos(5),), FLOATS)],
    Op.SIN: [("sin", gc.sin, (r(3, 4),), FLOATS)],
    Op.COS: [("cos", gc.cos, (r(3, 4),), FLOATS)],
    Op.TANH: [("tanh", gc.tanh, (r(3, 4),), FLOATS)],
    Op.ABS: [("abs", gc.abs, (r(3, 4),), ALL)],
    Op.SIGN: [("sign", gc.sign, (r(3, 4),), ALL)],
    Op.RECIP: [("recip", gc.reciprocal, (nz(3, 4),), FLOATS)],
    Op.STOP_GRADIENT: [("identity", lambda x: gc.stop_gradient(x) * 2, (r(3, 4),), ALL)],
    Op.CAST: [("to_i32", lambda x: (x * 3.0).astype(np.int32), (r(3, 4),), FLOATS),
              ("to_f32", lambda x: x.astype(np.float32) + 1, (r(3, 4),), (F64, I32, I64)),
              ("to_bool", lambda x: x.astype(bool), (r(6),), ALL)],
    Op.ADD: [("bcast", gc.add, (r(3, 1), r(4)), ALL), ("scalar", lambda x: x + 2, (r(3),), ALL)],
    Op.SUB: [("bcast", gc.subtract, (r(2, 1, 4), r(3, 1)), ALL)],
    Op.MUL: [("bcast", gc.multiply, (r(), r(2, 3)), ALL)],
    Op.DIV: [("bcast", gc.divide, (r(3, 1), nz(4)), FLOATS),
             ("scalar", lambda x: 1.0 / x, (nz(4),), FLOATS)],
    Op.POW: [("bcast", gc.power, (pos(3, 1), r(4)), FLOATS),
             ("float_exp", lambda x: x ** 1.5, (pos(4),), FLOATS)],
    Op.MAXIMUM: [("bcast", gc.maximum, (r(3, 1), r(4)), ALL)],
    Op.MINIMUM: [("bcast", gc.minimum, (r(3, 1), r(4)), ALL)],
    Op.LT: [("lt", gc.less, (r(3, 1), r(4)), ALL)],
    Op.LE: [("le", gc.less_equal, (r(3, 1), r(4)), ALL)],
    Op.GT: [("gt", gc.greater, (r(3, 1), r(4)), ALL)],
    Op.GE: [("ge", gc.greater_equal, (r(3, 1), r(4)), ALL)],
    Op.EQ: [("eq", gc.equal, (r(3, 1), r(4)), (I32, I64))],
    Op.NE: [("ne", gc.not_equal, (r(3, 1), r(4)), (I32, I64))],
    Op.WHERE: [("where", gc.where, (b(3, 1), r(4), r()), ALL),
               ("relu", lambda x: gc.where(x > 0, x, 0.0), (r(3, 4),), FLOATS)],
    Op.SUM: [("axes02", lambda x: gc.sum(x, axis=(0, 2)), (r(2, 3, 4),), ALL),
             ("keep", lambda x: gc.sum(x, axis=1, keepdims=True), (r(2, 3, 4),), FLOATS),
             ("all", gc.sum, (r(3, 4),), FLOATS)],
    Op.MAX: [("axis1", lambda x: gc.max(x, axis=1), (r(2, 3, 4),), ALL),
             ("keep", lambda x: gc.max(x, axis=(0, 2), keepdims=True), (r(2, 3, 4),), FLOATS)],
    Op.RESHAPE: [("reshape", lambda x: gc.reshape(x, (4, 3)) * 2, (r(3, 4),), ALL)],
    Op.PERMUTE: [("permute", lambda x: gc.transpose(x, (2, 0, 1)) + 1, (r(2, 3, 4),), ALL)],
    Op.EXPAND: [("expand", lambda x: gc.broadcast_to(x, (2, 3, 4)), (r(3, 1),), ALL)],
    Op.SLICE: [("steps", lambda x: x[1:6:2, ::3], (r(8, 7),), ALL),
               ("index", lambda x: x[:, 2] * 2, (r(3, 4),), FLOATS)],
    Op.PAD: [("pad", lambda x: gc.pad(x, ((1, 2), (0, 3)), constant_values=1.5), (r(2, 3),), ALL)],
    Op.CONCAT: [("concat", lambda a, b, c: gc.concatenate([a, b, c], axis=1),
                 (r(2, 1), r(2, 3), r(2, 2)), ALL)],
    Op.MATMUL: [("2d", gc.matmul, (r(3, 4), r(4, 5)), ALL),
                ("bcast_batch", gc.matmul, (r(2, 1, 3, 4), r(5, 4, 2)), FLOATS),
                ("vec", gc.matmul, (r(4), r(2, 4, 5)), FLOATS)],
    Op.RAND: [("rand", lambda k: gc.random_uniform(k, (3, 4)), (key(99),), (I64,)),
              ("rand_f64", lambda k, x: x * gc.random_uniform(k, (5,), dtype="float64"),
               (key(-5), r(5)), (F64,))],
    # several elementwise ops in a row: the fusion stage makes kernels of them
    Op.FUSED: [("chain", lambda x, y: gc.sum(gc.tanh(x * y + 1.0) * 2.0 - x, axis=0),
                (r(3, 4), r(4)), FLOATS)],
}


def _params():
    out = []
    for op, cases in CASES.items():
        for name, fn, makers, dts in cases:
            for dt in dts:
                out.append(pytest.param(op, fn, makers, dt, id=f"{op.name}-{name}-{np.dtype(dt).name}"))
    return out


def _ops_in(graph) -> set:
    ops = set()
    for n in graph.nodes:
        ops.add(n.op)
        if n.op is Op.FUSED:
            ops |= _ops_in(n.attrs["body"])
    return ops


def _check_equal(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (got.dtype, want.dtype)
    if want.dtype.kind == "f":
        tol = 2e-6 if want.dtype == np.float32 else 1e-13
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    else:
        np.testing.assert_array_equal(got, want)


def test_cases_cover_every_lowered_op():
    assert set(numpy_backend.LOWER) <= set(CASES)
    assert set(CASES) == set(Op) - {Op.INPUT, Op.CONST, Op.GRAD}


@pytest.mark.parametrize("op,fn,makers,dt", _params())
def test_op_through_numpy_backend_equals_interpreter(op, fn, makers, dt, request):
    rng = np.random.default_rng(zlib.crc32(request.node.callspec.id.encode()))
    args = tuple(m(rng, dt) for m in makers)
    # stop_gradient is simplified away after autodiff: keep it to test its lowering
    fc = gc.compile(fn, backend="numpy", passes="-rules" if op is Op.STOP_GRADIENT else None)
    got = fc(*args)
    assert op in _ops_in(fc.graph("optimized")), f"no {op.value} reaches the backend:\n" \
                                                 f"{fc.graph('optimized')}"
    want = interpret(gc.trace(fn, *args), *args)[0]
    _check_equal(got, want)
    # the optimized graph, interpreted, agrees too
    _check_equal(interpret(fc.graph("optimized"), *args)[0], want)


# ---- gradients and memory reuse (inplace, arena) under every backend option -------------------------
def _mlp(W1, b1, W2, X, Y):
    h = gc.tanh(X @ W1 + b1)
    logits = h @ W2
    z = logits - gc.max(logits, axis=1, keepdims=True)
    return -gc.sum(Y * (z - gc.log(gc.sum(gc.exp(z), axis=1, keepdims=True)))) / X.shape[0]


def _hazards(x, y):
    # temporaries used after other ops, views of temporaries, several outputs sharing them
    t = x * 2.0
    v = t.T
    u = gc.exp(t)
    s = u + t
    w = gc.sum(s * v.T, axis=0)
    return s, w, t[::2] - 1.0, gc.tanh(u) * y, x


BACKEND_OPTIONS = [dict(), dict(inplace=False, arena=False), dict(inplace=True, arena=False),
                   dict(inplace=False, arena=True), dict(poison=True)]


@pytest.mark.parametrize("opts", BACKEND_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_gradients_and_shared_temporaries_under_backend_options(opts):
    be = numpy_backend.NumpyBackend(**opts)
    rng = np.random.default_rng(7)
    args = (rng.standard_normal((4, 6)), rng.standard_normal(6), rng.standard_normal((6, 3)),
            rng.standard_normal((5, 4)), np.eye(3)[rng.integers(0, 3, 5)])
    vg = gc.value_and_grad(_mlp, argnums=(0, 1, 2))
    got_v, got_g = gc.compile(vg, backend=be)(*args)
    want_v, want_g = gc.compile(vg, backend="reference")(*args)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-13)
    for g, w in zip(got_g, want_g):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)

    x, y = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    x0 = x.copy()
    fc = gc.compile(_hazards, backend=be)
    for _ in range(2):  # a second call must not see state left by the first
        got = fc(x, y)
        want = interpret(gc.trace(_hazards, x, y), x, y)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-13)
    np.testing.assert_array_equal(x, x0)  # inputs are never written


def test_outputs_of_separate_calls_do_not_alias():
    fc = gc.compile(lambda x: gc.exp(x) * 2.0)
    a = fc(np.zeros(3))
    b = fc(np.ones(3))
    np.testing.assert_array_equal(a, np.full(3, 2.0))
    np.testing.assert_allclose(b, np.full(3, 2 * np.e))


# ---- the generated source -------------------------------------------------------------------------
def test_source_shows_every_node_and_the_users_line():
    def f(x, w, b):
        h = gc.maximum(x @ w + b, 0.0)
        return gc.sum(h * h) / 2.0, h[:, ::2]
    line = f.__code__.co_firstlineno
    fc = gc.compile(f, backend="numpy")
    rng = np.random.default_rng(0)
    fc(rng.standard_normal((2, 3)), rng.standard_normal((3, 4)), rng.standard_normal(4))
    src = fc.source
    assert isinstance(src, str) and src.startswith("#")
    compile(src, "<check>", "exec")  # valid Python
    g = fc.graph("optimized")
    names = node_names(g)

    def check(graph, names):
        for n in graph.nodes:
            if n.op is Op.INPUT or (n.op is Op.CONST and n.type.shape == ()):
                continue
            if n.op is Op.FUSED:
                assert f"kernel {n.attrs['name']}" in src
                check(n.attrs["body"], node_names(n.attrs["body"]))
                continue
            assert format_node(n, names) in src, format_node(n, names)
    check(g, names)
    assert f"{HERE}:{line + 1}" in src and f"{HERE}:{line + 2}" in src


def test_generated_lines_are_in_linecache_and_in_tracebacks(monkeypatch):
    monkeypatch.setitem(numpy_backend.LOWER, Op.SIN,
                        lambda n, a: f"np.sin({a[0]}, casting='no-such-casting')")

    def f(x):
        return gc.sin(x * 3.0) + x

    fc = gc.compile(f, backend=numpy_backend.NumpyBackend())
    entry = fc.lower(np.ones(2))
    prog = entry.program
    assert linecache.getlines(prog.filename) == prog.source.splitlines(True)
    with pytest.raises(gc.GraphcError) as e:
        fc(np.ones(2))
    tb = "".join(traceback.format_exception(e.value.__cause__))
    bad_line = next(l for l in prog.source.splitlines() if "no-such-casting" in l)
    assert prog.filename in tb
    assert bad_line.strip() in tb  # the generated statement, with its node comment
    assert f"{HERE}:{f.__code__.co_firstlineno + 1}" in bad_line


# ---- the per-signature cache ---------------------------------------------------------------------
def test_compile_caches_per_signature_and_retraces_for_new_shapes():
    calls = []

    def f(x, scale):
        calls.append(x.shape)
        return x * scale

    fc = gc.compile(f, backend="numpy")
    x3 = np.arange(3.0)
    np.testing.assert_array_equal(fc(x3, 2.0), x3 * 2)
    np.testing.assert_array_equal(fc(x3 + 1, 3.0), (x3 + 1) * 3)  # same signature: no retrace
    assert len(calls) == 1
    first_source = fc.source
    np.testing.assert_array_equal(fc(np.arange(5.0), 2.0), np.arange(5.0) * 2)
    assert len(calls) == 2 and fc.source != first_source
    out = fc(np.arange(3, dtype=np.float32), 2.0)
    assert out.dtype == np.float32 and len(calls) == 3
    fc(x3, 4.0)
    assert len(calls) == 3  # the first signature is still cached
    assert fc.source == first_source  # and .source follows the latest call


def test_static_python_ints_are_part_of_the_signature():
    calls = []

    def f(x, n):
        calls.append(n)
        for _ in range(n):
            x = x * 2.0
        return x

    fc = gc.compile(f)
    assert float(fc(np.float64(1.0), 3)) == 8.0
    assert float(fc(np.float64(1.0), 2)) == 4.0
    assert float(fc(np.float64(3.0), 3)) == 24.0
    assert calls == [3, 2]


def test_pytree_walks_leave_no_reference_cycle_holding_the_leaves():
    # a call's outputs (and inputs) are freed when the caller drops them, not when the cycle
    # collector runs: the LLVM backend reuses an output's buffer only once nothing holds it
    import gc as collector
    import weakref
    from graphc.frontends import pytree
    a, b = np.ones(3), np.zeros(2)
    was = collector.isenabled()
    collector.disable()
    try:
        leaves, tree, paths = pytree.flatten({"w": [a, 2], "b": (b,)})
        assert paths == ["w.0", "b.0"] and leaves[0] is a
        out = pytree.unflatten(tree, leaves)
        assert out["w"][0] is a and out["w"][1] == 2 and out["b"][0] is b
        ra, rb = weakref.ref(a), weakref.ref(b)
        del a, b, leaves, out
        assert ra() is None and rb() is None
    finally:
        if was:
            collector.enable()


def test_signature_matcher_accepts_exactly_the_flattened_signature():
    import doctest
    from collections import namedtuple
    from graphc.frontends import pytree
    doc = doctest.testmod(pytree, verbose=False)
    assert doc.failed == 0 and doc.attempted > 0
    P = namedtuple("P", "a b")
    args = ({"w": np.ones((2, 3), np.float32), "k": [np.zeros(3), 3, None, "s"]},
            P(np.ones(2), True), np.ones(()))
    leaves, tree, _ = pytree.flatten(args, with_paths=False)
    m = pytree.matcher(tree, leaves)
    assert [a is b for a, b in zip(m(args), leaves)] == [True] * 4
    w, k = args[0]["w"], args[0]["k"]
    for other in [({"k": k, "w": w}, *args[1:]), ({"w": w, "k": k[:3]}, *args[1:]),
                  ({"w": w, "k": [k[0], 3.0, None, "s"]}, *args[1:]),   # 3.0 is not 3
                  ({"w": w, "k": [k[0], 3, None, "t"]}, *args[1:]),
                  (args[0], (np.ones(2), True), args[2]),                # not a P
                  (args[0], P(np.ones(2), 1), args[2]),                  # 1 is not True
                  (args[0], P(np.ones(3), True), args[2]),
                  (args[0], P(np.ones(4)[::2], True), args[2]),          # not contiguous
                  (args[0], P(np.ones(2, np.float32), True), args[2]),
                  (args[0], args[1], np.float64(1.0)), args[:2]]:
        assert m(other) is None
    assert pytree.matcher(*pytree.flatten((np.ones(2), 1.5), with_paths=False)[1::-1]) is None


def test_compiled_function_called_inside_a_trace_is_inlined():
    inner = gc.compile(lambda x: gc.sin(x) * 2.0)
    outer = gc.compile(lambda x: inner(x) + 1.0)
    x = np.array([0.1, 0.2])
    np.testing.assert_allclose(outer(x), np.sin(x) * 2 + 1, rtol=1e-15)
    g = gc.grad(lambda x: gc.sum(inner(x)))(x)
    np.testing.assert_allclose(g, 2 * np.cos(x), rtol=1e-15)


def test_pytree_outputs_and_inputs():
    fc = gc.compile(lambda p: {"s": p["a"] + p["b"], "t": (p["a"] * 2.0, p["b"])})
    out = fc({"a": np.ones(2), "b": np.arange(2.0)})
    assert set(out) == {"s", "t"}
    np.testing.assert_array_equal(out["s"], [1.0, 2.0])
    np.testing.assert_array_equal(out["t"][0], [2.0, 2.0])
    np.testing.assert_array_equal(out["t"][1], [0.0, 1.0])


# ---- random programs: fusion, in-place reuse and the memory plan must never change a result ------
def _broadcasts(a, b) -> bool:
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


def _random_program(seed: int, steps: int = 16):
    """A deterministic random straight-line program over x[3,4], y[4], z[3,1]: a plan of
    steps (each one reads earlier values), then a function that runs it with gc.* calls."""
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (4,), (3, 1)]
    plan = []
    while len(plan) < steps:
        kind = str(rng.choice(["unary", "binary", "binary", "reduce", "move", "matmul", "where"]))
        i = int(rng.integers(len(shapes)))
        s = shapes[i]
        partners = [j for j, t in enumerate(shapes) if _broadcasts(s, t)]
        if kind == "unary":
            plan.append((kind, i, str(rng.choice(["sin", "tanh", "neg", "abs", "square", "exp"]))))
            shapes.append(s)
        elif kind in ("binary", "where"):
            j = int(rng.choice(partners))
            plan.append((kind, i, j, str(rng.choice(["add", "sub", "mul", "maximum", "minimum"]))))
            shapes.append(np.broadcast_shapes(s, shapes[j]))
        elif kind == "reduce" and s:
            axis, keep = int(rng.integers(len(s))), bool(rng.integers(2))
            plan.append((kind, i, axis, keep, str(rng.choice(["sum", "max"]))))
            shapes.append(tuple(1 if a == axis else d for a, d in enumerate(s) if keep or a != axis))
        elif kind == "move" and s:
            m = str(rng.choice(["T", "flat", "slice", "pad", "concat", "expand"]))
            plan.append((kind, i, m))
            shapes.append({"T": s[::-1], "flat": (int(np.prod(s)),), "slice": ((s[0] + 1) // 2,) + s[1:],
                           "pad": tuple(d + 1 for d in s), "concat": (2 * s[0],) + s[1:],
                           "expand": (2,) + s}[m])
        elif kind == "matmul" and 1 <= len(s) <= 2:
            js = [j for j, t in enumerate(shapes) if 1 <= len(t) <= 2 and t[0 if len(t) == 1 else -2] == s[-1]]
            if js:
                j = int(rng.choice(js))
                plan.append((kind, i, j))
                shapes.append(np.matmul(np.zeros(s), np.zeros(shapes[j])).shape)
    outs = sorted({int(o) for o in rng.integers(0, len(shapes), 3)} | {len(shapes) - 1})
    unary = {"sin": gc.sin, "tanh": gc.tanh, "neg": gc.negative, "abs": gc.abs,
             "square": gc.square, "exp": lambda a: gc.exp(gc.tanh(a))}
    binary = {"add": gc.add, "sub": gc.subtract, "mul": gc.multiply, "maximum": gc.maximum,
              "minimum": gc.minimum}

    def program(x, y, z):
        v = [x, y, z]
        for p in plan:
            kind, a = p[0], v[p[1]]
            if kind == "unary":
                v.append(unary[p[2]](a))
            elif kind == "binary":
                v.append(binary[p[3]](a, v[p[2]]))
            elif kind == "where":
                v.append(gc.where(a > 0, a, v[p[2]]))
            elif kind == "reduce":
                v.append((gc.sum if p[4] == "sum" else gc.max)(a, axis=p[2], keepdims=p[3]))
            elif kind == "matmul":
                v.append(gc.matmul(a, v[p[2]]))
            else:
                m = p[2]
                v.append(gc.transpose(a) if m == "T" else gc.reshape(a, (-1,)) if m == "flat"
                         else a[::2] if m == "slice" else gc.pad(a, ((1, 0),) * a.ndim) if m == "pad"
                         else gc.concatenate([a, a * 0.5]) if m == "concat"
                         else gc.broadcast_to(a, (2,) + a.shape))
        return tuple(v[o] for o in outs)
    return program


def random_case(seed):
    """(program, args, the interpreter's outputs, value_and_grad of a scalar loss over the
    outputs, its reference value and gradients) for the random program of `seed`."""
    program = _random_program(seed)
    rng = np.random.default_rng(seed + 1000)
    args = (rng.standard_normal((3, 4)), rng.standard_normal(4), rng.standard_normal((3, 1)))
    want = interpret(gc.trace(program, *args), *args)
    loss = lambda x, y, z: sum(gc.sum(gc.tanh(o)) for o in program(x, y, z))  # noqa: E731
    vg = gc.value_and_grad(loss, argnums=(0, 1, 2))
    want_v, want_g = gc.compile(vg, backend="reference")(*args)
    return program, args, want, vg, want_v, want_g


@pytest.mark.parametrize("seed", range(16))
def test_random_programs_agree_with_the_interpreter(seed):
    program, args, want, vg, want_v, want_g = random_case(seed)
    for opts in (dict(), dict(poison=True), dict(inplace=False, arena=False)):
        be = numpy_backend.NumpyBackend(**opts)
        fc = gc.compile(program, backend=be)
        for _ in range(2):
            copies = tuple(a.copy() for a in args)
            got = fc(*copies)
            for g, w in zip(got, want, strict=True):
                assert g.shape == w.shape
                np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=str(opts))
            for c, a in zip(copies, args):
                np.testing.assert_array_equal(c, a)  # inputs untouched
        got_v, got_g = gc.compile(vg, backend=be)(*args)
        np.testing.assert_allclose(got_v, want_v, rtol=1e-12)
        for g, w in zip(got_g, want_g):
            np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-12, err_msg=str(opts))
