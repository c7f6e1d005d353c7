"""python -m benchmarks [NAME ...] [--quick]: run the named benchmarks (all by default)."""
import importlib
import sys

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
