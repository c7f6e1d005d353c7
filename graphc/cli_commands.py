"""The commands of the `graphc` command line (`graphc.cli` holds the parser, `main` and the
usage text): each `cmd_NAME(ns)` takes the parsed arguments and returns the exit status.
The commands that need the backend registry get it through `graphc.cli`, the edge that may
use it (tests/core/test_deps.py).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from graphc.cli_model import (UsageError, _load_target, _running, build, check_argnums)
from graphc.pipeline import STAGES


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
    if ns.kernels:
        return _viz_kernels(compiled, fname, out, ns)
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


def _viz_kernels(compiled, fname: str, out: Path, ns) -> int:
    """Draw the kernel IR of the backend's program: one cluster per kernel, loops nested."""
    from graphc.kernel_viz import kernels_to_dot
    from graphc.viz import render
    if ns.diff or ns.stage not in ("optimized", "scheduled"):
        raise UsageError("--kernels draws the compiled program's kernels: it takes no --diff "
                         "and no --stage other than optimized")
    kernels = getattr(compiled._entry().program, "kernels", None)
    if not kernels:
        raise UsageError(f"the {ns.backend} backend has no kernel IR to draw; "
                         f"use --backend llvm or --backend opencl")
    written = render(kernels_to_dot(kernels, f"{fname} ({ns.backend})"), out)
    print(f"kernels    {len(kernels):>4} kernels -> {written}")
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


def cmd_compare(ns) -> int:
    from graphc import compare as cmp
    from graphc.cli import _backend_spec
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
    from graphc.cli import _backend_spec
    path, fname, fn, args = _load_target(ns)
    spec = _backend_spec(ns)
    nums = ns.argnums if ns.argnums is not None else cmp.float_argnums(args)
    if not nums:
        raise UsageError(f"gradcheck: {fname} has no float-array argument to differentiate")
    check_argnums(nums, fname, args)
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


def cmd_demo(ns) -> int:
    from graphc.demo import run_demo
    run_demo(ns.out, backend=ns.backend)
    return 0
