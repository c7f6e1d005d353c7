"""A small CNN on 1x8x8 images (3 classes): conv 3x3 (4 channels) -> relu -> 2x2 max pool ->
linear, with cross-entropy on integer labels. Written twice: with graphc.nn.functional on a
dict of parameters (`loss`, `logits`), and as an nn.Module called through
nn.functional_call (`model_loss`).

    python examples/cnn.py                       # a few SGD steps, the loss falling
    graphc compare examples/cnn.py               # every backend vs the reference interpreter
    graphc gradcheck examples/cnn.py             # gradients vs finite differences
    graphc viz examples/cnn.py:loss --grad --stage fused -o out/cnn.svg
"""
import argparse

import numpy as np

import graphc as gc
import graphc.nn as nn
import graphc.nn.functional as F
from graphc import backends

N, C_OUT, H, CLASSES = 4, 4, 8, 3
FLAT = C_OUT * ((H - 2) // 2) ** 2   # 4 channels of 3x3 after conv (6x6) and pool


def init_params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "conv_w": (rng.standard_normal((C_OUT, 1, 3, 3)) / 3).astype(np.float32),
        "conv_b": (rng.standard_normal(C_OUT) * 0.1).astype(np.float32),
        "fc_w": (rng.standard_normal((CLASSES, FLAT)) / np.sqrt(FLAT)).astype(np.float32),
        "fc_b": np.zeros(CLASSES, np.float32),
    }


def make_data(n=N, seed=1):
    """Images whose class is where a bright bar is (top, middle, bottom rows), plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % CLASSES
    x = rng.standard_normal((n, 1, H, H)) * 0.3
    for i, c in enumerate(y):
        x[i, 0, 1 + 3 * c: 3 + 3 * c, :] += 1.5
    return x.astype(np.float32), y.astype(np.int64)


def logits(params, x):
    h = F.relu(F.conv2d(x, params["conv_w"], params["conv_b"]))
    h = F.max_pool2d(h, 2)
    return F.linear(F.flatten(h, 1), params["fc_w"], params["fc_b"])


def loss(params, x, y):
    return F.cross_entropy(logits(params, x), y)


class CNN(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        self.conv = nn.Conv2d(1, C_OUT, 3, seed=seed)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(FLAT, CLASSES, seed=seed + 1)

    def forward(self, x):
        h = self.pool(F.relu(self.conv(x)))
        return self.fc(F.flatten(h, 1))


MODEL = CNN()


def model_loss(params, x, y):
    return F.cross_entropy(nn.functional_call(MODEL, params, x), y)


_X, _Y = make_data()
# The model file convention of the `graphc` CLI: example inputs for each traceable function.
EXAMPLES = {
    "loss": (init_params(), _X, _Y),
    "logits": (init_params(), _X),
    "model_loss": (dict(MODEL.named_parameters()), _X, _Y),
}
ENTRY = "loss"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=backends.names())
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    step = gc.compile(gc.value_and_grad(loss), backend=args.backend)
    params, (x, y) = init_params(), make_data(32)
    for i in range(args.steps + 1):
        value, grads = step(params, x, y)
        if i % 10 == 0:
            print(f"step {i:3d}  loss {float(value):.4f}")
        params = {k: params[k] - 0.5 * grads[k] for k in params}


if __name__ == "__main__":
    main()
