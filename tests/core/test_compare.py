"""graphc.compare and graphc.tolerances: the comparison finds a deliberately broken backend,
the divergence finder names the exact node (op, the line in this file, its kernel), gradcheck
catches a wrong VJP rule, and the `graphc compare` / `graphc gradcheck` commands."""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
import graphc.backends.numpy as numpy_backend
from graphc import backends
from graphc import compare as C
from graphc import tolerances as T
from graphc.ops import Op
from graphc.passes import autodiff
from graphc.types import DType

from test_cli import run  # the CLI in-process: (exit status, stdout, stderr)

ROOT = Path(__file__).resolve().parents[2]
CNN = ROOT / "examples" / "cnn.py"
HERE = os.path.basename(__file__)


# ---- a deliberately broken backend -------------------------------------------------------------
def _bad_tanh(n, a):
    # tanh off by 0.1%: a plausible "fast approximation" bug
    return f"np.multiply(np.tanh({a[0]}), {numpy_backend._np_dtype(n.dtype)}(1.001))"


class BuggyBackend(numpy_backend.NumpyBackend):
    """The numpy backend with one LOWER entry replaced while it renders (so the real numpy
    backend is untouched)."""
    name = "buggy"

    def render(self, graph):
        saved = numpy_backend.LOWER[Op.TANH]
        numpy_backend.LOWER[Op.TANH] = _bad_tanh
        try:
            return super().render(graph)
        finally:
            numpy_backend.LOWER[Op.TANH] = saved


def model(w, b, x):
    h = x @ w + b
    a = gc.exp(h * 0.5)
    t = gc.tanh(a - 1.0)  # THE TANH
    return gc.sum(t * t + a) / x.shape[0]


def _line(marker: str) -> int:
    return next(i for i, l in enumerate(Path(__file__).read_text().splitlines(), 1)
                if l.rstrip().endswith(marker) and "def " not in l)


TANH_LINE = _line("# THE TANH")


def _args(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((4, 3)).astype(dtype) * 0.5, rng.standard_normal(3).astype(dtype),
            rng.standard_normal((5, 4)).astype(dtype))


# ---- tolerances -------------------------------------------------------------------------------
def test_tolerance_table_covers_every_dtype_and_op_class():
    for dt in DType:
        for cls in T.OP_CLASSES:
            t = T.tolerance(dt, cls)
            assert t.reason and t.rtol >= 0 and t.atol >= 0
            if not dt.is_float or cls == "exact":
                assert t.rtol == t.atol == 0
    for op in set(Op) - T.UNCLASSIFIED:
        assert T.op_class(op) in T.OP_CLASSES, op
    with pytest.raises(ValueError):
        T.op_class(Op.FUSED)
    # classes tighten with the dtype and loosen with composition
    for cls in T.OP_CLASSES[1:]:
        assert T.tolerance("float64", cls).rtol < T.tolerance("float32", cls).rtol
        assert T.tolerance("float32", cls).rtol <= T.tolerance("float32", "composite").rtol
    assert T.cone_class([Op.ADD, Op.RESHAPE]) == "arith"
    assert T.cone_class([Op.ADD, Op.EXP]) == "composite"
    assert T.cone_class([Op.PAD, Op.MAX]) == "exact"
    assert "FMA" in T.table() and "composite" in T.table()


def test_every_tolerance_class_in_use_is_documented():
    """The classes the comparison assigns to real graphs (the examples' gradients) exist."""
    args = _args()
    vg, _, _ = C.grad_function(model, args)
    g = gc.compile(vg).lower(*args).stages["optimized"]
    cone_of = C.cones(g)
    used = {(t.dtype, t.op_class) for n in g.nodes for t in [cone_of[id(n)].tol(n)]}
    assert used and all(k in T.TOLERANCES for k in used)


