"""The OpenCL backend: each fused kernel is lowered to the kernel IR (`graphc.lower`),
rendered as OpenCL C 1.2 text, built with pyopencl for one device and run there.

    kernel IR --(OpenCLRenderer)--> OpenCL C --(build, cached)--> cl.Program --(queue)--> run

Parallel mapping (first version): one work-item per iteration of the outermost (parallel)
loop; when the loops over the output shape form a perfect nest and no kernel reads its own
output, they are flattened into one global id (one work-item per output element). Inner
loops (reductions, the k loop of a matmul) run sequentially inside the work-item. A kernel
without a parallel loop (a scalar result) runs as a single work-item.

Memory: the Program keeps every buffer on the device between calls: the intermediate arena
(laid out by the `scheduled` stage's plan), graph constants (uploaded once), one buffer per
input (written each call) and per output (read back each call). Keeping training state on
the device between calls is a later step: `OpenCLProgram.device_buffers` maps graph nodes to
their cl.Buffers, so a step whose parameter outputs feed its parameter inputs can bind the
output buffer of one call as the input buffer of the next instead of copying.

pyopencl is imported inside functions only, so `import graphc.backends` stays light.
"""
from __future__ import annotations

import hashlib
import math
import os
import threading
from pathlib import Path

import numpy as np

from graphc import kernel as K
from graphc.errors import BackendError, NoRuleError
from graphc.interpret import check_args
from graphc.ir import Graph, Node, register_internal_dir
from graphc.ops import Op
from graphc.types import DType

from graphc.backends.runtime import arena_bytes, arena_offset, cache_dir, host_outputs, kernel_nodes

register_internal_dir(__file__)

STAGE = "compile (opencl)"
INSTALL_HINT = 'pip install "pyopencl[pocl]"  (PoCL: an OpenCL driver for the CPU)'
_PROGRAMS: dict[str, object] = {}   # cache key -> built cl.Program (in memory)
_LOCK = threading.Lock()
STATS = {"builds": 0, "disk_hits": 0, "memory_hits": 0}  # builds from source, for tests


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

    def __init__(self):
        self.uses: set = set()

    # ---- program level ----
    def render(self, kernels: list[K.Kernel], title: str = "") -> str:
        """One OpenCL C program with a __kernel per kernel IR kernel."""
        self.uses = set()
        bodies = [self.render_kernel(k) for k in kernels]
        head = [f"/* generated by graphc's opencl backend{title}",
                "   each kernel: the graph nodes it came from, then OpenCL C (one work-item",
                "   per output element or per iteration of the outermost loop) */"]
        if DType.float64 in self.uses:
            head.append("#pragma OPENCL EXTENSION cl_khr_fp64 : enable")
        for d in (DType.float32, DType.float64):
            if d in self.uses:
                head.append(self.helpers_float.format(t=self.types[d]).rstrip())
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
        if not _reads_output(k):      # iterations of a perfect nest store distinct elements
            while len(body) == 1 and isinstance(body[0], K.Loop):
                loops.append(body[0])
                body = list(body[0].body)
        return loops, rest + body

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
        lines.append(f"{self.kernel_prefix} {k.name}({', '.join(params)}) {{")
        loops, body = self.launch(k)
        if loops and math.prod(lp.extent for lp in loops) == 0:
            return "\n".join(lines + ["  /* an empty result: never launched */", "}"])
        if loops:
            total = math.prod(lp.extent for lp in loops)
            it = self.index_type
            lines.append(f"  {it} gid = {self.global_id};")
            lines.append(f"  if (gid >= {total}) return;  /* the global size is rounded up */")
            stride = total
            for lp in loops:
                stride //= lp.extent
                q = "gid" if stride == 1 else f"gid / {stride}"
                e = q if lp is loops[0] else f"{_p(q)} % {lp.extent}"
                lines.append(f"  {it} {lp.var} = {e};")
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
                                  hint="add it to OpenCLRenderer.unary in backends/opencl.py")
            self.uses.add(v.dtype)
            return fmt.format(x=self.value(v.x), **self.tu(v.dtype))
        if isinstance(v, K.Binary):
            fmt = self.binary.get((v.op, _kind(v.a.dtype)))
            if fmt is None:
                raise NoRuleError(f"no OpenCL rule for {v.op} on {v.a.dtype.name}", stage=STAGE,
                                  hint="add it to OpenCLRenderer.binary in backends/opencl.py")
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


