"""Workloads across implementations, timed in one process: the same step written by hand in
NumPy, compiled by graphc for its numpy, llvm and opencl backends, and, where installed,
written in PyTorch (eager), JAX (jit) and tinygrad (on its OpenCL device).

    python -m benchmarks llvm                     # the full run (5-10 minutes, see below)
    python -m benchmarks llvm --quick             # tiny sizes, one round (what the test runs)
    python -m benchmarks llvm --only=gemm         # workloads whose name contains "gemm"
    python -m benchmarks llvm --impl=llvm,torch   # numpy by hand and these (default: all)

Implementations (--impl names): numpy, llvm, opencl (graphc's backends; opencl runs on
PoCL, the CPU, here), torch, jax, tinygrad (benchmarks/others*.py). A framework that does not
import gets a row saying "not installed"; the run goes on.

Workloads (float32):
  W1 mlp   training step 784-512-256-10, ReLU, softmax cross-entropy, batch 128 (fwd+bwd+SGD)
  W2 cnn   LeNet-style training step, 1x28x28 batch 64: conv 5x5 1->6 pad 2, ReLU, max-pool 2,
           conv 5x5 6->16, ReLU, max-pool 2, linear 400->120, ReLU, linear -> 10, softmax CE
  W3 lstm  training step, input 32, hidden 128, seq 32, batch 32, classify from the last h
           (PyTorch: nn.LSTM with these weights mapped in; JAX: lax.scan)
  W4 ew    an 8-op elementwise chain on 4M floats; row softmax 4096x1024. Each is timed beside
           a memory copy of the bytes it reads and writes (np.copyto into a kept buffer, on
           every core: `timing.copier`), and every median is also given as a multiple of it
  W5 infer MLP inference 784-512-256-10 at batch 1 and 256
  gemm     512, 1024, 2048 square matmul (GFLOP/s column)
Then the first-call compile time of W1 on llvm with an empty disk cache and from the disk
cache (the in-memory cache cleared in between).

Every implementation starts from the same arrays and its result (loss and updated
parameters, or the output) is checked against the hand-written one before timing. Every
timed call takes NumPy arrays and returns NumPy arrays, as a graphc call does: the
frameworks' times include moving data in and the wait for the result. Implementations run
interleaved, the table gives medians, the ratio to hand-written NumPy and a note when other
processes used more than 0.2 cores while a row was measured (benchmarks/timing.py).
The slow rows set the run's length: tinygrad's first W3 call (its code generation for the
32 unrolled LSTM steps, forward and backward) took 1-3 minutes here and each replay 6-8 s;
graphc's OpenCL backend and tinygrad build OpenCL programs on first use (cached on disk
afterwards: graphc's in ~/.cache/graphc, PoCL's and tinygrad's in their own caches).

NumPy's BLAS runs with its default threads; the llvm backend, PyTorch and XLA use all cores.
Run through `python -m benchmarks`, OPENBLAS_THREAD_TIMEOUT=4 is set before numpy loads (see
benchmarks/__main__.py: OpenBLAS threads spinning after a call otherwise steal a core from
the implementation timed next).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

import graphc as gc
from benchmarks import others
from benchmarks.passes import (_conv_bwd, _conv_fwd, _data, _init, mlp_forward,
                               mlp_numpy, mlp_step, np_softmax_ce, relu, sgd, softmax_ce)
from benchmarks.timing import BASE, CpuMeter, Row, against_copy, format_table, time_workload

IMPLS = (BASE,) + tuple(others.IMPLS.values())  # every implementation's row label, in table
# order (W4's workloads add timing.COPY)


@dataclass
class Problem:
    name: str
    kind: str           # which function the frameworks' modules write: mlp, cnn, lstm, ...
    step: Callable      # graphc version (gc ops), compiled per backend
    by_hand: Callable   # NumPy version, the baseline and the reference result
    args: tuple         # NumPy arrays (parameter dicts first)
    flops: float | None = None
    copy_bytes: int | None = None  # bytes it must read and write: timed beside a copy of them


# ---- W1 / W5: MLP ------------------------------------------------------------------------------
def _mlp_params(rng, sizes):
    p = {}
    for i, (a, b) in enumerate(zip(sizes, sizes[1:]), 1):
        p[f"W{i}"], p[f"b{i}"] = _init(rng, (a, b), a), np.zeros(b, np.float32) + 0.01
    return p


def mlp_problem(q):
    sizes, batch = ([784, 512, 256, 10], 128) if not q else ([12, 8, 6, 3], 4)
    rng = np.random.default_rng(0)
    x, y = _data(rng, (batch, sizes[0]), sizes[-1])
    return Problem(f"W1 mlp train {'-'.join(map(str, sizes))} b{batch}", "mlp", mlp_step,
                   mlp_numpy, (_mlp_params(rng, sizes), x, y))


def infer_problems(q):
    sizes = [784, 512, 256, 10] if not q else [12, 8, 6, 3]
    rng = np.random.default_rng(5)
    p = _mlp_params(rng, sizes)
    out = []
    for b in ((1, 256) if not q else (1, 4)):
        x = rng.standard_normal((b, sizes[0])).astype(np.float32)
        out.append(Problem(f"W5 mlp infer b{b}", "infer",
                           lambda p, x: mlp_forward(p, x, relu),
                           lambda p, x: mlp_forward(p, x, lambda h: np.maximum(h, 0)), (p, x)))
    return out


# ---- W2: LeNet-style CNN -----------------------------------------------------------------------
def cnn_loss(p, x, onehot):
    import graphc.nn.functional as F
    h = F.max_pool2d(relu(F.conv2d(x, p["K1"], p["c1"], padding=2)), 2)
    h = F.max_pool2d(relu(F.conv2d(h, p["K2"], p["c2"])), 2)
    h = gc.reshape(h, (h.shape[0], -1))
    h = relu(h @ p["W1"] + p["b1"])
    return softmax_ce(h @ p["W2"] + p["b2"], onehot)


def cnn_step(p, x, onehot):
    loss, g = gc.value_and_grad(cnn_loss)(p, x, onehot)
    return loss, sgd(p, g)


def _pool_fwd(y):
    N, C, H, W = y.shape
    return y.reshape(N, C, H // 2, 2, W // 2, 2).max(axis=(3, 5))


def _pool_bwd(dp, y, p):
    N, C, H, W = y.shape
    m = y.reshape(N, C, H // 2, 2, W // 2, 2) == p[:, :, :, None, :, None]
    return (m * dp[:, :, :, None, :, None]).reshape(y.shape)  # ties: masked by ReLU below


def cnn_numpy(p, x, onehot):
    y1, c1 = _conv_fwd(x, p["K1"], p["c1"], 1, 2)
    a1 = np.maximum(y1, 0)
    p1 = _pool_fwd(a1)
    y2, c2 = _conv_fwd(p1, p["K2"], p["c2"], 1, 0)
    a2 = np.maximum(y2, 0)
    p2 = _pool_fwd(a2)
    f = p2.reshape(p2.shape[0], -1)
    z1 = f @ p["W1"] + p["b1"]
    h = np.maximum(z1, 0)
    loss, dz = np_softmax_ce(h @ p["W2"] + p["b2"], onehot)
    g = {"W2": h.T @ dz, "b2": dz.sum(axis=0)}
    dz1 = (dz @ p["W2"].T) * (z1 > 0)
    g["W1"], g["b1"] = f.T @ dz1, dz1.sum(axis=0)
    da2 = _pool_bwd((dz1 @ p["W1"].T).reshape(p2.shape), a2, p2) * (y2 > 0)
    g["K2"], g["c2"], dp1 = _conv_bwd(da2, p1, p["K2"], 1, 0, c2, True)
    da1 = _pool_bwd(dp1, a1, p1) * (y1 > 0)
    g["K1"], g["c1"], _ = _conv_bwd(da1, x, p["K1"], 1, 2, c1, False)
    return loss, {k: p[k] - np.float32(0.05) * g[k] for k in p}


def cnn_problem(q):
    N, S, C1, C2, F1 = (64, 28, 6, 16, 120) if not q else (2, 12, 2, 3, 5)
    rng = np.random.default_rng(1)
    flat = C2 * ((S // 2 - 4) // 2) ** 2
    p = {"K1": _init(rng, (C1, 1, 5, 5), 25), "c1": np.zeros(C1, np.float32) + 0.01,
         "K2": _init(rng, (C2, C1, 5, 5), 25 * C1), "c2": np.zeros(C2, np.float32) + 0.01,
         "W1": _init(rng, (flat, F1), flat), "b1": np.zeros(F1, np.float32) + 0.01,
         "W2": _init(rng, (F1, 10), F1), "b2": np.zeros(10, np.float32)}
    x, y = _data(rng, (N, 1, S, S), 10)
    return Problem(f"W2 cnn train 1x{S}x{S} b{N}", "cnn", cnn_step, cnn_numpy, (p, x, y))


# ---- W3: LSTM ----------------------------------------------------------------------------------
def _sig(z):
    return 1.0 / (1.0 + gc.exp(-z))


def lstm_last_state(p, x):
    """An LSTM unrolled over x's T steps (gates i, f, g, o side by side): the last h."""
    T, H = x.shape[0], p["Wh"].shape[0]
    h = c = None
    for t in range(T):
        a = x[t] @ p["Wx"] + p["b"] + (0.0 if h is None else h @ p["Wh"])
        i, f = _sig(a[:, 0:H]), _sig(a[:, H:2 * H])
        g, o = gc.tanh(a[:, 2 * H:3 * H]), _sig(a[:, 3 * H:4 * H])
        c = i * g if c is None else f * c + i * g
        h = o * gc.tanh(c)
    return h


