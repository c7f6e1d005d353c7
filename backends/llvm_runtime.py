"""The LLVM backend's runtime: a compiled program's kernel calls (`_Step`: a loop kernel split
over threads, or the packed GEMM then its epilogue) and the program (`LLVMProgram`): argument
checks, the arena, each kernel argument's address planned once, and runs of kernels called
by one native driver function (backends/llvm_driver.py).

Threads: a kernel whose loops do at least PARALLEL_MIN_WORK iterations (one computing an exp,
log, tanh, ... counting as COSTLY_WEIGHT) splits its parallel (outermost) loop into one chunk
per thread, run by the native worker pool (backends/llvm_pool.py) and the calling thread.
"""
from __future__ import annotations

import ctypes
import sys
from ctypes import c_void_p as _c_void_p

import numpy as np

from graphc import kernel as K, kernel_layout
from graphc.backends import llvm_driver, llvm_pool
from graphc.backends.runtime import arena_bytes, arena_offset
from graphc.interpret import check_args
from graphc.ir import Graph, Node, register_internal_dir
from graphc.lower_matmul import SPLIT_COLUMNS_WORK
from graphc.ops import COSTLY, Op

register_internal_dir(__file__)

DRIVERS = True   # runs of loop kernels called by one native driver (backends/llvm_driver.py)
# loop iterations (all levels) below which a kernel runs on one thread: the lowering's own
# threshold for splitting a one-row product's columns into parts, so a product split into
# parts has threads to spread them over (costly math weighs more here: COSTLY_WEIGHT).
# 2^20: batch-1 inference's 784x512 GEMV (400K) split over two threads was slower even on
# the native pool (a W5 b1 call 80.9 -> 88.2 us, both thresholds lowered alike)
PARALLEL_MIN_WORK = SPLIT_COLUMNS_WORK


def _refs(arrays: list) -> list[int]:
    return [sys.getrefcount(arrays[j]) for j in range(len(arrays))]


_ALONE = _refs([np.empty(0)])[0]  # the count of an array only a list holds (2 on CPython)
# calls whose buffers a program keeps for reuse (`LLVMProgram._owned`); off where reference
# counts cannot tell whether anything else holds an array (a free-threaded build)
RECYCLE = 2 if getattr(sys, "_is_gil_enabled", lambda: True)() else 0


def _unheld(arrays: list) -> list[bool]:
    """For each array of the list: True when the list is its only holder (no name, view,
    container or buffer export of the caller's refers to it), from its reference count."""
    return [r <= _ALONE for r in _refs(arrays)]


def _arena_range(n: Node):
    """(start, end) bytes of n's result in the call's arena; None outside it (graph inputs,
    constants, view copies and unplanned results have buffers of their own)."""
    off = arena_offset(n) if n.op is Op.FUSED else -1
    return (off, off + n.type.nbytes) if off >= 0 else None


def _separate(n: Node, kernel: K.Kernel | None = None) -> bool:
    """True when kernel n's output overlaps none of the inputs it reads in memory (not
    written in place over a dying input by the memory plan, or reading that input only
    through the output's name: `in_place`): then its pointers may be `noalias`."""
    out = _arena_range(n)
    if out is None:
        return True
    read = None if kernel is None else {b.name for b in K.loads(kernel)}
    return all(r is None or r[1] <= out[0] or out[1] <= r[0]
               or (read is not None and f"in{j}" not in read)
               for j, r in enumerate(map(_arena_range, n.inputs)))


def in_place(n: Node, kernel: K.Kernel) -> K.Kernel:
    """The kernel reading each input that the memory plan put exactly where n's output goes
    (rule M3, in place) through the output buffer instead (kernel_layout.redirect), so that
    `_separate` holds and LLVM vectorises without a runtime overlap check."""
    out = _arena_range(n)
    if out is None:
        return kernel
    for j, i in enumerate(n.inputs):
        if _arena_range(i) == out and i.type.nbytes == n.type.nbytes:
            kernel = kernel_layout.redirect(kernel, f"in{j}", "out")
    return kernel


