"""Running a compiled graph on an OpenCL device: `OpenCLProgram` (buffers, argument binding,
launches) and `OpenCLArray`, an array that stays in the device's memory between calls.

Buffers (all allocated once, in the Program's context):
  arena        the intermediates, laid out by the `scheduled` stage's memory plan
  constants    uploaded once
  inputs       one per graph input, written each call from a host array
  outputs      one per kernel result the graph returns, read back each call

A call binds each kernel argument to a buffer (`clSetKernelArg`) only when it changes:

  host array in             upload into the input's own buffer (as before)
  OpenCLArray in            bind its buffer (same context: no copy; another context or another
                            backend's device array goes through the host)
  device_outputs=False      outputs in the Program's own buffers, read back as numpy arrays
  device_outputs=True       outputs written into fresh buffers handed to the caller as
                            OpenCLArrays (nothing read back)

Donation swaps buffers instead of copying them: an OpenCLArray passed as a donated argument
(`donate_argnums`) is consumed by the call (deleted, as in JAX), and its buffer goes to a small
free list from which the next call takes its output buffers. A training step that donates its
parameters and gets the new ones back as device arrays ping-pongs between two sets of buffers:
no allocation, no device copy, no host traffic for its state. The buffer is reused only by a
later call, and the queue is in order, so every kernel that read it has run by then; a
kernel never writes a buffer it reads in the same call (the memory plan's M5, writing into
the donated input itself, is left to the numpy backend).

`TRANSFERS` counts the bytes that cross between host and device, for tests and benchmarks.
"""
from __future__ import annotations

import threading
from collections import Counter

import numpy as np

from graphc.device import DeviceArray
from graphc.interpret import check_args
from graphc.ir import Graph, Node, register_internal_dir
from graphc.ops import Op

from graphc.backends.runtime import arena_bytes, arena_offset, host_outputs

register_internal_dir(__file__)

TRANSFERS = {"h2d_bytes": 0, "d2h_bytes": 0}  # host <-> device bytes since import


def _upload(queue, buf, host: np.ndarray) -> None:
    import pyopencl as cl
    if host.nbytes:
        cl.enqueue_copy(queue, buf, host, is_blocking=False)
        TRANSFERS["h2d_bytes"] += host.nbytes


def _download(queue, host: np.ndarray, buf) -> None:
    import pyopencl as cl
    if host.nbytes:
        cl.enqueue_copy(queue, host, buf, is_blocking=True)
        TRANSFERS["d2h_bytes"] += host.nbytes


class OpenCLArray(DeviceArray):
    """An array in an OpenCL context's memory: a cl.Buffer of its own (max(nbytes, 1) bytes,
    never a region of a Program's arena, so no later call overwrites it), read through the
    queue whose kernels wrote it (in order, so a read waits for them)."""

    def __init__(self, buffer, queue, shape, dtype):
        super().__init__(shape, dtype)
        self.buffer, self.queue, self.context = buffer, queue, queue.context

    def _fetch(self) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        _download(self.queue, out, self.buffer)
        return out

    def _release(self) -> None:
        self.buffer = None  # pyopencl releases the cl_mem with its last reference


def to_device(array, backend=None) -> OpenCLArray:
    """Copy a host array into device memory (`backend`: an OpenCLBackend; default the
    registered "opencl" one)."""
    import pyopencl as cl
    if backend is None:
        from graphc import backends
        backend = backends.get("opencl")
    backend.device  # selects the device and makes the context and queue on first use
    a = np.ascontiguousarray(np.asarray(array))
    buf = cl.Buffer(backend.context, cl.mem_flags.READ_WRITE, max(a.nbytes, 1))
    _upload(backend.queue, buf, a)
    return OpenCLArray(buf, backend.queue, a.shape, a.dtype)


