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

How the divergence finder works, for any backend: take the graph the backend compiled (the
`optimized` stage: kernels, or plain ops with passes="-fusion"), build a *probe* graph whose
outputs are every kernel's result (its memory plan redone, so nothing is overwritten), compile
the probe with the backend, run it, and compare each result with the interpreter's value for
the same node of the same graph, in execution order. For the first kernel outside tolerance,
each prefix of its body (the kernel cut off after op j, still one fused kernel) is compiled
and run on the interpreter's values of the kernel's inputs: the first op whose prefix is wrong
is the culprit. If every prefix is right on exact inputs, the kernel only amplified small
upstream differences, and the report says so.
"""
from __future__ import annotations

import importlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from graphc import tolerances as T
from graphc.errors import BackendError, GraphcError
from graphc.frontends import pytree
from graphc.frontends.api import Compiled, _arg_names, get_backend, value_and_grad
from graphc.interpret import interpret
from graphc.ir import Graph, Node, apply, at_loc, input_node
from graphc.ops import Op
from graphc.passes.fusion import kernel_kind
from graphc.passes.schedule import schedule
from graphc.printer import format_node, node_names

REFERENCE_PASSES = "-fusion"   # the oracle runs op by op


# ---- backends ----------------------------------------------------------------------------------
def _registry():
    return importlib.import_module("graphc.backends")  # lazily: the core never imports it


def backend_names() -> list[str]:
    """Every registered backend name (`graphc.backends.names()`)."""
    return list(_registry().names())


@dataclass
class BackendChoice:
    name: str
    backend: Any = None        # None when unavailable
    why: str = ""              # why it is unavailable

    @property
    def available(self) -> bool:
        return self.backend is not None


def resolve_backends(spec=None) -> list[BackendChoice]:
    """None -> every registered backend; "numpy,llvm" or a list of names and/or backend
    objects. Unknown names raise BackendError; unavailable ones come back with their reason."""
    if spec is None:
        spec = backend_names()
    elif isinstance(spec, str):
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    elif not isinstance(spec, (list, tuple)):
        spec = [spec]
    reg = _registry()
    status = None
    out = []
    for b in spec:
        if not isinstance(b, str):
            out.append(BackendChoice(getattr(b, "name", type(b).__name__), b))
            continue
        if b == "reference":
            out.append(BackendChoice(b, get_backend(b)))
            continue
        if b not in reg.names():
            raise BackendError(f"unknown backend {b!r}; registered: {', '.join(reg.names())}",
                               stage="compare")
        status = reg.available() if status is None else status
        ok, why = status.get(b, (False, "not registered"))
        out.append(BackendChoice(b, reg.get(b)) if ok else BackendChoice(b, None, why))
    return out


def supports_float64(backend) -> bool:
    """Backends may declare `dtypes` (DTypes or names they run; without it, all of them) or
    set `fp64 = False` (an OpenCL device without cl_khr_fp64)."""
    if getattr(backend, "fp64", True) is False:
        return False
    dts = getattr(backend, "dtypes", None)
    if dts is None:
        return True
    return any(getattr(d, "name", d) == "float64" for d in dts)


# ---- arguments and outputs -----------------------------------------------------------------------
def flat_arrays(args) -> list[np.ndarray]:
    """The arrays a compiled program takes for `args` (as Compiled.__call__ passes them)."""
    leaves = pytree.flatten(tuple(args))[0]
    return [np.asarray(x, dtype=np.float64) if type(x) is float else np.asarray(x) for x in leaves]


def _is_float_leaf(x) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, float):
        return True
    return isinstance(x, (np.ndarray, np.generic)) and np.asarray(x).dtype.kind == "f"


def float_argnums(args) -> tuple[int, ...]:
    """Arguments that are float arrays (or pytrees of only float arrays): the parameters."""
    nums = []
    for i, a in enumerate(args):
        try:
            leaves = pytree.flatten(a)[0]
        except GraphcError:
            continue
        if leaves and all(_is_float_leaf(x) for x in leaves):
            nums.append(i)
    return tuple(nums)


def _located(wrapper: Callable, fn: Callable) -> Callable:
    """`wrapper`, with a code object that claims to sit at fn's `def` line, so the nodes it
    creates itself (grad markers, projections) point at the user's function, not here."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return wrapper
    name = fn.__name__ if getattr(fn, "__name__", "").isidentifier() else "entry"
    src = "\n" * (code.co_firstlineno - 1) + f"def {name}(*args): return _w(*args)\n"
    scope = {"_w": wrapper}
    exec(compile(src, code.co_filename, "exec"), scope)  # noqa: S102 - a one-line trampoline
    entry = scope[name]
    entry.__name__ = entry.__qualname__ = getattr(wrapper, "__name__", name)
    entry.__wrapped__ = fn  # the input names are fn's parameter names
    return entry


