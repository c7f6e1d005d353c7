"""The OpenCL C renderer of the OpenCL backend (`graphc.backends.opencl`): kernel IR -> OpenCL
C 1.2 text. A dialect is declarative attributes plus op tables keyed by (Op, kind); the render
loop is plain C and would serve another C-like dialect (CUDA, Metal) by subclassing.

Parallel mapping: `OpenCLRenderer.launch` gives one work-item per iteration of the outermost
(parallel) loop; when the loops over the output shape form a perfect nest and no kernel reads
its own output, they are flattened into one global id (one work-item per output element).
Three kinds of kernel are rendered differently, each in its own module, chosen here and sized
by `sizes` within the device's `Limits`:

  grouped     a long reduction to few outputs: one work-group per output element, partials
              combined in __local memory (`graphc.backends.opencl_reduce`)
  tiled       a matmul: register blocks, A and B tiles in __local memory on GPUs
              (`graphc.backends.opencl_matmul`)
  vectorized  an elementwise float kernel: W elements per work-item on floatW vectors
              (`graphc.backends.opencl_vector`)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from graphc import kernel as K
from graphc.backends import opencl_ir as IR
from graphc.errors import BackendError, NoRuleError
from graphc.types import DType

STAGE = "compile (opencl)"


@dataclass(frozen=True)
class Limits:
    """What rendering needs to know of the device: its kind and the limits that tile and
    work-group sizes must respect (the defaults: a small GPU)."""
    gpu: bool = False
    max_work_group_size: int = 256
    local_mem_size: int = 16384
    vector_bytes: int = 16      # the native SIMD width (preferred_vector_width_float * 4)


@dataclass(frozen=True)
class Launch:
    """How a kernel is enqueued: global size, local size (None: the driver chooses) and
    whether the source requires that local size (reqd_work_group_size)."""
    global_size: tuple
    local_size: tuple | None = None
    required: bool = False

    @property
    def empty(self) -> bool:
        return math.prod(self.global_size) == 0


# ---- the renderer: declarative attributes and op tables ------------------------------------------------
def _kind(dtype: DType) -> str:
    return "float" if dtype.is_float else "bool" if dtype is DType.bool else "int"


class OpenCLRenderer:
    """Kernel IR -> OpenCL C. A dialect is attributes plus the op tables; the render loop
    below is plain C and would serve another C-like dialect (CUDA, Metal) by subclassing."""
    kernel_prefix = "__kernel void"
    buffer_prefix = "__global "
    const_prefix = "__constant "
    index_type = "long"
    global_id = "get_global_id(0)"
    types = {DType.float32: "float", DType.float64: "double", DType.int32: "int",
             DType.int64: "long", DType.bool: "bool"}
    storage = {**types, DType.bool: "uchar"}   # bools are bytes in memory
    unsigned = {DType.int32: "uint", DType.int64: "ulong"}

    # (op, kind) -> format string over the rendered operands {x} / {a}, {b} and the type {t}
    unary = {
        ("neg", "float"): "(-{x})",
        ("neg", "int"): "({t})(0 - ({u}){x})",                  # wraps like numpy, no UB
        **{(op, "float"): op + "({x})" for op in ("exp", "log", "sqrt", "sin", "cos", "tanh")},
        ("abs", "float"): "fabs({x})",
        ("abs", "int"): "gc_abs_{t}({x})",
        ("sign", "float"): "gc_sign_{t}({x})",
        ("sign", "int"): "gc_sign_{t}({x})",
        ("reciprocal", "float"): "(({t})1 / {x})",
    }
    binary = {
        **{(op, "float"): f"({{a}} {c} {{b}})" for op, c in
           (("add", "+"), ("sub", "-"), ("mul", "*"), ("div", "/"))},
        ("pow", "float"): "pow({a}, {b})",
        ("maximum", "float"): "gc_max_{t}({a}, {b})",
        ("minimum", "float"): "gc_min_{t}({a}, {b})",
        **{(op, "int"): f"({{t}})(({{u}}){{a}} {c} ({{u}}){{b}})" for op, c in
           (("add", "+"), ("sub", "-"), ("mul", "*"))},
        ("div", "int"): "gc_div_{t}({a}, {b})",
        ("maximum", "int"): "max({a}, {b})",
        ("minimum", "int"): "min({a}, {b})",
        **{(op, kind): f"({{a}} {c} {{b}})" for op, c in
           (("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">="), ("eq", "=="), ("ne", "!="))
           for kind in ("float", "int")},   # C's float != is true for nan, like numpy
        ("eq", "bool"): "({a} == {b})",
        ("ne", "bool"): "({a} != {b})",
    }

    # helpers, emitted once per program for the types that use them
    helpers_float = """\
