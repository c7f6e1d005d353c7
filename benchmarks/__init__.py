"""graphc's benchmarks: `python -m benchmarks` runs them all, `python -m benchmarks NAME`
one of them (see BENCHMARKS). They measure; they are not tests and assert nothing about
time (tests/core/test_fusion.py runs `passes` once with tiny sizes to keep it working)."""

BENCHMARKS = {
    "passes": "benchmarks.passes",   # what simplification, CSE and fusion buy on NumPy
    "llvm": "benchmarks.workloads",  # workloads: numpy by hand vs graphc numpy vs graphc llvm
}
