"""A small residual network on the 8x8 handwritten digits: a conv stem, two ResNet basic blocks
(the second with stride 2 and a 1x1 projection shortcut), global average pooling, a linear layer.

Lecture items (see /work/shared/lectures.md): §4.12 (the residual block: F(x) := H(x) − x, so
the block outputs H(x) = F(x) + x, "jointly activated" after the sum; a projection
y = F(x) + W_s x when the shapes differ, here a strided 1x1 convolution; skip connections
against vanishing gradients), §4.9, §7.1, §7.3 / B.10 (batch normalisation before the nonlinearity,
batch statistics in training, running statistics in evaluation: BatchNorm's running mean and
variance are buffers that the compiled training step carries in and out), §4.10 (convolution,
'same' padding), §8.4 (fan-out accumulation: the block input's gradient is the sum of the
gradients through F and through the shortcut), §3.6, §5.9 (Adam), §5.19 (cosine LR decay),
§7.22 (early stopping on a validation split), §9.28 (digit recognition). Target: >= 95% test
accuracy.

Shapes: (N,1,8,8) -stem conv 3x3, BN, ReLU-> (N,C,8,8) -BasicBlock(C, C)-> (N,C,8,8)
-BasicBlock(C, 2C, stride 2)-> (N,2C,4,4) -global average pool-> (N,2C) -> 10, with C = 8.
`nn.BasicBlock` is torchvision's: conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU.

Pictures: the whole training step has ~1000 nodes per stage, which the bundled `graphviz-pure`
lays out in minutes, so its stages are written as DOT text (render one with
`.venv/bin/graphviz-pure -Tsvg out/resnet_digits_step.backward.dot -o x.svg`); SVGs are drawn
for the eval-mode forward pass (out/resnet_digits_forward.{traced,optimized}.svg, where the
skip connections are easy to follow) and, in full mode, for one BasicBlock with projection
differentiated on its own (out/resnet_block_grad.{traced,backward}.svg: the backward graph
shows the two gradient paths meeting at the block input).

    python examples/resnet_digits.py [--backend numpy] [--quick] [--epochs N] [--out out/]
"""
from __future__ import annotations

import sys
import time

import numpy as np

import graphc as gc
from graphc import nn

import _common as C

CHANNELS, LR, BATCH, PATIENCE = 8, 1e-2, 32, 6


def make_model(seed: int, c: int = CHANNELS) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1, bias=False, seed=seed), nn.BatchNorm2d(c), nn.ReLU(),
        nn.BasicBlock(c, c, seed=seed + 1),                 # identity shortcut
        nn.BasicBlock(c, 2 * c, stride=2, seed=seed + 2),   # projection shortcut (1x1, stride 2)
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(2 * c, 10, seed=seed + 3))


def block_gradient(args):
    """One BasicBlock with a projection shortcut, differentiated on its own (for the picture)."""
    block = nn.BasicBlock(2, 4, stride=2, seed=args.seed)
    buffers = block.buffer_dict()

    def loss(params, x):
        out, _ = nn.functional_call(block, params, x, buffers=buffers, training=True)
        return gc.sum(out)
    f = gc.compile(gc.value_and_grad(loss), backend=args.backend)
    f(block.param_dict(), np.ones((2, 2, 4, 4), np.float32))
    return f


def main(argv=None) -> dict:
    args = C.parse_args(__doc__, argv, epochs=15, quick_epochs=5)
    C.banner("Residual network (BasicBlock) on 8x8 digits", args)
    t0 = time.perf_counter()
    data, val = C.holdout(C.digits(images=True, seed=args.seed), seed=args.seed)
    print(f"   data {data}, validation {val[0].shape}")
    model = make_model(args.seed)
    n_params = sum(p.size for p in model.param_dict().values())
    n_buffers = sum(b.size for b in model.buffer_dict().values())
    print(f"   model {model!r}".replace("\n", "\n   "))
    print(f"   {n_params} parameters, {n_buffers} buffer values (BatchNorm running statistics)")
    step, hist, timing, test_acc = C.train_classifier(model, args, data, val, LR, BATCH,
                                                      PATIENCE)
    pictures = C.draw(step.compiled, args.out, "resnet_digits_step", fmt="dot")
    pictures += C.draw(step.compiled_eval, args.out, "resnet_digits_forward",
                       stages=("traced", "optimized"))
    if not args.quick:
        pictures += C.draw(block_gradient(args), args.out, "resnet_block_grad",
                           stages=("traced", "backward"))
    C.show_code(step.compiled, args)
    return C.finish({"test_accuracy": test_acc, "val_accuracy": hist.val_acc[hist.best_epoch],
                     "train_accuracy": hist.train_acc[-1], "parameters": n_params, **timing,
                     "pictures": pictures}, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