def test_a_value_gets_the_tolerance_of_what_it_is_computed_from():
    def f(x, y):
        s = gc.sin(x)                     # float32 rounding
        wide = s.astype(np.float64)       # carries float32's error into float64
        return wide * 2.0, gc.exp(y), (s > 0).astype(np.int32), gc.reshape(y, (3, 1))

    g = gc.trace(f, np.ones(3, np.float32), np.ones(3))
    cone_of = C.cones(g)
    tols = [cone_of[id(o)].tol(o) for o in g.outputs]
    assert [(t.dtype, t.op_class) for t in tols] == [
        ("float32", "composite"), ("float64", "transcendental"), ("int32", "transcendental"),
        ("float64", "exact")]
    assert tols[2].rtol == tols[2].atol == 0 == tols[3].rtol


def test_diff_semantics():
    t = T.tolerance("float32", "arith")
    assert T.diff(np.float32([1, np.nan, np.inf]), np.float32([1, np.nan, np.inf]), t).ok
    d = T.diff(np.float32([1, 0, -np.inf]), np.float32([1, np.nan, np.inf]), t)
    assert not d.ok and d.bad == 2 and "NaN missing" in d.note
    assert not T.diff(np.zeros(3, np.float32), np.zeros(4, np.float32), t).ok
    assert not T.diff(np.zeros(3, np.float64), np.zeros(3, np.float32), t).ok
    assert T.diff(np.float32([1 + 5e-7]), np.float32([1]), t).ok
    assert not T.diff(np.float32([1 + 5e-6]), np.float32([1]), t).ok
    d = T.diff(np.int32([1, 2, 3]), np.int32([1, 2, 4]), T.tolerance("int32", "composite"))
    assert not d.ok and d.bad == 1 and d.max_abs == 1
    assert T.diff(np.array([True]), np.array([True]), T.tolerance("bool", "exact")).ok


# ---- compare and the divergence finder ------------------------------------------------------------
def test_compare_every_backend_agrees_on_a_model():
    results = C.compare(model, _args(), repeat=1)
    assert [c.title.split(":")[0] for c in results] == ["forward", "gradients"]
    for c in results:
        assert c.ok, c.table()
        assert {r.backend for r in c.runs} == set(backends.names())
    table = results[1].table()
    for label in ("value", "grad w", "grad b", "grad x", "reference", "yes"):
        assert label in table


def test_compare_reports_the_broken_backend():
    results = C.compare(model, _args(), ["numpy", BuggyBackend()], repeat=1, diagnose=True)
    fwd, grads = results
    assert not fwd.ok and not grads.ok
    runs = {r.backend: r for r in fwd.runs}
    assert runs["numpy"].ok and not runs["buggy"].ok
    assert "NO" in fwd.table()
    assert runs["buggy"].divergence is not None and runs["numpy"].divergence is None
    assert [r.backend for r in grads.failures()] == ["buggy"]


@pytest.mark.parametrize("passes", [None, "-fusion"])
def test_divergence_finder_names_the_node_its_line_and_kernel(passes, tmp_path):
    args = _args()
    d = C.find_divergence(model, args, BuggyBackend(), passes=passes)
    assert d is not None
    assert d.op == "tanh" and d.node.op is Op.TANH
    assert os.path.basename(d.loc.file) == HERE and d.loc.line == TANH_LINE
    assert not d.loc.backward
    assert d.node_diff is not None and not d.node_diff.ok
    assert d.node_diff.max_rel == pytest.approx(1e-3, rel=0.05)   # exactly the injected bug
    if passes is None:
        assert d.step.op is Op.FUSED and d.kernel == d.step.attrs["name"]
        assert any(m is d.node for m in d.step.attrs["body"].nodes)
    else:
        assert d.kernel is None and d.step is d.node
    report = d.report()
    assert f"{HERE}:{TANH_LINE}" in report and "tanh" in report and "buggy" in report
    if passes is None:
        assert f"kernel {d.kernel}" in report and "<-- here" in report
    # the picture highlights the kernel and the op, and renders (valid DOT)
    dot = Path(d.draw(tmp_path / "div.dot")).read_text()
    assert dot.count("penwidth=4") >= (2 if passes is None else 1)
    svg = Path(d.draw(tmp_path / "div.svg"))
    assert ET.parse(svg).getroot().tag.endswith("svg")