def _reads_output(k: K.Kernel) -> bool:
    def v_reads(v) -> bool:
        if isinstance(v, K.Load):
            return v.buffer.role == "out"
        return any(v_reads(getattr(v, f)) for f in ("x", "a", "b", "cond", "key", "value")
                   if hasattr(v, f) and not isinstance(getattr(v, f), (str, int, float)))

    def s_reads(body) -> bool:
        for s in body:
            if isinstance(s, K.Loop) and s_reads(s.body):
                return True
            if isinstance(s, (K.Store, K.Accumulate, K.Let)) and v_reads(s.value):
                return True
        return False
    return s_reads(k.body)


def _per_element(node: Node, k: K.Kernel) -> K.Kernel:
    from dataclasses import replace
    from graphc.lower import _Lowerer
    per = _Lowerer(node.attrs["body"], k.name).kernel("matmul-per-element", k.source_nodes)
    return K.verify(replace(per, kind=k.kind))


# ---- devices -----------------------------------------------------------------------------------------
def platforms():
    """[(platform, [devices])]; a BackendError (with the install hint) when there is none."""
    try:
        import pyopencl as cl
    except ImportError as e:
        raise BackendError(f"pyopencl is not installed ({e}); {INSTALL_HINT}", stage=STAGE)
    try:
        found = [(p, p.get_devices()) for p in cl.get_platforms()]
    except Exception as e:  # no ICD loader or no platform registered
        raise BackendError(f"no OpenCL platform found ({type(e).__name__}: {e}); "
                           f"{INSTALL_HINT}", stage=STAGE)
    found = [(p, ds) for p, ds in found if ds]
    if not found:
        raise BackendError(f"no OpenCL platform with a device found; {INSTALL_HINT}",
                           stage=STAGE)
    return found


def select_device(spec: str | None = None):
    """The device `spec` names ("P:D" platform and device numbers, or a case-insensitive
    substring of the device or platform name); default $GRAPHC_OPENCL_DEVICE, else the
    first GPU, else the first device (PoCL's CPU driver here)."""
    import pyopencl as cl
    spec = spec if spec is not None else os.environ.get("GRAPHC_OPENCL_DEVICE") or None
    found = platforms()
    listing = "; ".join(f"{i}:{j} {d.name.strip()} ({p.name.strip()})"
                        for i, (p, ds) in enumerate(found) for j, d in enumerate(ds))
    if spec is None:
        for _, ds in found:
            for d in ds:
                if d.type & cl.device_type.GPU:
                    return d
        return found[0][1][0]
    if ":" in spec and all(part.strip().isdigit() for part in spec.split(":", 1)):
        i, j = (int(part) for part in spec.split(":", 1))
        if i < len(found) and j < len(found[i][1]):
            return found[i][1][j]
    else:
        for p, ds in found:
            for d in ds:
                if spec.lower() in d.name.lower() or spec.lower() in p.name.lower():
                    return d
    raise BackendError(f"no OpenCL device matches {spec!r}; devices: {listing}", stage=STAGE,
                       hint="set GRAPHC_OPENCL_DEVICE to P:D or part of a device's name")


def describe_devices() -> list[str]:
    """One line per platform and device (for `graphc devices`)."""
    import pyopencl as cl
    lines = []
    for i, (p, ds) in enumerate(platforms()):
        lines.append(f"platform {i}: {p.name.strip()} ({p.version.strip()})")
        for j, d in enumerate(ds):
            kind = cl.device_type.to_string(d.type)
            fp64 = "fp64" if "cl_khr_fp64" in d.extensions else "no fp64"
            lines.append(f"  {i}:{j}  {d.name.strip()}  [{kind}; {d.max_compute_units} compute "
                         f"units; {d.global_mem_size >> 20} MiB; {fp64}; driver "
                         f"{d.driver_version.strip()}]")
    return lines


