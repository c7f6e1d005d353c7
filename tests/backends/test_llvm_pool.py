"""The LLVM backend's native worker pool (backends/llvm_pool.py): every task runs exactly
once, phases in order, Slot arguments name the running thread's own buffer, two tasks can
run at the same time (a worker takes one), workers that went to sleep wake for a job, a
second Python thread is served while the pool is busy, and the workers stop."""
import ctypes
import threading

import numpy as np
import pytest

pytest.importorskip("llvmlite")
from graphc.backends import llvm_pool as P  # noqa: E402

LIBC = ctypes.CDLL(None)
MEMCPY = ctypes.cast(LIBC.memcpy, ctypes.c_void_p).value


def _copy_tasks(dst, src, n):
    """n tasks that copy src to dst in n pieces."""
    step = -(-src.size // n)
    return [(MEMCPY, (dst.ctypes.data + 4 * i, src.ctypes.data + 4 * i,
                      4 * max(0, min(step, src.size - i))))
            for i in range(0, src.size, step)]


def test_every_task_once_and_phases_in_order():
    src = np.arange(100_000, dtype=np.float32)
    for n in (1, 2, 3, 7, 64):
        mid, dst = np.zeros_like(src), np.zeros_like(src)
        # phase 2 copies what phase 1 wrote: it must start after all of phase 1
        P.spread([_copy_tasks(mid, src, n), _copy_tasks(dst, mid, n)], 2)
        np.testing.assert_array_equal(dst, src)


def test_the_caller_takes_tasks_in_order():
    """Alone (threads=1: no workers), the caller runs a job's tasks front to back: task i
    copies element i - 1 to i, so the first element reaches the last only in that order."""
    x = np.arange(50, dtype=np.float32)
    P.spread([[(MEMCPY, (x.ctypes.data + 4 * i, x.ctypes.data + 4 * (i - 1), 4))
               for i in range(1, 50)]], 1)
    assert (x == 0).all()


def test_slot_is_the_running_threads_buffer():
    """Two tasks that can only finish together (so each runs on its own thread: the caller
    or the worker) copy the first float of their SLOT_A: they must see two different
    threads' buffers. (A pool of its own, so it runs whatever the CPU count.)"""
    _, copy, _info = _handshake()
    pool = P.Pool(2)
    try:
        if pool.threads < 2:
            pytest.skip("no futex on this platform: the pool runs tasks on the caller")
        pool.reserve((16, 16))
        for t in range(pool.threads):
            pool.bufs[t][0][:] = 100 + t
        for _ in range(10):
            flags, out = np.zeros(2, np.int64), np.full(2, -1, np.float32)
            a, b = flags.ctypes.data, flags.ctypes.data + 8
            with pool.lock:
                pool.run(P.table([(copy, (a, b, out.ctypes.data, P.SLOT_A)),
                                  (copy, (b, a, out.ctypes.data + 4, P.SLOT_A))]), 2)
            assert flags.tolist() == [2, 2]
            assert len(set(out.tolist())) == 2
            assert set(out.tolist()) <= {100.0 + t for t in range(pool.threads)}
    finally:
        pool.stop()


def _handshake():
    """Native tasks handshake(mine, theirs): sets *mine, then spins until *theirs is set, for
    up to ~10^9 iterations; *mine becomes 2 if it saw *theirs. Two of these complete with 2s
    only if they ran at the same time. handshake_copy(mine, theirs, dst, src): that, then
    copies 4 bytes from src to dst. (handshake, handshake_copy, what keeps the code alive)"""
    from llvmlite import ir
    from graphc.backends.llvm import jit_info, new_module
    i64 = ir.IntType(64)
    m = new_module("handshake")
    fn = ir.Function(m, ir.FunctionType(ir.VoidType(), [i64.as_pointer()] * 2), "handshake")
    mine, theirs = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    b.store_atomic(ir.Constant(i64, 1), mine, "seq_cst", 8)
    count = b.alloca(i64)
    b.store(ir.Constant(i64, 0), count)
    top, body, seen, out = (fn.append_basic_block(x) for x in ("top", "body", "seen", "out"))
    b.branch(top)
    b.position_at_end(top)
    b.cbranch(b.icmp_unsigned("!=", b.load_atomic(theirs, "seq_cst", 8),
                              ir.Constant(i64, 0)), seen, body)
    b.position_at_end(body)
    n = b.add(b.load(count), ir.Constant(i64, 1))
    b.store(n, count)
    b.cbranch(b.icmp_unsigned("<", n, ir.Constant(i64, 10 ** 9)), top, out)
    b.position_at_end(seen)
    b.store_atomic(ir.Constant(i64, 2), mine, "seq_cst", 8)
    b.branch(out)
    b.position_at_end(out)
    b.ret_void()
    i32p = ir.IntType(32).as_pointer()
    cp = ir.Function(m, ir.FunctionType(ir.VoidType(), [i64.as_pointer()] * 2 + [i32p] * 2),
                     "handshake_copy")
    b = ir.IRBuilder(cp.append_basic_block("entry"))
    b.call(fn, cp.args[:2])
    b.store(b.load(cp.args[3]), cp.args[2])
    b.ret_void()
    addrs, info = jit_info(str(m), ["handshake", "handshake_copy"], 1)
    return addrs["handshake"], addrs["handshake_copy"], info


@pytest.mark.parametrize("asleep", [False, True])
def test_two_tasks_run_at_once(asleep):
    """A worker takes the second task while the caller runs the first: spinning, or woken
    from its futex sleep (SPIN 0: a worker sleeps as soon as it finds nothing to do)."""
    fn, _copy, _info = _handshake()
    pool = P.Pool(2)
    try:
        if pool.threads < 2:
            pytest.skip("no futex on this platform: the pool runs tasks on the caller")
        if asleep:
            pool.ctl[P.SPIN] = 0
        for _ in range(20):
            flags = np.zeros(2, np.int64)
            a, b = flags.ctypes.data, flags.ctypes.data + 8
            with pool.lock:
                pool.run(P.table([(fn, (a, b)), (fn, (b, a))]), 2)
            assert flags.tolist() == [2, 2]
    finally:
        pool.stop()
    assert not pool.workers


def test_concurrent_callers():
    """Python threads calling at once: one holds the shared pool, the others run their
    tasks on their own thread; every result is right."""
    src = np.arange(200_000, dtype=np.float32)
    errors = []

    def call(k):
        for _ in range(50):
            dst = np.zeros_like(src)
            P.spread([_copy_tasks(dst, src, 3 + k)], 2)
            if not np.array_equal(dst, src):
                errors.append(k)
    threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_too_many_arguments():
    with pytest.raises(ValueError, match="at most"):
        P.table([(MEMCPY, tuple(range(P.TASK_ARGS + 1)))])


def test_threads_caps_the_threads_a_job_runs_on(monkeypatch):
    """spread(threads=2) on a machine of (pretended) 4 CPUs: a job of 16 tasks runs on the
    2-thread pool, never on more threads, however many tasks it has. Each task copies the
    first float of its thread's SLOT_A, tagged per thread."""
    monkeypatch.setattr(P, "cpus", lambda: 4)
    pool = P.shared(2)
    if pool.threads < 2:
        pytest.skip("no futex on this platform: the pool runs tasks on the caller")
    assert pool.threads == 2 and P.shared(3).threads == 3 and P.shared(9).threads == 4
    assert P.shared(2) is pool
    _, copy, _info = _handshake()
    pool.reserve((16, 16))
    for t in range(pool.threads):
        pool.bufs[t][0][:] = 100 + t
    for _ in range(20):
        out = np.full(16, -1, np.float32)
        flags = np.ones(2, np.int64)   # set: each handshake returns at once
        P.spread([[(copy, (flags.ctypes.data, flags.ctypes.data + 8, out.ctypes.data + 4 * i,
                           P.SLOT_A)) for i in range(16)]], 2, (16, 16))
        assert set(out.tolist()) <= {100.0, 101.0}, out