class OpenCLProgram:
    """A compiled graph bound to a device. Calling it checks the arguments (count, shape,
    dtype: numpy arrays or OpenCLArrays), binds or uploads the inputs, enqueues every kernel
    and returns the outputs: numpy arrays, or OpenCLArrays with `device_outputs=True`.
    `device_buffers` maps node ids to the Program's own cl.Buffers (an input's or a
    result's made when a call first needs it)."""

    device_memory = True  # Compiled passes device arrays through and asks for device outputs

    def __init__(self, backend, graph: Graph, nodes, kernels, source: str, prog, loops):
        import pyopencl as cl
        from graphc.backends.opencl import _Step  # that module imports this one
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
        self._results = list({id(o): o for o in graph.outputs if o.op is Op.FUSED}.values())
        # inputs and results get their own buffers on first need (`_own`): a call that binds
        # the caller's device arrays and returns device arrays never uses them
        lazy = {id(n) for n in (*graph.inputs, *self._results)}
        subs: dict[tuple[int, int], object] = {}
        for n in nodes:
            if id(n) in lazy:
                continue
            off, nbytes = arena_offset(n), max(n.type.nbytes, 1)
            if off >= 0 and off % align == 0 and n.type.nbytes:
                if (off, nbytes) not in subs:  # same region, same object (in-place kernels)
                    subs[(off, nbytes)] = self.arena.get_sub_region(off, nbytes)
                self.device_buffers[id(n)] = subs[(off, nbytes)]
            else:  # its own buffer (not planned, a view, or misaligned for this device)
                self.device_buffers[id(n)] = cl.Buffer(ctx, mf.READ_WRITE, nbytes)
        for n in nodes:
            for i in n.inputs:
                if id(i) not in self.device_buffers and id(i) not in lazy:  # a constant
                    arr = np.ascontiguousarray(i.attrs["value"].array)
                    self.device_buffers[id(i)] = (
                        cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=arr)
                        if arr.nbytes else cl.Buffer(ctx, mf.READ_ONLY, 1))
                    TRANSFERS["h2d_bytes"] += arr.nbytes
        # where each node is a kernel argument, so a call can (re)bind inputs and results
        self._uses: dict[int, list[tuple[object, int]]] = {}
        for s in self.steps:
            for j, a in enumerate([*s.node.inputs, s.node]):
                self._uses.setdefault(id(a), []).append((s.clk, j))
                if id(a) not in lazy:
                    s.clk.set_arg(j, self.device_buffers[id(a)])
        self._bound = dict(self.device_buffers)  # node id -> the buffer its kernels use now
        # buffers of consumed donated arrays, by size, for the next call's outputs; at most as
        # many of a size as the outputs need, so the free list never grows past one set
        self._free: dict[int, list] = {}
        self._room = Counter(max(o.type.nbytes, 1) for o in graph.outputs)

    def _bind(self, n: Node, buf) -> None:
        if self._bound.get(id(n)) is not buf:
            for clk, j in self._uses.get(id(n), ()):
                clk.set_arg(j, buf)
            self._bound[id(n)] = buf

    def _own(self, n: Node):
        """The Program's own buffer for an input (uploads) or a result (read back)."""
        buf = self.device_buffers.get(id(n))
        if buf is None:
            import pyopencl as cl
            flags = cl.mem_flags.READ_ONLY if n.op is Op.INPUT else cl.mem_flags.READ_WRITE
            buf = cl.Buffer(self.context, flags, max(n.type.nbytes, 1))
            self.device_buffers[id(n)] = buf
        return buf

    def _fresh(self, n: Node):
        """A buffer for one output handed to the caller: a freed one of its size, or new."""
        import pyopencl as cl
        size = max(n.type.nbytes, 1)
        free = self._free.get(size)
        return free.pop() if free else cl.Buffer(self.context, cl.mem_flags.READ_WRITE, size)

    def __call__(self, *arrays, device_outputs: bool = False):
        import pyopencl as cl
        args = check_args(self.graph, arrays, stage="run (opencl)", keep_device=True)
        with self._lock:
            q = self.queue
            given, donated = {}, []
            for n, a in zip(self.graph.inputs, args):
                if isinstance(a, DeviceArray) and n.attrs.get("role") == "donated":
                    donated.append(a)
                if isinstance(a, OpenCLArray) and a.context == self.context:
                    self._bind(n, a.buffer)
                else:  # a host array, or a device array elsewhere (copied down first)
                    a = np.ascontiguousarray(np.asarray(a)).reshape(a.shape)
                    self._bind(n, self._own(n))
                    _upload(q, self._own(n), a)
                given[id(n)] = a
            for o in self._results:
                self._bind(o, self._fresh(o) if device_outputs else self._own(o))
            for s in self.steps:
                if not s.empty:
                    cl.enqueue_nd_range_kernel(q, s.clk, s.global_, s.local)
            if device_outputs:
                outs = self._device_outputs()
            else:
                def value(n):
                    if n.op is Op.INPUT:
                        return np.asarray(given[id(n)])
                    if n.op is not Op.FUSED:
                        return None
                    out = np.empty(n.shape, n.dtype.np)
                    _download(q, out, self._own(n))
                    return out
                outs = host_outputs(self.graph, value)
            q.finish()
            self._consume(donated, keep=device_outputs)
            return outs

    def _device_outputs(self) -> tuple:
        """The outputs as OpenCLArrays, each owning its buffer: a kernel result the buffer it
        was just written into; a repeated result, an input or a constant returned as is, a
        copy of its own (the caller may donate one and keep the other)."""
        import pyopencl as cl
        q, seen, outs = self.queue, set(), []
        for o in self.graph.outputs:
            if o.op is Op.FUSED and id(o) not in seen:
                seen.add(id(o))
                buf = self._bound[id(o)]
            else:
                buf = self._fresh(o)
                if o.op is Op.CONST:
                    _upload(q, buf, np.ascontiguousarray(o.attrs["value"].array, o.dtype.np))
                elif o.type.nbytes:  # device to device
                    cl.enqueue_copy(q, buf, self._bound[id(o)], byte_count=o.type.nbytes)
            outs.append(OpenCLArray(buf, q, o.shape, o.dtype.np))
        return tuple(outs)

    def _consume(self, donated: list, keep: bool) -> None:
        """Delete the donated device arrays; with keep, put their buffers (this context's,
        each once) on the free list for the next call's outputs."""
        seen: set[int] = set()
        for a in donated:
            if a.is_deleted():   # the same array donated twice in one call
                continue
            buf = a.buffer if isinstance(a, OpenCLArray) and a.context == self.context else None
            a.delete()
            if keep and buf is not None and id(buf) not in seen:
                seen.add(id(buf))
                free = self._free.setdefault(buf.size, [])
                if len(free) < self._room[buf.size]:
                    free.append(buf)
