"""The `graphc` command line: draw, print and compile the stages of a model file.

    graphc viz    FILE.py[:FUNCTION] [--stage STAGE|all] [-o OUT.svg|.png|.dot]
    graphc show   FILE.py[:FUNCTION] [--stage STAGE|all]      the IR text of a stage
    graphc code   FILE.py[:FUNCTION] [--backend NAME]         the generated code
    graphc stages FILE.py[:FUNCTION]                          stages with node counts
    graphc compare   FILE.py[:FUNCTION] [--backends a,b] [--grad] [--draw OUT.svg]
                                         every backend vs the reference interpreter
    graphc gradcheck FILE.py[:FUNCTION] [--backends a,b]  gradients vs finite differences
    graphc demo   [--out DIR]                                 the built-in demo (out/)

Options shared by the FILE commands: --grad (wrap the function in gc.value_and_grad),
--argnums 0,1 (which arguments --grad differentiates), --backend NAME.

Model file convention
---------------------
A model file is a plain Python file. It gives example inputs for the functions to trace
in a module-level dict::

    EXAMPLES = {"loss": (W, b, x, y)}      # function name -> tuple of positional args

The arguments are what the function is called with: numpy arrays, numpy scalars, Python
floats, or pytrees (tuples/lists/dicts) of them; Python ints and bools stay static.
`FILE.py:FUNCTION` names the function to trace. Without `:FUNCTION`, the function is the
one named by a module-level `ENTRY = "name"`, else the first key of EXAMPLES.

`--grad` traces `gc.value_and_grad(fn, argnums)` instead of fn, so the `backward` stage
exists; by default argnums is every argument that is a float array (a numpy float array
or scalar, a Python float, or a pytree whose leaves are all such).

The file is loaded with importlib from its path, under a module name derived from the
file name, with the file's folder on sys.path (so it can import its siblings); its
`if __name__ == "__main__":` block does not run.

The model-file loading is in `graphc.cli_model`, the commands in `graphc.cli_commands`; this
module holds the parser, `main` (the console entry point) and the helpers that use the backend
registry (the CLI is the edge that may, see tests/core/test_deps.py).

Exit status: 0 on success; 2 for a mistake in what was given (missing file, function or
stage, bad option, an error graphc reports while tracing the model, an exception in the
model's code), printed as one `graphc: error: ...` message without a Python traceback;
1 for an internal graphc failure (a VerifyError, or an unexpected exception), and for
`compare` / `gradcheck` when a backend disagrees with the reference or a gradient is wrong
(a backend or autodiff bug).
"""
from __future__ import annotations

import argparse
import sys

from graphc import backends
from graphc.cli_commands import (  # noqa: F401 - the commands, re-exported
    _stages_for, cmd_code, cmd_compare, cmd_demo, cmd_gradcheck, cmd_show, cmd_stages,
    cmd_stats, cmd_viz)
from graphc.cli_model import (  # noqa: F401 - model-file loading, re-exported
    UsageError, _called_from_def, _describe, _load_target, _module_name, _on_sys_path,
    _running, build, check_argnums, float_argnums, load_module, resolve_function, split_target)
from graphc.errors import GraphcError, VerifyError
from graphc.pipeline import PASSES, STAGES

PROG = "graphc"
STAGE_HELP = {
    "traced": "the forward graph as traced from Python, grad markers included",
    "backward": "grad markers replaced by the derived backward graph (needs gradients)",
    "optimized": "after constant folding, CSE and dead-code elimination (what is compiled)",
}
FILE_HELP = "model file, FILE.py or FILE.py:FUNCTION (see the convention below)"
CONVENTION = """\
model file convention:
  A model file is a plain Python file. FILE.py:FUNCTION names the function to trace;
  example inputs come from a module-level dict
      EXAMPLES = {"function_name": (arg1, arg2, ...)}
  (a tuple of positional arguments: numpy arrays, numpy scalars, Python floats, or
  tuples/lists/dicts of them). Without :FUNCTION the function is the one named by a
  module-level ENTRY = "name", else the first key of EXAMPLES. --grad traces
  gc.value_and_grad(function, argnums) instead, so the backward stage exists; argnums
  defaults to every float-array argument. The file is imported from its path with its
  folder on sys.path; its __main__ block does not run.

stages:
""" + "\n".join(f"  {s:<10} {h}" for s, h in STAGE_HELP.items())



class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def parse_argnums(text: str) -> tuple[int, ...]:
    try:
        nums = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of "
                                         f"argument indices, e.g. 0,1") from None
    if not nums:
        raise argparse.ArgumentTypeError("empty argnums")
    return nums


