"""Native worker threads for the LLVM backend: a kernel's or a GEMM's chunks handed out
without Python on the way.

Why: with a Python thread pool, each threaded GEMM paid ~50 us on its critical path here
(submit() 22 us, the worker starting 37 us later, the caller waking 29 us after the
worker's Event.set()), as much as a third of a 128x512x256 product on two threads. Here
each worker is a Python thread that enters one native function, `graphc_pool_worker`, and
never comes back to Python (ctypes releases the GIL for the call): it spins on a shared
control word for work, and after SPIN_US without any, sleeps on a futex until the next job.

A job is a table of tasks, one row each: a function address, its argument count, a mask of
the arguments that name one of the running thread's buffers (`Slot`: a GEMM's packing
buffers), then the arguments (integers or pointers, all passed as i64). `graphc_pool_run`,
called by the caller, publishes the table, takes tasks itself like any worker, and waits
until every task taken is done. A task is taken by a compare-and-swap on one 64-bit word
holding (job generation, first open task, end of the open tasks), so a worker that wakes
late can take no task of a job it did not see published. The caller takes tasks from the
front, workers from the back: with two threads, repeated calls of a kernel give each
thread the same chunk, still in its cache (a shared counter swapped them at random).
Workers never wait for each other and the caller never waits for a worker to start: a late
worker finds every task taken.

    job:  caller  --publish-->  next = (gen, 0, n)  --> tasks taken by CAS, done += 1 each
          caller  <--done == n--

On Linux (x86_64, aarch64) only; elsewhere `spread` runs every task on the calling thread.
A second Python thread calling while the pool is busy runs its tasks on its own thread.
"""
from __future__ import annotations

import array
import atexit
import ctypes
import os
import platform
import threading
import time

import numpy as np

TASK_ARGS = 24     # arguments per task at most (a loop kernel's pointers and its range)
ROW = 3 + TASK_ARGS
NSLOT = 2          # per-thread buffers a task can name (the GEMM's A block and B panel)
SPIN_US = 200      # an idle worker spins this long before it sleeps: the gaps between a
                   # training step's kernels are shorter, a waking worker costs 30-60 us here
# control block, in i64 words; the words written by every thread on cache lines of their own
NEXT, DONE, TABLE, TBUF, SYSCALL, FUTEX_NR, SPIN, SEQ, SLEEPERS, QUIT = (
    0, 8, 16, 17, 18, 19, 20, 24, 32, 40)
CTL_WORDS = 48
_FUTEX = {"x86_64": 202, "aarch64": 98}   # the futex system call's number
FUTEX_WAIT, FUTEX_WAKE = 128, 129          # ..._PRIVATE: waiters of this process only
_M20 = (1 << 20) - 1


class Slot(int):
    """A task argument naming buffer `k` of whichever thread runs the task."""


SLOT_A, SLOT_B = Slot(0), Slot(1)


