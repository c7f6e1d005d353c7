"""The models behind `graphc demo`: the lecture example and a small MLP classifier.

They live inside the package (not in examples/) so that `graphc demo` works from an
installed graphc. `run_demo` traces both with `gc.value_and_grad`, compiles them, runs
them, prints the results and draws every stage of the pipeline to SVG files.

>>> import graphc.demo as d
>>> float(d.lecture_f(2.0, 1.0))
6.0
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Callable

import numpy as np

import graphc as gc
from graphc.ir import register_user_file

register_user_file(__file__)  # node locations point here (demo.py:LINE), not at the caller

# ---- (1) the lecture example -----------------------------------------------------------------


def lecture_f(a, b):
    """f(a, b) = (a + b) * (b + 1): df/da = b + 1, df/db = (b + 1) + (a + b)."""
    return (a + b) * (b + 1)


def lecture_args():
    return (np.float32(2.0), np.float32(1.0))


# ---- (2) a small MLP classifier with softmax cross-entropy -----------------------------------
N_IN, N_HIDDEN, N_CLASSES, BATCH = 4, 8, 3, 16


def mlp_logits(W1, b1, W2, b2, x):
    """One tanh hidden layer: x[B,4] -> h[B,8] -> logits[B,3]."""
    h = gc.tanh(gc.matmul(x, W1) + b1)
    return gc.matmul(h, W2) + b2


def softmax_cross_entropy(logits, onehot):
    """Mean over the batch of -sum(onehot * log_softmax(logits)), computed stably:
    subtracting the row maximum keeps exp() from overflowing and does not change the result."""
    z = logits - gc.max(logits, axis=1, keepdims=True)
    log_probs = z - gc.log(gc.sum(gc.exp(z), axis=1, keepdims=True))
    return -gc.sum(onehot * log_probs) / logits.shape[0]


def mlp_loss(W1, b1, W2, b2, x, onehot):
    """The training loss of the MLP on one batch (a float32 scalar)."""
    return softmax_cross_entropy(mlp_logits(W1, b1, W2, b2, x), onehot)


def mlp_args(seed: int = 0):
    """(W1, b1, W2, b2, x, onehot): float32 parameters and a random batch, fixed seed."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    W1 = (rng.standard_normal((N_IN, N_HIDDEN)) / np.sqrt(N_IN)).astype(f32)
    b1 = np.zeros(N_HIDDEN, f32)
    W2 = (rng.standard_normal((N_HIDDEN, N_CLASSES)) / np.sqrt(N_HIDDEN)).astype(f32)
    b2 = np.zeros(N_CLASSES, f32)
    x = rng.standard_normal((BATCH, N_IN)).astype(f32)
    labels = rng.integers(0, N_CLASSES, BATCH)
    onehot = np.eye(N_CLASSES, dtype=f32)[labels]
    return W1, b1, W2, b2, x, onehot


# ---- what each stage shows -------------------------------------------------------------------
STAGE_NOTES = {
    "traced": "the forward computation exactly as your Python ran it, one node per NumPy "
              "call; `grad` markers (yellow) stand for the gradients asked for",
    "backward": "the autodiff pass replaced each grad marker by the derived backward graph "
                "(dashed red nodes: the chain rule applied node by node, in reverse)",
    "simplified": "constants folded, identities such as x*1 rewritten, common subexpressions "
                  "shared, dead code dropped",
    "fused": "ops grouped into kernels (the clusters), each labelled with its kind and the "
             "fusion rule that formed it: elementwise chains, reductions with their prologue "
             "and epilogue, matmuls with their bias/activation/update epilogue",
    "scheduled": "the kernels in execution order, each result placed in a memory arena at an "
                 "offset chosen from liveness (or in place over an input that dies)",
    "optimized": "the graph the backend turns into code (the last stage)",
}


def _fmt(x) -> str:
    a = np.asarray(x)
    if a.ndim == 0:
        return f"{float(a):.6g}"
    return f"{a.dtype}{list(a.shape)}  |g|={float(np.linalg.norm(a)):.4g}"


def _draw_stages(fn: gc.Compiled, out: Path, stem: str, say: Callable[[str], None]) -> list[Path]:
    paths = []
    for stage, graph in fn.stages.items():
        path = gc.draw(fn, stage=stage, path=out / f"{stem}.{stage}.svg")
        say(f"  {stage:<10} {len(graph.nodes):>3} nodes  -> {path}")
        paths.append(path)
    return paths


def run_demo(out_dir="out", backend: str = "numpy", say: Callable[[str], None] = print) -> list[Path]:
    """Trace, differentiate, compile, run and draw both demo models; returns the SVG paths."""
    out = Path(out_dir)
    written: list[Path] = []

    say("graphc demo: trace -> backward -> optimized -> " + backend + " code, drawn at each stage")
    say("")
    say("(1) lecture example  f(a, b) = (a + b) * (b + 1)  at a=2, b=1")
    f = gc.compile(gc.value_and_grad(lecture_f, argnums=(0, 1)), backend=backend)
    value, (da, db) = f(*lecture_args())
    say(f"  f = {_fmt(value)}   df/da = {_fmt(da)} (= b + 1)   "
        f"df/db = {_fmt(db)} (= (b + 1) + (a + b))")
    written += _draw_stages(f, out, "lecture", say)

    say("")
    say(f"(2) MLP {N_IN} -> {N_HIDDEN} tanh -> {N_CLASSES} classes, batch {BATCH}, float32, "
        "softmax cross-entropy loss")
    g = gc.compile(gc.value_and_grad(mlp_loss, argnums=(0, 1, 2, 3)), backend=backend)
    loss, grads = g(*mlp_args())
    say(f"  loss = {_fmt(loss)}   (log {N_CLASSES} = {np.log(N_CLASSES):.4f} for a guessing model)")
    for name, gr in zip(("W1", "b1", "W2", "b2"), grads):
        say(f"  dloss/d{name:<3}= {_fmt(gr)}")
    written += _draw_stages(g, out, "mlp", say)

    say("")
    say("What each stage shows:")
    for stage, note in STAGE_NOTES.items():
        lines = textwrap.wrap(note, 76)
        say(f"  {stage:<10} {lines[0]}")
        for line in lines[1:]:
            say(" " * 13 + line)
    say("In the pictures: ellipses are inputs (green), parameters (yellow) and outputs (purple);")
    say("edge labels are the shape and dtype flowing along; each node names its source line.")
    say("")
    say(f"Generated {backend} code of the lecture example (graphc code FILE.py shows any):")
    for line in f.source.rstrip().splitlines():
        say("  " + line)
    return written
