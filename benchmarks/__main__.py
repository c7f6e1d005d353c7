"""python -m benchmarks [NAME ...] [--quick]: run the named benchmarks (all by default)."""
import importlib
import os
import sys

# OpenBLAS's idle worker threads spin for ~2^28 cycles (~0.1 s) after each BLAS call, taking
# a core from whatever runs next: in interleaved timing that halved the llvm backend's
# two-thread GEMM (55 vs 112 GFLOP/s at 1024) while numpy's own times did not change
# (128 GFLOP/s either way). Set before numpy is imported; an explicit setting wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from benchmarks import BENCHMARKS


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = [a for a in argv if not a.startswith("-")] or list(BENCHMARKS)
    flags = [a for a in argv if a.startswith("-")]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(BENCHMARKS)}",
              file=sys.stderr)
        return 2
    for name in names:
        print(f"== {name} ==")
        importlib.import_module(BENCHMARKS[name]).main(flags)
    return 0


if __name__ == "__main__":
    sys.exit(main())