def lstm_loss(p, x, onehot):
    return softmax_ce(lstm_last_state(p, x) @ p["W"] + p["bW"], onehot)


def lstm_step(p, x, onehot):
    loss, g = gc.value_and_grad(lstm_loss)(p, x, onehot)
    return loss, sgd(p, g)


def lstm_numpy(p, x, onehot):
    T, B = x.shape[:2]
    H = p["Wh"].shape[0]
    h, c = np.zeros((B, H), np.float32), np.zeros((B, H), np.float32)
    cache = []
    for t in range(T):
        a = x[t] @ p["Wx"] + p["b"] + h @ p["Wh"]
        s = 1.0 / (1.0 + np.exp(-a))
        i, f, o, g = s[:, :H], s[:, H:2 * H], s[:, 3 * H:], np.tanh(a[:, 2 * H:3 * H])
        cache.append((h, c, i, f, g, o))
        c = f * c + i * g
        tc = np.tanh(c)
        h = o * tc
        cache[-1] += (tc,)
    loss, dz = np_softmax_ce(h @ p["W"] + p["bW"], onehot)
    gr = {"W": h.T @ dz, "bW": dz.sum(axis=0), "Wx": np.zeros_like(p["Wx"]),
          "Wh": np.zeros_like(p["Wh"]), "b": np.zeros_like(p["b"])}
    dh, dc = dz @ p["W"].T, np.zeros((B, H), np.float32)
    for t in range(T - 1, -1, -1):
        hp, cp, i, f, g, o, tc = cache[t]
        dc = dc + dh * o * (1 - tc * tc)
        da = np.concatenate([dc * g * i * (1 - i), dc * cp * f * (1 - f), dc * i * (1 - g * g),
                             dh * tc * o * (1 - o)], axis=1)
        dc = dc * f
        gr["Wx"] += x[t].T @ da
        gr["Wh"] += hp.T @ da
        gr["b"] += da.sum(axis=0)
        dh = da @ p["Wh"].T
    return loss, {k: p[k] - np.float32(0.05) * gr[k] for k in p}


