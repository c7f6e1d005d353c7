"""Timing for `benchmarks.workloads`: implementations interleaved in one process, medians,
the CPU other processes used meanwhile, and the table.

Every implementation's result is checked against the hand-written NumPy once before it is
timed. Then rounds run a short block of calls of each implementation, in an order shuffled
each round (a fixed rotation biased A/B runs by up to 10%), so drift in machine speed hits
them alike. A block's first call is not timed (the lead-in): after another implementation's
call, thread pools that keep spinning for a while (OpenMP's, under torch; OpenBLAS's, for
which `python -m benchmarks` also sets OPENBLAS_THREAD_TIMEOUT) take a core from whatever runs
next: interleaved call by call, that cost graphc's two-thread GEMMs about 40% (67 against
118 GFLOP/s at 256x784x512) and charged every implementation for the others' spinning.
Calls slower than SLOW_S (the warm-up call, or the median so far) run one to a block, with
no lead-in. Each implementation has an equal share of the
workload's budget: it leaves the rounds once it has three runs and runs x median reaches that
share (the median, so that one call stalled by another process does not end its runs), or
once its calls have used the whole budget: a slow one (seconds a call) is not repeated for
minutes, and does not starve the fast ones of runs.

Noise: `CpuMeter` reads the machine's busy time (/proc/stat) and this process's own
(/proc/self/stat: all its threads, and children it waited for); the difference is what other
processes ran. Both count 10 ms ticks, so a window is only read when it is long enough
(MIN_WINDOW_S): the workload's whole timing window gives the note on its heading line, and
a row's own calls (the meter read around each one and summed) give the note on the row. A
note is printed when others used more than NOISY_CORES cores on average. --quick's single
round is too short to say anything.
"""
from __future__ import annotations

import os
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from benchmarks import others

BASE = "numpy by hand"
COPY = "memory copy, same bytes"  # W4's yardstick: copying the bytes it reads and writes
BLOCK = 3        # timed calls per block (after the untimed lead-in call)
SLOW_S = 0.05    # calls at least this long: one timed call a block, no lead-in
NOISY_CORES = 0.2
MIN_WINDOW_S = 0.5  # 50 ticks: a reading within a few percent of a core


@dataclass
class Row:
    workload: str
    impl: str
    median_s: float | None  # None: not run (see note)
    flops: float | None = None
    note: str = ""


class CpuMeter:
    """CPU seconds used by processes other than this one (Linux /proc; elsewhere nothing)."""

    def __init__(self, stat="/proc/stat", self_stat="/proc/self/stat"):
        try:
            self._fds = (os.open(stat, os.O_RDONLY), os.open(self_stat, os.O_RDONLY))
            self.hz = os.sysconf("SC_CLK_TCK")
            self.ticks()
        except (OSError, ValueError, IndexError):
            self._fds = None

    @property
    def works(self) -> bool:
        return self._fds is not None

    def ticks(self) -> int:
        """Busy ticks of the whole machine minus this process's (0 without /proc)."""
        if self._fds is None:
            return 0
        cpu = [int(v) for v in os.pread(self._fds[0], 256, 0).split(b"\n", 1)[0].split()[1:9]]
        # user nice system idle iowait irq softirq steal: idle and iowait are not busy, and
        # steal is time the hypervisor gave to other machines, not to processes here
        busy = sum(cpu) - cpu[3] - cpu[4] - cpu[7]
        me = os.pread(self._fds[1], 1024, 0)
        me = me[me.rindex(b")") + 2:].split()  # the name may hold spaces: start after it
        return busy - sum(int(v) for v in me[11:15])  # utime stime cutime cstime

    def seconds(self, t0: int, t1: int) -> float:
        return (t1 - t0) / self.hz if self._fds else 0.0


def noise_note(others_s: float, wall_s: float) -> str:
    """"other processes used 0.7 cores meanwhile", or "" when too short to tell or quiet."""
    if wall_s < MIN_WINDOW_S or others_s / wall_s <= NOISY_CORES:
        return ""
    return f"other processes used {others_s / wall_s:.1f} cores meanwhile"


def _leaves(x):
    if isinstance(x, dict):
        return [v for k in sorted(x) for v in _leaves(x[k])]
    if isinstance(x, (tuple, list)):
        return [v for e in x for v in _leaves(e)]
    return [np.asarray(x)]


def check(got, want, what, loose=False):
    """got == want leaf by leaf. `loose` for frameworks that order sums differently (and
    PyTorch/XLA's own exp/tanh): 1e-2 relative instead of 2e-3."""
    lg, lw = _leaves(got), _leaves(want)
    assert len(lg) == len(lw), what
    rtol, atol = (1e-2, 1e-3) if loose else (2e-3, 2e-4)
    for a, b in zip(lg, lw):
        assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
        scale = max(1.0, float(np.max(np.abs(b))) if b.size else 1.0)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * scale, err_msg=what)


