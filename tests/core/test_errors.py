"""Errors a user meets: each names the op, the shapes and the user's file and line, and none
is ever replaced by a silently wrong answer."""
from __future__ import annotations

import os

import numpy as np
import pytest

import graphc as gc
import graphc.backends.numpy as numpy_backend
from graphc.errors import BackendError, GraphcError, ShapeError, SignatureError
from graphc.ops import Op

HERE = os.path.basename(__file__)


def _line(fn, offset=1):
    return fn.__code__.co_firstlineno + offset


# ---- shape errors while tracing ------------------------------------------------------------------
def test_broadcast_mismatch_names_op_shapes_and_line():
    def f(a, b):
        return a + b
    with pytest.raises(ShapeError) as e:
        gc.trace(f, np.ones(3, np.float32), np.ones(4, np.float32))
    msg = str(e.value)
    assert isinstance(e.value, GraphcError)
    assert "add" in msg
    assert "f32[3]" in msg and "f32[4]" in msg
    assert f"{HERE}:{_line(f)}" in msg
    assert e.value.stage == "trace"
    assert e.value.loc.endswith(f"{HERE}:{_line(f)} in f")


def test_matmul_mismatch_names_op_shapes_and_line():
    def f(a, b):
        h = a * 2.0
        return h @ b
    with pytest.raises(ShapeError) as e:
        gc.trace(f, np.ones((2, 3)), np.ones((4, 5)))
    msg = str(e.value)
    assert "matmul" in msg
    assert "(2, 3)" in msg and "(4, 5)" in msg
    assert "f64[2,3]" in msg and "f64[4,5]" in msg
    assert f"{HERE}:{_line(f, 2)}" in msg


def test_shape_error_inside_compile_and_grad_points_at_user_line():
    def f(x):
        y = gc.sum(x, axis=0)
        return gc.sum(y * x[:, :2])
    for wrapped in (gc.compile(f, backend="numpy"), gc.grad(f)):
        with pytest.raises(ShapeError) as e:
            wrapped(np.ones((3, 4)))
        assert f"{HERE}:{_line(f, 2)}" in str(e.value)
        assert "mul" in str(e.value) and "f64[4]" in str(e.value) and "f64[3,2]" in str(e.value)


def test_bad_reshape_and_index_errors():
    with pytest.raises(ShapeError, match=r"reshape.*\(2, 3\)"):
        gc.trace(lambda x: gc.reshape(x, (4, 2)), np.ones((2, 3)))
    with pytest.raises(ShapeError, match="out of bounds"):
        gc.trace(lambda x: x[5], np.ones(3))
    with pytest.raises(ShapeError, match="too many indices"):
        gc.trace(lambda x: x[0, 0], np.ones(3))
    with pytest.raises(ShapeError, match="negative slice steps"):
        gc.trace(lambda x: x[::-1], np.ones(3))
    with pytest.raises(ShapeError):
        gc.trace(lambda x: gc.sum(x, axis=2), np.ones((2, 3)))
    with pytest.raises(ShapeError, match="concat"):
        gc.trace(lambda a, b: gc.concatenate([a, b], axis=1), np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(ShapeError, match="matmul"):
        gc.trace(lambda a: a @ 2.0, np.ones(3))
    with pytest.raises(ShapeError, match="broadcast"):
        gc.trace(lambda x: gc.broadcast_to(x, (2, 2)), np.ones(3))


# ---- compiled functions: retrace, never a wrong answer -------------------------------------------
def test_compiled_function_retraces_for_new_shapes_and_dtypes():
    calls = []

    def f(x, y):
        calls.append(1)
        return gc.sum(x * y, axis=0)

    fc = gc.compile(f, backend="numpy")
    rng = np.random.default_rng(0)
    cases = [((3, 4), (4,), np.float32), ((3, 4), (4,), np.float32), ((5, 2), (2,), np.float32),
             ((3, 4), (4,), np.float64), ((2,), (2,), np.int64), ((3, 4), (3, 4), np.float32)]
    for sx, sy, dt in cases:
        x = (rng.standard_normal(sx) * 4).astype(dt)
        y = (rng.standard_normal(sy) * 4).astype(dt)
        out = fc(x, y)
        want = np.sum(x * y, axis=0)
        assert out.shape == want.shape and out.dtype == want.dtype, (sx, sy, dt)
        np.testing.assert_allclose(out, want, rtol=1e-5)
    assert len(calls) == 5  # the repeated signature was served from the cache


def test_compiled_function_with_python_float_and_array_signatures():
    fc = gc.compile(lambda x: x * 3.0 + 1.0)
    assert float(fc(2.0)) == 7.0
    out = fc(np.array([1.0, 2.0], np.float32))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [4.0, 7.0])
    assert float(fc(np.float64(0.5))) == 2.5


