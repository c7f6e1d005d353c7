"""Backend comparison: prove the backends agree with the reference interpreter, find the first
node where one does not, and check gradients against finite differences.

    compare(fn, args)             every registered backend vs the reference, forward and
                                  (for a scalar loss) gradients: a table per function
    find_divergence(fn, args, b)  the first kernel, in execution order, whose value on backend
                                  `b` is outside tolerance, and the first op inside it that is
                                  wrong on exact inputs (op, shapes, the user's line)
    gradcheck(fn, args)           analytic gradients vs central finite differences, per
                                  parameter and backend (float64 where the backend has it)

The reference is `gc.compile(fn, backend="reference", passes="-fusion")`: the interpreter,
op by op, on the traced (or backward) graph after simplification but without fusion.
Tolerances come from `graphc.tolerances` (one table per dtype and op class).

Backends are resolved when called, by name through the registry (`graphc.backends`, imported
lazily as `gc.compile` does), so backends registered later (llvm, opencl) are compared without
any change here; a backend object can be passed instead of a name.

The divergence finder lives in `graphc.divergence`, the gradient check in `graphc.gradcheck`,
and what they share with this module (backends, arguments, tolerance cones) in
`graphc.compare_base`; every name is re-exported here, so `from graphc.compare import X` works.
The divergence finder's method is described in `graphc.divergence`.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from graphc import tolerances as T
from graphc.compare_base import (  # noqa: F401 - re-exported: `from graphc.compare import X`
    BackendChoice, Cone, _is_float_leaf, _located, _num, _registry, _tol_for, backend_names,
    cone_classes, cones, flat_arrays, float_argnums, resolve_backends, scalarized,
    supports_float64)
from graphc.divergence import (  # noqa: F401 - re-exported
    Divergence, _fmt_diff, _isolate, _probe, _steps, find_divergence)
from graphc.errors import GraphcError
from graphc.frontends.api import Compiled, _arg_names, value_and_grad
from graphc.gradcheck import (  # noqa: F401 - re-exported
    GRADCHECK, GradCheck, GradRow, _gradcheck_one, _has_leaves, _to_float64, gradcheck)
from graphc.ir import Graph

REFERENCE_PASSES = "-fusion"   # the oracle runs op by op


# ---- arguments and outputs -----------------------------------------------------------------------
def grad_function(fn: Callable, args, argnums=None) -> tuple[Callable, tuple[int, ...], bool]:
    """(value_and_grad of fn (scalarized if needed) over argnums, the argnums, scalar?)."""
    nums = tuple(argnums) if argnums is not None else float_argnums(args)
    if not nums:
        raise GraphcError(f"{getattr(fn, '__name__', 'fn')} has no float-array argument to "
                          f"differentiate", stage="compare")
    f, scalar = scalarized(fn, args)
    vg = value_and_grad(f, argnums=nums)
    return _located(vg, fn), nums, scalar


def output_labels(graph: Graph, fn: Callable | None = None, argnums=None) -> list[str]:
    """Readable names of a graph's outputs: 'out', 'out[1]', and for value_and_grad graphs
    'value' and 'grad params.W1'."""
    paths = list(graph.output_names or [f"{i}" for i in range(len(graph.outputs))])
    if argnums is None:
        return ["out" if p == "out" else "out" + "".join(f"[{q}]" if q.isdigit() else f".{q}"
                                                        for q in p.split(".")) for p in paths]
    names = _arg_names(fn, max(argnums) + 1) if fn is not None else [f"arg{i}" for i in
                                                                     range(max(argnums) + 1)]
    labels = []
    for p in paths:
        parts = p.split(".")
        if parts[0] == "0":
            labels.append("value")
        elif parts[0] == "1" and len(parts) >= 2 and parts[1].isdigit() and \
                int(parts[1]) < len(argnums):
            rest = ".".join(parts[2:])
            labels.append(f"grad {names[argnums[int(parts[1])]]}" + (f".{rest}" if rest else ""))
        else:
            labels.append(p)
    return labels


# ---- comparing outputs ---------------------------------------------------------------------------
@dataclass
class OutputCheck:
    label: str
    tol: T.Tol
    diff: T.Diff | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.diff is not None and self.diff.ok


@dataclass
class BackendRun:
    backend: str
    available: bool = True
    why: str = ""
    compile_s: float = float("nan")
    run_s: float = float("nan")
    checks: list[OutputCheck] = field(default_factory=list)
    error: str = ""
    divergence: "Divergence | None" = None
    diagnosis: str = ""        # why there is no divergence report, when there is none
    graph: Graph | None = None  # what the backend compiled (the optimized stage)

    @property
    def ok(self) -> bool:
        return self.available and not self.error and all(c.ok for c in self.checks)


@dataclass
class Comparison:
    """One function on every backend vs the reference; `table()` prints it."""
    title: str
    fn: Callable
    args: tuple
    labels: list[str]
    ref_compile_s: float
    ref_run_s: float
    runs: list[BackendRun]
    backends: dict[str, Any] = field(default_factory=dict)
    passes: str | None = None

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs if r.available)

    def failures(self) -> list[BackendRun]:
        return [r for r in self.runs if r.available and not r.ok]

    def table(self) -> str:
        w = max([len("output")] + [len(lb) for lb in self.labels])
        head = (f"  {'output':<{w}}  {'backend':<10}{'max abs':>10}{'max rel':>10}  "
                f"{'tolerance (rtol/atol)':<26}{'ok':<5}{'compile ms':>11}{'run ms':>9}")
        lines = [f"{self.title}", head, "  " + "-" * (len(head) - 2)]
        lines.append(f"  {'(all)':<{w}}  {'reference':<10}{'':>10}{'':>10}  {'(the oracle)':<26}"
                     f"{'':<5}{self.ref_compile_s * 1e3:>11.1f}{self.ref_run_s * 1e3:>9.2f}")
        for r in self.runs:
            if not r.available:
                lines.append(f"  {'(all)':<{w}}  {r.backend:<10}  unavailable: {r.why}")
                continue
            if r.error:
                lines.append(f"  {'(all)':<{w}}  {r.backend:<10}  FAILED: "
                             f"{r.error.splitlines()[0] if r.error else ''}")
                continue
            for i, c in enumerate(r.checks):
                d = c.diff
                times = (f"{r.compile_s * 1e3:>11.1f}{r.run_s * 1e3:>9.2f}" if i == 0 else "")
                mark = "yes" if c.ok else "NO"
                note = f"  ({d.bad}/{d.size} outside{'; ' + d.note if d.note else ''})" \
                    if d is not None and not d.ok else ""
                lines.append(f"  {c.label:<{w}}  {r.backend:<10}{_num(d.max_abs):>10}"
                             f"{_num(d.max_rel):>10}  {str(c.tol):<26}{mark:<5}{times}{note}")
        return "\n".join(l.rstrip() for l in lines)


def _median_time(call, repeat: int) -> float:
    ts = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        call()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def compare_function(fn: Callable, args, backends=None, *, tol=None, repeat: int = 5,
                     passes: str | None = None, title: str | None = None, argnums=None,
                     diagnose: bool = False) -> Comparison:
    """Run `fn(*args)` on every backend (see `resolve_backends`) and on the reference; compare
    every output. `tol`: None (each output's class from what it depends on), a class name
    ('transcendental', ...) or a `Tol`. `argnums` only names value_and_grad outputs.
    `diagnose`: run `find_divergence` for every backend that disagrees."""
    args = tuple(args)
    ref = Compiled(fn, "reference", passes=REFERENCE_PASSES)
    e_ref = ref.lower(*args)
    arrays = flat_arrays(args)
    want = e_ref.program(*arrays)
    ref_run = _median_time(lambda: e_ref.program(*arrays), min(repeat, 3))
    g_ref = e_ref.stages.get("backward", e_ref.stages["traced"])
    cone_of = cones(g_ref)
    tols = [_tol_for(o, cone_of, tol) for o in g_ref.outputs]
    labels = output_labels(e_ref.traced.graph, fn, argnums)
    runs, objs = [], {}
    for choice in resolve_backends(backends):
        run = BackendRun(choice.name, choice.available, choice.why)
        runs.append(run)
        if not choice.available:
            continue
        objs[choice.name] = choice.backend
        try:
            c = Compiled(fn, choice.backend, passes=passes)
            entry = c.lower(*args)
            run.graph = entry.stages["optimized"]
            run.compile_s = sum(entry.times.values())
            got = entry.program(*arrays)
            run.run_s = _median_time(lambda: entry.program(*arrays), repeat)
        except Exception as e:  # a backend that cannot compile or run the function disagrees
            run.error = f"{type(e).__name__}: {e}"
            continue
        for lb, g, w, t in zip(labels, got, want, tols):
            run.checks.append(OutputCheck(lb, t, T.diff(g, w, t)))
        if diagnose and not run.ok:
            try:
                run.divergence = find_divergence(fn, args, choice.backend, passes=passes)
            except Exception as e:  # the diagnosis must not hide the comparison
                run.diagnosis = f"the divergence finder failed: {type(e).__name__}: {e}"
            else:
                if run.divergence is None:
                    run.diagnosis = ("every kernel and output agrees when the graph is probed; "
                                     "the difference depends on the run (state, threads?)")
    name = getattr(fn, "__name__", "fn")
    return Comparison(title or name, fn, args, labels, sum(e_ref.times.values()), ref_run, runs,
                      objs, passes)


def compare(fn: Callable, args, backends=None, *, grad: bool | None = None, argnums=None,
            repeat: int = 5, passes: str | None = None, tol=None,
            diagnose: bool = False) -> list[Comparison]:
    """The forward comparison of `fn`, then (grad=True, or grad=None and fn returns a float
    scalar and has float-array arguments) the comparison of gc.value_and_grad(fn, argnums)."""
    args = tuple(args)
    name = getattr(fn, "__name__", "fn")
    out = [compare_function(fn, args, backends, tol=tol, repeat=repeat, passes=passes,
                            title=f"forward: {name}", diagnose=diagnose)]
    if grad is None:
        from graphc.frontends.api import trace
        g = trace(fn, *args)
        grad = (len(g.outputs) == 1 and g.outputs[0].shape == () and g.outputs[0].dtype.is_float
                and bool(argnums or float_argnums(args)))
    if grad:
        vg, nums, scalar = grad_function(fn, args, argnums)
        what = name if scalar else f"{name} (projected to a scalar)"
        out.append(compare_function(vg, args, backends, tol=tol, repeat=repeat, passes=passes,
                                    argnums=nums, diagnose=diagnose,
                                    title=f"gradients: value_and_grad({what}, argnums="
                                          f"{','.join(map(str, nums))})"))
    return out