def scalarized(fn: Callable, args) -> tuple[Callable, bool]:
    """(a float-scalar function of the same arguments, whether fn was one already). A function
    with other outputs is reduced by a fixed random projection of its float outputs,
    sum_i sum(out_i * W_i), whose gradient is the VJP of fn with cotangents W_i."""
    from graphc.frontends.api import trace
    g = trace(fn, *args)
    outs = [o for o in g.outputs if o.dtype.is_float]
    if len(g.outputs) == 1 and g.outputs[0].shape == () and g.outputs[0].dtype.is_float:
        return fn, True
    if not outs:
        raise GraphcError(f"{getattr(fn, '__name__', 'fn')} has no float output to "
                          f"differentiate", stage="compare")
    rng = np.random.default_rng(1234)
    weights = [rng.standard_normal(o.shape).astype(o.dtype.np) for o in g.outputs]

    def projected(*a):
        from graphc.frontends import numpy_api as gnp
        from graphc.frontends.tensor import lift
        leaves = pytree.flatten(fn(*a))[0]
        total = None
        for leaf, w, o in zip(leaves, weights, g.outputs):
            if not o.dtype.is_float:
                continue
            term = gnp.sum(lift(leaf) * w)
            total = term if total is None else total + term
        return total

    projected.__name__ = f"{getattr(fn, '__name__', 'fn')}_projected"
    return _located(projected, fn), False


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
@dataclass(frozen=True)
class Cone:
    """What a value's accuracy depends on: the tolerance class of the ops it is computed from
    ('exact' when none rounds, the class of the single rounding op when there is one, else
    'composite'), and the least precise float dtype any of those ops rounds in (a float32
    value cast to float64 carries float32's error)."""
    op_class: str
    dtype: str | None      # None: no rounding op

    def tol(self, node: Node, op_class: str | None = None) -> T.Tol:
        dt = node.dtype.name
        if node.dtype.is_float and self.dtype == "float32":
            dt = "float32"
        return T.tolerance(dt, op_class or self.op_class)


def cones(graph: Graph) -> dict[int, Cone]:
    """{id(node): Cone} for every node of `graph` (fused kernels' bodies flattened)."""
    info: dict[int, tuple[frozenset, frozenset]] = {}
    out: dict[int, Cone] = {}
    for n in graph.nodes:
        acc: set = set()
        dts: set = set()
        for i in n.inputs:
            a, d = info[id(i)]
            acc |= a
            dts |= d
        own = (n.attrs["body"].nodes if n.op is Op.FUSED else [n])
        for m in own:
            if m.op in (Op.INPUT, Op.CONST, Op.GRAD):
                continue
            c = T.op_class(m.op)
            if c != "exact":
                acc.add((c, id(m)))
                if m.dtype.is_float:
                    dts.add(m.dtype.name)
        if len(acc) > 1:
            acc = {("composite", 0)}
        info[id(n)] = (frozenset(acc), frozenset(dts))
        out[id(n)] = Cone(next(iter(acc))[0] if acc else "exact",
                          "float32" if "float32" in dts else ("float64" if dts else None))
    return out


def cone_classes(graph: Graph) -> dict[int, str]:
    """{id(node): tolerance class of its value} (see `Cone`)."""
    return {k: c.op_class for k, c in cones(graph).items()}


