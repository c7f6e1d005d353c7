"""Sobel edge detection on a digits image: fixed-weight conv2d, gradient magnitude and the
min-max "normalised feature map".

Lecture items (see /work/shared/lectures.md): §9.10 (Sobel kernels S_x, S_y; valid padding,
stride 1, o = i − k + 1; the printed map is cross-correlation, no kernel flip), §1.21
(post-processing: G = √(G_x² + G_y²) and round((fm − min)/(max − min)·255)). The lecture's own
dummy image is printed inconsistently (9.10 ⚠), so this example uses one 8x8 digit (pixels
0..255) and checks every stage against a plain-numpy loop computation instead.

    python examples/sobel.py [--backend numpy] [--out out/]
"""
from __future__ import annotations

import sys
import time

import numpy as np

import graphc as gc
from graphc.nn import functional as F

import _common as C

S_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
S_Y = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float32)


def sobel(image):
    """image (1, 1, H, W) → (G_x, G_y, G, normalised G before rounding), each (H−2, W−2)."""
    w = np.stack([S_X, S_Y])[:, None]                       # (2, 1, 3, 3), not trainable
    maps = F.conv2d(image, w)                               # valid padding, stride 1
    gx, gy = maps[0, 0], maps[0, 1]
    g = gc.sqrt(gx * gx + gy * gy)
    lo, hi = gc.min(g), gc.max(g)
    return gx, gy, g, (g - lo) / (hi - lo) * 255.0


def reference(img):
    """The same with explicit loops (cross-correlation), float64."""
    h, w = img.shape
    gx = np.zeros((h - 2, w - 2))
    gy = np.zeros_like(gx)
    for i in range(h - 2):
        for j in range(w - 2):
            patch = img[i:i + 3, j:j + 3]
            gx[i, j], gy[i, j] = np.sum(patch * S_X), np.sum(patch * S_Y)
    g = np.sqrt(gx ** 2 + gy ** 2)
    return gx, gy, g, np.round((g - g.min()) / (g.max() - g.min()) * 255)


EXAMPLES = {"sobel": (np.zeros((1, 1, 8, 8), np.float32),)}
ENTRY = "sobel"


def main(argv=None) -> dict:
    args = C.parse_args(__doc__, argv)
    args.out.mkdir(parents=True, exist_ok=True)
    C.banner("Sobel edges and the normalised feature map", args)
    t0 = time.perf_counter()
    d = C.digits(images=True, seed=args.seed)
    img = np.round(d.x_train[0, 0] * 255).astype(np.float32)     # 0 black .. 255 white
    f = gc.compile(sobel, backend=args.backend)
    gx, gy, g, norm = (np.asarray(a) for a in f(img[None, None]))
    normalised = np.round(norm).astype(np.int64)              # round on the host
    rgx, rgy, rg, rnorm = reference(img.astype(np.float64))
    print(f"   image {img.shape} -> feature maps {gx.shape} (o = i - k + 1 = {8 - 3 + 1})")
    print("   G (gradient magnitude):\n" + np.array2string(np.round(g, 1), max_line_width=120))
    print("   normalised feature map (0..255):\n" + np.array2string(normalised))
    err = max(float(np.max(np.abs(a - b))) for a, b in ((gx, rgx), (gy, rgy), (g, rg)))
    metrics = {"shape": gx.shape, "max_abs_error": err,
               "normalised_matches": bool(np.array_equal(normalised, rnorm)),
               "normalised_min": int(normalised.min()), "normalised_max": int(normalised.max())}
    print(f"   max |graphc - loops| = {err:.2e}; normalised map equal: "
          f"{metrics['normalised_matches']}")
    metrics["pictures"] = C.draw(f, args.out, "sobel", stages=("traced", "fused"), fmt="dot")
    return C.finish(metrics, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
