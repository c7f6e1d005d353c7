"""An autoencoder and a restricted Boltzmann machine (CD-1) on the 8x8 digits.

Lecture items (see /work/shared/lectures.md): §4.25 (autoencoders / RBMs, the building blocks
of greedy layer-wise pretraining, Salakhutdinov & Hinton 2006). Both are written with graphc
ops and compiled:

- autoencoder 64 → 16 (tanh) → 64 (sigmoid), mean squared reconstruction error, minibatch SGD
  with momentum on the gradients of `gc.value_and_grad`; the test-set reconstruction error
  falls well below that of predicting the mean image.
- binary RBM, 64 visible × 32 hidden units, trained by one-step contrastive divergence:
  h₀ ~ Bernoulli(σ(v₀W + c)) drawn with `gc.random_uniform`, v₁ = σ(h₀Wᵀ + b),
  ΔW ∝ v₀ᵀσ(v₀W + c) − v₁ᵀσ(v₁W + c). CD-1 is not the gradient of a loss, so the compiled
  function returns the update itself; the reconstruction error of v₁ falls.

    python examples/autoencoder.py [--backend numpy] [--quick] [--out out/]
"""
from __future__ import annotations

import sys
import time

import numpy as np

import graphc as gc
from graphc.nn import functional as F

import _common as C

HIDDEN, RBM_HIDDEN, BATCH = 16, 32, 64
LR, MOMENTUM, RBM_LR = 0.5, 0.9, 0.1


def ae_init(seed):
    rng = np.random.default_rng(seed)
    return {"W1": (rng.standard_normal((64, HIDDEN)) / 8).astype(np.float32),
            "b1": np.zeros(HIDDEN, np.float32),
            "W2": (rng.standard_normal((HIDDEN, 64)) / 4).astype(np.float32),
            "b2": np.zeros(64, np.float32)}


def reconstruct(params, x):
    code = gc.tanh(x @ params["W1"] + params["b1"])
    return F.sigmoid(code @ params["W2"] + params["b2"])


def ae_loss(params, x):
    return gc.mean((reconstruct(params, x) - x) ** 2)


def cd1(params, v0, key):
    """One CD-1 step: (updates for W, b, c; reconstruction error of v₁)."""
    w, b, c = params["W"], params["b"], params["c"]
    ph0 = F.sigmoid(v0 @ w + c)
    h0 = gc.where(gc.random_uniform(key, ph0.shape) < ph0, 1.0, 0.0)
    v1 = F.sigmoid(h0 @ gc.transpose(w) + b)
    ph1 = F.sigmoid(v1 @ w + c)
    n = v0.shape[0]
    dw = (gc.transpose(v0) @ ph0 - gc.transpose(v1) @ ph1) / n
    return ({"W": dw, "b": gc.mean(v0 - v1, axis=0), "c": gc.mean(ph0 - ph1, axis=0)},
            gc.mean((v0 - v1) ** 2))


def train_autoencoder(x, x_test, epochs, backend, seed):
    params = ae_init(seed)
    vel = {k: np.zeros_like(v) for k, v in params.items()}
    step = gc.compile(gc.value_and_grad(ae_loss), backend=backend)
    evaluate = gc.compile(ae_loss, backend=backend)
    rng = np.random.default_rng(seed)
    errors = [float(evaluate(params, x_test))]
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x) - BATCH + 1, BATCH):
            _, grads = step(params, x[order[i:i + BATCH]])
            for k in params:
                vel[k] = MOMENTUM * vel[k] - LR * np.asarray(grads[k])
                params[k] = params[k] + vel[k]
        errors.append(float(evaluate(params, x_test)))
    return params, errors, step


def train_rbm(v, epochs, backend, seed):
    rng = np.random.default_rng(seed)
    params = {"W": (0.01 * rng.standard_normal((64, RBM_HIDDEN))).astype(np.float32),
              "b": np.zeros(64, np.float32), "c": np.zeros(RBM_HIDDEN, np.float32)}
    step = gc.compile(cd1, backend=backend)
    errors, key = [], seed * 1_000_003
    for _ in range(epochs):
        order, total = rng.permutation(len(v)), []
        for i in range(0, len(v) - BATCH + 1, BATCH):
            upd, err = step(params, v[order[i:i + BATCH]], np.int64(key))
            key += 1
            params = {k: params[k] + RBM_LR * np.asarray(upd[k]) for k in params}
            total.append(float(err))
        errors.append(float(np.mean(total)))
    return params, errors


def main(argv=None) -> dict:
    args = C.parse_args(__doc__, argv, epochs=40, quick_epochs=10)
    args.out.mkdir(parents=True, exist_ok=True)
    C.banner("Autoencoder and RBM (CD-1) on the 8x8 digits", args)
    t0 = time.perf_counter()
    d = C.digits(seed=args.seed)
    baseline = float(np.mean((d.x_test - d.x_train.mean(0)) ** 2))
    params, errors, step = train_autoencoder(d.x_train, d.x_test, args.epochs, args.backend,
                                             args.seed)
    print(f"   autoencoder 64-{HIDDEN}-64: test reconstruction MSE {errors[0]:.4f} -> "
          f"{errors[-1]:.4f} (mean image: {baseline:.4f})")
    binary = (d.x_train > 0.5).astype(np.float32)
    _, rbm_errors = train_rbm(binary, args.epochs, args.backend, args.seed)
    print(f"   RBM 64x{RBM_HIDDEN} (CD-1): reconstruction error per epoch "
          f"{rbm_errors[0]:.4f} -> {rbm_errors[-1]:.4f}")
    metrics = {"ae_initial_mse": errors[0], "ae_final_mse": errors[-1], "mean_image_mse": baseline,
               "rbm_first_error": rbm_errors[0], "rbm_final_error": rbm_errors[-1]}
    metrics["pictures"] = C.draw(step, args.out, "autoencoder_value_and_grad",
                                 stages=("traced", "fused"), fmt="dot")
    return C.finish(metrics, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