def _tol_for(node: Node, cone_of: dict[int, Cone], tol) -> T.Tol:
    if isinstance(tol, T.Tol):
        return tol
    return cone_of[id(node)].tol(node, tol)


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


def _num(x: float) -> str:
    if x == 0:
        return "0"
    if not np.isfinite(x):
        return str(x)
    return f"{x:.1e}"


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


# ---- the divergence finder -------------------------------------------------------------------------
@dataclass
class Divergence:
    """The first value, in execution order, that a backend computes outside tolerance."""
    backend: str
    graph: Graph               # the graph the backend compiled (the optimized stage)
    step: Node | None          # the kernel (fused node), or the op when unfused
    step_index: int
    steps: int
    step_diff: T.Diff | None
    step_tol: T.Tol | None
    node: Node | None          # the first wrong op (inside the kernel), None if none alone
    node_diff: T.Diff | None = None
    node_tol: T.Tol | None = None
    body: Graph | None = None  # the kernel's body, when fused
    note: str = ""

    @property
    def kernel(self) -> str | None:
        if self.step is not None and self.step.op is Op.FUSED:
            return self.step.attrs["name"]
        return None

    @property
    def op(self) -> str | None:
        return self.node.op.value if self.node is not None else None

    @property
    def loc(self):
        n = self.node if self.node is not None else self.step
        return n.loc if n is not None else None

    def highlight(self) -> list[Node]:
        return [n for n in (self.step, self.node) if n is not None]

    def draw(self, path) -> Any:
        """The compiled graph with the kernel and the op drawn with a thick red border."""
        from graphc.viz import draw
        return draw(self.graph, path=path, highlight=self.highlight())

    def report(self) -> str:
        lines = [f"divergence on backend {self.backend!r}: "
                 + ("first value outside tolerance, in execution order" if self.step is not None
                    else "no single value")]
        if self.step is not None:
            names = node_names(self.graph)
            where = f"kernel {self.kernel} ({self.step.attrs['kind']})" if self.kernel \
                else f"op {self.step.op.value}"
            lines.append(f"  {where}: step {self.step_index + 1} of {self.steps}")
            lines.append(f"    {format_node(self.step, names)}")
            if self.step.loc:
                lines.append(f"    result at {self.step.loc}")
            lines.append(f"    error: {_fmt_diff(self.step_diff, self.step_tol)}")
        if self.node is not None:
            n = self.node
            ins = ", ".join(str(i.type) for i in n.inputs)
            inside = f"first wrong op inside kernel {self.kernel}" if self.kernel \
                else "the op itself"
            lines.append(f"  {inside} (run alone on the reference's inputs): "
                         f"{n.op.value}({ins}) -> {n.type}")
            if n.loc is not None:
                lines.append(f"    at {n.loc}" + (f"  ({n.loc.full})" if n.loc.full else ""))
            else:
                lines.append("    (no source line recorded)")
            lines.append(f"    error: {_fmt_diff(self.node_diff, self.node_tol)}")
            if self.body is not None:
                ops = [m.op.value + (" <-- here" if m is n else "")
                       for m in self.body.nodes if m.op not in (Op.INPUT, Op.CONST)]
                lines.append(f"    kernel body: {', '.join(ops)}")
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)

    __str__ = report


def _fmt_diff(d: T.Diff | None, t: T.Tol | None) -> str:
    if d is None:
        return "?"
    s = f"max abs {_num(d.max_abs)}, max rel {_num(d.max_rel)} ({d.bad} of {d.size} elements " \
        f"outside) > tolerance {t}"
    return s + (f"; {d.note}" if d.note else "")


def _probe(graph: Graph, outputs: Sequence[Node]) -> Graph:
    """`graph` with `outputs` as its outputs; a fused graph gets a fresh memory plan (every
    probed result is an output, so no block is reused while someone still reads it)."""
    g = Graph(graph.inputs, tuple(outputs), f"{graph.name}_probe")
    if any(n.op is Op.FUSED for n in outputs):
        g = schedule(g)
    return g


