"""Cross-backend parity: every registered backend against the reference interpreter, for
every primitive op (forward values and gradients) and every example model in examples/.

The op table gives, per op, cases of (name, function, argument generators, dtypes, tolerance
class); the tolerance for a case is `graphc.tolerances.tolerance(dtype, class)`. A backend
added to `graphc.backends.REGISTRY` is picked up here without any change, and it must be
available: a missing backend fails, it never skips silently.
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc import backends
from graphc import compare as C
from graphc import tolerances as T
from graphc.cli import load_module
from graphc.ops import Op

from compare_helpers import (BACKENDS, assert_agrees, b, key, maker_r as r,
                             mlp_steps_match_numpy, nz, pos, skip_without_float64)

ROOT = Path(__file__).resolve().parents[2]
F32, F64, I32, I64 = np.float32, np.float64, np.int32, np.int64
FLOATS = (F32, F64)
ALL = (F32, F64, I32, I64)


# op -> [(case name, fn, argument generators, dtypes, tolerance class)]
OPS = {
    Op.NEG: [("neg", lambda x: -x, (r(3, 4),), ALL, "exact")],
    Op.EXP: [("exp", gc.exp, (r(3, 4),), FLOATS, "transcendental")],
    Op.LOG: [("log", gc.log, (pos(3, 4),), FLOATS, "transcendental")],
    Op.SQRT: [("sqrt", gc.sqrt, (pos(5),), FLOATS, "arith")],
    Op.SIN: [("sin", gc.sin, (r(3, 4),), FLOATS, "transcendental")],
    Op.COS: [("cos", gc.cos, (r(3, 4),), FLOATS, "transcendental")],
    Op.TANH: [("tanh", gc.tanh, (r(3, 4),), FLOATS, "transcendental")],
    Op.ABS: [("abs", gc.abs, (r(3, 4),), ALL, "exact")],
    Op.SIGN: [("sign", gc.sign, (r(3, 4),), ALL, "exact")],
    Op.RECIP: [("recip", gc.reciprocal, (nz(3, 4),), FLOATS, "arith")],
    Op.CAST: [("to_i32", lambda x: (x * 3.0).astype(np.int32), (r(3, 4),), FLOATS, "exact"),
              ("to_f32", lambda x: x.astype(np.float32), (r(3, 4),), (F64, I32, I64), "exact"),
              ("to_f64", lambda x: x.astype(np.float64) * 2.0, (r(3, 4),), (F32,), "arith"),
              ("to_bool", lambda x: x.astype(bool), (r(6),), ALL, "exact")],
    Op.ADD: [("bcast", gc.add, (r(3, 1), r(4)), ALL, "arith"),
             ("scalar", lambda x: x + 2, (r(3),), ALL, "arith")],
    Op.SUB: [("bcast", gc.subtract, (r(2, 1, 4), r(3, 1)), ALL, "arith")],
    Op.MUL: [("bcast", gc.multiply, (r(), r(2, 3)), ALL, "arith")],
    Op.DIV: [("bcast", gc.divide, (r(3, 1), nz(4)), FLOATS, "arith"),
             ("scalar", lambda x: 1.0 / x, (nz(4),), FLOATS, "arith")],
    Op.POW: [("bcast", gc.power, (pos(3, 1), r(4)), FLOATS, "transcendental"),
             ("float_exp", lambda x: x ** 1.5, (pos(4),), FLOATS, "transcendental")],
    Op.MAXIMUM: [("bcast", gc.maximum, (r(3, 1), r(4)), ALL, "exact")],
    Op.MINIMUM: [("bcast", gc.minimum, (r(3, 1), r(4)), ALL, "exact")],
    Op.LT: [("lt", gc.less, (r(3, 1), r(4)), ALL, "exact")],
    Op.LE: [("le", gc.less_equal, (r(3, 1), r(4)), ALL, "exact")],
    Op.GT: [("gt", gc.greater, (r(3, 1), r(4)), ALL, "exact")],
    Op.GE: [("ge", gc.greater_equal, (r(3, 1), r(4)), ALL, "exact")],
    Op.EQ: [("eq", gc.equal, (r(3, 1), r(4)), (I32, I64), "exact"),
            ("eq_float", lambda x: gc.equal(x, gc.max(x, axis=1, keepdims=True)), (r(3, 4),),
             FLOATS, "exact")],
    Op.NE: [("ne", gc.not_equal, (r(3, 1), r(4)), (I32, I64), "exact")],
    Op.WHERE: [("where", gc.where, (b(3, 1), r(4), r()), ALL, "exact"),
               ("relu", lambda x: gc.where(x > 0, x, 0.0), (r(3, 4),), FLOATS, "exact")],
    Op.SUM: [("axes02", lambda x: gc.sum(x, axis=(0, 2)), (r(2, 3, 4),), ALL, "reduce"),
             ("keep", lambda x: gc.sum(x, axis=1, keepdims=True), (r(2, 3, 4),), FLOATS, "reduce"),
             ("all_long", gc.sum, (r(40, 30),), FLOATS, "reduce")],
    Op.MAX: [("axis1", lambda x: gc.max(x, axis=1), (r(2, 3, 4),), ALL, "exact"),
             ("keep", lambda x: gc.max(x, axis=(0, 2), keepdims=True), (r(2, 3, 4),), FLOATS,
              "exact")],
    Op.RESHAPE: [("reshape", lambda x: gc.reshape(x, (4, 3)) * 2, (r(3, 4),), ALL, "arith")],
    Op.PERMUTE: [("permute", lambda x: gc.transpose(x, (2, 0, 1)) + 1, (r(2, 3, 4),), ALL,
                  "arith")],
    Op.EXPAND: [("expand", lambda x: gc.broadcast_to(x, (2, 3, 4)), (r(3, 1),), ALL, "exact")],
    Op.SLICE: [("steps", lambda x: x[1:6:2, ::3], (r(8, 7),), ALL, "exact"),
               ("index", lambda x: x[:, 2] * 2, (r(3, 4),), FLOATS, "arith")],
    Op.PAD: [("pad", lambda x: gc.pad(x, ((1, 2), (0, 3)), constant_values=1.5), (r(2, 3),),
              ALL, "exact")],
    Op.CONCAT: [("concat", lambda a, b, c: gc.concatenate([a, b, c], axis=1),
                 (r(2, 1), r(2, 3), r(2, 2)), ALL, "exact")],
    Op.MATMUL: [("2d", gc.matmul, (r(3, 4), r(4, 5)), ALL, "matmul"),
                ("bcast_batch", gc.matmul, (r(2, 1, 3, 4), r(5, 4, 2)), FLOATS, "matmul"),
                ("vec", gc.matmul, (r(4), r(2, 4, 5)), FLOATS, "matmul"),
                ("long_k", gc.matmul, (r(3, 200), r(200, 2)), FLOATS, "matmul")],
    Op.RAND: [("rand", lambda k: gc.random_uniform(k, (3, 4)), (key(99),), (I64,), "exact"),
              ("rand_f64", lambda k, x: x * gc.random_uniform(k, (5,), dtype="float64"),
               (key(-5), r(5)), (F64,), "arith")],
}
if hasattr(Op, "STOP_GRADIENT"):
    OPS[Op.STOP_GRADIENT] = [("stop", lambda x: gc.stop_gradient(x) * x, (r(3, 4),), FLOATS,
                              "arith")]
NOT_TABLED = {Op.INPUT, Op.CONST, Op.GRAD, Op.FUSED}
# ops the simplifier removes: their cases compile with these passes off, so the op reaches
# the backend
KEEP = {getattr(Op, "STOP_GRADIENT", None): "-rules"}


def _cases(grad: bool):
    out = []
    for op, cases in OPS.items():
        for name, fn, makers, dts, cls in cases:
            for dt in dts:
                if grad and np.dtype(dt).kind != "f":
                    continue
                for be in BACKENDS:
                    out.append(pytest.param(op, fn, makers, dt, cls, be,
                                            id=f"{be}-{op.name}-{name}-{np.dtype(dt).name}"))
    return out


def _args(makers, dt, ident: str):
    rng = np.random.default_rng(zlib.crc32(ident.encode()))
    return tuple(m(rng, dt) for m in makers)


def _ops_in(graph) -> set:
    return set(T.ops_in(graph.nodes))


def test_the_table_covers_every_op():
    assert set(OPS) == set(Op) - NOT_TABLED
    for op, cases in OPS.items():
        for name, *_, cls in cases:
            assert cls in T.OP_CLASSES, (op, name, cls)


def test_every_registered_backend_is_available():
    """A backend that is registered but cannot run (a missing library, no device) fails here
    instead of silently skipping every parity test."""
    status = backends.available()
    assert set(status) == set(BACKENDS) and BACKENDS
    missing = {name: why for name, (ok, why) in status.items() if not ok}
    assert missing == {}


@pytest.mark.parametrize("op,fn,makers,dt,cls,backend", _cases(grad=False))
def test_op_forward_matches_reference(op, fn, makers, dt, cls, backend, request):
    args = _args(makers, dt, request.node.callspec.id.split("-", 1)[1])
    (c,) = assert_agrees(fn, args, backend, tol=cls, passes=KEEP.get(op),
                         context=f"{op.value} forward")
    # the op really reaches the backend (not folded away by the passes)
    graph = c.runs[0].graph
    assert op in _ops_in(graph), f"no {op.value} reaches the backend:\n{graph}"


def _has_float_output(fn, args) -> bool:
    g = gc.trace(fn, *args)
    return any(o.dtype.is_float for o in g.outputs) and any(
        np.asarray(a).dtype.kind == "f" for a in args)


@pytest.mark.parametrize("op,fn,makers,dt,cls,backend", _cases(grad=True))
def test_op_gradient_matches_reference(op, fn, makers, dt, cls, backend, request):
    """gc.value_and_grad of a scalar projection sum(fn(x) * W) of the op's output, with
    respect to every float argument."""
    args = _args(makers, dt, request.node.callspec.id.split("-", 1)[1])
    if not _has_float_output(fn, args):
        assert op in (Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE, Op.CAST) or \
            op is Op.RAND, f"{op.value}: only comparisons, casts and rand have no float path"
        return
    argnums = tuple(i for i, a in enumerate(args) if np.asarray(a).dtype.kind == "f")
    assert_agrees(fn, args, backend, tol="composite", grad=True, argnums=argnums,
                  passes=KEEP.get(op), context=f"{op.value} gradient")


# ---- every example model ----------------------------------------------------------------------
EXAMPLE_FILES = sorted(p for p in (ROOT / "examples").glob("*.py")
                       if re.search(r"^EXAMPLES\s*=", p.read_text(encoding="utf-8"), re.M))


def test_examples_are_discovered():
    names = {p.name for p in EXAMPLE_FILES}
    assert {"mlp.py", "lecture_graph.py", "cnn.py"} <= names


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_models_match_reference(path, backend):
    """Every function in every example's EXAMPLES, forward and (for a scalar loss of float
    arguments) gradients, on every backend; none is skipped."""
    module = load_module(path)
    assert module.EXAMPLES, f"{path.name}: empty EXAMPLES"
    no_fp64 = []
    for fname, args in module.EXAMPLES.items():
        args = args if isinstance(args, tuple) else (args,)
        fn = getattr(module, fname)
        try:
            skip_without_float64(fn, args, backend)
        except pytest.skip.Exception:
            no_fp64.append(fname)
            continue
        for c in C.compare(fn, args, [backend], repeat=1):
            assert c.runs and c.runs[0].available, c.runs[0].why
            if not c.ok:
                reports = [r.error or str(C.find_divergence(c.fn, args, c.backends[r.backend]))
                           for r in c.failures()]
                pytest.fail(f"{path.name}:{fname}\n{c.table()}\n" + "\n".join(reports),
                            pytrace=False)
    if no_fp64:
        pytest.skip(f"{backend} declares no float64: not run: {', '.join(no_fp64)}")


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "numpy"])
def test_mlp_training_steps_match_numpy(backend):
    mlp_steps_match_numpy(backend)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "numpy"])
def test_mlp_values_and_gradients(backend, dt):
    from test_numpy_backend import _mlp
    rng = np.random.default_rng(7)
    args = tuple(a.astype(dt) for a in (
        rng.standard_normal((4, 6)), rng.standard_normal(6), rng.standard_normal((6, 3)),
        rng.standard_normal((5, 4)), np.eye(3)[rng.integers(0, 3, 5)]))
    vg = gc.value_and_grad(_mlp, argnums=(0, 1, 2))
    got_v, got_g = gc.compile(vg, backend=backend)(*args)
    want_v, want_g = gc.compile(vg, backend="reference")(*args)
    tol = 1e-5 if dt == np.float32 else 1e-12
    np.testing.assert_allclose(got_v, want_v, rtol=tol)
    for g, w in zip(got_g, want_g):
        assert g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


def _kernel_tables(backend):
    """(unary, binary) lowering tables of a backend that compiles the kernel IR."""
    if backend == "llvm":
        from graphc.backends import llvm
        return llvm.UNARY, llvm.BINARY
    from graphc.backends.opencl import OpenCLRenderer
    return OpenCLRenderer.unary, OpenCLRenderer.binary


@pytest.mark.parametrize("backend", ["llvm", "opencl"])
def test_kernel_tables_cover_every_kernel_ir_op(backend):
    from graphc import kernel as K
    from graphc.ops import FLOAT_UNARY
    unary, binary = _kernel_tables(backend)
    for op in K.UNARY_OPS:
        assert (op, "float") in unary, op
        if Op(op) not in FLOAT_UNARY:
            assert (op, "int") in unary, op
    for op in K.BINARY_OPS:
        assert (op, "float") in binary, op
        if op != "pow":
            assert (op, "int") in binary, op
    assert ("eq", "bool") in binary and ("ne", "bool") in binary
