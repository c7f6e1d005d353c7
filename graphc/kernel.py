"""The kernel IR: one fused kernel as a loop nest over flat, contiguous buffers.

It sits between a fused graph node and a compiled backend (LLVM now, OpenCL later):

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
checks scoping and dtypes; `evaluate` runs a kernel element by element with NumPy scalars
(slow, but an oracle for the lowering that shares nothing with a compiled backend).
This module is core: it imports no backend library.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import numpy as np

from graphc.errors import VerifyError
from graphc.ops import Const as ConstArray, rand_bits
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


def _vparen(v) -> str:
    return str(v) if isinstance(v, (Load, Lit, AccRef, Ref, Unary, CastE, RandE)) else f"({v})"


# ---- statements ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Loop:
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
        """Extent of the outermost (parallel) loop, or 0 when the kernel has none."""
        return next((s.extent for s in self.body if isinstance(s, Loop) and s.parallel), 0)

    def __str__(self) -> str:
        return format_kernel(self)


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


# ---- verification ---------------------------------------------------------------------------------
def verify(k: Kernel) -> Kernel:
    """Check that every loop variable is bound by an enclosing loop, every buffer is
    declared, every Ref/AccRef defined before use, and dtypes agree. Returns the kernel."""
    declared = {b.name: b for b in k.buffers}
    consts = dict(k.consts)

    def fail(msg):
        raise VerifyError(f"kernel {k.name}: {msg}", stage="lower")

    if len(declared) != len(k.buffers):
        fail("two buffers share a name")
    for b in k.buffers:
        if b.role not in ("in", "out", "const"):
            fail(f"buffer {b.name} has role {b.role!r}")
        if b.role == "const" and (b.name not in consts or consts[b.name].array.shape != b.shape
                                  or DType.of(consts[b.name].array) is not b.dtype):
            fail(f"const buffer {b.name} has no matching data")

    def buf(b: Buffer):
        if declared.get(b.name) != b:
            fail(f"buffer {b.name} is not declared as {b}")

    def index(e, vars_):
        if isinstance(e, Var):
            if e.name not in vars_:
                fail(f"loop variable {e.name} used outside its loop")
        elif isinstance(e, Const):
            if not isinstance(e.value, (int, np.integer)):
                fail(f"index constant {e.value!r} is not an int")
        elif isinstance(e, (Add, Mul, FloorDiv, Mod, Min, Max)):
            index(e.a, vars_)
            index(e.b, vars_)
        else:
            fail(f"not an index expression: {e!r}")

    def value(v, vars_, names) -> DType:
        if isinstance(v, Load):
            buf(v.buffer)
            index(v.index, vars_)
        elif isinstance(v, Lit):
            pass
        elif isinstance(v, Unary):
            if v.op not in UNARY_OPS:
                fail(f"unknown unary op {v.op}")
            value(v.x, vars_, names)
        elif isinstance(v, Binary):
            if v.op not in BINARY_OPS:
                fail(f"unknown binary op {v.op}")
            if value(v.a, vars_, names) is not value(v.b, vars_, names):
                fail(f"{v.op} of {v.a.dtype.name} and {v.b.dtype.name}: {v}")
        elif isinstance(v, Select):
            if value(v.cond, vars_, names) is not DType.bool:
                fail(f"select condition is not bool: {v}")
            if value(v.a, vars_, names) is not value(v.b, vars_, names):
                fail(f"select branches differ in dtype: {v}")
        elif isinstance(v, CastE):
            value(v.x, vars_, names)
        elif isinstance(v, RandE):
            if not value(v.key, vars_, names).is_int or not v.dtype.is_float:
                fail(f"rand needs an int key and produces floats: {v}")
            index(v.index, vars_)
        elif isinstance(v, InBounds):
            for e, _, _ in v.checks:
                index(e, vars_)
        elif isinstance(v, (AccRef, Ref)):
            if names.get(v.name) != (type(v), v.dtype):
                fail(f"{v.name} is used before it is defined (or with another dtype)")
        else:
            fail(f"not a value expression: {v!r}")
        return v.dtype

    def stmts(body, vars_, names):
        names = dict(names)  # definitions are visible after them in the same body and inside
        for s in body:
            if isinstance(s, Loop):
                if s.var in vars_:
                    fail(f"loop variable {s.var} rebound")
                if s.extent < 0:
                    fail(f"loop {s.var} has a negative extent")
                stmts(s.body, vars_ | {s.var}, names)
            elif isinstance(s, Store):
                buf(s.buffer)
                if s.buffer.role != "out":
                    fail(f"store into {s.buffer.role} buffer {s.buffer.name}")
                index(s.index, vars_)
                if value(s.value, vars_, names) is not s.buffer.dtype:
                    fail(f"store of {s.value.dtype.name} into {s.buffer}")
            elif isinstance(s, DefAcc):
                names[s.name] = (AccRef, s.dtype)
            elif isinstance(s, Accumulate):
                if names.get(s.name, (None,))[0] is not AccRef:
                    fail(f"accumulator {s.name} is not defined")
                if s.op not in ("sum", "max") or value(s.value, vars_, names) is not names[s.name][1]:
                    fail(f"bad accumulate into {s.name}: {s.op} of {s.value.dtype.name}")
            elif isinstance(s, Let):
                names[s.name] = (Ref, value(s.value, vars_, names))
            else:
                fail(f"not a statement: {s!r}")

    stmts(k.body, frozenset(), {})
    return k


# ---- a reference evaluator: the oracle for the lowering ----------------------------------------------
def _np_scalar(v, dtype: DType):
    return dtype.np.type(v)


def _ieval(e, env) -> int:
    if isinstance(e, Const):
        return int(e.value)
    if isinstance(e, Var):
        return env[e.name]
    a, b = _ieval(e.a, env), _ieval(e.b, env)
    if isinstance(e, Add):
        return a + b
    if isinstance(e, Mul):
        return a * b
    if isinstance(e, FloorDiv):
        return a // b
    if isinstance(e, Mod):
        return a % b
    return min(a, b) if isinstance(e, Min) else max(a, b)


def _unary_np(op, x):
    from graphc.ops import OPS, Op
    return OPS[Op(op)].reference(np.asarray(x))[()]


def _binary_np(op, a, b):
    from graphc.ops import OPS, Op
    return OPS[Op(op)].reference(np.asarray(a), np.asarray(b))[()]


def _veval(v, env, mem):
    if isinstance(v, Load):
        i = _ieval(v.index, env)
        arr = mem[v.buffer.name]
        if not 0 <= i < arr.size:
            raise IndexError(f"out-of-bounds load {v.buffer.name}[{i}] (size {arr.size})")
        return arr[i]
    if isinstance(v, Lit):
        return _np_scalar(v.value, v.dtype)
    if isinstance(v, Unary):
        return _unary_np(v.op, _veval(v.x, env, mem))
    if isinstance(v, Binary):
        return _binary_np(v.op, _veval(v.a, env, mem), _veval(v.b, env, mem))
    if isinstance(v, Select):
        c, a, b = (_veval(x, env, mem) for x in (v.cond, v.a, v.b))  # both sides, as compiled
        return a if c else b
    if isinstance(v, CastE):
        return np.asarray(_veval(v.x, env, mem)).astype(v.dtype.np)[()]
    if isinstance(v, RandE):
        key = int(_veval(v.key, env, mem))
        i = _ieval(v.index, env)
        bits = rand_bits(key, i + 1)[i]
        return v.dtype.np.type(int(bits) >> 8) * v.dtype.np.type(2.0 ** -24)
    if isinstance(v, InBounds):
        return np.bool_(all(lo <= _ieval(e, env) < hi for e, lo, hi in v.checks))
    if isinstance(v, (AccRef, Ref)):
        return env[v.name]
    raise TypeError(f"not a value: {v!r}")


def _run(body, env, mem):
    for s in body:
        if isinstance(s, Loop):
            for i in range(s.extent):  # names are unique per kernel: one flat environment
                env[s.var] = i
                _run(s.body, env, mem)
        elif isinstance(s, Store):
            i = _ieval(s.index, env)
            if not 0 <= i < mem[s.buffer.name].size:
                raise IndexError(f"out-of-bounds store {s.buffer.name}[{i}]")
            mem[s.buffer.name][i] = _veval(s.value, env, mem)
        elif isinstance(s, DefAcc):
            env[s.name] = _np_scalar(s.init, s.dtype)
        elif isinstance(s, Accumulate):
            x = _veval(s.value, env, mem)
            env[s.name] = (_binary_np("add", env[s.name], x) if s.op == "sum"
                           else _binary_np("maximum", env[s.name], x))
        elif isinstance(s, Let):
            env[s.name] = _veval(s.value, env, mem)


def evaluate(kernel: Kernel, *arrays: np.ndarray) -> np.ndarray:
    """Run the kernel on its input arrays (in `kernel.args` order, output excluded) and
    return the output array. Slow (a Python loop per element): for tests on small shapes."""
    ins = [b for b in kernel.args if b.role == "in"]
    (out,) = [b for b in kernel.args if b.role == "out"]
    if len(arrays) != len(ins):
        raise ValueError(f"kernel {kernel.name} takes {len(ins)} inputs, got {len(arrays)}")
    mem = {b.name: np.ascontiguousarray(a, dtype=b.dtype.np).reshape(-1)
           for b, a in zip(ins, arrays)}
    mem.update({name: c.array.reshape(-1) for name, c in kernel.consts})
    mem[out.name] = np.zeros(out.size, out.dtype.np)
    with np.errstate(all="ignore"):
        _run(kernel.body, {}, mem)
    return mem[out.name].reshape(out.shape)