def lstm_problem(q):
    T, B, I, H = (32, 32, 32, 128) if not q else (3, 2, 4, 5)
    rng = np.random.default_rng(2)
    p = {"Wx": _init(rng, (I, 4 * H), I), "Wh": _init(rng, (H, 4 * H), H),
         "b": np.zeros(4 * H, np.float32) + 0.01, "W": _init(rng, (H, 10), H),
         "bW": np.zeros(10, np.float32)}
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, B)]
    return Problem(f"W3 lstm train T{T} b{B} i{I} h{H}", "lstm", lstm_step, lstm_numpy,
                   (p, x, y))


# ---- W4: elementwise chain, row softmax ----------------------------------------------------------
def chain(x, xp=gc):
    return xp.tanh(x * 0.5 + 1.0) * xp.exp(-(x * x)) + xp.sqrt(xp.abs(x))  # 8 ops


def softmax(x, xp=gc):
    e = xp.exp(x - xp.max(x, axis=1, keepdims=True))
    return e / xp.sum(e, axis=1, keepdims=True)


def ew_problems(q):
    rng = np.random.default_rng(3)
    n, (r, c) = (1 << 22, (4096, 1024)) if not q else (1000, (7, 33))
    x = rng.standard_normal(n).astype(np.float32)
    s = rng.standard_normal((r, c)).astype(np.float32)
    return [Problem(f"W4 8-op chain {n}", "chain", chain, lambda x: chain(x, np), (x,),
                    copy_bytes=2 * x.nbytes),
            Problem(f"W4 row softmax {r}x{c}", "softmax", softmax, lambda x: softmax(x, np),
                    (s,), copy_bytes=2 * s.nbytes)]


