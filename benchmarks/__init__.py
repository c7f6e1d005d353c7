"""graphc's benchmarks: `python -m benchmarks` runs them all, `python -m benchmarks NAME`
one of them (see BENCHMARKS). They measure; they are not tests and assert nothing about
time (the test suite runs them once with --quick, tiny sizes, to keep them working)."""

BENCHMARKS = {
    "passes": "benchmarks.passes",   # what simplification, CSE and fusion buy on NumPy
    "llvm": "benchmarks.workloads",  # workloads: numpy by hand vs graphc backends vs frameworks
    "device": "benchmarks.device_state",  # OpenCL TrainStep: state on the device vs numpy
}
