"""The trace-and-compile API: `trace`, `grad`, `value_and_grad`, `compile`."""
from __future__ import annotations

import functools
import importlib
import inspect
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from graphc.backend import ReferenceBackend
from graphc.device import DeviceArray
from graphc.errors import GraphcError, SignatureError
from graphc.ir import Graph, apply, input_node, register_internal_dir
from graphc.ops import Op
from graphc.pipeline import STAGES, parse_passes, run_pipeline
from graphc.types import DType
from graphc.frontends import pytree
from graphc.frontends.tensor import Tensor, lift

register_internal_dir(__file__)


# ---- tracing ---------------------------------------------------------------------------------
def _arg_names(fn, n: int) -> list[str]:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = []
    for i in range(n):
        if i < len(params) and params[i].kind in (params[i].POSITIONAL_ONLY,
                                                   params[i].POSITIONAL_OR_KEYWORD):
            names.append(params[i].name)
        elif params and params[-1].kind is params[-1].VAR_POSITIONAL and i >= len(params) - 1:
            names.append(f"{params[-1].name}{i - len(params) + 1}")
        else:
            names.append(f"arg{i}")
    return names


def _leaf_input(x, name: str, role: str = "input") -> Tensor:
    if type(x) is float:  # Python floats are weak (np.float64 is a float subclass: not weak)
        return Tensor(input_node(name, (), DType.float64, role), weak=True)
    a = x if isinstance(x, DeviceArray) else np.asarray(x)  # no copy: shape and dtype suffice
    try:
        dt = DType.of(a)
    except TypeError as e:
        raise SignatureError(f"argument {name!r}: {e}", stage="trace") from None
    return Tensor(input_node(name, a.shape, dt, role))


@dataclass
class Traced:
    graph: Graph
    in_tree: Any
    out_tree: Any


def _trace(fn: Callable, args: tuple, donate: tuple[int, ...] = ()) -> Traced:
    names = _arg_names(fn, len(args))
    leaves, in_tree, paths = pytree.flatten(tuple(args))
    tensors = []
    for leaf, p in zip(leaves, paths):
        i, _, rest = p.partition(".")
        name = re.sub(r"\W", "_", names[int(i)] + ("." + rest if rest else "")).replace(".", "_")
        role = "donated" if int(i) in donate else "input"
        tensors.append(_leaf_input(leaf, name, role) if not isinstance(leaf, Tensor) else leaf)
    if len({t.node.attrs["name"] for t in tensors}) != len(tensors):
        raise GraphcError("two inputs got the same name", stage="trace")
    out = fn(*pytree.unflatten(in_tree, tensors))
    out_leaves, out_tree, out_paths = pytree.flatten(out)
    outs = tuple(lift(o).node for o in out_leaves)
    name = getattr(fn, "__name__", "f")
    name = re.sub(r"\W", "_", name) if name != "<lambda>" else "lambda_"
    graph = Graph(tuple(t.node for t in tensors), outs, name, tuple(out_paths))
    return Traced(graph, in_tree, out_tree)


def trace(fn: Callable, *example_args) -> Graph:
    """Trace `fn` on example arguments into a Graph.

    `fn` is called with tracer tensors in place of arrays (pytrees of arrays allowed; Python
    ints and bools stay static, so loops over them unroll; Python floats become scalar
    inputs). Arrays it closes over become constants. Every node records the caller's line.

    >>> import numpy as np, graphc as gc
    >>> g = gc.trace(lambda a, b: (a + b) * (b + 1), np.float32(2), np.float32(1))
    >>> print(g)  # doctest: +ELLIPSIS
    graph lambda_(%0:f32[] a, %1:f32[] b) {
      %2:f32[] = add %0 %1...
    """
    return _trace(fn, example_args).graph


# ---- autodiff ---------------------------------------------------------------------------------
def _grad_markers(y: Tensor, diff_args):
    def mark(x):
        x = lift(x)
        return Tensor(apply(Op.GRAD, y.node, x.node))
    return pytree.tree_map(mark, diff_args)