def test_calling_a_program_with_wrong_arguments_raises_signature_error():
    f = gc.compile(lambda x, y: x @ y, backend="numpy")
    entry = f.lower(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32))
    prog = entry.program
    out = prog(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32))
    np.testing.assert_array_equal(out[0], np.full((2, 4), 3.0, np.float32))
    with pytest.raises(SignatureError, match=r"argument 'x' must be f32\[2,3\]"):
        prog(np.ones((3, 3), np.float32), np.ones((3, 4), np.float32))
    with pytest.raises(SignatureError, match=r"argument 'y' must be f32\[3,4\], got float64"):
        prog(np.ones((2, 3), np.float32), np.ones((3, 4), np.float64))
    with pytest.raises(SignatureError, match="takes 2 arguments, got 1"):
        prog(np.ones((2, 3), np.float32))
    assert isinstance(SignatureError("x"), GraphcError)


def test_calling_an_interpreted_graph_with_wrong_arguments():
    g = gc.trace(lambda x: x + 1.0, np.ones(3))
    with pytest.raises(SignatureError):
        gc.interpret(g, np.ones(4))
    with pytest.raises(SignatureError):
        gc.interpret(g, np.ones(3, np.float32))


def test_unsupported_argument_types_are_clear():
    with pytest.raises(SignatureError, match="complex128"):
        gc.trace(lambda x: x, np.ones(2, np.complex128))
    with pytest.raises((TypeError, GraphcError), match="object"):
        gc.trace(lambda x: x, object())


# ---- traced values in Python control flow --------------------------------------------------------
def test_if_on_a_traced_value_raises_with_a_hint():
    def f(x):
        if x > 0:
            return x
        return -x
    for wrapped in (gc.compile(f), gc.grad(f), lambda x: gc.trace(f, x)):
        with pytest.raises(GraphcError) as e:
            wrapped(1.0)
        msg = str(e.value)
        assert "bool()" in msg and "traced" in msg
        assert e.value.hint and "gc.where" in e.value.hint and "hint:" in msg
        assert f"{HERE}:{_line(f)}" in msg


def test_float_and_numpy_conversion_of_a_traced_value_raise():
    with pytest.raises(GraphcError, match="float()"):
        gc.trace(lambda x: float(x) * 2, np.float64(1.0))
    with pytest.raises(GraphcError, match="numpy array"):
        gc.trace(lambda x: np.asarray(x), np.ones(2))
    with pytest.raises(GraphcError, match="index"):
        gc.trace(lambda x: [1, 2, 3][x], np.int64(1))


# ---- grad ----------------------------------------------------------------------------------------
def test_grad_of_a_non_scalar_function_is_a_clear_error():
    with pytest.raises(GraphcError) as e:
        gc.grad(lambda x: x * 2.0)(np.ones(3))
    msg = str(e.value)
    assert "scalar" in msg and "f64[3]" in msg
    assert e.value.hint and "sum" in e.value.hint


def test_grad_of_an_integer_function_or_argument_is_an_error():
    with pytest.raises(GraphcError, match="float scalar"):
        gc.grad(lambda x: gc.sum(x))(np.arange(3))
    with pytest.raises(GraphcError):
        gc.grad(lambda x, k: gc.sum(x * k), argnums=1)(np.ones(3), np.arange(3))
    with pytest.raises(GraphcError, match="argnums"):
        gc.grad(lambda x: gc.sum(x), argnums=2)(np.ones(3))


def test_grad_has_aux_needs_a_pair():
    v, g = gc.grad(lambda x: (gc.sum(x * x), x + 1.0), has_aux=True)(np.ones(2))
    np.testing.assert_array_equal(v, [2.0, 2.0])
    np.testing.assert_array_equal(g, [2.0, 2.0])
    with pytest.raises(GraphcError, match=r"\(value, aux\)"):
        gc.grad(lambda x: gc.sum(x), has_aux=True)(np.ones(2))


# ---- backends --------------------------------------------------------------------------------------
def test_unknown_backend_lists_the_available_ones():
    with pytest.raises(BackendError) as e:
        gc.compile(lambda x: x, backend="no-such-backend")
    msg = str(e.value)
    assert "no-such-backend" in msg and "numpy" in msg
    assert isinstance(e.value, GraphcError)


def test_runtime_error_in_generated_code_names_the_node(monkeypatch):
    # a lowering that generates code failing at run time (as a buggy backend rule would)
    monkeypatch.setitem(numpy_backend.LOWER, Op.TANH,
                        lambda n, a: f"np.tanh({a[0]}, casting='no-such-casting')")

    def f(x):
        h = x * 2.0
        return gc.tanh(h) + 1.0

    fc = gc.compile(f, backend=numpy_backend.NumpyBackend())
    with pytest.raises(GraphcError) as e:
        fc(np.ones(3))
    msg = str(e.value)
    assert "tanh" in msg and "ValueError" in msg
    assert e.value.node is not None and "tanh" in e.value.node
    assert f"{HERE}:{_line(f, 2)}" in msg
    assert e.value.stage.startswith("run")
    assert isinstance(e.value.__cause__, ValueError)
