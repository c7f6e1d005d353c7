"""The kernel IR: one fused kernel as a loop nest over flat, contiguous buffers.

It sits between a fused graph node and a compiled backend (LLVM, OpenCL):

    Kernel      name, buffers, body (statements), kind, source_nodes (provenance)
    statements  Loop(var, extent, body, parallel) | Store(buffer, index, value)
                DefAcc(name, dtype, init) | Accumulate(name, "sum"|"max", value) | Let(name, value)
    index       Var | Const | Add | Mul | FloorDiv | Mod | Min | Max      (int64, never negative)
    value       Load | Lit | Unary | Binary | Select | CastE | RandE | AccRef | Ref | InBounds

Every value carries its dtype (a `graphc.types.DType`); op names are the `Op` values of
`graphc.ops` ("add", "exp", ...), so a backend's table is keyed like the graph's. Buffers
are row-major and flat: a load of x[i, j] from an f32[3,4] buffer is `Load(x, i*4 + j)`.
Constants too small to be kernel arguments are `Buffer(role="const")` whose data is in
`Kernel.consts` (backends bake them into the code).

`str(kernel)` is readable pseudo-C with the graph nodes the kernel came from; `verify`
checks scoping and dtypes and `evaluate` runs a kernel element by element with NumPy scalars
(slow, but an oracle for the lowering that shares nothing with a compiled backend).
This module is core: it imports no backend library.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import numpy as np

from graphc.ops import Const as ConstArray
from graphc.types import DType

COMPARE_OPS = frozenset({"lt", "le", "gt", "ge", "eq", "ne"})
UNARY_OPS = frozenset({"neg", "exp", "log", "sqrt", "sin", "cos", "tanh", "abs", "sign",
                       "reciprocal"})
BINARY_OPS = frozenset({"add", "sub", "mul", "div", "pow", "maximum", "minimum"}) | COMPARE_OPS


# ---- index expressions (int64) ---------------------------------------------------------------
@dataclass(frozen=True)
class Var:
    name: str

    def __str__(self):
        return self.name


@dataclass(frozen=True)
class Const:
    value: int

    def __str__(self):
        return str(self.value)


@dataclass(frozen=True)
class Add:
    a: "Index"
    b: "Index"

    def __str__(self):
        return f"{self.a} + {self.b}"


@dataclass(frozen=True)
class Mul:
    a: "Index"
    b: "Index"

    def __str__(self):
        return f"{_paren(self.a)}*{_paren(self.b)}"


@dataclass(frozen=True)
class FloorDiv:
    a: "Index"
    b: "Index"

    def __str__(self):
        return f"{_paren(self.a)}/{_paren(self.b)}"


@dataclass(frozen=True)
class Mod:
    a: "Index"
    b: "Index"

    def __str__(self):
        return f"{_paren(self.a)}%{_paren(self.b)}"


@dataclass(frozen=True)
class Min:
    a: "Index"
    b: "Index"

    def __str__(self):
        return f"min({self.a}, {self.b})"


@dataclass(frozen=True)
class Max:
    a: "Index"
    b: "Index"

    def __str__(self):
        return f"max({self.a}, {self.b})"


Index = Union[Var, Const, Add, Mul, FloorDiv, Mod, Min, Max]


def _paren(e) -> str:
    return f"({e})" if isinstance(e, Add) else str(e)


# ---- index arithmetic with folding; `ext` maps loop variables to their extents -------------------
def bounds(e: Index, ext: dict[str, int]) -> tuple[int, int]:
    """Inclusive (lo, hi) of an index expression, given each loop variable's extent."""
    if isinstance(e, Const):
        return e.value, e.value
    if isinstance(e, Var):
        return 0, max(ext.get(e.name, 1 << 62) - 1, 0)
    (al, ah), (bl, bh) = bounds(e.a, ext), bounds(e.b, ext)
    if isinstance(e, Add):
        return al + bl, ah + bh
    if isinstance(e, Mul):
        ps = (al * bl, al * bh, ah * bl, ah * bh)
        return min(ps), max(ps)
    if isinstance(e, FloorDiv):
        return (al // bh, ah // bl) if bl > 0 and al >= 0 else (-(1 << 62), 1 << 62)
    if isinstance(e, Mod):
        return (0, bh - 1) if bl > 0 else (-(1 << 62), 1 << 62)
    if isinstance(e, Min):
        return min(al, bl), min(ah, bh)
    return max(al, bl), max(ah, bh)


def _terms(e: Index) -> list[tuple[int, Index | None]]:
    """e as a sum of (coefficient, atom) terms; atom None is the constant term."""
    if isinstance(e, Const):
        return [(e.value, None)]
    if isinstance(e, Add):
        return _terms(e.a) + _terms(e.b)
    if isinstance(e, Mul) and isinstance(e.b, Const):
        return [(c * e.b.value, a) for c, a in _terms(e.a)]
    return [(1, e)]


def _sum(terms: list[tuple[int, Index | None]]) -> Index:
    merged: dict = {}
    for c, a in terms:
        merged[a] = merged.get(a, 0) + c
    out: Index | None = None
    for a, c in merged.items():
        if a is None or c == 0:
            continue
        t = a if c == 1 else Mul(a, Const(c))
        out = t if out is None else Add(out, t)
    k = merged.get(None, 0)
    if out is None:
        return Const(k)
    return Add(out, Const(k)) if k else out


def add(a: Index, b: Index) -> Index:
    return _sum(_terms(a) + _terms(b))


def mul(a: Index, c: int) -> Index:
    return _sum([(k * c, t) for k, t in _terms(a)])


def floordiv(a: Index, n: int, ext: dict[str, int]) -> Index:
    """a // n for a >= 0: terms whose coefficient n divides leave the division when the rest
    stays in [0, n) (so (i*4 + j) // 4 = i for j < 4)."""
    if n == 1:
        return a
    lo, hi = bounds(a, ext)
    if 0 <= lo and hi < n:
        return Const(0)
    terms = _terms(a)
    whole = [(c // n, t) for c, t in terms if c % n == 0]
    rest = [(c, t) for c, t in terms if c % n != 0]
    rl, rh = bounds(_sum(rest), ext)
    if whole and 0 <= rl and rh < n:
        return _sum(whole)
    if whole and rest:
        return add(_sum(whole), FloorDiv(_sum(rest), Const(n)))
    return FloorDiv(a, Const(n))


def mod(a: Index, n: int, ext: dict[str, int]) -> Index:
    """a % n for a >= 0: terms with a coefficient that n divides drop out."""
    if n == 1:
        return Const(0)
    lo, hi = bounds(a, ext)
    if 0 <= lo and hi < n:
        return a
    rest = _sum([(c, t) for c, t in _terms(a) if c % n != 0])
    rl, rh = bounds(rest, ext)
    if 0 <= rl and rh < n:
        return rest
    return Mod(rest, Const(n))


def clamp(a: Index, lo: int, hi: int, ext: dict[str, int]) -> Index:
    """min(max(a, lo), hi), folded away where the bounds already hold."""
    al, ah = bounds(a, ext)
    if al < lo:
        a = Max(a, Const(lo))
    if ah > hi:
        a = Min(a, Const(hi))
    return a


def flat_index(idx, shape, ext: dict[str, int] | None = None) -> Index:
    """Row-major flat offset of multi-index `idx` in a contiguous array of `shape`."""
    out: Index = Const(0)
    stride = 1
    for i, s in zip(reversed(list(idx)), reversed(list(shape))):
        if s != 1:
            out = add(out, mul(i, stride))
        stride *= s
    return out


# ---- value expressions -------------------------------------------------------------------------
@dataclass(frozen=True)
class Buffer:
    name: str
    shape: tuple[int, ...]
    dtype: DType
    role: str  # "in" | "out" | "const"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __str__(self):
        return f"{self.role} {self.dtype.value} {self.name}[{','.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class Load:
    buffer: Buffer
    index: Index

    @property
    def dtype(self):
        return self.buffer.dtype

    def __str__(self):
        return f"{self.buffer.name}[{self.index}]"


@dataclass(frozen=True)
class Lit:
    value: Union[int, float, bool]
    dtype: DType

    def __str__(self):
        if self.dtype is DType.bool:
            return "true" if self.value else "false"
        return repr(self.value) if self.dtype.is_float else str(self.value)


@dataclass(frozen=True)
class Unary:
    op: str
    x: "Value"

    @property
    def dtype(self):
        return self.x.dtype

    def __str__(self):
        return f"-{_vparen(self.x)}" if self.op == "neg" else f"{self.op}({self.x})"


_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "lt": "<", "le": "<=", "gt": ">",
          "ge": ">=", "eq": "==", "ne": "!="}


@dataclass(frozen=True)
class Binary:
    op: str
    a: "Value"
    b: "Value"

    @property
    def dtype(self):
        return DType.bool if self.op in COMPARE_OPS else self.a.dtype

    def __str__(self):
        if self.op in _INFIX:
            return f"{_vparen(self.a)} {_INFIX[self.op]} {_vparen(self.b)}"
        return f"{self.op}({self.a}, {self.b})"


@dataclass(frozen=True)
class Select:
    cond: "Value"
    a: "Value"
    b: "Value"

    @property
    def dtype(self):
        return self.a.dtype

    def __str__(self):
        return f"{_vparen(self.cond)} ? {_vparen(self.a)} : {_vparen(self.b)}"


@dataclass(frozen=True)
class CastE:
    x: "Value"
    dtype: DType

    def __str__(self):
        return f"({self.dtype.value}){_vparen(self.x)}"


@dataclass(frozen=True)
class RandE:
    """Uniform [0, 1) from a scalar integer key and the element's flat index in the RAND
    node's own shape: the counter-based generator of `graphc.ops.rand_bits`."""
    key: "Value"
    index: Index
    dtype: DType

    def __str__(self):
        return f"rand<{self.dtype.value}>({self.key}, {self.index})"


@dataclass(frozen=True)
class InBounds:
    """bool: lo <= index < hi for every (index, lo, hi) (pad and concat use it)."""
    checks: tuple[tuple[Index, int, int], ...]

    dtype = DType.bool

    def __str__(self):
        return " && ".join(f"{lo} <= {e} < {hi}" for e, lo, hi in self.checks)


@dataclass(frozen=True)
class AccRef:
    name: str
    dtype: DType

    def __str__(self):
        return self.name


@dataclass(frozen=True)
class Ref:
    """The value bound by a `Let`."""
    name: str
    dtype: DType

    def __str__(self):
        return self.name


Value = Union[Load, Lit, Unary, Binary, Select, CastE, RandE, InBounds, AccRef, Ref]


def operands(v) -> tuple:
    """The value expressions `v` reads directly (for walks over an expression tree)."""
    if isinstance(v, (Unary, CastE)):
        return (v.x,)
    if isinstance(v, Binary):
        return (v.a, v.b)
    if isinstance(v, Select):
        return (v.cond, v.a, v.b)
    if isinstance(v, RandE):
        return (v.key,)
    return ()


def walk(v):
    """`v` and every value expression inside it (operands, recursively)."""
    yield v
    for sub in operands(v):
        yield from walk(sub)


def index_vars(e: "Index") -> set[str]:
    """The loop variables an index expression reads."""
    if isinstance(e, Var):
        return {e.name}
    if isinstance(e, Const):
        return set()
    return index_vars(e.a) | index_vars(e.b)


def stride(e: "Index", var: str) -> int | None:
    """The coefficient of loop variable `var` in index `e` when e is affine in it, else None
    (1: contiguous along var)."""
    terms = _terms(e)
    if any(t is not None and t != Var(var) and var in index_vars(t) for _, t in terms):
        return None
    return sum(c for c, t in terms if t == Var(var))


def _vparen(v) -> str:
    return str(v) if isinstance(v, (Load, Lit, AccRef, Ref, Unary, CastE, RandE)) else f"({v})"


# ---- statements ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Loop:
    """`for var < extent: body`. A parallel loop sits at the top level; several consecutive
    ones are the pieces of one loop (`kernel_sched.partition`), each with its own variable
    offset in its body, and tile one parallel range in order: a backend hands out the range
    (a thread's start..end) across them."""
    var: str
    extent: int
    body: tuple
    parallel: bool = False


@dataclass(frozen=True)
class Store:
    buffer: Buffer
    index: Index
    value: Value


@dataclass(frozen=True)
class DefAcc:
    name: str
    dtype: DType
    init: Union[int, float]


@dataclass(frozen=True)
class Accumulate:
    name: str
    op: str  # "sum" | "max"
    value: Value


@dataclass(frozen=True)
class Let:
    name: str
    value: Value


Stmt = Union[Loop, Store, DefAcc, Accumulate, Let]


@dataclass(frozen=True)
class Kernel:
    name: str
    buffers: tuple[Buffer, ...]
    body: tuple
    kind: str
    source_nodes: tuple[str, ...] = ()
    consts: tuple[tuple[str, ConstArray], ...] = field(default=())

    @property
    def args(self) -> tuple[Buffer, ...]:
        """The buffers passed at run time (inputs then the output), in signature order."""
        return tuple(b for b in self.buffers if b.role != "const")

    @property
    def parallel_extent(self) -> int:
        """Extent of the outermost (parallel) loop, its pieces' extents summed; 0 when the
        kernel has none."""
        return sum(s.extent for s in self.body if isinstance(s, Loop) and s.parallel)

    def __str__(self) -> str:
        return format_kernel(self)


def values(x):
    """Every value expression in a value, a statement, a statement list or a kernel (loops
    walked; each statement's value and everything inside it, as `walk`)."""
    if isinstance(x, Kernel):
        x = x.body
    if isinstance(x, (tuple, list)):
        for s in x:
            yield from values(s)
    elif isinstance(x, Loop):
        yield from values(x.body)
    elif isinstance(x, (Store, Let, Accumulate)):
        yield from walk(x.value)
    elif not isinstance(x, DefAcc):
        yield from walk(x)


def loads(x) -> set[Buffer]:
    """The buffers that a value expression, a statement, a statement list or a kernel loads
    from (loops walked)."""
    return {v.buffer for v in values(x) if isinstance(v, Load)}


# ---- printing -----------------------------------------------------------------------------------
def _fmt_lit(v, dtype: DType) -> str:
    return str(Lit(v, dtype))


def format_stmts(body, indent: str = "  ") -> list[str]:
    lines = []
    for s in body:
        if isinstance(s, Loop):
            par = "  // parallel" if s.parallel else ""
            lines.append(f"{indent}for ({s.var} = 0; {s.var} < {s.extent}; {s.var}++) {{{par}")
            lines += format_stmts(s.body, indent + "  ")
            lines.append(f"{indent}}}")
        elif isinstance(s, Store):
            lines.append(f"{indent}{s.buffer.name}[{s.index}] = {s.value};")
        elif isinstance(s, DefAcc):
            lines.append(f"{indent}{s.dtype.value} {s.name} = {_fmt_lit(s.init, s.dtype)};")
        elif isinstance(s, Accumulate):
            rhs = f"{s.name} + {_vparen(s.value)}" if s.op == "sum" else \
                f"maximum({s.name}, {s.value})"
            lines.append(f"{indent}{s.name} = {rhs};")
        elif isinstance(s, Let):
            lines.append(f"{indent}{s.value.dtype.value} {s.name} = {s.value};")
        else:
            raise TypeError(f"not a statement: {s!r}")
    return lines


def format_kernel(k: Kernel) -> str:
    lines = [f"// kernel {k.name} ({k.kind}), from:"]
    lines += [f"//   {n}" for n in k.source_nodes]
    for name, c in k.consts:
        vals = ", ".join(str(x) for x in c.array.ravel().tolist())
        lines.append(f"const {DType.of(c.array).value} {name}[{c.array.size}] = {{{vals}}};")
    sig = ", ".join(str(b) for b in k.args)
    lines.append(f"kernel {k.name}({sig}) {{")
    lines += format_stmts(k.body)
    lines.append("}")
    return "\n".join(lines)


# the verifier and the reference evaluator live in graphc/kernel_check.py (imported last:
# they use the classes above)
from graphc.kernel_check import evaluate, verify  # noqa: E402,F401
