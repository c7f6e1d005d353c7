"""What the optimisation passes buy on the NumPy backend: training-step time with all passes,
without fusion, and without fusion, CSE and the simplifier's rules, against the same step
written by hand in NumPy.

    python -m benchmarks passes            # the full run (well under a minute)
    python -m benchmarks passes --quick    # tiny sizes, one repetition (what the test runs)

Problems (float32, forward + backward + SGD in one compiled step):
  mlp  784-512-256-10, ReLU, softmax cross-entropy, batch 128, built with gc ops
  cnn  conv 1->8 3x3 pad 1, ReLU, conv 8->16 3x3 stride 2 pad 1, ReLU, linear -> 10,
       softmax cross-entropy, batch 32 of 1x16x16 (only if graphc.nn.functional.conv2d exists)

Implementations are timed interleaved (one call of each per round, in an order shuffled each
round, as benchmarks/timing.py does: a fixed rotation biased A/B runs) so drift in machine
speed hits them alike; the table gives medians. Each graphc
implementation is checked against the hand-written one before timing. The columns ops,
kernels and peak memory are the optimized stage's (graphc.report.stage_stats; with the memory
plan, peak = arena + outputs).
"""
from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

import graphc as gc
from graphc.backends.numpy import NumpyBackend
from graphc.report import stage_stats

CONFIGS = [  # (label, passes spec)
    ("graphc, all passes", None),
    ("graphc, -fusion", "-fusion"),
    ("graphc, -fusion,-cse,-rules", "-fusion,-cse,-rules"),
]
LR = 0.05


# ---- shared pieces ---------------------------------------------------------------------------
def softmax_ce(z, onehot):
    z = z - gc.max(z, axis=1, keepdims=True)
    log_probs = z - gc.log(gc.sum(gc.exp(z), axis=1, keepdims=True))
    return -gc.sum(onehot * log_probs) / z.shape[0]


def relu(x):
    return gc.where(x > 0, x, 0.0)


def sgd(params, grads):
    return {k: params[k] - LR * grads[k] for k in params}


def np_softmax_ce(z, onehot):
    """(loss, dloss/dz) by hand."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    loss = -np.sum(onehot * (z - np.log(s))) / z.shape[0]
    return np.float32(loss), (e / s - onehot) / np.float32(z.shape[0])


def _init(rng, shape, fan_in):
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def _data(rng, shape, classes):
    x = rng.standard_normal(shape).astype(np.float32)
    y = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, shape[0])]
    return x, y


# ---- MLP -------------------------------------------------------------------------------------
def mlp_forward(params, x, act):
    """The MLP of this benchmark's mlp problem and of the llvm benchmark's W1 and W5, in any
    array library: x @ W1 + b1, act, ..., the last layer linear (params W1, b1, W2, ...;
    `act` the library's ReLU)."""
    n = len(params) // 2
    h = x
    for i in range(1, n + 1):
        h = h @ params[f"W{i}"] + params[f"b{i}"]
        if i < n:
            h = act(h)
    return h


def mlp_loss(params, x, onehot):
    return softmax_ce(mlp_forward(params, x, relu), onehot)


def mlp_step(params, x, onehot):
    loss, grads = gc.value_and_grad(mlp_loss)(params, x, onehot)
    return loss, sgd(params, grads)


def mlp_numpy(params, x, onehot):
    n = len(params) // 2
    hs, h = [x], x
    for i in range(1, n + 1):
        h = h @ params[f"W{i}"] + params[f"b{i}"]
        if i < n:
            h = np.maximum(h, 0)
        hs.append(h)
    loss, d = np_softmax_ce(h, onehot)
    new = {}
    for i in range(n, 0, -1):
        a = hs[i - 1]
        new[f"W{i}"] = params[f"W{i}"] - LR * (a.T @ d)
        new[f"b{i}"] = params[f"b{i}"] - LR * d.sum(axis=0)
        if i > 1:
            d = (d @ params[f"W{i}"].T) * (a > 0)
    return loss, new


def mlp_problem(quick: bool):
    sizes, batch = ([784, 512, 256, 10], 128) if not quick else ([12, 8, 6, 3], 4)
    rng = np.random.default_rng(0)
    params = {}
    for i, (a, b) in enumerate(zip(sizes, sizes[1:]), 1):
        params[f"W{i}"] = _init(rng, (a, b), a)
        params[f"b{i}"] = np.zeros(b, np.float32)
    x, y = _data(rng, (batch, sizes[0]), sizes[-1])
    return mlp_step, mlp_numpy, (params, x, y), f"mlp {'-'.join(map(str, sizes))}, batch {batch}"


# ---- CNN -------------------------------------------------------------------------------------
def has_conv2d() -> bool:
    try:
        import graphc.nn.functional as F
    except ImportError:
        return False
    return hasattr(F, "conv2d")


def cnn_loss(params, x, onehot):
    import graphc.nn.functional as F
    h = relu(F.conv2d(x, params["K1"], params["c1"], padding=1))
    h = relu(F.conv2d(h, params["K2"], params["c2"], stride=2, padding=1))
    h = gc.reshape(h, (h.shape[0], -1))
    return softmax_ce(h @ params["W"] + params["b"], onehot)


def cnn_step(params, x, onehot):
    loss, grads = gc.value_and_grad(cnn_loss)(params, x, onehot)
    return loss, sgd(params, grads)


def _im2col(x, k, stride, pad):
    """x (N, C, H, W) -> cols (N, k*k*C, Ho*Wo), rows ordered (ki, kj, c)."""
    N, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Ho, Wo = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
    wins = [xp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride]
            for i in range(k) for j in range(k)]
    return np.concatenate(wins, axis=1).reshape(N, k * k * C, Ho * Wo), (Ho, Wo)