# ---- compile: source -> cl.Program, cached in memory and on disk ------------------------------------------
class OpenCLCompiler:
    """Builds OpenCL C for one device and context; binaries cached by source hash, build
    options, device name and driver version. A failed build raises a BackendError with
    the build log verbatim."""

    def __init__(self, context, device):
        self.context, self.device = context, device
        import pyopencl as cl
        self.options = []
        if device.single_fp_config & cl.device_fp_config.CORRECTLY_ROUNDED_DIVIDE_SQRT:
            self.options.append("-cl-fp32-correctly-rounded-divide-sqrt")

    def key(self, source: str) -> str:
        d = self.device
        ident = f"{d.platform.name}|{d.name}|{d.driver_version}|{d.version}|{self.options}"
        return hashlib.sha256(f"{ident}\n{source}".encode()).hexdigest()[:32]

    def compile(self, source: str):
        import pyopencl as cl
        key = self.key(source)
        with _LOCK:
            prog = _PROGRAMS.get((key, id(self.context)))
            if prog is not None:
                STATS["memory_hits"] += 1
                return prog
            folder = cache_dir("opencl")
            path = folder / f"{key}.bin" if folder is not None else None
            prog = None
            if path is not None and path.exists():
                try:
                    prog = cl.Program(self.context, [self.device], [path.read_bytes()])
                    prog.build(options=self.options)
                    STATS["disk_hits"] += 1
                except Exception:  # a stale or foreign binary: rebuild from source
                    prog = None
            built = prog is None
            if built:
                prog = self._build(source)
            if path is not None and built:  # also replaces a stale binary that failed to load
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(f".{os.getpid()}.tmp")
                    tmp.write_bytes(prog.get_info(cl.program_info.BINARIES)[0])
                    os.replace(tmp, path)
                except OSError:
                    pass  # a read-only cache only costs rebuilds
            _PROGRAMS[(key, id(self.context))] = prog
            return prog

    def _build(self, source: str):
        import pyopencl as cl
        STATS["builds"] += 1
        prog = cl.Program(self.context, source)
        try:
            return prog.build(options=self.options, devices=[self.device])
        except cl.Error as e:
            try:
                log = prog.get_build_info(self.device, cl.program_build_info.LOG)
            except Exception:
                log = str(e)
            numbered = "\n".join(f"{i + 1:4d}  {line}" for i, line in
                                 enumerate(source.splitlines()))
            raise BackendError(f"OpenCL build failed on {self.device.name.strip()}:\n"
                               f"{log.strip()}\n--- source ---\n{numbered}",
                               stage=STAGE) from None


