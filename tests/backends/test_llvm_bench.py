"""benchmarks/workloads.py (`python -m benchmarks llvm`) keeps running: tiny sizes, one
round. It checks every implementation's result against the hand-written NumPy before timing;
this asserts nothing about time. PyTorch, JAX and tinygrad are optional: where they import,
their rows must have run; where not, the rows say so and the run goes on."""
import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("graphc.backends.llvm")
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import others, timing  # noqa: E402
from benchmarks import workloads as bench  # noqa: E402


def test_workloads_benchmark_runs_quick(capsys):
    rows = bench.main([], quick=True)
    out = capsys.readouterr().out
    names = list(dict.fromkeys(r.workload for r in rows))
    assert len(names) == 9
    for w in names:
        copy = [timing.COPY] if w.startswith("W4") else []
        assert [r.impl for r in rows if r.workload == w] == list(bench.IMPLS) + copy
        assert w in out
    ran = {"numpy by hand", "graphc numpy", "graphc llvm"}
    from graphc import backends
    if backends.available()["opencl"][0]:
        ran.add("graphc opencl")
    for impl in others.FRAMEWORKS:
        if importlib.util.find_spec(others.PACKAGES[impl]) is not None:
            ran.add(others.IMPLS[impl])
        else:
            assert all(r.note.startswith("not installed") for r in rows
                       if r.impl == others.IMPLS[impl])
    for r in rows:
        if r.impl in ran:
            assert r.median_s is not None and r.median_s > 0, (r.workload, r.impl, r.note)
    if "tinygrad CL" in ran:  # on its OpenCL device, not its CPU one
        assert "tinygrad CL: tinygrad" in out and " on CL: " in out
    assert "from disk cache" in out
    copies = [r for r in rows if r.impl == timing.COPY]
    assert len(copies) == 2 and all(r.median_s > 0 and "GB/s" in r.note for r in copies)
    assert out.count("against a copy of its bytes") == 2


def test_impl_choice_and_a_missing_framework(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    monkeypatch.setattr(others, "_status", {})
    rows = bench.main(["--quick", "--only=gemm 8", "--impl=torch,llvm"])
    out = capsys.readouterr().out
    assert [(r.workload, r.impl) for r in rows] == [
        ("gemm 8", "numpy by hand"), ("gemm 8", "graphc llvm"), ("gemm 8", "torch eager")]
    llvm, torch = rows[1], rows[2]
    assert llvm.median_s > 0
    assert torch.median_s is None and torch.note.startswith("not installed")
    assert "not installed" in out


def test_unknown_impl_is_refused(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--impl=llvm,cuda"])
    assert "unknown implementation(s) cuda" in capsys.readouterr().err


def _write_stat(tmp_path, busy, me):
    user, system, idle, iowait, irq, steal = busy
    (tmp_path / "stat").write_text(
        f"cpu  {user} 0 {system} {idle} {iowait} {irq} 0 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    utime, stime, cutime, cstime = me
    fields = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, utime, stime, cutime, cstime, 20, 0]
    (tmp_path / "self").write_text("4242 (py thon) R " + " ".join(map(str, fields)) + "\n")


def test_cpu_meter_counts_only_other_processes(tmp_path):
    _write_stat(tmp_path, (100, 50, 1000, 10, 5, 7), (30, 10, 0, 0))
    meter = timing.CpuMeter(str(tmp_path / "stat"), str(tmp_path / "self"))
    assert meter.works
    t0 = meter.ticks()
    # 80 busy ticks more (idle, iowait and steal do not count), 30 of them this process's
    _write_stat(tmp_path, (150, 80, 1500, 60, 5, 107), (50, 15, 5, 0))
    t1 = meter.ticks()
    assert meter.seconds(t0, t1) == pytest.approx(50 / meter.hz)


def test_cpu_meter_without_proc_measures_nothing(tmp_path):
    meter = timing.CpuMeter(str(tmp_path / "missing"), str(tmp_path / "missing"))
    assert not meter.works and meter.seconds(meter.ticks(), meter.ticks()) == 0.0


def test_noise_note():
    assert timing.noise_note(0.7, 1.0) == "other processes used 0.7 cores meanwhile"
    assert timing.noise_note(0.1, 1.0) == ""   # quiet enough
    assert timing.noise_note(0.3, 0.05) == ""  # a few ticks: too short to tell