def _data_field() -> int | None:
    """Where an ndarray object keeps its data pointer, in bytes from the object's start:
    numpy's PyArrayObject is the Python object header, then `char *data` (ndarraytypes.h;
    PyArray_BYTES reads it). Checked against `.ctypes.data` here; None if it disagrees."""
    at = object.__basicsize__
    probes = (np.arange(4.0), np.arange(4.0)[1:], np.empty((3, 2), np.float32).T, np.array(1))
    try:
        ok = all(_c_void_p.from_address(id(a) + at).value == a.ctypes.data for a in probes)
    except (ValueError, OSError):
        ok = False
    return at if ok else None


_DATA_AT = _data_field()


def address(a: np.ndarray) -> int:
    """The data address of an array: read from the array object itself (`_data_field`),
    0.25 us here, where `a.ctypes.data` takes 1.8 us (it builds a ctypes helper object) and
    ctypes' `c_char.from_buffer` 0.8 us; a call needs one per input and output."""
    if _DATA_AT is None:
        return a.ctypes.data
    return _c_void_p.from_address(id(a) + _DATA_AT).value or 0  # (None: a NULL pointer)


def addresses(arrays) -> list[int]:
    """`address` of each array."""
    if _DATA_AT is None:
        return [a.ctypes.data for a in arrays]
    return [_c_void_p.from_address(id(a) + _DATA_AT).value or 0 for a in arrays]


# an exp, log, tanh, sin, cos or pow (graphc.ops.COSTLY) counts as this many loop
# iterations when deciding on threads: vectorised, a float32 exp took 0.48 ns an element on
# one core, 8x a GEMV's multiply-add (400K of them took ~25 us); counted as 1, a 256x1024
# softmax (786K iterations, 211 us on one thread) stayed on one thread
COSTLY_WEIGHT = 8
_COSTLY_OPS = frozenset(op.value for op in COSTLY)


def _work(body) -> int:
    """Loop iterations of a statement list (all nesting levels), each weighted by the
    costly math of its own statements (COSTLY_WEIGHT per distinct exp, log, ...), to decide
    on threading."""
    total = 0
    for s in body:
        if isinstance(s, K.Loop):
            costly = {v for st in s.body if not isinstance(st, K.Loop) for v in K.values(st)
                      if isinstance(v, (K.Unary, K.Binary)) and v.op in _COSTLY_OPS}
            own = COSTLY_WEIGHT * len(costly)
            total += s.extent * max(1, own + _work(s.body))
    return total