def copier(nbytes: int) -> Callable:
    """A call that reads nbytes/2 and writes nbytes/2: np.copyto into a kept buffer, split
    over every core the process may use (numpy lets go of the GIL while it copies; on the
    2-core machine of November 2026 two threads copied 4M floats at 10.5-22.7 GB/s across
    runs, one at 9.4-10.9)."""
    src = np.ones(nbytes // 8, np.float32)
    dst = np.empty_like(src)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cuts = np.linspace(0, len(src), (cores or 1) + 1).astype(int)
    parts = [(dst[a:b], src[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    # (idle threads end with the process; one core: no pool)
    pool = ThreadPoolExecutor(len(parts) - 1) if len(parts) > 1 else None

    def copy(*_):  # the calling thread copies the first part: one hand-off fewer
        futures = [pool.submit(np.copyto, d, s) for d, s in parts[1:]] if pool else []
        np.copyto(*parts[0])
        for f in futures:
            f.result()
    return copy


def time_workload(problem, impls, budget_s, max_reps, meter: CpuMeter,
                  warmup: bool = True) -> tuple[list[Row], str]:
    """Rows for numpy by hand and each of `impls` (names of others.IMPLS), in that order,
    then COPY for a problem with copy_bytes, and the noise note for the whole workload (""
    when quiet)."""
    args = problem.args
    want = problem.by_hand(*args)
    fns, notes = {BASE: problem.by_hand}, {}
    for impl in impls:
        label = others.IMPLS[impl]
        try:
            f = others.build(impl, problem)
        except others.Unavailable as e:
            notes[label] = str(e)
            continue
        check(f(*args), want, f"{problem.name}: {label} disagrees with numpy by hand",
              loose=impl in others.FRAMEWORKS)
        fns[label] = f
    if problem.copy_bytes:  # memory bandwidth, measured interleaved
        fns[COPY] = copier(problem.copy_bytes)
    first = dict.fromkeys(fns, 0.0)
    if warmup:  # first-use costs (allocation, TinyJit's capture) stay out of the medians
        for k, f in fns.items():
            t0 = time.perf_counter()
            f(*args)
            first[k] = time.perf_counter() - t0
    times: dict[str, list[float]] = {k: [] for k in fns}
    spent, others_s = dict.fromkeys(fns, 0.0), dict.fromkeys(fns, 0.0)
    active, t_start = list(fns), time.perf_counter()
    share = budget_s / len(fns)
    window = meter.ticks()
    order = random.Random(0)
    while active:
        for impl in order.sample(active, len(active)):
            slow = (statistics.median(times[impl]) if times[impl] else first[impl]) >= SLOW_S
            if warmup and not slow:  # the lead-in: absorbs the previous implementation's tail
                t0 = time.perf_counter()
                fns[impl](*args)
                spent[impl] += time.perf_counter() - t0
            for _ in range(1 if slow or not warmup else BLOCK):
                c0 = meter.ticks()
                t0 = time.perf_counter()
                fns[impl](*args)
                dt = time.perf_counter() - t0
                others_s[impl] += meter.seconds(c0, meter.ticks())
                times[impl].append(dt)
                spent[impl] += dt
        active = [i for i in active if len(times[i]) < max_reps and spent[i] < budget_s and (
            len(times[i]) < 3 or len(times[i]) * statistics.median(times[i]) < share)]
    note = noise_note(meter.seconds(window, meter.ticks()), time.perf_counter() - t_start)
    rows = []
    for label in [BASE] + [others.IMPLS[i] for i in impls] + [COPY] * (COPY in fns):
        if label not in fns:
            rows.append(Row(problem.name, label, None, problem.flops, notes[label]))
            continue
        ts = times[label]
        runs = f"{len(ts)} run{'s' if len(ts) > 1 else ''}"
        noisy = noise_note(others_s[label], spent[label])
        flops = problem.flops
        if label == COPY:  # a copy's speed is bytes a second, not the workload's flops
            runs += f"; {problem.copy_bytes / statistics.median(ts) / 1e9:.1f} GB/s"
            flops = None
        rows.append(Row(problem.name, label, statistics.median(ts), flops,
                        f"{runs}; {noisy}" if noisy else runs))
    return rows, note


def against_copy(rows: list[Row]) -> list[str]:
    """For each workload timed beside a memory copy of its bytes: each implementation's median
    as a multiple of that copy's (issue #5's target for W4: within 1.5x)."""
    lines = []
    for w in dict.fromkeys(r.workload for r in rows):
        rs = {r.impl: r.median_s for r in rows if r.workload == w and r.median_s}
        if COPY not in rs:
            continue
        ratios = ", ".join(f"{k} {t / rs[COPY]:.2f}x" for k, t in rs.items() if k != COPY)
        lines.append(f"{w}, against a copy of its bytes ({rs[COPY] * 1e3:.3f} ms): {ratios}")
    return lines


def format_table(rows: list[Row], header: bool = True, notes: dict | None = None) -> str:
    """The rows grouped by workload; `notes` maps a workload to its heading's note."""
    head = f"{'workload / implementation':<36}{'median':>12}{'vs numpy':>10}{'GFLOP/s':>9}  note"
    lines = [head, "-" * (len(head) + 30)] if header else []
    for w in dict.fromkeys(r.workload for r in rows):
        rs = [r for r in rows if r.workload == w]
        base = next(r.median_s for r in rs if r.impl == BASE)
        lines.append(f"{w:<60}{(notes or {}).get(w, '')}".rstrip())
        for r in rs:
            if r.median_s is None:
                lines.append(f"  {r.impl:<34}{'-':>12}{'-':>10}{'':>9}  {r.note}")
                continue
            gf = f"{r.flops / r.median_s / 1e9:.1f}" if r.flops else ""
            lines.append(f"  {r.impl:<34}{r.median_s * 1e3:>10.3f}ms{r.median_s / base:>9.2f}x"
                         f"{gf:>9}  {r.note}")
    return "\n".join(lines)
