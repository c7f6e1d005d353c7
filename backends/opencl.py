"""The OpenCL backend: each fused kernel is lowered to the kernel IR (`graphc.lower`),
rendered as OpenCL C 1.2 text, built with pyopencl for one device and run there.

    kernel IR --(OpenCLRenderer)--> OpenCL C --(build, cached)--> cl.Program --(queue)--> run

Parallel mapping (first version): one work-item per iteration of the outermost (parallel)
loop; when the loops over the output shape form a perfect nest and no kernel reads its own
output, they are flattened into one global id (one work-item per output element). Inner
loops (reductions, the k loop of a matmul) run sequentially inside the work-item. A kernel
without a parallel loop (a scalar result) runs as a single work-item, except a reduction
with few outputs and a long reduced extent (a full reduction to a scalar): that runs one
work-group per output element, a strided partial per work-item, then a tree reduction in
__local memory (`OpenCLRenderer.grouped`).

Memory: the Program keeps every buffer on the device between calls: the intermediate arena
(laid out by the `scheduled` stage's plan), graph constants (uploaded once), one buffer per
input (written each call) and per output (read back each call). Keeping training state on
the device between calls is a later step: `OpenCLProgram.device_buffers` maps graph nodes to
their cl.Buffers, so a step whose parameter outputs feed its parameter inputs can bind the
output buffer of one call as the input buffer of the next instead of copying.

The renderer (kernel IR -> OpenCL C) is `graphc.backends.opencl_render`; this module selects the
device, builds and caches programs and runs them. `OpenCLRenderer` is re-exported here.

pyopencl is imported inside functions only, so `import graphc.backends` stays light.
"""
from __future__ import annotations

import hashlib
import math
import os
import threading

import numpy as np

from graphc import kernel as K
from graphc.errors import BackendError
from graphc.interpret import check_args
from graphc.ir import Graph, Node, register_internal_dir
from graphc.ops import Op

from graphc.backends.opencl_render import STAGE, OpenCLRenderer
from graphc.backends.runtime import arena_bytes, arena_offset, cache_dir, host_outputs, kernel_nodes

register_internal_dir(__file__)

INSTALL_HINT = 'pip install "pyopencl[pocl]"  (PoCL: an OpenCL driver for the CPU)'
_PROGRAMS: dict[str, object] = {}   # cache key -> built cl.Program (in memory)
_LOCK = threading.Lock()
STATS = {"builds": 0, "disk_hits": 0, "memory_hits": 0}  # builds from source, for tests


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

    def __init__(self, node: Node, kernel: K.Kernel, clk, launch: tuple, device):
        loops, wg = launch   # wg: work-items per work-group of a grouped reduction, else 0
        self.node, self.kernel, self.clk = node, kernel, clk
        n = math.prod(lp.extent for lp in loops) if loops else 1
        self.empty = n == 0 or node.type.size == 0
        import pyopencl as cl
        if wg:   # one work-group per output element, its size fixed by the source
            limit = clk.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE, device)
            if limit < wg:
                raise BackendError(f"kernel {kernel.name} needs work-groups of {wg} work-items;"
                                   f" {device.name.strip()} allows {limit} for it", stage=STAGE)
            self.local, self.global_ = (wg,), (max(n, 1) * wg,)
        elif device.type & cl.device_type.GPU and n > 1:
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
        r = OpenCLRenderer(wg_size=self.wg_size)
        src = r.render(kernels, f" from graph {graph.name!r}")
        return src, [(r.launch(k)[0], r.wg_size if r.grouped(k) is not None else 0)
                     for k in kernels]

    # Work-group reductions (local memory + barriers) pay off where a work-group runs in
    # parallel, on GPUs. PoCL runs a whole work-group on one CPU thread: measured 3x slower
    # there (sum of 4M floats: 5.9 -> 15.7 ms). None: on for GPUs only; True/False: force.
    group_reductions: bool | None = None

    @property
    def wg_size(self) -> int:
        """The work-group size of grouped reductions: 256, or the largest power of 2 the
        device allows; 0 when they are off for this device (see group_reductions)."""
        import pyopencl as cl
        on = self.group_reductions
        if on is None:
            on = bool(self.device.type & cl.device_type.GPU)
        if not on:
            return 0
        most = min(OpenCLRenderer.wg_size, self.device.max_work_group_size)
        return 1 << (most.bit_length() - 1)

    def compile(self, graph: Graph) -> OpenCLProgram:
        dev = self.device
        graph, nodes, kernels = self.lower(graph)
        source, loops = self.render(graph, kernels)
        if "cl_khr_fp64" not in dev.extensions and "cl_khr_fp64" in source:
            raise BackendError(f"{dev.name.strip()} has no float64 (cl_khr_fp64); use float32",
                               stage=STAGE)
        prog = self.compiler.compile(source) if kernels else None
        return OpenCLProgram(self, graph, nodes, kernels, source, prog, loops)