def _col2im(dcols, shape, k, stride, pad, out):
    N, C, H, W = shape
    Ho, Wo = out
    dxp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dcols.dtype)
    d = dcols.reshape(N, k * k, C, Ho, Wo)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i:i + stride * (Ho - 1) + 1:stride,
                j:j + stride * (Wo - 1) + 1:stride] += d[:, i * k + j]
    return dxp[:, :, pad:pad + H, pad:pad + W]


def _conv_fwd(x, K, c, stride, pad):
    O, C, k, _ = K.shape
    cols, out = _im2col(x, k, stride, pad)
    wm = K.transpose(0, 2, 3, 1).reshape(O, k * k * C)
    y = (wm @ cols).reshape(x.shape[0], O, *out) + c.reshape(1, O, 1, 1)
    return y, (cols, wm, out)


def _conv_bwd(dy, x, K, stride, pad, cache, need_dx):
    cols, wm, out = cache
    O, C, k, _ = K.shape
    dym = dy.reshape(dy.shape[0], O, -1)
    dK = np.einsum("nol,nrl->or", dym, cols).reshape(O, k, k, C).transpose(0, 3, 1, 2)
    dc = dy.sum(axis=(0, 2, 3))
    dx = _col2im(wm.T @ dym, x.shape, k, stride, pad, out) if need_dx else None
    return dK, dc, dx


def cnn_numpy(params, x, onehot):
    y1, c1 = _conv_fwd(x, params["K1"], params["c1"], 1, 1)
    h1 = np.maximum(y1, 0)
    y2, c2 = _conv_fwd(h1, params["K2"], params["c2"], 2, 1)
    h2 = np.maximum(y2, 0)
    f = h2.reshape(h2.shape[0], -1)
    loss, dz = np_softmax_ce(f @ params["W"] + params["b"], onehot)
    grads = {"W": f.T @ dz, "b": dz.sum(axis=0)}
    dh2 = (dz @ params["W"].T).reshape(h2.shape) * (y2 > 0)
    grads["K2"], grads["c2"], dh1 = _conv_bwd(dh2, h1, params["K2"], 2, 1, c2, True)
    grads["K1"], grads["c1"], _ = _conv_bwd(dh1 * (y1 > 0), x, params["K1"], 1, 1, c1, False)
    return loss, {k: params[k] - LR * grads[k] for k in params}


def cnn_problem(quick: bool):
    N, S, C1, C2 = (32, 16, 8, 16) if not quick else (2, 6, 2, 3)
    rng = np.random.default_rng(1)
    params = {"K1": _init(rng, (C1, 1, 3, 3), 9), "c1": np.zeros(C1, np.float32),
              "K2": _init(rng, (C2, C1, 3, 3), 9 * C1), "c2": np.zeros(C2, np.float32)}
    flat = C2 * (S // 2) ** 2
    params["W"] = _init(rng, (flat, 10), flat)
    params["b"] = np.zeros(10, np.float32)
    x, y = _data(rng, (N, 1, S, S), 10)
    return cnn_step, cnn_numpy, (params, x, y), f"cnn 1x{S}x{S} -> {C1} -> {C2} -> 10, batch {N}"


# ---- timing ----------------------------------------------------------------------------------
@dataclass
class Row:
    problem: str
    impl: str
    median_s: float
    ops: int | None = None
    kernels: int | None = None
    peak_bytes: int | None = None
    compile_s: float | None = None


def _same(a, b, what):
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb), what
    for x, y in zip(la, lb):
        np.testing.assert_allclose(x, y, rtol=2e-3, atol=1e-4, err_msg=what)


