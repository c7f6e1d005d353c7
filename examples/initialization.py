"""Initialisation in a deep network: vanishing and exploding activations and gradients, and the
symmetry problem of constant initialisation (lectures.md section 6: 6.1 constant/zero init
fails by symmetry, 6.2 magnitude matters, 6.4 small normal 0.01·randn, 6.8 Xavier/Glorot,
6.10 Kaiming/He, 6.12 the variance-propagation analysis V[z_ℓ] ≈ (nτ²)^ℓ V[x]; section 8:
8.18 vanishing and exploding gradients; Appendix B.13 the initialiser names).

1. A 10-layer MLP (64 → 256 × 10 → 10), tanh or ReLU, whose hidden weights come from
   zeros, a small normal N(0, 0.01²), a large normal N(0, 1), Xavier normal
   (σ² = 2/(n_in + n_out)) or Kaiming normal (σ = gain/√n_in, gain √2 for ReLU and 5/3 for
   tanh), biases 0. One compiled graph computes the loss on a batch of digits, every
   layer's activations and every weight's gradient; the tables show each layer's
   activation mean/std and gradient norm ‖∂L/∂W_ℓ‖.
2. Symmetry: a 64-32-32-10 tanh MLP trained with every weight set to the same constant
   (or to zero) keeps all hidden units identical, so it learns as if it had one unit per
   layer; random (Kaiming) weights break the symmetry.

    python examples/initialization.py [--backend numpy] [--quick] [--epochs N] [--out out/]

writes out/initialization.png (activation std and gradient norm per layer).
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

import graphc as gc
from graphc import nn, optim
from graphc.nn import functional as F
from graphc.nn import init

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import blas_threads, load_digits_split, pyplot  # noqa: E402
from _common import parse_and_announce as parse_args  # noqa: E402

DEPTH, WIDTH = 10, 256
INITS = ("zeros", "small normal", "large normal", "Xavier", "Kaiming")


class DeepMLP(nn.Module):
    """`depth` hidden Linear+activation layers; forward returns (logits, [activations])."""

    def __init__(self, activation, depth=DEPTH, width=WIDTH, n_in=64, n_out=10, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.activation = activation
        self.hidden = nn.ModuleList([nn.Linear(n_in if i == 0 else width, width, rng=rng)
                                     for i in range(depth)])
        self.out = nn.Linear(width, n_out, rng=rng)

    def forward(self, x):
        acts = []
        for layer in self.hidden:
            x = F.tanh(layer(x)) if self.activation == "tanh" else F.relu(layer(x))
            acts.append(x)
        return self.out(x), acts


def initialise(model, scheme, activation, seed=0):
    """Re-initialise the hidden layers' weights in place (biases 0); the output layer keeps
    its default init, so only the hidden layers' scheme differs between runs."""
    rng = np.random.default_rng(seed)
    for layer in model.hidden:
        w = layer.weight
        if scheme == "zeros":
            init.zeros_(w)
        elif scheme == "small normal":
            init.normal_(w, 0.0, 0.01, rng=rng)        # lecture 6.4: 0.01 * randn
        elif scheme == "large normal":
            init.normal_(w, 0.0, 1.0, rng=rng)
        elif scheme == "Xavier":
            init.xavier_normal_(w, rng=rng)
        elif scheme == "Kaiming":
            init.kaiming_normal_(w, nonlinearity=activation, rng=rng)
        else:
            raise ValueError(scheme)
        init.zeros_(layer.bias)
    return model


def layer_statistics(activation, scheme, x, y, backend):
    """Per hidden layer: activation mean, activation std, ‖∂L/∂W‖ (one compiled graph)."""
    model = initialise(DeepMLP(activation), scheme, activation)

    def probe(params, x, y):
        def loss(p):
            logits, acts = nn.functional_call(model, p, x)
            return F.cross_entropy(logits, y), acts
        (value, acts), grads = gc.value_and_grad(loss, has_aux=True)(params)
        means = [gc.mean(a) for a in acts]
        stds = [gc.sqrt(gc.mean((a - m) ** 2)) for a, m in zip(acts, means)]
        gnorms = [gc.sqrt(gc.sum(grads[f"hidden.{i}.weight"] ** 2)) for i in range(len(acts))]
        return value, means, stds, gnorms

    value, means, stds, gnorms = gc.compile(probe, backend=backend)(model.param_dict(), x, y)
    return {"loss": float(value), "mean": np.array(means, np.float64),
            "std": np.array(stds, np.float64), "grad_norm": np.array(gnorms, np.float64)}


