"""Shared helpers for the lecture examples (examples/*.py): command line, data sets, pictures,
result printing. Not an example itself.

Every example is run as

    python examples/NAME.py [--backend numpy] [--quick] [--epochs N] [--out out/] [--code]

and exposes `main(argv) -> dict` (the metrics it printed) so tests call it in-process.

- `--backend`: one of `graphc.backends.names()`; every graph of the example is compiled for it.
- `--quick`: fewer epochs (what the tests run); `--epochs N` overrides both.
- `--out`: the folder for the pictures of the graph stages (created if missing).
- `--seed`: seed of the data split, the initial weights, the shuffling and the dropout keys
  (default 0; the tests rely on the default being deterministic).
- `--code`: also print the backend's generated code of the training step.
- `--no-progress`: no tqdm bar (the examples that train with `graphc.train.fit` show one).

Data sets come from scikit-learn (bundled with it, so nothing is downloaded), always with fixed
seeds and a stratified train/test split, so every run of an example sees the same numbers.
"""
from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import graphc as gc
from graphc import backends

SEED = 0


# ---- command line ----------------------------------------------------------------------------
def parse_args(doc: str, argv=None, *, epochs: int | None = None, quick_epochs: int | None = None,
               setup=None) -> argparse.Namespace:
    """The common options, plus what `setup(parser)` adds. `args.epochs` is resolved: the
    explicit --epochs, else quick_epochs with --quick, else epochs."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=backends.names(),
                        help="graphc backend that compiles every graph (default numpy)")
    parser.add_argument("--out", default="out", help="folder for the pictures (default out/)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer epochs (what the tests run)")
    if epochs is not None:
        parser.add_argument("--epochs", type=int, default=None,
                            help=f"training epochs (default {epochs}, {quick_epochs} with --quick)")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of data split, init, shuffle")
    parser.add_argument("--code", action="store_true",
                        help="print the generated code of the training step")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no tqdm progress bar")
    if setup is not None:
        setup(parser)
    args = parser.parse_args(argv)
    if epochs is not None and args.epochs is None:
        args.epochs = quick_epochs if args.quick else epochs
    args.out = Path(args.out)
    return args


def banner(title: str, args) -> None:
    mode = "quick" if args.quick else "full"
    print(f"== {title}  [backend {args.backend}, {mode} mode]")


# ---- data ------------------------------------------------------------------------------------
@dataclass
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    names: tuple = ()

    def __repr__(self):
        return (f"Split(train {self.x_train.shape} {self.x_train.dtype}, "
                f"test {self.x_test.shape}, classes {len(np.unique(self.y_train))})")


def _split(x, y, test_size, seed, names=()) -> Split:
    from sklearn.model_selection import train_test_split
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_size, random_state=seed,
                                          stratify=y)
    return Split(xtr, ytr, xte, yte, tuple(names))


def holdout(split: Split, fraction: float = 0.15, seed: int = SEED) -> tuple[Split, tuple]:
    """Split a validation set off the training set (stratified): (smaller split, (x_val, y_val)).
    Early stopping and best-checkpoint selection look at the validation set only, so the test
    accuracy stays an unbiased estimate."""
    inner = _split(split.x_train, split.y_train, fraction, seed, split.names)
    return (Split(inner.x_train, inner.y_train, split.x_test, split.y_test, split.names),
            (inner.x_test, inner.y_test))


def standardize(split: Split) -> Split:
    """Zero mean, unit variance per feature, with the training set's statistics only."""
    mu, sd = split.x_train.mean(0), split.x_train.std(0)
    sd = np.where(sd > 0, sd, 1).astype(split.x_train.dtype)
    return Split((split.x_train - mu) / sd, split.y_train, (split.x_test - mu) / sd,
                 split.y_test, split.names)