def module_text(x86: bool) -> str:
    """The pool's functions: graphc_pool_worker(ctl, tid), graphc_pool_run(ctl, table, n),
    graphc_pool_stop(ctl), graphc_cycles()."""
    from llvmlite import ir
    from graphc.backends.llvm import new_module
    i1, i32, i64, void = ir.IntType(1), ir.IntType(32), ir.IntType(64), ir.VoidType()
    p64 = i64.as_pointer()
    m = new_module("graphc_pool")
    c = lambda v: ir.Constant(i64, v)  # noqa: E731
    cycles = m.declare_intrinsic("llvm.readcyclecounter", fnty=ir.FunctionType(i64, []))
    pause = (m.declare_intrinsic("llvm.x86.sse2.pause", fnty=ir.FunctionType(void, []))
             if x86 else None)
    sysfn = ir.FunctionType(i64, [i64], var_arg=True).as_pointer()

    def word(b, ctl, k):
        return b.gep(ctl, [c(k)])

    # exec(row, tid, tbuf): call row's function with its arguments, Slots replaced
    ex = ir.Function(m, ir.FunctionType(void, [p64, i64, p64]), "graphc_pool_exec")
    ex.linkage = "internal"
    row, tid, tbuf = ex.args
    b = ir.IRBuilder(ex.append_basic_block("entry"))
    fn, nargs, mask = (b.load(b.gep(row, [c(k)])) for k in range(3))
    vals = []
    for j in range(TASK_ARGS):
        v = b.load(b.gep(row, [c(3 + j)]))
        slot = b.trunc(b.lshr(mask, c(j)), i1)
        own = b.load(b.gep(tbuf, [b.add(b.mul(tid, c(NSLOT)), b.select(slot, v, c(0)))]))
        vals.append(b.select(slot, own, v))
    end = ex.append_basic_block("end")
    sw = b.switch(nargs, end)
    for n in range(TASK_ARGS + 1):
        blk = ex.append_basic_block(f"n{n}")
        sw.add_case(c(n), blk)
        b.position_at_end(blk)
        b.call(b.inttoptr(fn, ir.FunctionType(void, [i64] * n).as_pointer()), vals[:n])
        b.branch(end)
    b.position_at_end(end)
    b.ret_void()

    def claim(b, f, ctl, tid, t, again, front: bool):
        """Take the job's first open task (front: the caller) or its last (a worker) by
        CAS and run it; branch to `again` either way."""
        took = b.add(t, c(1 << 20)) if front else b.sub(t, c(1))
        got = b.cmpxchg(word(b, ctl, NEXT), t, took, "acq_rel", "acquire")
        run = f.append_basic_block("run")
        b.cbranch(b.extract_value(got, 1), run, again)
        b.position_at_end(run)
        table = b.inttoptr(b.load(word(b, ctl, TABLE)), p64)
        index = b.and_(b.lshr(t, c(20)), c(_M20)) if front else b.and_(took, c(_M20))
        row = b.gep(table, [b.mul(index, c(ROW))])
        b.call(ex, [row, tid, b.inttoptr(b.load(word(b, ctl, TBUF)), p64)])
        b.atomic_rmw("add", word(b, ctl, DONE), c(1), "seq_cst")
        b.branch(again)

    def open_task(b, t):  # first open task < end of the open tasks
        return b.icmp_unsigned("<", b.and_(b.lshr(t, c(20)), c(_M20)), b.and_(t, c(_M20)))

    def seq_word(b, ctl):
        return b.bitcast(word(b, ctl, SEQ), i32.as_pointer())

    def futex(b, ctl, op, val):  # syscall(SYS_futex, &SEQ, op, val, NULL, NULL, 0)
        sysc = b.inttoptr(b.load(word(b, ctl, SYSCALL)), sysfn)
        b.call(sysc, [b.load(word(b, ctl, FUTEX_NR)), b.ptrtoint(seq_word(b, ctl), i64),
                      c(op), val, c(0), c(0), c(0)])

    # worker(ctl, tid): take tasks until QUIT; spin SPIN cycles idle, then sleep on SEQ
    wk = ir.Function(m, ir.FunctionType(void, [p64, i64]), "graphc_pool_worker")
    ctl, tid = wk.args
    b = ir.IRBuilder(wk.append_basic_block("entry"))
    last = b.alloca(i64)
    b.store(b.call(cycles, []), last)
    top, work, idle, spin, sleep, wait, woke, out = (wk.append_basic_block(n) for n in (
        "top", "work", "idle", "spin", "sleep", "wait", "woke", "out"))
    b.branch(top)
    b.position_at_end(top)
    quit_ = b.load_atomic(word(b, ctl, QUIT), "monotonic", 8)
    t = b.load_atomic(word(b, ctl, NEXT), "acquire", 8)
    go = b.select(b.icmp_unsigned("!=", quit_, c(0)), c(2), b.zext(open_task(b, t), i64))
    sw = b.switch(go, idle)
    sw.add_case(c(1), work)
    sw.add_case(c(2), out)
    b.position_at_end(work)
    b.store(b.call(cycles, []), last)  # (the spin window starts after the last task)
    claim(b, wk, ctl, tid, t, top, False)
    b.position_at_end(idle)
    b.cbranch(b.icmp_unsigned("<", b.sub(b.call(cycles, []), b.load(last)),
                              b.load(word(b, ctl, SPIN))), spin, sleep)
    b.position_at_end(spin)
    if pause is not None:
        b.call(pause, [])
    b.branch(top)
    b.position_at_end(sleep)  # Dekker with the caller: count ourselves, then look once more
    b.atomic_rmw("add", word(b, ctl, SLEEPERS), c(1), "seq_cst")
    s = b.load_atomic(seq_word(b, ctl), "seq_cst", 4)
    t2 = b.load_atomic(word(b, ctl, NEXT), "seq_cst", 8)
    q2 = b.load_atomic(word(b, ctl, QUIT), "seq_cst", 8)
    b.cbranch(b.or_(open_task(b, t2), b.icmp_unsigned("!=", q2, c(0))), woke, wait)
    b.position_at_end(wait)  # returns at once if SEQ moved since we read it
    futex(b, ctl, FUTEX_WAIT, b.zext(s, i64))
    b.branch(woke)
    b.position_at_end(woke)
    b.atomic_rmw("sub", word(b, ctl, SLEEPERS), c(1), "seq_cst")
    b.store(b.call(cycles, []), last)
    b.branch(top)
    b.position_at_end(out)
    b.ret_void()

    # run(ctl, table, n): publish n tasks, take tasks as thread 0, wait for every one taken
    rn = ir.Function(m, ir.FunctionType(void, [p64, p64, i64]), "graphc_pool_run")
    ctl, table, n = rn.args
    b = ir.IRBuilder(rn.append_basic_block("entry"))
    alone, publish, wake, take, top, wait, spin, out = (rn.append_basic_block(x) for x in (
        "alone", "publish", "wake", "take", "top", "wait", "spin", "out"))
    b.cbranch(b.icmp_unsigned("<=", n, c(1)), alone, publish)
    b.position_at_end(alone)  # one task: nobody to tell
    with b.if_then(b.icmp_unsigned("==", n, c(1))):
        b.call(ex, [table, c(0), b.inttoptr(b.load(word(b, ctl, TBUF)), p64)])
    b.ret_void()
    b.position_at_end(publish)
    gen = b.add(b.lshr(b.load_atomic(word(b, ctl, NEXT), "monotonic", 8), c(40)), c(1))
    b.store(b.ptrtoint(table, i64), word(b, ctl, TABLE))
    b.store_atomic(c(0), word(b, ctl, DONE), "seq_cst", 8)
    b.store_atomic(b.or_(b.shl(gen, c(40)), n), word(b, ctl, NEXT), "seq_cst", 8)
    b.atomic_rmw("add", seq_word(b, ctl), ir.Constant(i32, 1), "seq_cst")
    asleep = b.load_atomic(word(b, ctl, SLEEPERS), "seq_cst", 8)
    b.cbranch(b.icmp_unsigned("!=", asleep, c(0)), wake, top)
    b.position_at_end(wake)
    futex(b, ctl, FUTEX_WAKE, c((1 << 31) - 1))
    b.branch(top)
    b.position_at_end(top)
    t = b.load_atomic(word(b, ctl, NEXT), "acquire", 8)
    b.cbranch(open_task(b, t), take, wait)
    b.position_at_end(take)
    claim(b, rn, ctl, c(0), t, top, True)
    b.position_at_end(wait)  # every task is taken: wait for those still running
    b.cbranch(b.icmp_unsigned("<", b.load_atomic(word(b, ctl, DONE), "acquire", 8), n),
              spin, out)
    b.position_at_end(spin)
    if pause is not None:
        b.call(pause, [])
    b.branch(wait)
    b.position_at_end(out)
    b.ret_void()

    # stop(ctl): every worker returns
    st = ir.Function(m, ir.FunctionType(void, [p64]), "graphc_pool_stop")
    b = ir.IRBuilder(st.append_basic_block("entry"))
    ctl = st.args[0]
    b.store_atomic(c(1), word(b, ctl, QUIT), "seq_cst", 8)
    b.atomic_rmw("add", seq_word(b, ctl), ir.Constant(i32, 1), "seq_cst")
    with b.if_then(b.icmp_unsigned("!=", b.load(word(b, ctl, SYSCALL)), c(0))):
        futex(b, ctl, FUTEX_WAKE, c((1 << 31) - 1))
    b.ret_void()

    cy = ir.Function(m, ir.FunctionType(i64, []), "graphc_cycles")
    b = ir.IRBuilder(cy.append_basic_block("entry"))
    b.ret(b.call(cycles, []))
    return str(m)