inline {t} gc_max_{t}({t} a, {t} b) {{ return isnan(a) ? a : (a > b ? a : b); }}  /* nan wins, as numpy */
inline {t} gc_min_{t}({t} a, {t} b) {{ return isnan(a) ? a : (a < b ? a : b); }}
inline {t} gc_sign_{t}({t} x) {{ return x > 0 ? ({t})1 : (x < 0 ? ({t})-1 : x); }}  /* 0, -0, nan stay */
"""
    helpers_int = """\
inline {t} gc_div_{t}({t} a, {t} b) {{  /* truncates toward zero; x/0 -> 0, MIN/-1 -> MIN */
  return b == 0 ? 0 : (b == -1 ? ({t})(0 - ({u})a) : a / b);
}}
inline {t} gc_abs_{t}({t} x) {{ return x < 0 ? ({t})(0 - ({u})x) : x; }}
inline {t} gc_sign_{t}({t} x) {{ return (x > 0) - (x < 0); }}
"""
    helpers_rand = """\
inline uint gc_fmix(uint h) {
  h ^= h >> 16; h *= 0x85EBCA6Bu; h ^= h >> 13; h *= 0xC2B2AE35u; return h ^ (h >> 16);
}
inline uint gc_rand_bits(long key, long i) {  /* graphc.ops.rand_bits, bit for bit */
  uint seed = gc_fmix(gc_fmix((uint)((ulong)key >> 32) + 0x9E3779B9u) ^ (uint)key);
  return gc_fmix(gc_fmix((uint)i ^ seed) + 0x6A09E667u);
}
"""

    wg_size = 256           # work-items per work-group of a grouped reduction (a power of 2)
    wg_min_extent = 1024    # grouped only when the reduced iteration space has this many points
    wg_min_ratio = 32       # ... and at least this many per output element

    matmul_modes = ("local", "registers", "per-element")

    def __init__(self, wg_size: int | None = None, limits: Limits | None = None,
                 matmul: str | None = None, vectors: bool = True):
        """`limits`: the device (default: `Limits()`); `matmul`: how matmul kernels are
        blocked (`graphc.backends.opencl_matmul`): "local" (tiles in __local memory),
        "registers" (register blocks, no __local memory) or "per-element" (one work-item
        per output element); default "local" on GPUs, "registers" on CPUs; `vectors`:
        elementwise kernels on vector types where they qualify (`opencl_vector`)."""
        self.uses: set = set()
        self.limits = limits if limits is not None else Limits()
        self.vectors = vectors
        if wg_size is not None:  # 0 turns work-group reductions off
            if wg_size < 0 or (wg_size and wg_size & (wg_size - 1)):
                raise ValueError(f"wg_size must be 0 or a power of 2, not {wg_size}")
            self.wg_size = wg_size
        if matmul is None:
            matmul = "local" if self.limits.gpu else "registers"
        if matmul not in self.matmul_modes:
            raise ValueError(f"matmul must be one of {self.matmul_modes}, not {matmul!r}")
        self.matmul = matmul

    # ---- program level ----
    def render(self, kernels: list[K.Kernel], title: str = "") -> str:
        """One OpenCL C program with a __kernel per kernel IR kernel."""
        self.uses = set()
        bodies = [self.render_kernel(k) for k in kernels]
        head = [f"/* generated by graphc's opencl backend{title}",
                "   each kernel: the graph nodes it came from, then OpenCL C (one work-item",
                "   per output element or per iteration of the outermost loop, unless its",
                "   comment says otherwise) */"]
        if DType.float64 in self.uses:
            head.append("#pragma OPENCL EXTENSION cl_khr_fp64 : enable")
        for d in (DType.float32, DType.float64):
            if d in self.uses:
                head.append(self.helpers_float.format(t=self.types[d]).rstrip())
            for vw in sorted(u[2] for u in self.uses if isinstance(u, tuple) and u[1] is d):
                # the same helpers on vectors (?: is component-wise there)
                head.append(self.helpers_float.format(t=f"{self.types[d]}{vw}").rstrip())
        for d in (DType.int32, DType.int64):
            if d in self.uses:
                head.append(self.helpers_int.format(t=self.types[d], u=self.unsigned[d]).rstrip())
        if "rand" in self.uses:
            head.append(self.helpers_rand.rstrip())
        return "\n".join(head) + "\n\n" + "\n\n".join(bodies) + "\n"

    def launch(self, k: K.Kernel) -> tuple[list[K.Loop], list]:
        """(the loops mapped to the global id, the statements run by each work-item)."""
        par = [s for s in k.body if isinstance(s, K.Loop) and s.parallel]
        rest = [s for s in k.body if not (isinstance(s, K.Loop) and s.parallel)]
        if len(par) != 1 or any(isinstance(s, (K.Store, K.Loop, K.Accumulate)) for s in rest):
            return [], list(k.body)   # one work-item runs everything
        loops, body = [par[0]], list(par[0].body)
        # iterations of a perfect nest store distinct elements
        if not IR.reads_output(k):
            while len(body) == 1 and isinstance(body[0], K.Loop):
                loops.append(body[0])
                body = list(body[0].body)
        return loops, rest + body

    def sizes(self, k: K.Kernel) -> Launch:
        """The global and local size `k` is enqueued with (see `launch`, `grouped`, `tiled`)."""
        tiled = self.tiled(k)
        if tiled is not None:
            g, loc = MM.launch(*tiled)
            return Launch(g, loc, loc is not None)
        loops, _ = self.launch(k)
        n = math.prod(lp.extent for lp in loops) if loops else 1
        vec = self.vectorized(k)
        if vec is not None:
            n //= vec[2]
        elif self.grouped(k) is not None:   # one work-group per output element
            return Launch((n * self.wg_size,), (self.wg_size,), True)
        if self.limits.gpu and n > 1:     # whole work-groups; the kernel skips the overhang
            ls = min(256, self.limits.max_work_group_size)
            return Launch((-(-n // ls) * ls,), (ls,))
        return Launch((n,))               # the driver chooses (CPU)

    def tiled(self, k: K.Kernel):
        """(the parts, the blocking) of a matmul kernel rendered tiled
        (`graphc.backends.opencl_matmul`), or None when `k` keeps the plain mapping."""
        if self.matmul == "per-element":
            return None
        m = MM.match(k)
        if m is None:
            return None
        t = MM.plan_tiles(m, self.limits, self.matmul == "local")
        return m, (t if t is not None else MM.plan_tiles(m, self.limits, False))

    def vectorized(self, k: K.Kernel):
        """(output loops, element statements, vector width) of an elementwise kernel rendered
        on vector types (`graphc.backends.opencl_vector`), or None."""
        out = next((b for b in k.buffers if b.role == "out"), None)
        if not self.vectors or out is None or not out.dtype.is_float:
            return None
        vw = VEC.width(self.limits, out.dtype)
        p = VEC.plan(self, k, vw)
        return None if p is None else (*p, vw)

    # ---- work-group reductions (graphc.backends.opencl_reduce) ----
    def grouped(self, k: K.Kernel):
        """The plan of a work-group reduction for `k` ({acc name: (dtype, op)}), or None when
        `k` keeps the plain mapping."""
        return RED.plan(self, k)

    def render_kernel(self, k: K.Kernel) -> str:
        self.k = k
        lines = [f"/* kernel {k.name} ({k.kind}), from:"]
        lines += [f"     {n.replace('*/', '* /')}" for n in k.source_nodes]
        lines[-1] += " */"
        for name, c in k.consts:
            dt = DType.of(c.array)
            self.uses.add(dt)
            vals = ", ".join(self.lit(v, dt) for v in c.array.ravel().tolist())
            lines.append(f"{self.const_prefix}{self.storage[dt]} {k.name}_{name}"
                         f"[{max(c.array.size, 1)}] = {{{vals or '0'}}};")
        params = []
        for b in k.args:
            self.uses.add(b.dtype)
            ro = "const " if b.role == "in" else ""
            params.append(f"{self.buffer_prefix}{ro}{self.storage[b.dtype]}* {b.name}")
        tiled = self.tiled(k)
        if tiled is not None:
            return MM.render_tiled(self, k, *tiled, lines, params)
        lines.append(f"{self.kernel_prefix} {k.name}({', '.join(params)}) {{")
        accs = self.grouped(k)
        if accs is not None:
            return RED.render(self, k, accs, lines)
        vec = self.vectorized(k)
        if vec is not None:
            return VEC.render(self, k, *vec, lines)
        loops, body = self.launch(k)
        if loops and math.prod(lp.extent for lp in loops) == 0:
            return "\n".join(lines + ["  /* an empty result: never launched */", "}"])
        if loops:
            total = math.prod(lp.extent for lp in loops)
            it = self.index_type
            lines.append(f"  {it} gid = {self.global_id};")
            lines.append(f"  if (gid >= {total}) return;  /* the global size is rounded up */")
            lines += _unflatten("gid", loops, it, "  ")
        lines += self.stmts(body, "  ")
        lines.append("}")
        return "\n".join(lines)

    # ---- statements ----
    def stmts(self, body, ind: str) -> list[str]:
        out = []
        for s in body:
            if isinstance(s, K.Loop):
                v = s.var
                out.append(f"{ind}for ({self.index_type} {v} = 0; {v} < {s.extent}; {v}++) {{")
                out += self.stmts(s.body, ind + "  ")
                out.append(f"{ind}}}")
            elif isinstance(s, K.Store):
                v = self.value(s.value)
                if s.buffer.dtype is DType.bool:
                    v = f"(uchar){v}"
                out.append(f"{ind}{s.buffer.name}[{self.index(s.index)}] = {_strip(v)};")
            elif isinstance(s, K.DefAcc):
                self.uses.add(s.dtype)
                out.append(f"{ind}{self.types[s.dtype]} {s.name} = {self.lit(s.init, s.dtype)};")
            elif isinstance(s, K.Accumulate):
                op = "add" if s.op == "sum" else "maximum"
                acc = K.AccRef(s.name, s.value.dtype)
                out.append(f"{ind}{s.name} = {_strip(self.value(K.Binary(op, acc, s.value)))};")
            elif isinstance(s, K.Let):
                out.append(f"{ind}{self.types[s.value.dtype]} {s.name} = "
                           f"{_strip(self.value(s.value))};")
            else:
                raise BackendError(f"not a statement: {s!r}", stage=STAGE)
        return out

    # ---- expressions ----
    def index(self, e) -> str:
        if isinstance(e, K.Const):
            v = int(e.value)
            return f"{v}L" if abs(v) >= 2**31 else str(v)
        if isinstance(e, K.Var):
            return e.name
        a, b = self.index(e.a), self.index(e.b)
        if isinstance(e, K.Add):
            return f"{a} + {b}"
        if isinstance(e, K.Mul):
            return f"{_p(a)}*{_p(b)}"
        if isinstance(e, K.FloorDiv):   # indices are never negative: C's / and % floor
            return f"{_p(a)}/{_p(b)}"
        if isinstance(e, K.Mod):
            return f"{_p(a)}%{_p(b)}"
        fn = "min" if isinstance(e, K.Min) else "max"
        return f"{fn}(({self.index_type})({a}), ({self.index_type})({b}))"

    def lit(self, v, dtype: DType) -> str:
        if dtype is DType.bool:
            return "true" if v else "false"
        if dtype.is_float:
            v = float(v)
            suffix = "f" if dtype is DType.float32 else ""
            if math.isnan(v):
                return f"(({self.types[dtype]})NAN)"
            if math.isinf(v):
                return f"(({self.types[dtype]}){'-' if v < 0 else ''}INFINITY)"
            return f"{v!r}{suffix}" if v >= 0 else f"({v!r}{suffix})"
        v = int(v)
        if dtype is DType.int64:
            return "(-9223372036854775807L - 1)" if v == -2**63 else f"{v}L" if v >= 0 else f"({v}L)"
        return "(-2147483647 - 1)" if v == -2**31 else str(v) if v >= 0 else f"({v})"

    def value(self, v) -> str:
        if isinstance(v, K.Load):
            b = v.buffer
            name = f"{self.k.name}_{b.name}" if b.role == "const" else b.name
            x = f"{name}[{self.index(v.index)}]"
            return f"({x} != 0)" if b.dtype is DType.bool else x
        if isinstance(v, K.Lit):
            return self.lit(v.value, v.dtype)
        if isinstance(v, K.Unary):
            fmt = self.unary.get((v.op, _kind(v.dtype)))
            if fmt is None:
                raise NoRuleError(f"no OpenCL rule for {v.op} on {v.dtype.name}", stage=STAGE,
                                  hint="add it to OpenCLRenderer.unary in backends/opencl_render.py")
            self.uses.add(v.dtype)
            return fmt.format(x=self.value(v.x), **self.tu(v.dtype))
        if isinstance(v, K.Binary):
            fmt = self.binary.get((v.op, _kind(v.a.dtype)))
            if fmt is None:
                raise NoRuleError(f"no OpenCL rule for {v.op} on {v.a.dtype.name}", stage=STAGE,
                                  hint="add it to OpenCLRenderer.binary in backends/opencl_render.py")
            self.uses.add(v.a.dtype)
            return fmt.format(a=self.value(v.a), b=self.value(v.b), **self.tu(v.a.dtype))
        if isinstance(v, K.Select):
            return f"({self.value(v.cond)} ? {self.value(v.a)} : {self.value(v.b)})"
        if isinstance(v, K.CastE):
            x, src, dst = self.value(v.x), v.x.dtype, v.dtype
            self.uses.add(dst)
            if src is dst:
                return x
            if dst is DType.bool:   # nan -> true, as numpy
                return f"({x} != 0)"
            return f"(({self.types[dst]}){x})"
        if isinstance(v, K.RandE):
            self.uses.add("rand")
            self.uses.add(v.dtype)
            t = self.types[v.dtype]
            scale = "0x1p-24f" if v.dtype is DType.float32 else "0x1p-24"
            return (f"(({t})(gc_rand_bits((long){self.value(v.key)}, {self.index(v.index)}) >> 8)"
                    f" * {scale})")
        if isinstance(v, K.InBounds):
            parts = []
            for e, lo, hi in v.checks:
                x = self.index(e)
                parts.append(f"{lo} <= {_p(x)} && {_p(x)} < {hi}")
            return "(" + " && ".join(parts) + ")" if parts else "true"
        if isinstance(v, (K.AccRef, K.Ref)):
            return v.name
        raise BackendError(f"not a value: {v!r}", stage=STAGE)

    def tu(self, dtype: DType) -> dict:
        return {"t": self.types[dtype], "u": self.unsigned.get(dtype, self.types[dtype])}


def _unflatten(flat: str, loops, it: str, indent: str) -> list[str]:
    """Declarations of the loop variables of a perfect nest from one flat (row-major) id."""
    out, stride = [], math.prod(lp.extent for lp in loops)
    for lp in loops:
        stride //= lp.extent
        q = flat if stride == 1 else f"{flat} / {stride}"
        e = q if lp is loops[0] else f"{_p(q)} % {lp.extent}"
        out.append(f"{indent}{it} {lp.var} = {e};")
    return out


def _p(s: str) -> str:
    return f"({s})" if " " in s and not (s.startswith("(") and s.endswith(")")) else s


def _strip(s: str) -> str:
    """Drop one pair of outer parentheses when they enclose the whole expression."""
    if s.startswith("(") and s.endswith(")"):
        depth = 0
        for i, ch in enumerate(s):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(s) - 1:
                return s
        return s[1:-1]
    return s


# the work-group reduction, tiled matmul and vector renderers use the helpers above (imported
# last, as they import this module)
from graphc.backends import opencl_matmul as MM  # noqa: E402
from graphc.backends import opencl_reduce as RED  # noqa: E402
from graphc.backends import opencl_vector as VEC  # noqa: E402