def _has_tensor(args) -> bool:
    return any(isinstance(x, Tensor) for x in pytree.flatten(tuple(args))[0])


def value_and_grad(fn: Callable, argnums: int | tuple[int, ...] = 0, has_aux: bool = False):
    """A function returning `(fn(*args), gradient of fn w.r.t. args[argnums])`, as in JAX.

    `fn` must return a float scalar (or `(scalar, aux)` with has_aux=True). The gradient has
    the structure of the differentiated argument(s): a tuple when argnums is a tuple. The
    result is a plain function over numpy arrays that can itself be traced, compiled and
    differentiated again.

    >>> import numpy as np, graphc as gc
    >>> v, g = gc.value_and_grad(lambda x: (x ** 2).sum())(np.array([1.0, 2.0]))
    >>> float(v), g
    (5.0, array([2., 4.]))
    """
    multi = isinstance(argnums, (tuple, list))
    nums = tuple(argnums) if multi else (argnums,)

    def traced(*args):
        for i in nums:
            if not -len(args) <= i < len(args):
                raise GraphcError(f"argnums {argnums} but {_fname(fn)} was called with "
                                  f"{len(args)} arguments", stage="trace")
        out = fn(*args)
        if has_aux and not (isinstance(out, tuple) and len(out) == 2):
            raise GraphcError("has_aux=True needs fn to return (value, aux)", stage="trace")
        y, aux = (out if has_aux else (out, None))
        if not isinstance(y, (Tensor, int, float, np.ndarray, np.generic)):
            raise GraphcError(f"grad needs {_fname(fn)} to return a float scalar, it returned "
                              f"a {type(y).__name__}", stage="trace",
                              hint="return (value, aux) and pass has_aux=True to also return "
                                   "other results")
        y = lift(y)
        if y.shape != () or not y.node.dtype.is_float:
            raise GraphcError(f"grad needs {_fname(fn)} to return a float scalar, it returned "
                              f"{y.node.type}", stage="trace",
                              hint="reduce it first, e.g. loss.sum() or loss.mean()")
        grads = tuple(_grad_markers(y, args[i]) for i in nums)
        g = grads if multi else grads[0]
        return ((y, aux), g) if has_aux else (y, g)

    eager = Compiled(traced, ReferenceBackend(), passes="-fusion")  # the oracle: op by op

    @functools.wraps(fn)
    def value_and_grad_fn(*args):
        return traced(*args) if _has_tensor(args) else eager(*args)

    value_and_grad_fn.__name__ = f"value_and_grad_{_fname(fn)}"
    return value_and_grad_fn


def grad(fn: Callable, argnums: int | tuple[int, ...] = 0, has_aux: bool = False):
    """The gradient of scalar-valued `fn` w.r.t. argument(s) `argnums`, as `jax.grad`.

    >>> import numpy as np, graphc as gc
    >>> df = gc.grad(lambda x: gc.sin(x ** 2))
    >>> float(df(1.5)) == float(np.cos(1.5 ** 2) * 2 * 1.5)
    True
    >>> float(gc.grad(gc.grad(lambda x: x ** 3))(2.0))   # second derivative: 6x
    12.0
    """
    vg = value_and_grad(fn, argnums, has_aux)

    @functools.wraps(fn)
    def grad_fn(*args):
        out = vg(*args)
        return (out[1], out[0][1]) if has_aux else out[1]

    grad_fn.__name__ = f"grad_{_fname(fn)}"
    return grad_fn


def _fname(fn) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


# ---- compile ---------------------------------------------------------------------------------
def get_backend(backend):
    """A backend object from a name ("numpy", ...) or the object itself."""
    if not isinstance(backend, str):
        return backend
    if backend == "reference":
        return ReferenceBackend()
    return importlib.import_module("graphc.backends").get(backend)


@dataclass
class Entry:
    """One specialisation of a compiled function: its stages, program and timings."""
    traced: Traced
    stages: dict[str, Graph]
    program: Any
    times: dict[str, float] = field(default_factory=dict)
    fast: Any = None  # (matcher, run) once a call with numpy arrays built it (`_fast_path`);
                      # False: no matcher for this signature


