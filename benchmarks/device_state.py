"""What keeping a training step's state on the OpenCL device buys: host <-> device bytes and
time per `TrainStep` call, state on the device (`device_state=True`, the default) against
numpy state uploaded and read back every call (`device_state=False`, the old behaviour).

    python -m benchmarks device            # W1: MLP 784-512-256-10, ReLU, batch 128, SGD+momentum
    python -m benchmarks device --quick    # tiny sizes, two rounds

Both steps are timed interleaved (one call of each per round, the order alternating) on the
same batches; the table gives the median per call and the bytes moved per call (from
graphc.backends.opencl.TRANSFERS, steady state: after the first call). Before timing, both
are checked to produce the same losses.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import graphc as gc
import graphc.nn.functional as F
from graphc import nn


def _step(sizes, device_state: bool):
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers += [nn.Linear(a, b, seed=i), nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    return gc.train.TrainStep(model, F.cross_entropy, gc.optim.SGD(lr=0.05, momentum=0.9),
                              backend="opencl", device_state=device_state)


def _moved(opencl, fn):
    before = dict(opencl.TRANSFERS)
    t0 = time.perf_counter()
    r = fn()
    dt = time.perf_counter() - t0
    return r, dt, (opencl.TRANSFERS["h2d_bytes"] - before["h2d_bytes"],
                   opencl.TRANSFERS["d2h_bytes"] - before["d2h_bytes"])


def main(argv=None) -> None:
    from graphc.backends import opencl
    ap = argparse.ArgumentParser(prog="python -m benchmarks device")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args(argv)
    sizes, batch = ([12, 8, 6, 3], 4) if args.quick else ([784, 512, 256, 10], 128)
    rounds = args.rounds or (2 if args.quick else 30)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((batch, sizes[0])).astype(np.float32) for _ in range(4)]
    ys = [rng.integers(0, sizes[-1], batch) for _ in range(4)]
    steps = {"state on the device": _step(sizes, True), "state in numpy": _step(sizes, False)}
    for i in range(2):   # compile, then check that both agree
        losses = [s(xs[i], ys[i]).loss for s in steps.values()]
        if not np.isclose(losses[0], losses[1], rtol=1e-4):
            raise AssertionError(f"the two steps disagree: losses {losses}")
    times = {k: [] for k in steps}
    moved = {}
    names = list(steps)
    for r in range(rounds):
        for k in (names if r % 2 == 0 else names[::-1]):
            _, dt, m = _moved(opencl, lambda: steps[k](xs[r % 4], ys[r % 4]))
            times[k].append(dt)
            moved[k] = m
    dev = opencl.OpenCLBackend().available()[1]
    print(f"TrainStep MLP {'-'.join(map(str, sizes))}, batch {batch}, {rounds} rounds; {dev}")
    print(f"{'':22s} {'median ms':>10s} {'h2d B/call':>12s} {'d2h B/call':>12s}")
    base = statistics.median(times["state in numpy"])
    for k in names:
        med = statistics.median(times[k])
        print(f"{k:22s} {med * 1e3:10.2f} {moved[k][0]:12d} {moved[k][1]:12d}"
              f"   x{base / med:.2f}")


if __name__ == "__main__":
    main()