_NAMES = ["graphc_pool_worker", "graphc_pool_run", "graphc_pool_stop", "graphc_cycles"]
_CODE: list = []   # [(addresses, CompileInfo)] once compiled


def _code():
    if not _CODE:
        from graphc.backends.llvm import jit_info
        _CODE.append(jit_info(module_text(platform.machine() in ("x86_64", "AMD64")), _NAMES,
                              2))
    return _CODE[0][0]


def aligned(n: int, dtype=np.float32) -> np.ndarray:
    """n zeroed elements of dtype, 64-byte aligned (one cache line: the control block's
    words; a packed B row of 16 float32)."""
    size = np.dtype(dtype).itemsize
    raw = np.zeros(n + 64 // size, dtype)
    skip = (-raw.ctypes.data % 64) // size
    return raw[skip:skip + n]


_KEPT = threading.local()


def kept_address(name: str, n: int) -> int:
    """The address of the calling thread's aligned float32 buffer `name`, at least n long:
    kept and grown from call to call, its address kept too (`.ctypes.data` costs ~2.5 us).
    Safe to reuse because every caller waits for all the tasks that use it before it
    returns (a GEMM's packing buffers, a whole packed B, a dot product's partial sums)."""
    got = getattr(_KEPT, name, None)
    if got is None or got[0].size < n:
        buf = aligned(n)
        got = (buf, buf.ctypes.data)
        setattr(_KEPT, name, got)
    return got[1]


class Pool:
    """`threads` threads in all: the caller and threads - 1 native workers (none when
    `threads` is 1 or the platform has no futex: then every task runs on the caller).
    `reserve` sizes each thread's Slot buffers; `run` runs one table of tasks."""

    def __init__(self, threads: int):
        addrs = _code()
        self._run = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(
            addrs["graphc_pool_run"])
        self.ctl = aligned(CTL_WORDS, np.int64)
        nr = _FUTEX.get(platform.machine()) if os.name == "posix" and \
            platform.system() == "Linux" else None
        self.threads = threads if nr is not None else 1
        self.tbuf = np.zeros(self.threads * NSLOT, np.int64)
        self.bufs: list = [[None] * NSLOT for _ in range(self.threads)]
        self.size = [0] * NSLOT
        self.ctl[TBUF] = self.tbuf.ctypes.data
        self.at = self.ctl.ctypes.data
        self.lock = threading.Lock()
        self.workers: list[threading.Thread] = []
        if self.threads > 1:
            libc = ctypes.CDLL(None)
            self.ctl[SYSCALL] = ctypes.cast(libc.syscall, ctypes.c_void_p).value
            self.ctl[FUTEX_NR] = nr
            self.ctl[SPIN] = int(SPIN_US * 1e-6 * _cycles_per_second())
            work = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(
                addrs["graphc_pool_worker"])
            at = self.at
            for t in range(1, self.threads):
                th = threading.Thread(target=work, args=(at, t), daemon=True,
                                      name=f"graphc-llvm-{t}")
                th.start()
                self.workers.append(th)

    def reserve(self, sizes) -> None:
        """Make every thread's buffer k hold at least sizes[k] float32 (64-byte aligned)."""
        for k, n in enumerate(sizes):
            if n > self.size[k]:
                self.size[k] = n
                for t in range(self.threads):
                    self.bufs[t][k] = aligned(n)
                    self.tbuf[t * NSLOT + k] = self.bufs[t][k].ctypes.data

    def run(self, table: array.array, n: int) -> None:
        self._run(self.at, table.buffer_info()[0], n)

    def stop(self) -> None:
        if self.workers:
            ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_code()["graphc_pool_stop"])(
                self.ctl.ctypes.data)
            for th in self.workers:
                th.join()
            self.workers = []