def symmetry_demo(scheme, data, backend, epochs, seed=0):
    """Train a 64-32-32-10 tanh MLP (SGD, momentum 0.9) whose weights are all zero, all the
    same constant, or Kaiming: returns the test accuracy and, per epoch, the spread of the
    first hidden layer's weight rows, max_j |W[j] − W[0]| (0 = all units identical)."""
    xtr, ytr, xte, yte = data
    model = nn.Sequential(nn.Linear(64, 32, seed=seed), nn.Tanh(), nn.Linear(32, 32, seed=seed + 1),
                          nn.Tanh(), nn.Linear(32, 10, seed=seed + 2))
    for i in (0, 2, 4):
        if scheme == "Kaiming":
            init.kaiming_normal_(model[i].weight, nonlinearity="tanh", seed=seed + i)
        else:
            init.constant_(model[i].weight, {"zeros": 0.0, "constant 0.1": 0.1}[scheme])
        init.zeros_(model[i].bias)
    step = gc.train.TrainStep(model, F.cross_entropy, optim.SGD(lr=0.1, momentum=0.9),
                              backend=backend)
    spreads = []
    for epoch in range(epochs):  # one epoch at a time, to watch the spread
        h = gc.train.fit(step, xtr, ytr, epochs=1, batch_size=32, val=(xte, yte),
                         restore_best=False, progress=False, seed=epoch)
        w = step.params["0.weight"]
        spreads.append(float(np.abs(w - w[:1]).max()))
    return {"test_acc": h.val_acc[-1], "train_loss": h.train_loss[-1], "row_spread": spreads}


def plot(stats, path):
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    layers = np.arange(1, DEPTH + 1)
    for col, act in enumerate(("tanh", "relu")):
        for scheme in INITS:
            s = stats[act][scheme]
            if scheme == "zeros":  # all exactly 0: nothing to draw on a log axis
                continue
            axes[0, col].semilogy(layers, s["std"], "o-", label=scheme)
            axes[1, col].semilogy(layers, np.maximum(s["grad_norm"], 1e-30), "o-", label=scheme)
        axes[0, col].set(title=f"{act}: activation std per layer", xlabel="layer",
                         ylabel="std of activations")
        axes[1, col].set(title=f"{act}: gradient norm per layer", xlabel="layer",
                         ylabel="‖∂L/∂W‖")
        for ax in axes[:, col]:
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
    fig.suptitle(f"{DEPTH}-layer MLP, width {WIDTH}: zeros init is 0 everywhere (not drawn)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv, __doc__, "Initialisation: vanishing, exploding, symmetry",
                      epochs=5, quick_epochs=3)
    with blas_threads(1):
        return run(args)


def run(args) -> dict:
    t0 = time.perf_counter()
    data = load_digits_split(args.seed)
    batch = 256 if args.quick else 512
    x, y = data[0][:batch], data[1][:batch]
    stats = {}
    for act in ("tanh", "relu"):
        stats[act] = {s: layer_statistics(act, s, x, y, args.backend) for s in INITS}
        print(f"\n{act} network, {DEPTH} layers of {WIDTH}, batch {batch}: activation "
              f"mean / std per layer")
        print(f"  {'layer':>5s}" + "".join(f"{s:>22s}" for s in INITS))
        for i in range(DEPTH):
            print(f"  {i + 1:5d}" + "".join(
                f"{stats[act][s]['mean'][i]:>+11.2e} /{stats[act][s]['std'][i]:9.2e}"
                for s in INITS))
        print("  gradient norm ‖∂L/∂W_ℓ‖ per layer")
        for i in range(DEPTH):
            print(f"  {i + 1:5d}" + "".join(f"{stats[act][s]['grad_norm'][i]:>22.3e}"
                                            for s in INITS))
        print("  loss " + "".join(f"{stats[act][s]['loss']:>22.4f}" for s in INITS))

    epochs = args.epochs
    print(f"\nSymmetry (6.1): 64-32-32-10 tanh MLP, SGD lr 0.1 momentum 0.9, {epochs} epochs;"
          f" spread = max_j |W[j] − W[0]| over the first layer's units, after each epoch")
    symmetry = {}
    for scheme in ("zeros", "constant 0.1", "Kaiming"):
        r = symmetry_demo(scheme, data, args.backend, epochs)
        symmetry[scheme] = r
        spread = " ".join(f"{v:.1e}" for v in r["row_spread"])
        print(f"  {scheme:13s} test acc {r['test_acc']:.3f}   spread per epoch: {spread}")
    print("  zeros: every hidden activation and hidden gradient is exactly 0, only the output"
          " bias learns.\n  constant: the units stay identical up to float rounding (a 32-unit"
          " layer acting as one unit);\n  in exact arithmetic forever, in floats the rounding"
          " differences grow slowly (the symmetric state is unstable).")

    path = os.path.join(args.out, "initialization.png")
    plot(stats, path)
    seconds = time.perf_counter() - t0
    print(f"\nwrote {path} ({seconds:.1f} s)")
    return {"stats": {a: {s: {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                              for k, v in d.items()} for s, d in per.items()}
                      for a, per in stats.items()},
            "symmetry": symmetry, "pictures": [path], "seconds": seconds}


if __name__ == "__main__":
    main(sys.argv[1:])