# ---- the backend registry (this module is the edge that may import graphc.backends) ----------
def _backend_spec(ns):
    """--backends as a list of names: unknown names are a usage error, and so is a backend
    named explicitly that is not available (the default, every registered backend, lists
    unavailable ones in the table instead)."""
    if ns.backends is None:
        return None
    names = [b.strip() for b in ns.backends.split(",") if b.strip()]
    if not names:
        raise UsageError("--backends: empty list")
    registered = backends.names()
    unknown = [b for b in names if b not in registered and b != "reference"]
    if unknown:
        raise UsageError(f"--backends: unknown backend {unknown[0]!r}; registered: "
                         f"{', '.join(registered)}")
    avail = backends.available()
    for b in names:
        if b != "reference" and not avail[b][0]:
            raise UsageError(f"--backends: backend {b!r} is not available: {avail[b][1]}")
    return names


def cmd_devices(ns) -> int:
    """List OpenCL platforms and devices (the opencl backend's GRAPHC_OPENCL_DEVICE names
    one as P:D or by part of its name)."""
    from graphc.backends.opencl import describe_devices, select_device
    for line in describe_devices():
        print(line)
    d = select_device()
    print(f"default: {d.name.strip()}  (choose with GRAPHC_OPENCL_DEVICE=P:D or a name part)")
    return 0