def _cycles_per_second() -> float:
    """The cycle counter's rate, measured over ~2 ms."""
    cyc = ctypes.CFUNCTYPE(ctypes.c_int64)(_code()["graphc_cycles"])
    t0, c0 = time.perf_counter(), cyc()
    while time.perf_counter() - t0 < 0.002:
        pass
    return (cyc() - c0) / (time.perf_counter() - t0)


_SHARED: dict = {}
_TLS = threading.local()


def cpus() -> int:
    """The CPUs this process may run on."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, n or 1)


def shared(threads: int | None = None) -> Pool:
    """The process's pool of `threads` threads (default, and at most: one per CPU this
    process may run on), made on first use; its workers sleep when idle."""
    n = cpus() if threads is None else max(1, min(threads, cpus()))
    if n not in _SHARED:
        _SHARED[n] = Pool(n)
        atexit.register(_SHARED[n].stop)
    return _SHARED[n]


def _solo() -> Pool:
    """This Python thread's own pool without workers (while the shared one is busy)."""
    got = getattr(_TLS, "pool", None)
    if got is None:
        _TLS.pool = got = Pool(1)
    return got


_PAD = [0] * TASK_ARGS


def table(tasks) -> array.array:
    """The task table of (function address, arguments) pairs; a `Slot` argument names the
    running thread's buffer. (An array.array: 1.5-3 us for two GEMM tasks here, a ctypes
    array 14.)"""
    rows: list[int] = []
    for fn, args in tasks:
        if len(args) > TASK_ARGS:
            raise ValueError(f"a pool task takes at most {TASK_ARGS} arguments, not {len(args)}")
        mask = 0
        for j, a in enumerate(args):
            if type(a) is Slot:
                mask |= 1 << j
        rows += (fn, len(args), mask, *args)
        rows += _PAD[len(args):]
    return array.array("q", rows)


def spread(phases, threads: int, sizes=()) -> None:
    """Run `phases` (lists of tasks; a phase starts when the one before has finished) on the
    calling thread alone (threads 1) or on it and the workers of the shared pool of
    `threads` threads (at most one per CPU the process may use), however many tasks a
    phase has. `sizes`: the float32 each thread's Slot buffers must hold."""
    pool = shared(threads) if threads > 1 else _solo()
    if not pool.lock.acquire(blocking=False):
        pool = _solo()
        pool.lock.acquire()
    try:
        pool.reserve(sizes)
        for tasks in phases:
            pool.run(table(tasks), len(tasks))
    finally:
        pool.lock.release()