def _steps(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes if n.op not in (Op.INPUT, Op.CONST)]


def _isolate(step: Node, inputs: list[np.ndarray], backend) -> tuple[Node | None, T.Diff | None,
                                                                        T.Tol | None]:
    """The first op of `step` that the backend computes outside tolerance from exact inputs:
    each prefix of a kernel's body (cut after op j) is compiled as one kernel and run."""
    new_in = [input_node(f"in{i}", x.shape, x.dtype) for i, x in enumerate(step.inputs)]
    if step.op is not Op.FUSED:
        alone = step.replace(inputs=tuple(new_in))
        g = Graph(tuple(new_in), (alone,), f"probe_{step.op.value}")
        got = backend.compile(g)(*inputs)[0]
        want = interpret(g, *inputs)[0]
        t = cones(g)[id(alone)].tol(alone)
        d = T.diff(got, want, t)
        return (step, d, t) if not d.ok else (None, None, None)
    body: Graph = step.attrs["body"]
    cone_of = cones(body)
    _, env = interpret(body, *inputs, keep=True)
    for j in _steps(body):
        sub = Graph(body.inputs, (j,), step.attrs["name"])
        with at_loc(step.loc):
            k = apply(Op.FUSED, *new_in, body=sub, kind=kernel_kind(sub),
                      name=step.attrs["name"], reason=f"divergence probe: prefix up to {j.op.value}")
        g = schedule(Graph(tuple(new_in), (k,), f"probe_{step.attrs['name']}"))
        got = backend.compile(g)(*inputs)[0]
        t = cone_of[id(j)].tol(j)
        d = T.diff(got, env[id(j)], t)
        if not d.ok:
            return j, d, t
    return None, None, None


def find_divergence(fn_or_compiled, args, backend=None, *, passes: str | None = None,
                    tol=None) -> Divergence | None:
    """The first node, in execution order, whose value on `backend` is outside tolerance of the
    reference interpreter's value for the same node of the same graph (see the module doc).
    None when every kernel and every output agree. `fn_or_compiled`: a function, or a Compiled
    (its backend and passes are the defaults). `tol` forces a class name or Tol."""
    compiled = None
    if isinstance(fn_or_compiled, Compiled):
        fn = fn_or_compiled.fn
        if backend is None and passes is None:
            compiled = fn_or_compiled  # reuse its cache
        backend = fn_or_compiled.backend if backend is None else backend
        passes = fn_or_compiled.passes if passes is None else passes
    else:
        fn = fn_or_compiled
    if backend is None:
        raise GraphcError("find_divergence needs a backend", stage="compare")
    be = get_backend(backend)
    bname = getattr(be, "name", type(be).__name__)
    args = tuple(args)
    entry = (compiled or Compiled(fn, be, passes=passes)).lower(*args)
    graph = entry.stages["optimized"]
    arrays = flat_arrays(args)
    outs, env = interpret(graph, *arrays, keep=True)
    cone_of = cones(graph)
    steps = _steps(graph)
    # every kernel's result, kept
    probe = _probe(graph, steps)
    got = be.compile(probe)(*arrays) if steps else ()
    for i, (s, g) in enumerate(zip(steps, got)):
        t = _tol_for(s, cone_of, tol)
        d = T.diff(g, env[id(s)], t)
        if d.ok:
            continue
        node, nd, nt = _isolate(s, [env[id(x)] for x in s.inputs], be)
        note = ""
        if node is None:
            note = ("every op of this kernel is right when run alone on exact inputs: its "
                    "error is the amplification of smaller differences in its inputs "
                    "(ill-conditioned), or comes from how the ops interact in the full kernel")
        return Divergence(bname, graph, s, i, len(steps), d, t, node, nd, nt,
                          s.attrs["body"] if s.op is Op.FUSED else None, note)
    # every kernel agrees when its result is kept: do the real program's outputs?
    real = entry.program(*arrays)
    for k, (o, g, w) in enumerate(zip(graph.outputs, real, outs)):
        t = _tol_for(o, cone_of, tol)
        d = T.diff(g, w, t)
        if not d.ok:
            idx = next((i for i, s in enumerate(steps) if s is o), -1)
            if o.op in (Op.INPUT, Op.CONST):
                what = "input" if o.op is Op.INPUT else "constant"
                note = (f"output {k} is a graph {what} returned unchanged (no kernel computes "
                        f"it), and the backend returns it wrongly"
                        + (f": {d.note}" if d.note else ""))
            else:
                note = ("every kernel is right when its result is kept as an output, but the "
                        "program's outputs are not: buffers are reused or written in place "
                        "wrongly (the memory plan)" + (f"; {d.note}" if d.note else ""))
            return Divergence(bname, graph, o if idx >= 0 else None, idx, len(steps), d, t, None,
                              note=note)
    return None