def _leaves(out):
    loss, params = out
    return [np.asarray(loss)] + [np.asarray(params[k]) for k in sorted(params)]


def time_problem(name: str, step: Callable, by_hand: Callable, args, reps: int,
                 min_time: float = 0.0) -> list[Row]:
    impls: list[tuple[str, Callable]] = [("numpy by hand", by_hand)]
    rows = {"numpy by hand": Row(name, "numpy by hand", 0.0)}
    want = by_hand(*args)
    for label, passes in CONFIGS:
        fn = gc.compile(step, backend=NumpyBackend(), passes=passes)
        t0 = time.perf_counter()
        entry = fn.lower(*args)
        compile_s = time.perf_counter() - t0
        _same(fn(*args), want, f"{name}: {label} disagrees with numpy by hand")
        s = stage_stats("optimized", entry.stages["optimized"])
        rows[label] = Row(name, label, 0.0, s.nodes, s.kernels, s.peak_bytes, compile_s)
        impls.append((label, fn))
    times: dict[str, list[float]] = {label: [] for label, _ in impls}
    for label, f in impls:  # warm up
        f(*args)
    r, order = 0, random.Random(0)
    t_start = time.perf_counter()
    while r < reps or (time.perf_counter() - t_start < min_time and r < 50 * reps):
        for label, f in order.sample(impls, len(impls)):  # a new order each round
            t0 = time.perf_counter()
            f(*args)
            times[label].append(time.perf_counter() - t0)
        r += 1
    for label, ts in times.items():
        rows[label].median_s = statistics.median(ts)
    return [rows[label] for label, _ in impls]


def _mb(n):
    return "" if n is None else f"{n / 1e6:.2f} MB"


def format_table(rows: list[Row]) -> str:
    head = (f"{'problem / implementation':<38}{'median':>10}{'vs numpy':>10}{'ops':>7}"
            f"{'kernels':>9}{'peak mem':>11}{'compile':>9}")
    lines = [head, "-" * len(head)]
    by_problem: dict[str, list[Row]] = {}
    for r in rows:
        by_problem.setdefault(r.problem, []).append(r)
    for problem, rs in by_problem.items():
        base = next(r.median_s for r in rs if r.impl == "numpy by hand")
        lines.append(problem)
        for r in rs:
            lines.append(
                f"  {r.impl:<36}{r.median_s * 1e3:>8.2f}ms{r.median_s / base:>9.2f}x"
                f"{'' if r.ops is None else r.ops:>7}{'' if r.kernels is None else r.kernels:>9}"
                f"{_mb(r.peak_bytes):>11}"
                f"{'' if r.compile_s is None else f'{r.compile_s:.2f}s':>9}")
    return "\n".join(lines)


@contextlib.contextmanager
def _blas_threads(n: int):
    """Limit BLAS to n threads while timing (threadpoolctl, when installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield "as configured (threadpoolctl not installed)"
        return
    if n <= 0:
        yield "as configured"
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield n


def main(argv=None, quick: bool = False) -> list[Row]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks passes",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    parser.add_argument("--reps", type=int, default=None, help="timed rounds per problem")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads (default 1: steadier medians on a shared machine; "
                             "0 leaves BLAS as it is)")
    args = parser.parse_args(argv if argv is not None else [])
    quick = quick or args.quick
    reps = args.reps or (1 if quick else 15)
    min_time = 0.0 if quick else 4.0
    problems = [mlp_problem]
    if has_conv2d():
        problems.append(cnn_problem)
    else:
        print("note: graphc.nn.functional.conv2d is missing: the cnn row is skipped")
    rows: list[Row] = []
    with _blas_threads(args.threads) as threads:
        for make in problems:
            step, by_hand, example, name = make(quick)
            rows += time_problem(name, step, by_hand, example, reps, min_time)
    print(f"NumPy backend step times ({'quick' if quick else f'>= {reps} rounds'}, medians; "
          f"numpy {np.__version__}, BLAS threads: {threads})")
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main(None)
