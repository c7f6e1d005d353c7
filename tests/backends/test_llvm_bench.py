"""benchmarks/workloads.py (`python -m benchmarks llvm`) keeps running: tiny sizes, one
round. It checks every graphc result against the hand-written NumPy before timing; this
asserts nothing about time."""
import sys
from pathlib import Path

import pytest

pytest.importorskip("graphc.backends.llvm")
ROOT = Path(__file__).resolve().parents[2]


def test_workloads_benchmark_runs_quick(capsys):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import workloads as bench
    rows = bench.main([], quick=True)
    out = capsys.readouterr().out
    names = list(dict.fromkeys(r.workload for r in rows))
    assert len(names) == 9
    for w in names:
        assert [r.impl for r in rows if r.workload == w] == list(bench.IMPLS)
        assert w in out
    assert all(r.median_s > 0 for r in rows)
    assert "from disk cache" in out
