"""Shared pytest configuration: the differential fuzzer's example count, and `tests/` on
sys.path so test modules can import `compare_helpers`."""
import os


def pytest_addoption(parser):
    parser.addoption("--fuzz-examples", type=int, default=None, metavar="N",
                     help="examples for the differential fuzzer (tests/backends/test_fuzz.py); "
                          "same as GRAPHC_FUZZ_EXAMPLES=N (default: a small fixed-seed run)")


def pytest_configure(config):
    n = config.getoption("--fuzz-examples")
    if n is not None:
        os.environ["GRAPHC_FUZZ_EXAMPLES"] = str(n)