def test_divergence_finder_on_the_gradient_graph_and_a_compiled_function():
    args = _args()
    vg, _, _ = C.grad_function(model, args)
    d = C.find_divergence(gc.compile(vg, backend=BuggyBackend()), args)
    assert d is not None and d.op == "tanh" and d.loc.line == TANH_LINE
    # the same function on the real numpy backend has no divergence
    assert C.find_divergence(vg, args, "numpy") is None
    assert C.find_divergence(model, args, "numpy", passes="-fusion") is None


def test_a_bug_only_in_the_backward_ops_is_found_in_the_backward_part():
    """sin appears only in the backward graph of cos: a broken sin shows up there, marked
    (grad), at the line of the cos."""
    class BadSin(numpy_backend.NumpyBackend):
        name = "badsin"

        def render(self, graph):
            saved = numpy_backend.LOWER[Op.SIN]
            numpy_backend.LOWER[Op.SIN] = lambda n, a: f"np.negative(np.sin({a[0]}))"
            try:
                return super().render(graph)
            finally:
                numpy_backend.LOWER[Op.SIN] = saved

    def f(x):
        return gc.sum(gc.cos(x) * x)  # THE COS

    x = np.linspace(-1, 1, 7)
    fwd, grads = C.compare(f, (x,), [BadSin()], repeat=1)
    assert fwd.ok and not grads.ok
    d = C.find_divergence(grads.fn, (x,), BadSin())
    assert d.op == "sin" and d.loc.backward and d.loc.line == _line("# THE COS")


def test_compare_handles_pytrees_ints_and_unavailable_backends(monkeypatch):
    def f(p, n):
        return {"y": p["w"] * 2.0, "k": (p["w"] > 0).astype(np.int32) + n}, p["w"].sum()

    args = ({"w": np.arange(-2, 3, dtype=np.float64)}, np.int32(3))
    fwd, grads = C.compare(f, args, ["numpy"], grad=True, repeat=1)
    assert fwd.ok and grads.ok
    assert fwd.labels == ["out[0].y", "out[0].k", "out[1]"]
    assert "projected" in grads.title
    # an unavailable backend is reported, not silently dropped
    monkeypatch.setitem(backends.REGISTRY, "ghost", "graphc.backends.no_such_module:X")
    (c,) = C.compare(f, args, ["numpy", "ghost"], grad=False, repeat=1)
    ghost = [r for r in c.runs if r.backend == "ghost"][0]
    assert not ghost.available and "unavailable" in c.table()
    with pytest.raises(gc.GraphcError, match="unknown backend"):
        C.resolve_backends("numpy,nosuch")


# ---- gradcheck ----------------------------------------------------------------------------------
def test_gradcheck_passes_on_a_model_and_checks_large_tensors_by_direction():
    rng = np.random.default_rng(3)
    args = (rng.standard_normal((10, 9)).astype(np.float32), rng.standard_normal(9).astype(np.float32),
            rng.standard_normal((5, 10)).astype(np.float32))
    res = C.gradcheck(model, args)
    assert res.ok, res.table()
    rows = {r.param: r for r in res.rows}
    assert set(rows) == {"w", "b", "x"}
    assert rows["w"].max_err is None and rows["w"].dir_err < 1e-6     # 90 elements: directions
    assert rows["b"].max_err is not None and rows["b"].max_err < 1e-6
    assert all(r.dtype == "float64" for r in res.rows)                # cast to float64


def test_gradcheck_detects_a_wrong_vjp(monkeypatch):
    args = _args(np.float64)
    assert C.gradcheck(model, args, ["numpy"]).ok
    # d tanh = 1 - tanh^2; the broken rule forgets the square
    monkeypatch.setitem(autodiff.VJP, Op.TANH, lambda g, o, x: (
        autodiff.A(Op.MUL, g, autodiff.A(Op.SUB, autodiff._s(1, o), o)),))
    res = C.gradcheck(model, args, ["numpy"])
    assert not res.ok
    bad = {r.param for r in res.rows if not r.ok}
    assert bad == {"w", "b", "x"}     # all three reach the loss through the tanh
    assert "NO" in res.table()
    monkeypatch.undo()
    assert C.gradcheck(model, args, ["numpy"]).ok


