"""A small MLP classifier (4 inputs -> 8 tanh -> 3 classes) trained with SGD.

The loss is softmax cross-entropy written with gc.max / gc.exp / gc.log / gc.sum (stable:
the row maximum is subtracted before exp). `train_step` takes the gradient with
gc.value_and_grad and applies one SGD update, so its compiled graph holds the forward
pass, the backward pass and the update.

    python examples/mlp.py                       # trains 300 steps, prints the loss falling
    graphc viz examples/mlp.py:train_step --stage all -o out/train_step.svg
    graphc show examples/mlp.py:loss --grad --stage backward
    graphc code examples/mlp.py:train_step
"""
import argparse
import time

import numpy as np

import graphc as gc
from graphc import backends

N_IN, N_HIDDEN, N_CLASSES = 4, 8, 3
LR = 0.5


def init_params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "W1": (rng.standard_normal((N_IN, N_HIDDEN)) / np.sqrt(N_IN)).astype(np.float32),
        "b1": np.zeros(N_HIDDEN, np.float32),
        "W2": (rng.standard_normal((N_HIDDEN, N_CLASSES)) / np.sqrt(N_HIDDEN)).astype(np.float32),
        "b2": np.zeros(N_CLASSES, np.float32),
    }


def make_data(n=96, seed=1):
    """Three Gaussian blobs in 4-D; labels one-hot, float32."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((N_CLASSES, N_IN)) * 2.0
    labels = np.arange(n) % N_CLASSES
    x = (centres[labels] + rng.standard_normal((n, N_IN))).astype(np.float32)
    onehot = np.eye(N_CLASSES, dtype=np.float32)[labels]
    return x, onehot


def logits(params, x):
    h = gc.tanh(x @ params["W1"] + params["b1"])
    return h @ params["W2"] + params["b2"]


def softmax_cross_entropy(z, onehot):
    z = z - gc.max(z, axis=1, keepdims=True)
    log_probs = z - gc.log(gc.sum(gc.exp(z), axis=1, keepdims=True))
    return -gc.sum(onehot * log_probs) / z.shape[0]


def loss(params, x, onehot):
    return softmax_cross_entropy(logits(params, x), onehot)


def train_step(params, x, onehot):
    """One SGD step: returns (loss before the step, updated params)."""
    value, grads = gc.value_and_grad(loss)(params, x, onehot)
    new_params = {k: params[k] - LR * grads[k] for k in params}
    return value, new_params


_X, _Y = make_data()
# The model file convention of the `graphc` CLI: example inputs for each traceable function.
EXAMPLES = {
    "train_step": (init_params(), _X, _Y),
    "loss": (init_params(), _X, _Y),
    "logits": (init_params(), _X),
}
ENTRY = "train_step"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=backends.names())
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)

    step = gc.compile(train_step, backend=args.backend)
    predict = gc.compile(logits, backend=args.backend)
    params, (x, y) = init_params(), make_data()
    t0 = time.perf_counter()
    for i in range(args.steps + 1):
        value, new_params = step(params, x, y)
        if i % 50 == 0 or i == args.steps:
            acc = np.mean(predict(params, x).argmax(axis=1) == y.argmax(axis=1))
            print(f"step {i:4d}  loss {float(value):.4f}  accuracy {acc:.2f}")
        params = new_params
    dt = time.perf_counter() - t0
    e = step.lower(params, x, y)
    print(f"{args.steps} steps in {dt:.2f} s on the {args.backend} backend; "
          f"nodes per stage: " + ", ".join(f"{s} {len(g.nodes)}" for s, g in e.stages.items()))


if __name__ == "__main__":
    main()
