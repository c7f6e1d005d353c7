"""A LeNet-style CNN on the 8x8 handwritten digits: (conv 3x3 -> ReLU -> max-pool 2x2) x 2 ->
fully connected -> ReLU -> fully connected (10 classes).

Lecture items (see /work/shared/lectures.md): §4.10 (the CNN: convolution layers, pooling
layers, fully connected layers, softmax, with ReLU nonlinearities; sparse interactions and
parameter sharing), §4.11 (LeCun et al.'s networks; the LeNet-5 layer table is not in the
lectures, so this is LeNet's pattern scaled to 8x8 inputs), §1.14 / B.3 (convolution as
cross-correlation, 'same' padding 1 for a 3x3 kernel, §9.12), B.4 (NCHW images), §9.11 (2x2
max pooling with stride 2 halves each side: 8 -> 4 -> 2), §3.6 (cross-entropy), §5.3
(minibatches of 16), §5.9 (Adam), §5.19 (cosine LR decay), §7.22 (early stopping on a
validation split, best snapshot), §9.28 (digit recognition). Target: >= 95% test accuracy.

Shapes: (N,1,8,8) -conv 8-> (N,8,8,8) -pool-> (N,8,4,4) -conv 16-> (N,16,4,4) -pool-> (N,16,2,2)
-flatten-> (N,64) -> 64 -> 10. graphc lowers each convolution to im2col (strided windows of the
padded input, concatenated) and one matmul; the backward pass of those windows is what the
backward picture shows.

    python examples/cnn_digits.py [--backend numpy] [--quick] [--epochs N] [--out out/]

Pictures: out/cnn_digits_step.{traced,backward,fused}.svg (the training step's stages; the
backward one, which graphviz-pure takes several seconds to lay out, only in full mode) and
out/cnn_digits_forward.optimized.svg (the eval-mode forward pass).
"""
from __future__ import annotations

import sys
import time

from graphc import nn

import _common as C

LR, BATCH, PATIENCE = 1e-2, 16, 6


def make_model(seed: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, seed=seed), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, seed=seed + 1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 2 * 2, 64, seed=seed + 2), nn.ReLU(),
        nn.Linear(64, 10, seed=seed + 3))


def main(argv=None) -> dict:
    args = C.parse_args(__doc__, argv, epochs=20, quick_epochs=6)
    C.banner("LeNet-style CNN on 8x8 digits", args)
    t0 = time.perf_counter()
    data, val = C.holdout(C.digits(images=True, seed=args.seed), seed=args.seed)
    print(f"   data {data}, validation {val[0].shape}")
    model = make_model(args.seed)
    n_params = sum(p.size for p in model.param_dict().values())
    print(f"   model {model!r}".replace("\n", "\n   ") + f"\n   {n_params} parameters")
    step, hist, timing, test_acc = C.train_classifier(model, args, data, val, LR, BATCH,
                                                      PATIENCE)
    # the backward stage (~600 nodes) takes graphviz-pure several seconds: full mode only
    stages = ("traced", "fused") if args.quick else ("traced", "backward", "fused")
    pictures = C.draw(step.compiled, args.out, "cnn_digits_step", stages=stages)
    pictures += C.draw(step.compiled_eval, args.out, "cnn_digits_forward", stages=("optimized",))
    C.show_code(step.compiled, args)
    return C.finish({"test_accuracy": test_acc, "val_accuracy": hist.val_acc[hist.best_epoch],
                     "train_accuracy": hist.train_acc[-1], "parameters": n_params, **timing,
                     "pictures": pictures}, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