def test_gradcheck_float32_backend_and_non_scalar_functions():
    class F32Only(numpy_backend.NumpyBackend):
        name = "f32only"
        dtypes = (DType.float32, DType.int32, DType.int64, DType.bool)

    def logits(w, x):                 # not a scalar: projected
        return gc.tanh(x @ w)

    rng = np.random.default_rng(0)
    args = (rng.standard_normal((3, 2)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32))
    res = C.gradcheck(logits, args, [F32Only(), "numpy"])
    assert res.ok, res.table()
    assert {(r.backend, r.dtype) for r in res.rows} == {("f32only", "float32"), ("numpy", "float64")}


# ---- the CLI ------------------------------------------------------------------------------------
def test_cli_compare_on_the_cnn(capsys):
    # numpy only: the CNN on every backend is test_parity's example test (compiling it cold
    # costs seconds per backend); every backend through compare() is tested above
    code, out, err = run(["compare", CNN, "--repeat", "1", "--backends", "numpy"], capsys)
    assert code == 0, out + err
    assert "forward: loss" in out and "gradients: value_and_grad(loss" in out
    for needle in ("max abs", "max rel", "tolerance", "compile ms", "run ms", "grad params.conv_w",
                   "every backend agrees", " numpy ", "reference"):
        assert needle in out


def test_cli_gradcheck_on_the_cnn(capsys):
    # numpy only: gradcheck on every backend is tested above on a smaller model
    code, out, err = run(["gradcheck", CNN, "--backends", "numpy"], capsys)
    assert code == 0, out + err
    for needle in ("params.conv_w", "params.fc_w", "(4, 1, 3, 3)", "max error", "dir error",
                   "float64", "every gradient agrees"):
        assert needle in out
    assert " NO" not in out


@pytest.fixture
def buggy_registered(monkeypatch):
    monkeypatch.setitem(backends.REGISTRY, "buggy", f"{__name__}:BuggyBackend")
    monkeypatch.setattr(backends, "_instances", dict(backends._instances))
    return "buggy"


def test_cli_compare_reports_and_draws_the_divergence(buggy_registered, tmp_path, capsys):
    model_file = tmp_path / "m.py"
    model_file.write_text(
        "import numpy as np\nimport graphc as gc\n\n"
        "def f(w, x):\n"
        "    h = x @ w\n"
        "    return gc.sum(gc.tanh(h) * 2.0)\n\n"
        "EXAMPLES = {'f': (np.ones((3, 2), np.float32) * 0.3, np.ones((4, 3), np.float32))}\n")
    out_dot = tmp_path / "div.dot"
    code, out, err = run(["compare", model_file, "--backends", "numpy,buggy", "--repeat", "1",
                          "--draw", out_dot], capsys)
    assert code == 1, out + err
    assert "DISAGREES with the reference: buggy" in out
    assert "divergence on backend 'buggy'" in out and "m.py:6" in out and "tanh" in out
    assert out_dot.exists() and "penwidth=4" in out_dot.read_text()
    # the same file on numpy alone agrees, and draws without a highlight
    code, out, err = run(["compare", model_file, "--backends", "numpy", "--repeat", "1",
                          "--draw", out_dot], capsys)
    assert code == 0 and "no divergence to highlight" in out


@pytest.mark.parametrize("args, needle", [
    (["compare", CNN, "--backends", "nosuch"], "unknown backend 'nosuch'"),
    (["compare", CNN, "--draw", "x.jpg"], "cannot draw to x.jpg"),
    (["gradcheck", f"{CNN}:nope"], "no function 'nope'"),
    (["gradcheck", CNN, "--argnums", "7"], "takes 3 example arguments"),
])
def test_cli_compare_and_gradcheck_usage_errors(args, needle, capsys):
    code, out, err = run(args, capsys)
    assert code == 2, out + err
    assert needle in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["compare", "gradcheck"])
def test_cli_help(command, capsys):
    code, out, _ = run([command, "--help"], capsys)
    assert code == 0 and "--backends" in out and "EXAMPLES" in out
