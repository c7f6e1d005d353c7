"""The OpenCL backend against the reference interpreter: every op (the numpy backend's case
table, all cases of one dtype in one program so PoCL builds once per dtype), gradients in
f32 and f64, odd sizes, broadcasting, special values, integer division, RAND bit for bit,
examples/mlp.py's training step, build errors, device selection and the program cache.

The backend is not registered yet: it is used as an object, gc.compile(fn, backend=BE)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.errors import BackendError
from graphc.interpret import interpret
from graphc.ops import Op, ref_rand
from graphc.types import DType

opencl = pytest.importorskip("graphc.backends.opencl")
pytest.importorskip("pyopencl")
from test_numpy_backend import CASES, _check_equal  # noqa: E402
from compare_helpers import mlp_steps_match_numpy  # noqa: E402

BE = opencl.OpenCLBackend()
if not BE.available()[0]:
    pytest.skip(f"no OpenCL device: {BE.available()[1]}", allow_module_level=True)
ROOT = Path(__file__).resolve().parents[2]
DTYPES = [np.float32, np.float64, np.int32, np.int64]


def test_backend_is_available():
    ok, why = BE.available()
    assert ok and "OpenCL device" in why


def test_cases_cover_every_op():
    assert set(CASES) == set(Op) - {Op.INPUT, Op.CONST, Op.GRAD}


def _cases_for(dt):
    return [(f"{op.name}-{name}", fn, makers) for op, cases in CASES.items()
            for name, fn, makers, dts in cases if dt in dts]


@pytest.mark.parametrize("dt", DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_op_case_equals_interpreter(dt):
    """All of CASES for one dtype as one function (one OpenCL program)."""
    cases = _cases_for(dt)
    rng = np.random.default_rng(int(np.dtype(dt).num))
    args = [tuple(m(rng, dt) for m in makers) for _, _, makers in cases]
    flat = tuple(a for group in args for a in group)
    sizes = [len(g) for g in args]

    def everything(*xs):
        outs, at = [], 0
        for (_, fn, _), n in zip(cases, sizes):
            outs.append(fn(*xs[at:at + n]))
            at += n
        return tuple(outs)
    got = gc.compile(everything, backend=BE)(*flat)
    for (name, fn, _), a, g in zip(cases, args, got):
        want = interpret(gc.trace(fn, *a), *a)[0]
        try:
            _check_equal(g, want)
        except AssertionError as e:
            raise AssertionError(f"case {name} ({np.dtype(dt).name}): {e}") from None


def test_odd_sizes_and_broadcasting():
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((n, 3)).astype(np.float32) for n in (1, 17, 1000)]
    ws = [rng.standard_normal((3, n)).astype(np.float32) for n in (1, 17, 1000)]
    v = rng.standard_normal((1, 3)).astype(np.float32)

    def f(x1, x2, x3, w1, w2, w3, v):
        outs = []
        for x, w in ((x1, w1), (x2, w2), (x3, w3)):
            y = gc.exp(gc.tanh(x * 0.5)) - 1.0 + v
            outs += [y, gc.sum(y, axis=0), gc.max(x, axis=1), x @ w, gc.pad(x, ((1, 0), (2, 1)))]
        return tuple(outs)
    args = (*xs, *ws, v)
    got = gc.compile(f, backend=BE)(*args)
    want = interpret(gc.trace(f, *args), *args)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=2e-5)


def test_special_values_integer_division_and_layouts():
    nan, inf = np.nan, np.inf
    x = np.array([nan, 1.0, -0.0, 0.0, inf, -inf, -2.5, nan])
    y = np.array([1.0, nan, 0.0, -1.0, nan, 2.0, 3.0, nan])
    a = np.array([-7, 7, -7, 7, 5, 0, -2**31, -2**31, 9], np.int32)
    b = np.array([2, 2, -2, -2, 0, 0, -1, 1, 3], np.int32)
    m = np.arange(15.0).reshape(5, 3).T.copy().T   # Fortran order
    s = np.arange(24.0).reshape(4, 6)[::2, 1::2]   # a strided view (2, 3)

    def f(x, y, a, b, m, s):
        return (gc.maximum(x, y), gc.minimum(x, y), gc.sign(x), gc.abs(x), x != y, x == y,
                x < y, gc.max(gc.reshape(x, (2, 4)), axis=1), x.astype(bool),
                gc.divide(a, b), gc.sign(a), gc.abs(a), -a, a.astype(np.float64),
                gc.divide(a.astype(np.int64), b.astype(np.int64)), m * 2.0 + 1.0, s @ m.T, x)
    args = (x, y, a, b, m, s)
    got = gc.compile(f, backend=BE)(*args)
    want = interpret(gc.trace(f, *args), *args)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert got[-1] is not x


def test_rand_is_bit_exact():
    shapes = [((7,), "float32"), ((3, 4), "float64"), ((300, 301), "float32"), ((17,), "float64")]
    keys = (np.int64(0), np.int64(-5), np.int64(2**40 + 3), np.int32(-9))

    def f(k0, k1, k2, k3):
        return tuple(gc.random_uniform(k, s, dtype=d) for k, (s, d) in zip((k0, k1, k2, k3), shapes))
    got = gc.compile(f, backend=BE)(*keys)
    for g, k, (s, d) in zip(got, keys, shapes):
        want = ref_rand(int(k), s, DType[d])
        assert g.dtype == want.dtype
        np.testing.assert_array_equal(g, want)


def test_wrong_arguments_are_rejected_and_empty_arrays_work():
    x, w = np.zeros((0, 3)), np.ones((3, 2))
    f = lambda x, w: (x * 2.0, gc.sum(x, axis=0), x @ w, gc.pad(x, ((1, 1), (0, 0))))  # noqa: E731
    fc = gc.compile(f, backend=BE)
    got = fc(x, w)
    want = interpret(gc.trace(f, x, w), x, w)
    for g, v in zip(got, want):
        assert g.shape == v.shape
        np.testing.assert_array_equal(g, v)
    prog = fc.lower(x, w).program
    with pytest.raises(gc.SignatureError):
        prog(np.zeros((1, 3)), w)
    with pytest.raises(gc.SignatureError):
        prog(x, w.astype(np.float32))


# ---- source, build errors, devices, cache -------------------------------------------------------------
def test_source_is_annotated_opencl_c():
    fc = gc.compile(lambda x, w: gc.sum(gc.maximum(x @ w, 0.0), axis=1), backend=BE)
    x = np.ones((2, 3), np.float32)
    fc(x, np.ones((3, 4), np.float32))
    src = fc.source
    for n in fc.graph("optimized").nodes:
        if n.op is Op.FUSED:
            assert f"/* kernel {n.attrs['name']} ({n.attrs['kind']}), from:" in src
            assert f"__kernel void {n.attrs['name']}(__global const float* in0" in src
    assert "get_global_id(0)" in src and "test_opencl.py:" in src and "matmul" in src


def test_build_error_surfaces_the_log():
    with pytest.raises(BackendError) as e:
        BE.compiler.compile("__kernel void broken(__global float* out) { out[0] = nope; }")
    msg = str(e.value)
    assert "OpenCL build failed" in msg and "nope" in msg and "--- source ---" in msg


def test_device_selection(monkeypatch):
    import pyopencl as cl
    first = cl.get_platforms()[0].get_devices()[0]
    monkeypatch.setenv("GRAPHC_OPENCL_DEVICE", "0:0")
    assert opencl.select_device() == first
    monkeypatch.setenv("GRAPHC_OPENCL_DEVICE", first.name.strip()[-6:].lower())
    assert opencl.select_device() == first
    monkeypatch.setenv("GRAPHC_OPENCL_DEVICE", "no such device")
    with pytest.raises(BackendError, match="no OpenCL device matches"):
        opencl.select_device()
    ok, why = opencl.OpenCLBackend().available()
    assert not ok and "no such device" in why
    assert opencl.OpenCLBackend(device="0:0").available()[0]  # the argument wins
    monkeypatch.setattr(cl, "get_platforms", lambda: [])
    with pytest.raises(BackendError, match='pip install "pyopencl\\[pocl\\]"'):
        opencl.select_device()
    assert not opencl.OpenCLBackend().available()[0]


def test_disk_cache_skips_the_build(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    src = f"__kernel void twice(__global float* x) {{ x[get_global_id(0)] *= 2.0f; }} /* {tmp_path} */"
    builds = opencl.STATS["builds"]
    BE.compiler.compile(src)
    assert opencl.STATS["builds"] == builds + 1 and list((tmp_path / "opencl").glob("*.bin"))
    monkeypatch.setattr(opencl, "_PROGRAMS", {})  # a new process: nothing in memory
    hits = opencl.STATS["disk_hits"]
    prog = BE.compiler.compile(src)
    assert opencl.STATS["builds"] == builds + 1 and opencl.STATS["disk_hits"] == hits + 1
    import pyopencl as cl
    x = np.arange(4, dtype=np.float32)
    buf = cl.Buffer(BE.context, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=x)
    prog.twice(BE.queue, (4,), None, buf)
    out = np.empty_like(x)
    cl.enqueue_copy(BE.queue, out, buf)
    np.testing.assert_array_equal(out, x * 2)


def test_cli_lists_devices(capsys):
    from graphc.cli import main
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "platform 0:" in out and "0:0" in out and "default:" in out


# ---- work-group reductions ----------------------------------------------------------------------------
@pytest.fixture
def grouped_on(monkeypatch):
    """Work-group reductions are on for GPUs only; these tests force them on (PoCL too)."""
    monkeypatch.setattr(opencl.OpenCLBackend, "group_reductions", True)


def test_work_group_reductions_are_off_on_a_cpu_device_by_default():
    import pyopencl as cl
    x = np.arange(100003, dtype=np.float32)
    fc = gc.compile(lambda x: gc.sum(x), backend=BE)
    fc(x)
    is_gpu = "GPU" in cl.device_type.to_string(BE.device.type)
    assert ("reqd_work_group_size" in fc.source) == is_gpu


def _grouped_kernels(fc, *args):
    """The kernel signatures the source renders as work-group reductions."""
    fc(*args)
    return [line for line in fc.source.splitlines() if "reqd_work_group_size" in line]


@pytest.mark.parametrize("force", [False, True], ids=["default", "forced"])
@pytest.mark.parametrize("dt", [np.float32, np.float64, np.int64], ids=lambda d: np.dtype(d).name)
def test_full_reductions_match_numpy(dt, force, monkeypatch, grouped_on):
    """sum, max and mean to a scalar; big sizes take the work-group path by default, and
    `forced` takes it for every size (fewer elements than work-items, odd remainders)."""
    if force:
        monkeypatch.setattr(opencl.OpenCLRenderer, "wg_min_extent", 1)
        monkeypatch.setattr(opencl.OpenCLRenderer, "wg_min_ratio", 1)
    rng = np.random.default_rng(11)
    f = lambda x: (gc.sum(x), gc.max(x), gc.mean(x))  # noqa: E731
    for n in (1, 3, 1000, 100003):
        if dt == np.int64:
            x = rng.integers(-2**40, 2**40, n)
        else:
            x = (rng.standard_normal(n) * 10).astype(dt)
            x[rng.integers(0, n)] = 1e3   # the max is somewhere in the middle
        fc = gc.compile(f, backend=BE)
        grouped = _grouped_kernels(fc, x)
        assert bool(grouped) == (force or n >= opencl.OpenCLRenderer.wg_min_extent), (n, grouped)
        s, m, mean = fc(x)
        assert s.dtype == x.dtype and m.dtype == x.dtype
        if dt == np.int64:
            assert s == x.sum() and m == x.max()   # integer sums are exact
            np.testing.assert_allclose(mean, x.mean(), rtol=1e-12)
        else:
            tol = 1e-5 if dt == np.float32 else 1e-12
            ref = x.astype(np.float64)
            scale = np.abs(ref).sum()
            assert abs(float(s) - ref.sum()) <= tol * scale, (n, s, ref.sum())
            assert m == x.max()
            assert abs(float(mean) - ref.mean()) <= tol * scale / n


def test_grouped_max_propagates_nan_and_handles_all_negative(grouped_on):
    rng = np.random.default_rng(5)
    x = -np.abs(rng.standard_normal(5000)).astype(np.float32) - 1
    fc = gc.compile(lambda x: gc.max(x), backend=BE)
    assert _grouped_kernels(fc, x)
    assert fc(x) == x.max()
    for at in (0, 1, 255, 256, 4999):
        y = x.copy()
        y[at] = np.nan
        assert np.isnan(fc(y)), at


def test_grouped_reduction_with_epilogue_and_partial_outputs(grouped_on):
    rng = np.random.default_rng(12)
    x = rng.standard_normal(100003).astype(np.float32)
    fc = gc.compile(lambda x: gc.log(gc.sum(gc.exp(x))), backend=BE)
    assert _grouped_kernels(fc, x)
    want = np.log(np.sum(np.exp(x.astype(np.float64))))
    np.testing.assert_allclose(fc(x), want, rtol=1e-5)
    # a long axis reduced to a few outputs: one work-group per output, with an epilogue
    m = rng.standard_normal((3, 50000))
    g = gc.compile(lambda m: (gc.mean(m, axis=1), gc.max(m.T, axis=0) * 2.0), backend=BE)
    assert len(_grouped_kernels(g, m)) == 2
    mean, mx = g(m)
    np.testing.assert_allclose(mean, m.mean(axis=1), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(mx, m.max(axis=1) * 2.0)
    i = rng.integers(-1000, 1000, (2, 3, 4000))
    h = gc.compile(lambda i: gc.sum(i, axis=(0, 2)), backend=BE)
    assert _grouped_kernels(h, i)
    np.testing.assert_array_equal(h(i), i.sum(axis=(0, 2)))


def test_grouped_reductions_keep_the_mlp_train_step(monkeypatch, grouped_on):
    """Every eligible reduce kernel of the MLP step as a work-group reduction still matches."""
    monkeypatch.setattr(opencl.OpenCLRenderer, "wg_min_extent", 1)
    monkeypatch.setattr(opencl.OpenCLRenderer, "wg_min_ratio", 1)
    mlp_steps_match_numpy(BE)