# ---- GEMM ----------------------------------------------------------------------------------------
def gemm_problems(q):
    rng = np.random.default_rng(4)
    out = []
    for n in ((512, 1024, 2048) if not q else (8, 17)):
        a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
        out.append(Problem(f"gemm {n}", "gemm", lambda a, b: a @ b, np.matmul, (a, b),
                           2.0 * n ** 3))
    return out


# ---- the run -----------------------------------------------------------------------------------
def compile_times(q) -> list[tuple[str, float]]:
    """First call of W1 on llvm: with an empty disk cache, then from the disk cache only."""
    from graphc.backends import llvm as L
    w1 = mlp_problem(q)
    out = []
    old = os.environ.get("GRAPHC_CACHE_DIR")
    with tempfile.TemporaryDirectory() as d:
        os.environ["GRAPHC_CACHE_DIR"] = d
        try:
            for label in ("cold (empty disk cache)", "warm (from disk cache)"):
                L.clear_memory_cache()
                f = gc.compile(w1.step, backend="llvm")
                t0 = time.perf_counter()
                f(*w1.args)
                total = time.perf_counter() - t0
                out.append((f"{label}: first call", total))
        finally:
            if old is None:
                os.environ.pop("GRAPHC_CACHE_DIR", None)
            else:
                os.environ["GRAPHC_CACHE_DIR"] = old
    return out



def problems(q) -> list[Problem]:
    return [mlp_problem(q), cnn_problem(q), lstm_problem(q), *ew_problems(q),
            *infer_problems(q), *gemm_problems(q)]


def main(argv=None, quick: bool = False) -> list[Row]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks llvm",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    ap.add_argument("--only", default="", help="run the workloads whose name contains this")
    ap.add_argument("--impl", default="all",
                    help=f"comma-separated, from {','.join(others.IMPLS)} (default: all); "
                         "numpy by hand always runs, as the baseline")
    args = ap.parse_args(argv if argv is not None else [])
    q = quick or args.quick
    try:
        impls = others.parse(args.impl)
    except ValueError as e:
        ap.error(str(e))
    meter = CpuMeter()
    rows: list[Row] = []
    notes: dict[str, str] = {}
    for p in problems(q):
        if args.only and args.only not in p.name:
            continue
        big = p.flops is not None and p.flops > 5e9
        budget, reps = (0.0, 1) if q else ((3.0, 5) if big else (6.0, 200))
        new, notes[p.name] = time_workload(p, impls, budget, reps, meter, warmup=not q)
        rows += new
        print(format_table(new, header=False, notes=notes), flush=True)
    print(f"\nworkloads ({'quick' if q else 'medians'}; numpy {np.__version__}, "
          f"cpu count {os.cpu_count()}, "
          f"OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset')}"
          f"{'' if meter.works else '; no /proc: other processes not measured'})")
    print(format_table(rows, notes=notes))
    for line in against_copy(rows):
        print(line)
    for impl in impls:
        print("  " + others.describe(impl))
    if "llvm" in impls and others.status("llvm") is None and (not args.only or "W1" in args.only):
        for label, s in compile_times(q):
            print(f"W1 llvm compile, {label}: {s:.3f}s")
    return rows


if __name__ == "__main__":
    main(None)