# ---- run -------------------------------------------------------------------------------------------------
class _Step:
    """One kernel launch: its cl.Kernel, global and local size, argument nodes."""

    def __init__(self, node: Node, kernel: K.Kernel, clk, loops: list, device):
        self.node, self.kernel, self.clk = node, kernel, clk
        n = math.prod(lp.extent for lp in loops) if loops else 1
        self.empty = n == 0 or node.type.size == 0
        import pyopencl as cl
        if device.type & cl.device_type.GPU and n > 1:
            ls = min(256, device.max_work_group_size)
            self.local = (ls,)
            self.global_ = (-(-n // ls) * ls,)
        else:
            self.local, self.global_ = None, (max(n, 1),)   # the driver chooses (CPU)


class OpenCLProgram:
    """A compiled graph bound to a device. Calling it checks the arguments (count, shape,
    dtype), uploads the inputs, enqueues every kernel and reads the outputs back. Buffers
    live on the device for the Program's lifetime (`device_buffers`: node id -> cl.Buffer)."""

    def __init__(self, backend, graph: Graph, nodes, kernels, source: str, prog, loops):
        import pyopencl as cl
        self.backend, self.graph, self.source, self.kernels = backend, graph, source, kernels
        self.context, self.queue, self.device = backend.context, backend.queue, backend.device
        self._lock = threading.Lock()
        self.steps = [_Step(n, k, cl.Kernel(prog, k.name), lp, self.device)  # own args bound
                      for n, k, lp in zip(nodes, kernels, loops)]
        ctx, mf = self.context, cl.mem_flags
        self.arena_bytes = arena_bytes(nodes)
        self.arena = cl.Buffer(ctx, mf.READ_WRITE, max(self.arena_bytes, 1))
        align = max(self.device.mem_base_addr_align // 8, 1)
        self.device_buffers: dict[int, object] = {}
        subs: dict[tuple[int, int], object] = {}
        for n in nodes:
            off, nbytes = arena_offset(n), max(n.type.nbytes, 1)
            if off >= 0 and off % align == 0 and n.type.nbytes:
                if (off, nbytes) not in subs:  # same region, same object (in-place kernels)
                    subs[(off, nbytes)] = self.arena.get_sub_region(off, nbytes)
                self.device_buffers[id(n)] = subs[(off, nbytes)]
            else:  # its own buffer (not planned, a view, or misaligned for this device)
                self.device_buffers[id(n)] = cl.Buffer(ctx, mf.READ_WRITE, nbytes)
        for n in graph.inputs:
            self.device_buffers[id(n)] = cl.Buffer(ctx, mf.READ_ONLY, max(n.type.nbytes, 1))
        for n in nodes:
            for i in n.inputs:
                if id(i) not in self.device_buffers:   # a graph constant, uploaded once
                    arr = np.ascontiguousarray(i.attrs["value"].array)
                    self.device_buffers[id(i)] = (
                        cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=arr)
                        if arr.nbytes else cl.Buffer(ctx, mf.READ_ONLY, 1))
        for s in self.steps:
            s.clk.set_args(*[self.device_buffers[id(i)] for i in s.node.inputs],
                           self.device_buffers[id(s.node)])

    def __call__(self, *arrays):
        import pyopencl as cl
        args = check_args(self.graph, arrays, stage="run (opencl)")
        with self._lock:
            q = self.queue
            hosts = {}
            for n, a in zip(self.graph.inputs, args):
                a = np.ascontiguousarray(a).reshape(a.shape)
                hosts[id(n)] = a
                if a.nbytes:
                    cl.enqueue_copy(q, self.device_buffers[id(n)], a, is_blocking=False)
            for s in self.steps:
                if not s.empty:
                    cl.enqueue_nd_range_kernel(q, s.clk, s.global_, s.local)

            def value(n):
                if id(n) in hosts:
                    return hosts[id(n)]
                if n.op is not Op.FUSED:
                    return None
                out = np.empty(n.shape, n.dtype.np)
                if out.nbytes:
                    cl.enqueue_copy(q, out, self.device_buffers[id(n)], is_blocking=True)
                return out
            outs = host_outputs(self.graph, value)
            q.finish()
            return outs


class OpenCLBackend:
    """Options: `device` ("P:D" or part of a device name; default $GRAPHC_OPENCL_DEVICE, else
    the first GPU, else the first device)."""
    name = "opencl"

    def __init__(self, device: str | None = None):
        self.device_spec = device
        self._device = None

    def available(self):
        try:
            d = self.device
        except BackendError as e:
            return False, str(e)
        except Exception as e:  # a broken driver is an answer, not a crash
            return False, f"OpenCL unusable: {type(e).__name__}: {e}"
        return True, f"OpenCL device {d.name.strip()} ({d.platform.name.strip()}, {d.version})"

    @property
    def device(self):
        if self._device is None:
            import pyopencl as cl
            self._device = select_device(self.device_spec)
            self.context = cl.Context([self._device])
            self.queue = cl.CommandQueue(self.context, self._device)
            self.compiler = OpenCLCompiler(self.context, self._device)
            if "cl_khr_fp64" not in self._device.extensions:
                self.fp64 = False
        return self._device

    def lower(self, graph: Graph):
        """Like the LLVM backend, except that matmul kernels keep one accumulator per output
        element (the k loop inside the work-item) instead of the CPU's row-blocked loop
        order, which would leave one work-item per block of 16 rows."""
        graph, nodes, kernels = kernel_nodes(graph)
        return graph, nodes, [_per_element(n, k) if k.kind == "matmul" else k
                              for n, k in zip(nodes, kernels)]

    def render(self, graph: Graph, kernels) -> tuple[str, list]:
        r = OpenCLRenderer()
        src = r.render(kernels, f" from graph {graph.name!r}")
        return src, [r.launch(k)[0] for k in kernels]

    def compile(self, graph: Graph) -> OpenCLProgram:
        dev = self.device
        graph, nodes, kernels = self.lower(graph)
        source, loops = self.render(graph, kernels)
        if "cl_khr_fp64" not in dev.extensions and "cl_khr_fp64" in source:
            raise BackendError(f"{dev.name.strip()} has no float64 (cl_khr_fp64); use float32",
                               stage=STAGE)
        prog = self.compiler.compile(source) if kernels else None
        return OpenCLProgram(self, graph, nodes, kernels, source, prog, loops)
