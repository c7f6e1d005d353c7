"""An MLP on the 8x8 handwritten digits (sklearn's small MNIST): 64 -> 128 ReLU -> 10.

Lecture items (see /work/shared/lectures.md): §4.6 (the MLP / feed-forward network,
f = φ_L ∘ … ∘ φ_1 with learned features σ(Wx + b) and a softmax output), §2.5 (ReLU), §3.6
(categorical cross-entropy on logits), §5.3 (minibatch SGD, batch size 32) with §5.9 (Adam) and
§5.19 (cosine LR decay, stepped per epoch), §7.16 / B.5 (inverted dropout, p = 0.2), §5.26 / §7.22
(early stopping on a validation split, keeping the best snapshot), §9.28 (digit recognition:
the lectures name MNIST; sklearn's 1797 8x8 digits stand in for it, nothing is downloaded).
Target: >= 95% test accuracy.

`graphc.train.TrainStep` compiles forward, loss, backward and the Adam update as ONE graph
(parameters, optimizer state and the dropout key are graph inputs); `graphc.train.fit` runs
the epochs with a tqdm bar, evaluates the validation split after each and keeps the best.
The test split (25%, stratified) is looked at once, at the end.

    python examples/mlp_digits.py [--backend numpy] [--quick] [--epochs N] [--out out/]

Pictures: out/mlp_digits_step.{traced,backward,fused}.svg (the training step's stages).
"""
from __future__ import annotations

import sys
import time

from graphc import nn

import _common as C

HIDDEN, DROPOUT, LR, BATCH, PATIENCE = 128, 0.2, 1e-2, 32, 8


def make_model(seed: int) -> nn.Module:
    return nn.Sequential(nn.Linear(64, HIDDEN, seed=seed), nn.ReLU(), nn.Dropout(DROPOUT),
                         nn.Linear(HIDDEN, 10, seed=seed + 1))


def main(argv=None) -> dict:
    args = C.parse_args(__doc__, argv, epochs=30, quick_epochs=8)
    C.banner("MLP on 8x8 digits", args)
    t0 = time.perf_counter()
    data, val = C.holdout(C.digits(seed=args.seed), seed=args.seed)
    print(f"   data {data}, validation {val[0].shape}")
    model = make_model(args.seed)
    print(f"   model {model!r}".replace("\n", "\n   "))
    step, hist, timing, test_acc = C.train_classifier(model, args, data, val, LR, BATCH,
                                                      PATIENCE)
    pictures = C.draw(step.compiled, args.out, "mlp_digits_step")
    C.show_code(step.compiled, args)
    return C.finish({"test_accuracy": test_acc, "val_accuracy": hist.val_acc[hist.best_epoch],
                     "train_accuracy": hist.train_acc[-1], **timing, "pictures": pictures}, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