# ---- gradient checking -----------------------------------------------------------------------------
@dataclass
class GradRow:
    backend: str
    param: str
    shape: tuple
    dtype: str
    max_err: float | None       # elementwise, norm-relative (None: tensor too large)
    dir_err: float               # worst directional derivative error
    ok: bool
    note: str = ""


@dataclass
class GradCheck:
    title: str
    rows: list[GradRow]
    unavailable: list[BackendChoice]
    settings: str

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def table(self) -> str:
        w = max([len("param")] + [len(r.param) for r in self.rows])
        head = (f"  {'backend':<10}{'param':<{w}}  {'shape':<14}{'dtype':<9}{'max error':>10}"
                f"{'dir error':>11}  ok")
        lines = [self.title, f"  {self.settings}", head, "  " + "-" * (len(head) - 2)]
        for r in self.rows:
            me = "-" if r.max_err is None else _num(r.max_err)
            lines.append(f"  {r.backend:<10}{r.param:<{w}}  {str(r.shape):<14}{r.dtype:<9}"
                         f"{me:>10}{_num(r.dir_err):>11}  {'yes' if r.ok else 'NO'}"
                         + (f"  ({r.note})" if r.note else ""))
        for c in self.unavailable:
            lines.append(f"  {c.name:<10}unavailable: {c.why}")
        return "\n".join(l.rstrip() for l in lines)


def _to_float64(args):
    def cast(x):
        if _is_float_leaf(x) and not isinstance(x, float):
            return np.asarray(x, dtype=np.float64)
        return x
    return tuple(pytree.tree_map(cast, a) if _has_leaves(a) else a for a in args)


def _has_leaves(a) -> bool:
    try:
        return bool(pytree.flatten(a)[0])
    except GraphcError:
        return False


GRADCHECK = {  # dtype -> (relative step, pass threshold): central differences
    "float64": (1e-6, 1e-5),   # truncation ~h^2, rounding ~eps/h: ~1e-10 relative
    "float32": (3e-3, 2e-2),   # cbrt(eps): truncation and rounding both ~1e-5..1e-3
}


def gradcheck(fn: Callable, args, backends=None, *, argnums=None, directions: int = 3,
              elementwise_max: int = 64, float64: bool = True, seed: int = 0) -> GradCheck:
    """Analytic gradients (gc.value_and_grad, compiled on each backend) of every float argument
    against central finite differences of the same backend's compiled forward function.

    Tensors of at most `elementwise_max` elements are checked element by element; every tensor
    gets `directions` directional checks along random unit vectors u (grad . u against
    (f(x + h u) - f(x - h u)) / 2h). Inputs are cast to float64 where the backend supports it.
    A function that is not a float scalar is reduced by a fixed random projection first."""
    args = tuple(args)
    nums = tuple(argnums) if argnums is not None else float_argnums(args)
    if not nums:
        raise GraphcError(f"{getattr(fn, '__name__', 'fn')} has no float-array argument to "
                          f"differentiate", stage="gradcheck")
    names = _arg_names(fn, len(args))
    rows: list[GradRow] = []
    unavailable = []
    settings = set()
    for choice in resolve_backends(backends):
        if not choice.available:
            unavailable.append(choice)
            continue
        be = choice.backend
        use64 = float64 and supports_float64(be)
        a = _to_float64(args) if use64 else args
        try:
            rows += _gradcheck_one(fn, a, nums, names, choice.name, be, directions,
                                   elementwise_max, seed, settings)
        except BackendError:
            if not use64:
                raise
            rows += _gradcheck_one(fn, args, nums, names, choice.name, be, directions,
                                   elementwise_max, seed, settings)
    s = "; ".join(f"{d}: central differences, h = {GRADCHECK[d][0]:.0e} * max(1, |x|), ok "
                  f"below relative error {GRADCHECK[d][1]:.0e}" for d in sorted(settings))
    s += (f"\n  elementwise for tensors of up to {elementwise_max} elements; {directions} random "
          f"unit directions for every tensor")
    scalar = scalarized(fn, args)[1]
    title = f"gradcheck: {getattr(fn, '__name__', 'fn')}" + \
        ("" if scalar else " (projected to a scalar: sum of its float outputs times fixed "
                           "random weights)")
    return GradCheck(title, rows, unavailable, s)


