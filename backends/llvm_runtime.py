"""The LLVM backend's runtime: a compiled program's kernel calls (`_Step`: a loop kernel split
over threads, or the packed GEMM then its epilogue) and the program (`LLVMProgram`): argument
checks, the per-call arena, and each kernel argument's address planned once.

Threads: a kernel whose loops do at least PARALLEL_MIN_WORK iterations splits its parallel
(outermost) loop into one chunk per thread of a shared pool; ctypes releases the GIL for the
call, so the chunks run at once.
"""
from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from graphc import kernel as K
from graphc.interpret import check_args
from graphc.ir import Graph, Node, register_internal_dir
from graphc.ops import Op

register_internal_dir(__file__)

PARALLEL_MIN_WORK = 1 << 20   # loop iterations (all levels) below which a kernel runs on one thread:
# handing a chunk to a pool thread costs ~50 us here, more than a 400K-iteration GEMV (batch-1
# inference: 64 us on one thread, 115 us split over two)
_POOL: list = []


def _arena_range(n: Node):
    """(start, end) bytes of n's result in the call's arena; None outside it (graph inputs,
    constants, view copies and unplanned results have buffers of their own)."""
    off = n.attrs.get("buffer", -1) if n.op is Op.FUSED and n.attrs["kind"] != "view" else -1
    return (off, off + n.type.nbytes) if off >= 0 else None


def _separate(n: Node) -> bool:
    """True when kernel n's output overlaps none of its inputs in memory (not written in
    place over a dying input by the memory plan): then its pointers may be `noalias`."""
    out = _arena_range(n)
    if out is None:
        return True
    return all(r is None or r[1] <= out[0] or out[1] <= r[0]
               for r in map(_arena_range, n.inputs))


def _pool():
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                        thread_name_prefix="graphc-llvm"))
    return _POOL[0]


def _work(body) -> int:
    """Loop iterations of a statement list (all nesting levels), to decide on threading."""
    total = 0
    for s in body:
        if isinstance(s, K.Loop):
            total += s.extent * max(1, _work(s.body))
    return total


class _Step:
    """One kernel call: where its arguments come from and where its result goes."""

    def __init__(self, node: Node, kernel: K.Kernel | None, addr: int | None, threads: int,
                 gemm=None):
        self.node, self.kernel, self.gemm, self.threads = node, kernel, gemm, threads
        buf = node.attrs.get("buffer", -1)
        # view kernels copy (the plan lets them alias their source: we never write there)
        self.offset = buf if node.attrs["kind"] != "view" else -1
        if kernel is None:  # a GEMM without epilogue
            self.fn, self.chunks = None, 0
            return
        nargs = len(kernel.args)
        self.fn = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * nargs),
                                   ctypes.c_int64, ctypes.c_int64)(addr)
        self.extent = kernel.parallel_extent
        self.looped = any(isinstance(st, K.Loop) and st.parallel for st in kernel.body)
        big = _work(kernel.body) >= PARALLEL_MIN_WORK
        self.chunks = min(threads, self.extent) if big and threads > 1 else 1

    def run(self, ptrs: list[int]):
        if self.gemm is not None:  # C = A @ B on the packed GEMM, then the epilogue in place
            from graphc.backends import llvm_gemm
            llvm_gemm.run(self.gemm, ptrs, self.threads, _pool)
            if self.kernel is None:
                return
        if self.chunks <= 1:  # a kernel without an outer loop ignores the range
            self.fn(*ptrs, 0, self.extent if self.looped else 1)
            return
        n, c = self.extent, self.chunks
        bounds = [(n * t // c, n * (t + 1) // c) for t in range(c)]
        futs = [_pool().submit(self.fn, *ptrs, lo, hi) for lo, hi in bounds[1:]]
        self.fn(*ptrs, *bounds[0])
        for f in futs:
            f.result()


class LLVMProgram:
    """A compiled graph. Calling it checks the arguments (count, shape, dtype); inputs that
    are not C-contiguous (e.g. a transposed array) are copied to contiguous memory first.
    Intermediates live in one arena per call laid out by the `scheduled` stage's plan.

    Every kernel argument's address is planned once, here, as (base, byte offset): base 0 is
    the call's arena, then the inputs, then the buffers a call allocates (outputs outside the
    arena, view copies), then the constants. A call then only adds integers per kernel
    argument: building numpy views and asking each for `.ctypes.data` cost ~40 us per
    kernel, more than W3's small LSTM kernels themselves (518 kernels per step)."""

    def __init__(self, graph: Graph, steps: list[_Step], source: str, kernels: list[K.Kernel],
                 module_text: str):
        self.graph, self.steps, self.source = graph, steps, source
        self.kernels, self.module_text = kernels, module_text
        self.arena_bytes = max((s.offset + s.node.type.nbytes for s in steps if s.offset >= 0),
                               default=0)
        where: dict[int, tuple[int, int]] = {}   # node id -> (base, byte offset)
        for k, n in enumerate(graph.inputs):
            where[id(n)] = (1 + k, 0)
        self.owned: list[Node] = []    # allocated per call
        self.consts: list[np.ndarray] = []
        nin = 1 + len(graph.inputs)
        for s in steps:
            for i in s.node.inputs:
                if id(i) not in where:  # a constant kernel argument
                    self.consts.append(np.ascontiguousarray(i.attrs["value"].array))
                    where[id(i)] = (-len(self.consts), 0)
            if s.offset >= 0:
                where[id(s.node)] = (0, s.offset)
            else:
                self.owned.append(s.node)
                where[id(s.node)] = (nin + len(self.owned) - 1, 0)
        nbase = nin + len(self.owned)
        # constant k was numbered -(k + 1) above: its base follows the allocated buffers
        fix = lambda b: (nbase - b - 1) if b < 0 else b  # noqa: E731
        self.where = {k: (fix(b), o) for k, (b, o) in where.items()}
        self.args = [[self.where[id(i)] for i in s.node.inputs] + [self.where[id(s.node)]]
                     for s in steps]
        self.const_ptrs = [c.ctypes.data for c in self.consts]

    def __call__(self, *arrays):
        args = check_args(self.graph, arrays, stage="run (llvm)")
        # (ascontiguousarray turns a 0-d array into shape (1,): keep the input's shape,
        # an input may be returned as an output unchanged)
        ins = [np.ascontiguousarray(a).reshape(a.shape) for a in args]
        arena = np.empty(self.arena_bytes, np.uint8) if self.arena_bytes else None
        owned = [np.empty(n.shape, n.dtype.np) for n in self.owned]
        base = ([arena.ctypes.data if arena is not None else 0]
                + [a.ctypes.data for a in ins] + [a.ctypes.data for a in owned]
                + self.const_ptrs)
        for s, spec in zip(self.steps, self.args):
            s.run([base[b] + o for b, o in spec])

        def value(n):
            b, o = self.where[id(n)]
            if b == 0:
                return arena[o:o + n.type.nbytes].view(n.dtype.np).reshape(n.shape)
            if b <= len(ins):
                return np.array(ins[b - 1])  # an input returned as is: a copy, never aliased
            if b <= len(ins) + len(owned):
                return owned[b - 1 - len(ins)]
            return np.array(n.attrs["value"].array)  # a constant: a copy too
        return tuple(value(o) if id(o) in self.where else np.array(o.attrs["value"].array)
                     for o in self.graph.outputs)