class _Step:
    """One kernel call: where its arguments come from and where its result goes."""

    def __init__(self, node: Node, kernel: K.Kernel | None, addr: int | None, threads: int,
                 gemm=None):
        self.node, self.kernel, self.gemm, self.threads = node, kernel, gemm, threads
        self.addr = addr
        self.offset = arena_offset(node)
        if kernel is None:  # a GEMM without epilogue
            self.fn, self.chunks = None, 0
            return
        nargs = len(kernel.args)
        self.fn = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * nargs),
                                   ctypes.c_int64, ctypes.c_int64)(addr)
        self.extent = kernel.parallel_extent
        self.looped = any(isinstance(st, K.Loop) and st.parallel for st in kernel.body)
        big = (_work(kernel.body) >= PARALLEL_MIN_WORK
               and nargs + 2 <= llvm_pool.TASK_ARGS)  # (a pool task's arguments at most)
        self.chunks = min(threads, self.extent) if big and threads > 1 else 1

    def run(self, ptrs: list[int]):
        if self.gemm is not None:  # C = A @ B on the packed GEMM, then the epilogue in place
            from graphc.backends import llvm_gemm
            llvm_gemm.run(self.gemm, ptrs, self.threads)
            if self.kernel is None:
                return
        if self.chunks <= 1:  # a kernel without an outer loop ignores the range
            self.fn(*ptrs, 0, self.extent if self.looped else 1)
            return
        n, c = self.extent, self.chunks
        llvm_pool.spread([[(self.addr, (*ptrs, n * t // c, n * (t + 1) // c))
                           for t in range(c)]], c)


class LLVMProgram:
    """A compiled graph. Calling it checks the arguments (count, shape, dtype); inputs that
    are not C-contiguous (e.g. a transposed array) are copied to contiguous memory first.
    Intermediates live in an arena laid out by the `scheduled` stage's plan; a call hands
    it on to the next one (unless an output is a view into it), so it is allocated once.
    The outputs are new arrays of each call's own, taken where possible from the outputs of
    an earlier call that the caller has dropped (`_owned`): no page faults per call.

    Every kernel argument's address is planned once, here, as (base, byte offset): base 0 is
    the call's arena, then the inputs, then the buffers a call allocates (outputs outside the
    arena, view copies), then the constants. A call then only adds integers per kernel
    argument: building numpy views and asking each for `.ctypes.data` cost ~40 us per
    kernel, more than W3's small LSTM kernels themselves (about 550 kernels per step).

    Per call, batch-1 inference (W5 b1: 7 inputs, 3 kernels) spent ~37 us of CPU time here
    besides the kernels (median, interleaved with the kernels called alone); now ~8: the
    inputs are checked inline (`_inputs`), addresses read from the array objects
    (`address`), the arena and the base-address array reused, and the 3 kernels are one
    driver call. `gc.compile` calls `call_exact` when its signature matcher has already
    checked the arguments: the ~5 us of `_inputs` go too."""

    def __init__(self, graph: Graph, steps: list[_Step], source: str, kernels: list[K.Kernel],
                 module_text: str):
        self.graph, self.steps, self.source = graph, steps, source
        self.kernels, self.module_text = kernels, module_text
        self.arena_bytes = arena_bytes([s.node for s in steps])
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
        self.expect = [(n.shape, np.dtype(n.dtype.np)) for n in graph.inputs]
        self.plan = self._plan()
        self.owned_types = [(n.shape, n.dtype.np) for n in self.owned]
        self.nbase = 1 + len(graph.inputs) + len(self.owned) + len(self.consts)
        # when every output is a buffer the call allocates: their indices among those
        at = [self.where.get(id(o), (-1, 0))[0] - nin for o in graph.outputs]
        self.owned_outputs = at if all(0 <= j < len(self.owned) for j in at) else None
        # the arena is reused by the next call unless an output is a view into it
        self.arena_out = any(self.where.get(id(o), (None,))[0] == 0 for o in graph.outputs)
        self.spare: list = []  # (arena, its address, drivers' base array) of finished calls
        self.returned: list = []  # the owned buffers of the last RECYCLE calls (`_owned`)

    def _plan(self) -> list:
        """What a call runs, in order: (None, step, its argument spec) for a kernel called
        from Python, (driver, None, None) for a run of one-thread loop kernels called by
        one native driver function (backends/llvm_driver.py)."""
        steps = self.steps
        simple = [s.gemm is None and s.kernel is not None and s.chunks <= 1 for s in steps]
        runs = llvm_driver.runs_of(simple) if DRIVERS else []
        first, self.fn_table = {}, None
        if runs:
            specs = [[(i, self.args[i], steps[i].extent if steps[i].looped else 1) for i in run]
                     for run in runs]
            drivers, self.driver_info = llvm_driver.build(specs)  # (info: keeps the code alive)
            self.fn_table = (ctypes.c_int64 * len(steps))(*[s.addr or 0 for s in steps])
            first = {run[0]: (drivers[r], len(run)) for r, run in enumerate(runs)}
        plan, i = [], 0
        while i < len(steps):
            if i in first:
                plan.append((first[i][0], None, None))
                i += first[i][1]
            else:
                plan.append((None, steps[i], self.args[i]))
                i += 1
        return plan

    def _inputs(self, arrays) -> tuple[list, list[int]]:
        """(the arguments as C-contiguous arrays, their addresses). The common case, numpy
        arrays of the exact shape and dtype, C-contiguous, is checked here, inline; anything
        else goes through check_args (its errors) and a contiguous copy where needed."""
        if len(arrays) == len(self.expect):
            for a, (shape, dt) in zip(arrays, self.expect):
                if not (type(a) is np.ndarray and a.shape == shape and a.dtype == dt
                        and a.flags.c_contiguous):
                    break
            else:
                return list(arrays), addresses(arrays)
        args = check_args(self.graph, arrays, stage="run (llvm)")
        # (ascontiguousarray turns a 0-d array into shape (1,): keep the input's shape,
        # an input may be returned as an output unchanged)
        ins = [np.ascontiguousarray(a).reshape(a.shape) for a in args]
        return ins, addresses(ins)

    def __call__(self, *arrays):
        return self._run(*self._inputs(arrays))

    def call_exact(self, arrays) -> tuple:
        """A call with arguments already checked to be C-contiguous numpy arrays of exactly
        the inputs' shapes and dtypes (what `gc.compile`'s signature matcher checks): the
        program's own checks are skipped."""
        return self._run(arrays, addresses(arrays))

    def _run(self, ins, in_ptrs) -> tuple:
        # the arena and the drivers' C array of base addresses a finished call left (filling
        # the array: 0.5 us, making one: 2.3); list.pop is atomic: concurrent calls get their own
        try:
            arena, arena_ptr, based = self.spare.pop()
        except IndexError:
            arena = np.empty(self.arena_bytes, np.uint8) if self.arena_bytes else None
            arena_ptr = address(arena) if arena is not None else 0
            based = (ctypes.c_int64 * self.nbase)() if self.fn_table is not None else None
        owned = self._owned()
        base = [arena_ptr, *in_ptrs, *addresses(owned), *self.const_ptrs]
        if based is not None:
            based[:] = base
        for driver, s, spec in self.plan:
            if driver is None:
                s.run([base[b] + o for b, o in spec])
            else:
                driver(self.fn_table, based)
        if self.owned_outputs is not None:  # the common case: no walk over the outputs
            outs = tuple([owned[j] for j in self.owned_outputs])
        else:
            outs = self._outputs(arena, ins, owned)
        if not self.arena_out:
            self.spare.append((arena, arena_ptr, based))
        if RECYCLE:
            self.returned.append(owned)
            del self.returned[:-RECYCLE]  # (one step: no check-then-delete race)
        return outs

    def _owned(self) -> list[np.ndarray]:
        """This call's own buffers (its outputs, view copies): those of the call RECYCLE
        calls back that nothing but this program holds any more (the caller dropped them),
        new ones for the rest. Why: W1's step allocates 2.1 MB of outputs per call, and
        glibc, depending on how its heap stood, gave it back to the system after each call,
        so the next call page-faulted it in again (450 faults a call in 50-call windows that
        took 2.83-2.93 ms; 0 faults and 2.21-2.26 ms in windows between them). A training
        loop `p = step(p, ...)` still holds the last call's outputs while it calls again,
        so the oldest of the RECYCLE kept calls is the one taken (the cost: a program keeps
        the buffers of its last RECYCLE calls). Popped from the list: two threads calling at
        once never take the same buffers."""
        try:
            old = self.returned.pop(0) if len(self.returned) >= RECYCLE > 0 else None
        except IndexError:  # (another thread took it)
            old = None
        if old is None:
            return [np.empty(shape, dt) for shape, dt in self.owned_types]
        free = _unheld(old)
        return [a if f else np.empty(shape, dt)
                for a, f, (shape, dt) in zip(old, free, self.owned_types)]

    def _outputs(self, arena, ins, owned) -> tuple:
        """The outputs when some are not buffers of the call: arena views, inputs or
        constants returned as they are (copied)."""
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
