"""The OpenCL backend: each fused kernel is lowered to the kernel IR (`graphc.lower`),
rendered as OpenCL C 1.2 text, built with pyopencl for one device and run there.

    kernel IR --(OpenCLRenderer)--> OpenCL C --(build, cached)--> cl.Program --(queue)--> run

Parallel mapping: one work-item per iteration of the outermost (parallel) loop; when the
loops over the output shape form a perfect nest and no kernel reads its own output, they are
flattened into one global id (one work-item per output element). Inner loops (reductions)
run sequentially inside the work-item. A kernel without a parallel loop (a scalar result)
runs as a single work-item. Three kinds of kernel map differently, sized within the
device's limits (`Limits`: work-group size, local memory, SIMD width; `limit_overrides`):
  - a reduction with few outputs and a long reduced extent runs one work-group per output
    element, partials combined in __local memory (`group_reductions`; opencl_reduce.py);
  - a matmul computes a block of outputs per work-item, with A and B tiles in __local
    memory on GPUs (`matmul`; opencl_matmul.py);
  - an elementwise float kernel runs W elements per work-item on vector types (`vectors`;
    opencl_vector.py).
Kernel launches are dear on PoCL: fusion's rule F4, which materialises a costly op (an
LSTM's gates) rather than recomputing it in each backward kernel, costs this backend the
extra kernels (W3 93 -> 110 ms on PoCL here).

Memory: the Program keeps its buffers on the device between calls (the arena laid out by the
`scheduled` stage's plan, constants, inputs, outputs); it takes `OpenCLArray`s as arguments and
returns them with `device_outputs=True`, so a training step's state stays on the device
(`graphc.backends.opencl_program`; `TRANSFERS` counts host <-> device bytes).

The renderer (kernel IR -> OpenCL C) is `graphc.backends.opencl_render`; running a compiled
graph is `graphc.backends.opencl_program`; this module selects the device, builds and caches
programs. `OpenCLRenderer`, `OpenCLProgram`, `OpenCLArray` are re-exported here.

pyopencl is imported inside functions only, so `import graphc.backends` stays light.
"""
from __future__ import annotations

import hashlib
import math
import os
import threading
from dataclasses import replace

from graphc import kernel as K
from graphc.errors import BackendError
from graphc.ir import Graph, Node, register_internal_dir

from graphc.backends.opencl_program import (  # noqa: F401  (re-exported)
    TRANSFERS, OpenCLArray, OpenCLProgram, to_device)
from graphc.backends.opencl_render import STAGE, Launch, Limits, OpenCLRenderer
from graphc.backends.runtime import cache_dir, kernel_nodes

register_internal_dir(__file__)

INSTALL_HINT = 'pip install "pyopencl[pocl]"  (PoCL: an OpenCL driver for the CPU)'
_PROGRAMS: dict[str, object] = {}   # cache key -> built cl.Program (in memory)
_LOCK = threading.Lock()
STATS = {"builds": 0, "disk_hits": 0, "memory_hits": 0}  # builds from source, for tests


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
    """One kernel launch: its cl.Kernel, global and local size (a `Launch`, chosen by the
    renderer within the device's limits), argument nodes."""

    def __init__(self, node: Node, kernel: K.Kernel, clk, launch: Launch, device):
        self.node, self.kernel, self.clk = node, kernel, clk
        self.empty = launch.empty or node.type.size == 0
        self.global_, self.local = launch.global_size, launch.local_size
        if launch.required and not self.empty:   # the source fixes the work-group size
            import pyopencl as cl
            limit = clk.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE, device)
            if limit < math.prod(self.local):
                raise BackendError(f"kernel {kernel.name} needs work-groups of {self.local} "
                                   f"work-items; {device.name.strip()} allows {limit} for it",
                                   stage=STAGE)


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
        element (the k loop inside) instead of the CPU's row-blocked loop order, which would
        leave one work-item per block of 16 rows: that form is what the renderer blocks
        (`graphc.backends.opencl_matmul.match`), and what it runs with matmul="per-element".
        Reductions over leading axes likewise: work-group reductions (opencl_reduce), not
        one work-item walking the rows."""
        return kernel_nodes(graph, row_order=False)

    def render(self, graph: Graph, kernels) -> tuple[str, list[Launch]]:
        r = OpenCLRenderer(wg_size=self.wg_size, limits=self.limits, matmul=self.matmul,
                           vectors=self.vectors)
        src = r.render(kernels, f" from graph {graph.name!r}")
        return src, [r.sizes(k) for k in kernels]

    # How matmul kernels are blocked (`graphc.backends.opencl_matmul`): "local" (A and B tiles
    # in __local memory), "registers" (register blocks only) or "per-element"; None: "local"
    # on GPUs (the usual GPU GEMM), "registers" on CPUs, by this measurement on PoCL (2-core
    # EPYC, AVX2; float32 square matmul in GFLOP/s, the W1 MLP training step in ms, medians
    # of interleaved runs in one process):
    #                   128    256    512   1024    W1 784-512-256-10 b128
    #   per-element     1.4    1.4    1.0    0.5    299 ms
    #   local           2.6    2.8    2.9    3.7    100 ms
    #   registers      15.2   25.3   33.6   35.8     15 ms
    # PoCL runs a work-group on one thread, so __local tiles are only copies (and barriers
    # put the accumulators in memory); its vector types and caches do what tiles do on a GPU.
    matmul: str | None = None
    # Elementwise kernels on vector types where they qualify (`graphc.backends.opencl_vector`);
    # measured on PoCL (as above, whole calls): W4 8-op chain on 4M floats 261 -> 45 ms, row
    # softmax 4096x1024 162 -> 108 ms (its last kernel; the two reductions stay scalar).
    vectors: bool = True
    # Overrides of the device's limits (a dict of `Limits` fields), e.g. to check that a
    # device with small work-groups or little local memory still gets correct kernels.
    limit_overrides: dict | None = None

    @property
    def limits(self) -> Limits:
        import pyopencl as cl
        d = self.device
        lim = Limits(gpu=bool(d.type & cl.device_type.GPU),
                     max_work_group_size=d.max_work_group_size, local_mem_size=d.local_mem_size,
                     vector_bytes=max(d.preferred_vector_width_float, 1) * 4)
        return replace(lim, **(self.limit_overrides or {}))

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
        source, launches = self.render(graph, kernels)
        if "cl_khr_fp64" not in dev.extensions and "cl_khr_fp64" in source:
            raise BackendError(f"{dev.name.strip()} has no float64 (cl_khr_fp64); use float32",
                               stage=STAGE)
        prog = self.compiler.compile(source) if kernels else None
        return OpenCLProgram(self, graph, nodes, kernels, source, prog, launches)