def _gradcheck_one(fn, args, nums, names, bname, be, directions, elementwise_max, seed,
                   settings) -> list[GradRow]:
    f, _ = scalarized(fn, args)
    vg = value_and_grad(f, argnums=nums)
    fwd = Compiled(f, be)
    _, grads = Compiled(vg, be)(*args)
    leaves, tree, paths = pytree.flatten(tuple(args))
    sizes = [len(pytree.flatten(x)[0]) if _has_leaves(x) else 0 for x in args]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    gleaves = pytree.flatten(tuple(grads))[0]
    rng = np.random.default_rng(seed)

    def loss(new_leaves) -> float:
        return float(np.asarray(fwd(*pytree.unflatten(tree, new_leaves))))

    rows, k = [], 0
    for n in nums:
        for idx in range(offsets[n], offsets[n + 1]):
            x0 = np.asarray(leaves[idx])
            an = np.asarray(gleaves[k], dtype=np.float64)
            k += 1
            dt = x0.dtype.name
            settings.add(dt)
            rel_h, thresh = GRADCHECK.get(dt, GRADCHECK["float32"])
            path = paths[idx]
            rest = path.split(".", 1)[1] if "." in path else ""
            pname = names[n] + (f".{rest}" if rest else "")
            gscale = float(np.abs(an).max()) if an.size else 0.0
            floor = 1e-12 if dt == "float64" else 1e-6

            def at(x):
                new = list(leaves)
                new[idx] = np.asarray(x, dtype=x0.dtype).reshape(x0.shape)
                return loss(new)

            max_err = None
            if x0.size <= elementwise_max:
                fd = np.zeros(x0.size)
                flat = x0.astype(np.float64).ravel()
                for j in range(x0.size):
                    h = rel_h * max(1.0, abs(flat[j]))
                    xp, xm = flat.copy(), flat.copy()
                    xp[j] += h
                    xm[j] -= h
                    fd[j] = (at(xp) - at(xm)) / (2 * h)
                denom = max(gscale, float(np.abs(fd).max()), floor)
                max_err = float(np.abs(fd - an.ravel()).max()) / denom
            dir_err = 0.0
            base = x0.astype(np.float64)
            h = rel_h * max(1.0, float(np.abs(base).max()) if base.size else 1.0)
            for _ in range(directions):
                u = rng.standard_normal(x0.shape)
                nu = float(np.linalg.norm(u))
                u = u / nu if nu > 0 else u
                dan = float(np.sum(an * u))
                dfd = (at(base + h * u) - at(base - h * u)) / (2 * h)
                denom = max(abs(dan), abs(dfd), float(np.linalg.norm(an)) / np.sqrt(max(x0.size, 1)),
                            floor)
                dir_err = max(dir_err, abs(dfd - dan) / denom)
            ok = dir_err <= thresh and (max_err is None or max_err <= thresh)
            rows.append(GradRow(bname, pname, tuple(x0.shape), dt, max_err, dir_err, ok))
    return rows