# ---- the parser -------------------------------------------------------------------------------
def make_parser() -> argparse.ArgumentParser:
    backend_names = backends.names()
    parser = _Parser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="graphc: trace a NumPy-style Python function into a graph, derive its "
                    "backward graph, optimise it, generate code, and draw every stage.",
        epilog=CONVENTION + "\n\nexamples:\n"
               "  graphc viz examples/mlp.py:train_step --stage all -o out/train_step.svg\n"
               "  graphc viz examples/mlp.py:train_step --backend llvm --kernels\n"
               "  graphc show examples/lecture_graph.py:f --grad --stage backward\n"
               "  graphc code examples/mlp.py:train_step --backend numpy\n"
               "  graphc compare examples/cnn.py --draw out/divergence.svg\n"
               "  graphc gradcheck examples/cnn.py\n"
               "  graphc demo --out out/")
    from graphc import __version__
    parser.add_argument("--version", action="version", version=f"graphc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def file_command(name, help, description, stage_default=None, stage_all=False):
        p = sub.add_parser(name, help=help, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=CONVENTION)
        p.add_argument("target", metavar="FILE.py[:FUNCTION]", help=FILE_HELP)
        if stage_default is not None:
            choices = list(STAGES) + (["all"] if stage_all else [])
            p.add_argument("--stage", default=stage_default, choices=choices,
                           metavar="STAGE",
                           help=f"one of {', '.join(choices)} (default {stage_default})")
        p.add_argument("--grad", action="store_true",
                       help="trace gc.value_and_grad(FUNCTION) over every float-array "
                            "argument, so the backward stage exists")
        p.add_argument("--argnums", type=parse_argnums, default=None, metavar="I,J",
                       help="the arguments --grad differentiates, e.g. 0,1 (implies --grad)")
        p.add_argument("--backend", default="numpy", choices=backend_names, metavar="NAME",
                       help=f"code generator: {', '.join(backend_names)} (default numpy)")
        p.add_argument("--passes", default=None, metavar="-NAME,...",
                       help=f"turn passes off to measure them, e.g. -fusion,-cse "
                            f"(names: {', '.join(PASSES)})")
        return p

    p = file_command("viz", "draw a stage of a model's graph (SVG, PNG or DOT)",
                     "Draw one stage (or all) of FUNCTION's graph. Nodes are coloured by op "
                     "kind, edges carry shapes and dtypes, the backward part is dashed red.",
                     stage_default="optimized", stage_all=True)
    p.add_argument("-o", "--output", metavar="OUT.svg|png|dot", default=None,
                   help="picture to write, format from the suffix (default out/FUNCTION.svg); "
                        "with --stage all one file per stage, OUT_stem.<stage>.<suffix>")
    p.add_argument("--kernels", action="store_true",
                   help="draw the kernel IR of the backend's program instead (llvm, opencl): "
                        "loop nests as nested boxes, statements, the buffers they read/write")
    p.add_argument("--diff", metavar="BEFORE:AFTER", default=None,
                   help="draw what the passes between two stages did, e.g. simplified:fused "
                        "(added ops green, removed ops greyed, kernels as clusters)")
    p.set_defaults(func=cmd_viz)

    p = file_command("stats", "print nodes, kernels, FLOPs, bytes and peak memory per stage",
                     "Print a table per stage: ops, kernels (every op is one before fusion), "
                     "FLOPs, bytes moved (each kernel reads its inputs and writes its result "
                     "once) and peak memory. Use --passes=-fusion,-cse to measure a pass.")
    p.set_defaults(func=cmd_stats)

    p = file_command("show", "print the IR text of a stage",
                     "Print the text form of a stage of FUNCTION's graph (deterministic: "
                     "node names are counters, each line ends with the source line).",
                     stage_default="optimized", stage_all=True)
    p.set_defaults(func=cmd_show)

    p = file_command("code", "print the code a backend generates",
                     "Print the code the backend generates from the optimized graph, each "
                     "statement annotated with its graph node and source line.")
    p.set_defaults(func=cmd_code)

    p = file_command("stages", "list the stages with node counts",
                     "List the pipeline stages FUNCTION goes through, with node and op counts.")
    p.set_defaults(func=cmd_stages)

    def check_command(name, help, description):
        p = sub.add_parser(name, help=help, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=CONVENTION)
        p.add_argument("target", metavar="FILE.py[:FUNCTION]", help=FILE_HELP)
        p.add_argument("--backends", default=None, metavar="NAME,...",
                       help=f"backends to check (default every registered one: "
                            f"{', '.join(backend_names)})")
        p.add_argument("--argnums", type=parse_argnums, default=None, metavar="I,J",
                       help="the arguments to differentiate (default every float-array "
                            "argument)")
        return p

    p = check_command("compare", "run on every backend and compare with the reference",
                      "Run FUNCTION (and, for a scalar loss with float-array arguments or with "
                      "--grad, its gradients via gc.value_and_grad) on every backend and on the "
                      "reference interpreter (passes -fusion), and print per output the max "
                      "absolute and relative error, whether it is within the documented "
                      "tolerance (graphc/tolerances.py), compile time and median run time. When "
                      "a backend disagrees, the first kernel and op outside tolerance are "
                      "reported with their source line, and the exit status is 1.")
    p.add_argument("--grad", action="store_true",
                   help="also compare gradients (a non-scalar function is reduced by a fixed "
                        "random projection)")
    p.add_argument("--passes", default=None, metavar="-NAME,...",
                   help="passes to turn off for the backends (the reference always runs "
                        "-fusion)")
    p.add_argument("--repeat", type=int, default=5, metavar="N",
                   help="timed runs per backend; the median is printed (default 5)")
    p.add_argument("--draw", default=None, metavar="OUT.svg",
                   help="draw the compiled graph with the first divergent kernel and op "
                        "highlighted (.svg, .png or .dot)")
    p.set_defaults(func=cmd_compare)

    p = check_command("gradcheck", "check gradients against finite differences",
                      "Check the analytic gradient of every float argument (parameter) of "
                      "FUNCTION on every backend against central finite differences of the same "
                      "backend's forward function, in float64 where the backend supports it: "
                      "element by element for small tensors, along random unit directions for "
                      "every tensor. A function that does not return a float scalar is reduced "
                      "by a fixed random projection. Exit status 1 when a gradient is wrong.")
    p.add_argument("--directions", type=int, default=3, metavar="N",
                   help="random unit directions per tensor (default 3)")
    p.add_argument("--elementwise-max", type=int, default=64, metavar="N",
                   help="check tensors of up to N elements element by element (default 64)")
    p.add_argument("--float32", action="store_true",
                   help="keep the example inputs' own dtypes (default: cast floats to float64)")
    p.set_defaults(func=cmd_gradcheck)

    p = sub.add_parser("devices", help="list OpenCL platforms and devices",
                       description="List the OpenCL platforms and devices the opencl backend "
                                   "can run on, and the one it picks by default.")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("demo", help="run the built-in demo and draw its stages",
                       description="Trace the lecture example f(a, b) = (a + b) * (b + 1) and a "
                                   "small MLP with softmax cross-entropy through "
                                   "gc.value_and_grad, compile and run them, and draw every "
                                   "stage as SVG into --out.")
    p.add_argument("--out", default="out", metavar="DIR",
                   help="folder for the pictures (default out/)")
    p.add_argument("--backend", default="numpy", choices=backend_names, metavar="NAME",
                   help=f"code generator: {', '.join(backend_names)} (default numpy)")
    p.set_defaults(func=cmd_demo)
    return parser


def _error(message: str, code: int) -> int:
    lines = message.strip().splitlines() or ["?"]
    first = lines[0]
    if not first.startswith("[graphc"):
        first = f"{PROG}: error: {first}"
    sys.stdout.flush()
    print("\n".join([first] + lines[1:]), file=sys.stderr)
    return code


def main(argv=None) -> int:
    """Entry point of the `graphc` console script; returns the exit status (argparse
    exits by itself, with SystemExit, for --help and for malformed command lines)."""
    parser = make_parser()
    ns = parser.parse_args(argv)
    try:
        return ns.func(ns)
    except UsageError as e:
        return _error(str(e), 2)
    except VerifyError as e:
        return _error(f"{e}\n  (this is a graphc bug, please report it)", 1)
    except GraphcError as e:
        return _error(str(e), 2)
    except BrokenPipeError:  # `graphc show ... | head`
        return 0
    except KeyboardInterrupt:
        return _error("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
