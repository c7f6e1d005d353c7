"""What the backend comparison (`graphc.compare`), the divergence finder (`graphc.divergence`)
and the gradient check (`graphc.gradcheck`) share: resolving backends by name, the arrays and
parameters of a call, reducing a function to a float scalar, and each value's tolerance from
the ops it depends on (`Cone`).

Backends are resolved when called, by name through the registry (`graphc.backends`, imported
lazily as `gc.compile` does), so backends registered later (llvm, opencl) are compared without
any change here; a backend object can be passed instead of a name.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from graphc import tolerances as T
from graphc.errors import BackendError, GraphcError
from graphc.frontends import pytree
from graphc.frontends.api import get_backend
from graphc.ir import Graph, Node
from graphc.ops import Op


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



# ---- tolerances per value ---------------------------------------------------------------------------
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


def _num(x: float) -> str:
    if x == 0:
        return "0"
    if not np.isfinite(x):
        return str(x)
    return f"{x:.1e}"

