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

Exit status: 0 on success; 2 for a mistake in what was given (missing file, function or
stage, bad option, an error graphc reports while tracing the model, an exception in the
model's code), printed as one `graphc: error: ...` message without a Python traceback;
1 for an internal graphc failure (a VerifyError, or an unexpected exception), and for
`compare` / `gradcheck` when a backend disagrees with the reference or a gradient is wrong
(a backend or autodiff bug).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import re
import sys
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

from graphc import backends
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


class UsageError(Exception):
    """A mistake in what the user gave: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ---- loading a model file ---------------------------------------------------------------------
def split_target(target: str) -> tuple[Path, str | None]:
    """'dir/model.py:loss' -> (Path('dir/model.py'), 'loss'); 'model.py' -> (path, None)."""
    head, sep, tail = target.rpartition(":")
    if sep and tail.isidentifier() and len(head) > 1:
        return Path(head), tail
    if sep and tail == "" and len(head) > 1:
        raise UsageError(f"{target!r}: empty function name after ':'")
    return Path(target), None


@contextlib.contextmanager
def _on_sys_path(folder: str):
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:
            pass


def _module_name(path: Path) -> str:
    name = re.sub(r"\W", "_", path.stem) or "model"
    if name[0].isdigit():
        name = "_" + name
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) != str(path):
        name = f"graphc_model_{name}"  # do not shadow an imported module (e.g. a 'numpy.py')
    return name


def load_module(path: Path):
    """Import a model file from its path (its folder on sys.path while it loads)."""
    if not path.exists():
        raise UsageError(f"no such file: {path}")
    if not path.is_file():
        raise UsageError(f"not a file: {path}")
    if path.suffix != ".py":
        raise UsageError(f"{path}: a model file must be a Python file (.py)")
    path = path.resolve()
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with _on_sys_path(str(path.parent)):
            spec.loader.exec_module(module)
    except GraphcError:
        sys.modules.pop(name, None)
        raise
    except Exception as e:
        sys.modules.pop(name, None)
        raise UsageError(f"loading {path.name} failed: {_describe(e, path)}") from None
    return module


def _describe(e: BaseException, path: Path | None = None) -> str:
    """'NameError: name 'x' is not defined (at model.py:12)': the innermost frame in `path`."""
    text = "".join(traceback.format_exception_only(type(e), e)).strip().replace("\n", " ")
    where = None
    for frame in traceback.extract_tb(e.__traceback__):
        if path is None or Path(frame.filename).resolve() == path.resolve():
            where = f"{Path(frame.filename).name}:{frame.lineno}"
    if isinstance(e, SyntaxError) and e.lineno:
        where = f"{Path(e.filename or '?').name}:{e.lineno}"
    return text + (f" (at {where})" if where else "")


def resolve_function(module, path: Path, fname: str | None):
    """(function name, function, example args tuple) by the model file convention."""
    examples = getattr(module, "EXAMPLES", None)
    if examples is None:
        raise UsageError(f"{path.name} has no module-level EXAMPLES dict "
                         f'(EXAMPLES = {{"function_name": (arg1, arg2, ...)}})')
    if not isinstance(examples, dict):
        raise UsageError(f"{path.name}: EXAMPLES must be a dict of function name -> tuple of "
                         f"args, not {type(examples).__name__}")
    if fname is None:
        fname = getattr(module, "ENTRY", None)
        if fname is None:
            if not examples:
                raise UsageError(f"{path.name}: EXAMPLES is empty; name a function with "
                                 f"{path.name}:FUNCTION")
            fname = next(iter(examples))
    fn = getattr(module, fname, None)
    if fn is None:
        known = [k for k in examples if callable(getattr(module, k, None))]
        raise UsageError(f"{path.name} has no function {fname!r}"
                         + (f"; functions with EXAMPLES: {', '.join(known)}" if known else ""))
    if not callable(fn):
        raise UsageError(f"{path.name}: {fname!r} is not a function")
    if fname not in examples:
        raise UsageError(f"{path.name}: EXAMPLES has no entry for {fname!r} "
                         f"(add EXAMPLES[{fname!r}] = (arg1, arg2, ...))")
    args = examples[fname]
    if not isinstance(args, tuple):
        args = (args,) if not isinstance(args, list) else tuple(args)
    return fname, fn, args


def _is_float_leaf(x) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, float):
        return True
    return isinstance(x, (np.ndarray, np.generic)) and np.issubdtype(np.asarray(x).dtype,
                                                                      np.floating)


def float_argnums(args: tuple) -> tuple[int, ...]:
    """Indices of the arguments that are float arrays (or pytrees of only float arrays)."""
    from graphc.frontends import pytree
    nums = []
    for i, a in enumerate(args):
        try:
            leaves = pytree.flatten(a)[0]
        except TypeError:
            continue
        if leaves and all(_is_float_leaf(x) for x in leaves):
            nums.append(i)
    return tuple(nums)


def parse_argnums(text: str) -> tuple[int, ...]:
    try:
        nums = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of "
                                         f"argument indices, e.g. 0,1") from None
    if not nums:
        raise argparse.ArgumentTypeError("empty argnums")
    return nums


def _called_from_def(vg, fn, path: Path):
    """Wrap `vg` in a function whose code claims to sit at fn's `def` line in the model file,
    so the grad markers it creates point there (not at graphc's own frames)."""
    code = getattr(fn, "__code__", None)
    line = code.co_firstlineno if code is not None else 1
    filename = code.co_filename if code is not None else str(path.resolve())
    name = fn.__name__ if getattr(fn, "__name__", "").isidentifier() else "entry"
    src = "\n" * (line - 1) + f"def {name}(*args): return vg(*args)\n"
    scope = {"vg": vg}
    exec(compile(src, filename, "exec"), scope)
    entry = scope[name]
    entry.__name__ = entry.__qualname__ = vg.__name__
    entry.__doc__ = vg.__doc__
    entry.__wrapped__ = vg  # inspect.signature (the input names) sees fn's parameters
    return entry


def build(ns):
    """Load the model, pick the function, wrap it for --grad, compile and lower it.
    Returns (compiled function, its name)."""
    import graphc as gc
    path, fname = split_target(ns.target)
    module = load_module(path)
    fname, fn, args = resolve_function(module, path, fname)
    if ns.grad or ns.argnums is not None:
        nums = ns.argnums if ns.argnums is not None else float_argnums(args)
        if not nums:
            raise UsageError(f"--grad: {fname} has no float-array argument to differentiate")
        for i in nums:
            if not -len(args) <= i < len(args):
                raise UsageError(f"--argnums {','.join(map(str, nums))}: {fname} takes "
                                 f"{len(args)} example arguments")
        fn = _called_from_def(gc.value_and_grad(fn, argnums=nums), fn, path)
    compiled = gc.compile(fn, backend=ns.backend, passes=ns.passes)
    try:
        with _on_sys_path(str(path.resolve().parent)):
            compiled.lower(*args)
    except GraphcError:
        raise
    except Exception as e:
        raise UsageError(f"tracing {fname} failed: {_describe(e, path)}") from None
    return compiled, fname


def _stages_for(compiled, stage: str) -> list[str]:
    have = list(compiled.stages)
    if stage == "all":
        return have
    if stage not in have:
        hint = " (trace with --grad to get one)" if stage == "backward" else ""
        raise UsageError(f"stage {stage!r} does not exist for this function{hint}; "
                         f"it has: {', '.join(have)}")
    return [stage]


# ---- commands ---------------------------------------------------------------------------------
def cmd_viz(ns) -> int:
    import graphc as gc
    compiled, fname = build(ns)
    out = Path(ns.output) if ns.output else Path("out") / f"{fname}.svg"
    if out.suffix.lower() not in (".svg", ".png", ".dot", ".gv"):
        raise UsageError(f"cannot draw to {out.name}: the output must end in .svg, .png or .dot")
    if ns.diff:
        before, _, after = ns.diff.partition(":")
        for st in (before, after):
            _stages_for(compiled, st)
        written = gc.draw(compiled, stage=after, path=out, diff_from=before)
        print(f"{before} -> {after} -> {written}")
        return 0
    stages = _stages_for(compiled, ns.stage)
    for stage in stages:
        path = out if ns.stage != "all" else out.with_name(f"{out.stem}.{stage}{out.suffix}")
        written = gc.draw(compiled, stage=stage, path=path)
        print(f"{stage:<10} {len(compiled.graph(stage).nodes):>4} nodes -> {written}")
    return 0


def cmd_stats(ns) -> int:
    from graphc.report import stats_table
    compiled, fname = build(ns)
    print(f"{fname}" + (f" (passes {ns.passes})" if ns.passes else ""))
    print(stats_table(compiled.stages))
    return 0


def cmd_show(ns) -> int:
    compiled, _ = build(ns)
    stages = _stages_for(compiled, ns.stage)
    for i, stage in enumerate(stages):
        if len(stages) > 1:
            print(("\n" if i else "") + f"# stage {stage}")
        print(compiled.graph(stage))
    return 0


def cmd_code(ns) -> int:
    compiled, _ = build(ns)
    print(compiled.source.rstrip("\n"))
    return 0


def cmd_stages(ns) -> int:
    compiled, fname = build(ns)
    print(f"{getattr(compiled, '__name__', fname)}: {len(compiled.stages)} stages")
    for stage, graph in compiled.stages.items():
        ops = Counter(n.op.value for n in graph.nodes)
        top = ", ".join(f"{op} {k}" for op, k in sorted(ops.items(), key=lambda t: (-t[1], t[0])))
        print(f"  {stage:<10} {len(graph.nodes):>4} nodes   {top}")
    missing = [s for s in STAGES if s not in compiled.stages]
    if "backward" in missing:
        print("  (no backward stage: the function takes no gradients; try --grad)")
    return 0


def _load_target(ns):
    """(model path, function name, function, example args) by the model file convention."""
    path, fname = split_target(ns.target)
    module = load_module(path)
    fname, fn, args = resolve_function(module, path, fname)
    return path, fname, fn, args


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


def _running(fname, path, call):
    """Run `call()`; an exception in the model's own code is a usage error (exit 2)."""
    try:
        with _on_sys_path(str(path.resolve().parent)):
            return call()
    except GraphcError:
        raise
    except Exception as e:
        raise UsageError(f"running {fname} failed: {_describe(e, path)}") from None


def cmd_compare(ns) -> int:
    from graphc import compare as cmp
    path, fname, fn, args = _load_target(ns)
    spec = _backend_spec(ns)
    if ns.draw and Path(ns.draw).suffix.lower() not in (".svg", ".png", ".dot", ".gv"):
        raise UsageError(f"cannot draw to {Path(ns.draw).name}: the output must end in .svg, "
                         f".png or .dot")
    grad = True if (ns.grad or ns.argnums is not None) else None
    results = _running(fname, path, lambda: cmp.compare(
        fn, args, spec, grad=grad, argnums=ns.argnums, repeat=ns.repeat, passes=ns.passes,
        diagnose=True))
    names = list(dict.fromkeys(r.backend for c in results for r in c.runs))
    print(f"compare {ns.target} on {', '.join(names)} vs the reference interpreter "
          f"(passes {cmp.REFERENCE_PASSES}); {ns.repeat} timed runs, median")
    first = None
    for c in results:
        print()
        print(c.table())
        for r in c.failures():
            print()
            if r.divergence is not None:
                print(r.divergence.report())
                first = first or r.divergence
            elif r.error:
                print(f"backend {r.backend!r} failed: {r.error}")
            else:
                print(f"backend {r.backend!r}: {r.diagnosis}")
    if ns.draw:
        if first is not None:
            written = first.draw(ns.draw)
            what = ", ".join(f"{n.op.value if n.op.value != 'fused' else 'kernel ' + n.attrs['name']}"
                             for n in first.highlight())
            print(f"\ndrew the {first.backend} graph with the divergence highlighted ({what}) "
                  f"-> {written}")
        else:
            b = next((r.backend for c in results for r in c.runs if r.available), None)
            be = results[0].backends.get(b)
            import graphc as gc
            compiled = gc.compile(results[-1].fn, backend=be if be is not None else "numpy",
                                  passes=ns.passes)
            _running(fname, path, lambda: compiled.lower(*args))
            written = gc.draw(compiled, path=ns.draw)
            print(f"\nno divergence to highlight; drew the optimized graph -> {written}")
    ok = all(c.ok for c in results)
    bad = sorted({r.backend for c in results for r in c.failures()})
    print("\n" + ("every backend agrees with the reference within tolerance" if ok else
                  f"DISAGREES with the reference: {', '.join(bad)}"))
    return 0 if ok else 1


def cmd_gradcheck(ns) -> int:
    from graphc import compare as cmp
    path, fname, fn, args = _load_target(ns)
    spec = _backend_spec(ns)
    nums = ns.argnums if ns.argnums is not None else cmp.float_argnums(args)
    if not nums:
        raise UsageError(f"gradcheck: {fname} has no float-array argument to differentiate")
    for i in nums:
        if not -len(args) <= i < len(args):
            raise UsageError(f"--argnums {','.join(map(str, nums))}: {fname} takes "
                             f"{len(args)} example arguments")
    res = _running(fname, path, lambda: cmp.gradcheck(
        fn, args, spec, argnums=nums, directions=ns.directions,
        elementwise_max=ns.elementwise_max, float64=not ns.float32))
    print(f"gradcheck {ns.target}: analytic gradients (gc.value_and_grad) vs central "
          f"finite differences")
    print(res.table())
    bad = [f"{r.backend}:{r.param}" for r in res.rows if not r.ok]
    print("\n" + ("every gradient agrees with finite differences" if not bad else
                  f"WRONG gradients: {', '.join(bad)}"))
    return 0 if not bad else 1


def cmd_devices(ns) -> int:
    """List OpenCL platforms and devices (the opencl backend's GRAPHC_OPENCL_DEVICE names
    one as P:D or by part of its name)."""
    from graphc.backends.opencl import describe_devices, select_device
    for line in describe_devices():
        print(line)
    d = select_device()
    print(f"default: {d.name.strip()}  (choose with GRAPHC_OPENCL_DEVICE=P:D or a name part)")
    return 0


def cmd_demo(ns) -> int:
    from graphc.demo import run_demo
    run_demo(ns.out, backend=ns.backend)
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