def _signature(leaves, tree) -> tuple:
    """The cache key of a call: the argument structure (static values included) and each
    leaf's shape and dtype (Python floats are weak scalars). The dtype object, not its
    `.str`: that builds a new string on each call (~4 us for W5 b1's 7 arrays)."""
    sig = []
    for x in leaves:
        t = type(x)
        if t is np.ndarray:
            sig.append((x.shape, x.dtype))
        elif t is float:
            sig.append("float")
        else:
            a = x if isinstance(x, (np.ndarray, DeviceArray)) else np.asarray(x)
            sig.append((a.shape, a.dtype))
    return (tree, tuple(sig))


class Compiled:
    """What `gc.compile` returns: a function over numpy arrays, traced and compiled once
    per input signature (shapes, dtypes, static Python values), then cached."""

    def __init__(self, fn: Callable, backend="numpy", passes: str | None = None,
                 donate_argnums: tuple[int, ...] = (), device_outputs: bool = False):
        self.fn = fn
        self.donate_argnums = tuple(donate_argnums)
        self.device_outputs = device_outputs
        self.backend = get_backend(backend)
        self.passes = passes
        parse_passes(passes)  # a bad spec fails here, not at the first call
        self._cache: dict[tuple, Entry] = {}
        self._last: Entry | None = None
        self._fast: tuple | None = None  # (matcher, run, entry) of the last all-numpy call
        functools.update_wrapper(self, fn, updated=())

    def lower(self, *args) -> Entry:
        """Trace and compile for these arguments' signature without running."""
        leaves, tree, _ = pytree.flatten(tuple(args), with_paths=False)
        return self._lower(_signature(leaves, tree), args)

    def _lower(self, key, args) -> Entry:
        entry = self._cache.get(key)
        if entry is None:
            t0 = time.perf_counter()
            traced = _trace(self.fn, args, self.donate_argnums)
            t1 = time.perf_counter()
            stages = run_pipeline(traced.graph, self.passes)
            t2 = time.perf_counter()
            program = self.backend.compile(stages["optimized"])
            t3 = time.perf_counter()
            entry = Entry(traced, stages, program,
                          {"trace": t1 - t0, "passes": t2 - t1, "backend": t3 - t2})
            self._cache[key] = entry
        self._last = entry
        return entry

    def __call__(self, *args):
        fast = self._fast  # the fast path: the signature of the last all-numpy call
        if fast is not None:
            leaves = fast[0](args)
            if leaves is not None:
                self._last = fast[2]
                return pytree.unflatten(fast[2].traced.out_tree, list(fast[1](leaves)))
        leaves, tree, _ = pytree.flatten(args, with_paths=False)  # once per call
        plain = True  # every leaf a numpy array: passed on as it is
        for x in leaves:
            if type(x) is not np.ndarray:
                if isinstance(x, Tensor):
                    return self.fn(*args)  # inside another trace: inline it
                plain = False
        entry = self._lower(_signature(leaves, tree), args)
        # a program with device memory takes device arrays where they are; others get numpy
        device = getattr(entry.program, "device_memory", False)
        arrays = leaves if plain else [
            x if type(x) is np.ndarray else
            np.asarray(x, dtype=np.float64) if type(x) is float else
            x if device and isinstance(x, DeviceArray) else np.asarray(x) for x in leaves]
        outs = self._runner(entry.program)(arrays)
        if plain:
            self._fast = self._fast_path(entry, tree, leaves)
        return pytree.unflatten(entry.traced.out_tree, list(outs))

    def _fast_path(self, entry: Entry, tree, leaves) -> tuple | None:
        """(matcher, run, entry) for calls with this signature, built once per Entry.
        `pytree.matcher` checks the arguments (structure, shapes, dtypes, C-contiguity) in
        one go, so the program may skip its own checks: a program that offers
        `call_exact(arrays)` for arguments known to match its inputs exactly gets them there
        (the LLVM backend's per-call checks, ~5 us for W5 b1's 7 arrays)."""
        if entry.fast is None:
            match = pytree.matcher(tree, leaves)
            entry.fast = False if match is None else (match,
                                                      self._runner(entry.program, exact=True))
        return (*entry.fast, entry) if entry.fast else None

    def _runner(self, program, exact: bool = False):
        """How a call runs `program` on its list of arrays: results left on the device where
        the program has memory of its own and device_outputs asks for it, else numpy arrays,
        through `call_exact` when `exact` (the arguments already matched) and it has one."""
        if getattr(program, "device_memory", False) and self.device_outputs:
            return lambda a: program(*a, device_outputs=True)
        return (exact and getattr(program, "call_exact", None)) or (lambda a: program(*a))

    # ---- what the last call went through ----------------------------------------------------
    def _entry(self) -> Entry:
        if self._last is None:
            raise GraphcError(f"{_fname(self.fn)} has not been called or lowered yet",
                              hint="call it once, or use .lower(*example_args)")
        return self._last

    @property
    def stages(self) -> dict[str, Graph]:
        """{stage name: Graph} of the most recent specialisation."""
        return self._entry().stages

    def graph(self, stage: str = "optimized") -> Graph:
        stages = self.stages
        if stage not in stages:
            raise GraphcError(f"no stage {stage!r}; this function has {', '.join(stages)} "
                              f"(all stages: {', '.join(STAGES)})")
        return stages[stage]

    @property
    def source(self) -> str:
        """The backend's generated code, annotated with the graph nodes it came from."""
        return self._entry().program.source

    @property
    def times(self) -> dict[str, float]:
        return self._entry().times