def digits(images: bool = False, classes=None, test_size: float = 0.25, seed: int = SEED) -> Split:
    """sklearn's 8x8 handwritten digits (1797 images, 10 classes; the lectures' MNIST in
    miniature): pixels scaled to [0, 1] float32, labels int64. `images=True` gives NCHW
    (N, 1, 8, 8) for convolutions (B.4), else (N, 64). `classes=(0, 1)` keeps those digits."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    if classes is not None:
        keep = np.isin(y, classes)
        x, y = x[keep], np.searchsorted(np.asarray(sorted(classes)), y[keep]).astype(np.int64)
    if images:
        x = x.reshape(-1, 1, 8, 8)
    return _split(x, y, test_size, seed, names=[str(c) for c in (classes or range(10))])


def iris(classes=None, test_size: float = 0.3, seed: int = SEED) -> Split:
    """Fisher's iris (150 flowers, 4 features, 3 species), standardised float32, labels
    int64; `classes=(1, 2)` keeps two species (relabelled 0, 1)."""
    from sklearn.datasets import load_iris
    d = load_iris()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    names = list(d.target_names)
    if classes is not None:
        keep = np.isin(y, classes)
        x, y = x[keep], np.searchsorted(np.asarray(sorted(classes)), y[keep]).astype(np.int64)
        names = [names[c] for c in sorted(classes)]
    return standardize(_split(x, y, test_size, seed, names))


def moons(n: int = 400, noise: float = 0.2, test_size: float = 0.25, seed: int = SEED) -> Split:
    """Two interleaving half-moons (not linearly separable), float32, labels int64."""
    from sklearn.datasets import make_moons
    x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    return standardize(_split(x.astype(np.float32), y.astype(np.int64), test_size, seed))


def circles(n: int = 400, noise: float = 0.1, factor: float = 0.5, test_size: float = 0.25,
            seed: int = SEED) -> Split:
    """Two concentric circles (not linearly separable), float32, labels int64."""
    from sklearn.datasets import make_circles
    x, y = make_circles(n_samples=n, noise=noise, factor=factor, random_state=seed)
    return standardize(_split(x.astype(np.float32), y.astype(np.int64), test_size, seed))


def truth_table(n: int) -> np.ndarray:
    """All 2**n Boolean input rows, float32, in binary counting order: (2**n, n)."""
    return np.array([[(i >> (n - 1 - j)) & 1 for j in range(n)] for i in range(2 ** n)],
                    np.float32)


# ---- pictures --------------------------------------------------------------------------------
def draw(compiled, out: Path, name: str, stages=("traced", "backward", "fused"),
         fmt: str = "svg") -> list[Path]:
    """Draw `stages` of a called `gc.compile`d function (or of a TrainStep's `.compiled`) to
    out/NAME.STAGE.FMT and print one line per picture. fmt "dot" writes the DOT text only
    (instant; render with `graphviz-pure -Tsvg` or `dot -Tsvg`), for graphs too big to lay
    out in a few seconds."""
    paths = []
    for stage in stages:
        if stage not in compiled.stages:  # e.g. no "backward" stage without a gradient
            continue
        t0 = time.perf_counter()
        path = gc.draw(compiled, stage=stage, path=Path(out) / f"{name}.{stage}.{fmt}")
        nodes, dt = len(compiled.graph(stage).nodes), time.perf_counter() - t0
        print(f"   picture {stage:<10} {nodes:>5} nodes -> {path}  ({dt:.1f} s)")
        paths.append(path)
    return paths


def show_code(compiled, args) -> None:
    if args.code:
        print(compiled.source)


def compile_times(compiled) -> str:
    t = compiled.times
    return "compile: " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in t.items())


# ---- results ---------------------------------------------------------------------------------
class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def percent(x: float) -> str:
    return f"{100 * x:.2f}%"


def train_report(step, hist, n_train: int, batch_size: int) -> dict:
    """Print and return the timing of a `fit` run: epochs, seconds, ms per step, compile."""
    epochs = len(hist.train_loss)
    steps = epochs * (n_train // batch_size)
    ms = 1e3 * hist.seconds / max(steps, 1)
    print(f"   trained {epochs} epochs ({steps} steps of {batch_size}) in {hist.seconds:.1f} s, "
          f"{ms:.1f} ms per step (incl. evaluation); {compile_times(step.compiled)}")
    return {"epochs": epochs, "train_seconds": hist.seconds, "ms_per_step": ms}


def sgd_epochs(step, params: dict, x, y, epochs: int, lr: float, batch: int, seed: int) -> dict:
    """Plain minibatch SGD: `step(params, xb, yb) -> (loss, grads)`, a new shuffle each epoch
    (the last partial batch dropped); returns the trained parameters."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x) - batch + 1, batch):
            b = order[i:i + batch]
            _, grads = step(params, x[b], y[b])
            params = {k: params[k] - lr * np.asarray(grads[k]) for k in params}
    return params


def train_classifier(model, args, data, val, lr: float, batch: int, patience: int):
    """The digits classifiers' recipe: Adam with a cosine schedule, one compiled training step
    (graphc.train.TrainStep), fit with a validation split, early stopping and the best
    checkpoint, then the test accuracy measured once. Returns (step, hist, timing, test_acc)."""
    step = gc.train.TrainStep(model, gc.nn.functional.cross_entropy, gc.optim.Adam(lr=lr),
                              backend=args.backend, seed=args.seed)
    sched = gc.optim.CosineAnnealingLR(lr, T_max=args.epochs)
    hist = gc.train.fit(step, data.x_train, data.y_train, epochs=args.epochs, batch_size=batch,
                        val=val, scheduler=sched, patience=patience, seed=args.seed,
                        progress=args.progress)
    timing = train_report(step, hist, len(data.x_train), batch)
    test_acc = gc.train.accuracy(step.evaluate(data.x_test), data.y_test)
    print(f"   best epoch {hist.best_epoch + 1}: validation accuracy "
          f"{percent(hist.val_acc[hist.best_epoch])}; early stop: {hist.stopped_early}")
    print(f"   test accuracy {percent(test_acc)}  ({len(data.y_test)} held-out digits)")
    return step, hist, timing, test_acc


def finish(metrics: dict, t0: float) -> dict:
    metrics["seconds"] = time.perf_counter() - t0
    print(f"   total {metrics['seconds']:.1f} s")
    return metrics


# ---- helpers shared by the optimisation and sequence examples ---------------------------------
def parse_and_announce(argv, doc, title, epochs, quick_epochs):
    """_common's options (--backend, --quick, --epochs, --out, --seed, --code); creates --out
    and prints the banner. args.epochs is resolved (quick_epochs with --quick)."""
    args = parse_args(doc, argv, epochs=epochs, quick_epochs=quick_epochs)
    args.out.mkdir(parents=True, exist_ok=True)
    banner(title, args)
    return args


@contextlib.contextmanager
def blas_threads(n=1):
    """Run with at most n BLAS threads (threadpoolctl, installed with scikit-learn). These
    examples multiply small matrices, where OpenBLAS's threads cost more than they give: on a
    busy 2-core machine a (32, 64) @ (64, 256) product took 2.5 ms with 2 threads and
    0.035 ms with 1, making a whole training step 10x slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def load_digits_split(seed=0):
    """_common's digits (pixels in [0, 1], stratified 75/25 split), centred and scaled with the
    training statistics: (x − mean)/(std + 1/16), float32 (N, 64), labels int64. The 1/16 (one
    grey level) keeps pixels that are almost always blank from being blown up, as plain
    standardisation does (it cost the 400-image runs of batchnorm_dropout 4% test accuracy)."""
    d = digits(seed=seed)
    mu, sd = d.x_train.mean(0), d.x_train.std(0) + np.float32(1 / 16)
    return (d.x_train - mu) / sd, d.y_train, (d.x_test - mu) / sd, d.y_test


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, axes, path, dpi: int = 90) -> None:
    """The examples' figure ending: a light grid on every axis, tight layout, PNG, closed."""
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    import matplotlib.pyplot as plt
    plt.close(fig)