def compile(fn: Callable, backend: str = "numpy", passes: str | None = None,
            donate_argnums: tuple[int, ...] = (), device_outputs: bool = False) -> Compiled:
    """Compile `fn` for a backend (see `graphc.backends.names()`: "numpy", "llvm", ...).

    `passes` turns optimisation passes off by name, e.g. "-fusion,-cse" (see
    `graphc.pipeline.PASSES`), to measure what each one buys. `donate_argnums`, as in
    `jax.jit`, hands the arrays of those arguments to the compiled function, which may
    overwrite them with results of the same type (an optimizer updating its parameters in
    place); don't use a donated array after the call.

    `device_outputs=True` asks a backend with its own memory (opencl) to leave the results
    there and return them as device arrays (`graphc.device.DeviceArray`): pass them to the
    next call and they are read where they are, with no copy through the host;
    `np.asarray(x)` or `float(x)` copies one down when you need it. A device array passed as
    a donated argument is consumed (its memory goes to the call's results; using it again
    raises). Backends without device memory (numpy, llvm) ignore the option and return numpy
    arrays, and take device arrays by copying them down. For example, a training loop that
    keeps its parameters on the device and copies only the loss down:

        step = gc.compile(sgd_step, backend="opencl", donate_argnums=(0,), device_outputs=True)
        for x, y in batches:
            loss, params = step(params, x, y)  # params: OpenCLArrays from the second call on
            print(float(loss))
        params = {k: np.asarray(v) for k, v in params.items()}

    The result is called with numpy arrays (or pytrees of them) and returns numpy arrays
    (a tuple when fn returns several). It traces on the first call for each signature,
    runs the pipeline's stages and caches the program; `.stages`, `.graph(stage)` and
    `.source` show what it went through. A call with the signature of the last call, when
    that call's arguments were all non-empty numpy arrays, is checked by a function written
    for it (`pytree.matcher`), without flattening or a cache lookup.

    >>> import numpy as np, graphc as gc
    >>> f = gc.compile(lambda a, b: (a + b) * (b + 1))
    >>> f(np.float32(2), np.float32(1))
    array(6., dtype=float32)
    >>> list(f.stages)
    ['traced', 'simplified', 'fused', 'scheduled', 'optimized']
    """
    return Compiled(fn, backend, passes, donate_argnums, device_outputs)
