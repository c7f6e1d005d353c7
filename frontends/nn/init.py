"""torch.nn.init for graphc: initialisers that fill numpy arrays. Public as `graphc.nn.init`.

Names and formulas are PyTorch's (lectures Appendix B.13). Each function takes either a
numpy array, which it **fills in place and returns** (as torch's trailing-underscore
functions do), or a shape tuple, for which it returns a new array (`dtype=np.float32`):

>>> import numpy as np
>>> from graphc.nn import init
>>> w = np.empty((256, 128), np.float32)
>>> init.kaiming_uniform_(w, nonlinearity="relu", seed=0) is w       # bound √(6/fan_in)
True
>>> bool(np.abs(w).max() <= np.sqrt(6 / 128))
True
>>> init.xavier_normal_((3, 4), seed=1).shape
(3, 4)

Randomness. Every random initialiser takes `seed=` (an int: a fresh
`np.random.default_rng(seed)` for this call, so the same seed gives the same array) or
`rng=` (a `np.random.Generator`, advanced by the call; torch's name `generator=` is accepted
too). With neither, draws come from graphc's module-level default Generator, seeded 0 at
import, so a program's initial weights are reproducible run to run;
`init.manual_seed(n)` re-seeds it. Numbers are drawn in float64 and then cast, so a seed
gives the same values (up to rounding) whatever the array's dtype. The deterministic ones
(constant_, zeros_, ones_, eye_, identity_, dirac_) accept `seed`/`rng` and ignore them.

Fans (`calculate_fan_in_and_fan_out`, torch's `_calculate_fan_in_and_fan_out`): for a weight
of shape (out, in, *kernel), fan_in = in·∏kernel and fan_out = out·∏kernel; a Linear weight
(out, in) has fan_in = in, a Conv2d weight (C_out, C_in, kH, kW) has fan_in = C_in·kH·kW.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "manual_seed", "default_generator", "calculate_gain", "calculate_fan_in_and_fan_out",
    "_calculate_fan_in_and_fan_out",
    "constant_", "zeros_", "ones_", "eye_", "identity_", "dirac_",
    "uniform_", "normal_", "trunc_normal_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
    "lecun_uniform_", "lecun_normal_", "orthogonal_",
]

_default_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Re-seed the default Generator used when no `seed`/`rng` is given; returns it."""
    global _default_rng
    _default_rng = np.random.default_rng(seed)
    return _default_rng


def default_generator() -> np.random.Generator:
    """The module-level default Generator (seeded 0 at import, or by manual_seed)."""
    return _default_rng


def _get_rng(seed, rng, generator) -> np.random.Generator:
    if rng is not None and generator is not None:
        raise ValueError("pass rng= or generator= (the same thing), not both")
    rng = rng if rng is not None else generator
    if seed is not None and rng is not None:
        raise ValueError("pass either seed= or rng=, not both")
    if seed is not None:
        return np.random.default_rng(seed)
    if rng is not None:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(...)), "
                            f"got {type(rng).__name__}")
        return rng
    return _default_rng


def _target(tensor, dtype) -> np.ndarray:
    """The array to fill: the given array itself, or a new one for a shape."""
    if isinstance(tensor, np.ndarray):
        return tensor
    if isinstance(tensor, (int, np.integer)):
        return np.empty((int(tensor),), dtype)
    if isinstance(tensor, (tuple, list)):
        return np.empty(tuple(int(s) for s in tensor), dtype)
    raise TypeError(f"initialisers take a numpy array (filled in place) or a shape, "
                    f"got {type(tensor).__name__}")


def _fill(arr: np.ndarray, values) -> np.ndarray:
    arr[...] = values
    return arr


# ---- gains and fans ----------------------------------------------------------------------------
def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity, as torch: 1 for linear/conv/sigmoid, 5/3 for
    tanh, √2 for relu, √(2/(1 + slope²)) for leaky_relu (slope `param`, default 0.01),
    3/4 for selu."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def calculate_fan_in_and_fan_out(tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight array or shape (out, in, *kernel); needs ≥ 2 dims."""
    shape = tensor.shape if hasattr(tensor, "shape") else tuple(tensor)
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than "
                         "2 dimensions")
    receptive = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1
    return int(shape[1]) * receptive, int(shape[0]) * receptive


_calculate_fan_in_and_fan_out = calculate_fan_in_and_fan_out


def _fan(tensor, mode: str) -> int:
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


# ---- deterministic -----------------------------------------------------------------------------
def constant_(tensor, val: float, *, dtype=np.float32, seed=None, rng=None, generator=None):
    """Fill with `val` (all-equal weights: the lectures' symmetry demo)."""
    return _fill(_target(tensor, dtype), val)


def zeros_(tensor, *, dtype=np.float32, seed=None, rng=None, generator=None):
    return constant_(tensor, 0.0, dtype=dtype)


def ones_(tensor, *, dtype=np.float32, seed=None, rng=None, generator=None):
    return constant_(tensor, 1.0, dtype=dtype)


def eye_(tensor, *, dtype=np.float32, seed=None, rng=None, generator=None):
    """The identity matrix (2-d arrays only; non-square gets ones on the main diagonal)."""
    arr = _target(tensor, dtype)
    if arr.ndim != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    return _fill(arr, np.eye(*arr.shape))


def identity_(tensor, gain: float = 1.0, *, dtype=np.float32, seed=None, rng=None,
              generator=None):
    """`gain · I`: identity initialisation of recurrent weights (IRNN). Not in torch."""
    arr = eye_(tensor, dtype=dtype)
    arr *= gain
    return arr


def dirac_(tensor, groups: int = 1, *, dtype=np.float32, seed=None, rng=None, generator=None):
    """A conv weight (out, in, *kernel) that passes its input through: a 1 at the kernel
    centre for channel i → i, per group (torch's dirac_)."""
    arr = _target(tensor, dtype)
    if arr.ndim not in (3, 4, 5):
        raise ValueError("Only tensors with 3, 4, or 5 dimensions are supported")
    out_per_group = arr.shape[0] // groups
    n = min(out_per_group, arr.shape[1])
    arr[...] = 0
    centre = tuple(k // 2 for k in arr.shape[2:])
    for g in range(groups):
        for d in range(n):
            arr[(g * out_per_group + d, d) + centre] = 1
    return arr


# ---- random ------------------------------------------------------------------------------------
def uniform_(tensor, a: float = 0.0, b: float = 1.0, *, dtype=np.float32, seed=None, rng=None,
             generator=None):
    """Fill from U(a, b)."""
    arr = _target(tensor, dtype)
    return _fill(arr, _get_rng(seed, rng, generator).uniform(a, b, arr.shape))


def normal_(tensor, mean: float = 0.0, std: float = 1.0, *, dtype=np.float32, seed=None,
            rng=None, generator=None):
    """Fill from N(mean, std²) (`normal_(w, 0, 0.01)` is the lectures' small init)."""
    arr = _target(tensor, dtype)
    return _fill(arr, _get_rng(seed, rng, generator).normal(mean, std, arr.shape))


def trunc_normal_(tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0,
                  *, dtype=np.float32, seed=None, rng=None, generator=None):
    """N(mean, std²) truncated to [a, b] (absolute bounds, as torch), by resampling."""
    arr = _target(tensor, dtype)
    if not a < b:
        raise ValueError(f"trunc_normal_ needs a < b, got [{a}, {b}]")
    r = _get_rng(seed, rng, generator)
    vals = r.normal(mean, std, arr.shape)
    bad = (vals < a) | (vals > b)
    for _ in range(1000):
        if not bad.any():
            break
        vals[bad] = r.normal(mean, std, int(bad.sum()))
        bad = (vals < a) | (vals > b)
    else:
        vals = np.clip(vals, a, b)  # only reached for bounds far in the tails
    return _fill(arr, vals)


def xavier_uniform_(tensor, gain: float = 1.0, *, dtype=np.float32, seed=None, rng=None,
                    generator=None):
    """Glorot uniform: U(−B, B), B = gain·√(6/(fan_in + fan_out))."""
    arr = _target(tensor, dtype)
    fan_in, fan_out = calculate_fan_in_and_fan_out(arr)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(arr, -bound, bound, seed=seed, rng=rng, generator=generator)


def xavier_normal_(tensor, gain: float = 1.0, *, dtype=np.float32, seed=None, rng=None,
                   generator=None):
    """Glorot normal: N(0, σ²), σ = gain·√(2/(fan_in + fan_out))."""
    arr = _target(tensor, dtype)
    fan_in, fan_out = calculate_fan_in_and_fan_out(arr)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return normal_(arr, 0.0, std, seed=seed, rng=rng, generator=generator)


def kaiming_uniform_(tensor, a: float = 0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", *, dtype=np.float32, seed=None, rng=None,
                     generator=None):
    """He uniform: U(−B, B), B = gain·√(3/fan), gain = calculate_gain(nonlinearity, a);
    the defaults (leaky_relu with a = 0) give gain √2, B = √(6/fan_in). `a = √5` is the
    default Linear/Conv init, B = 1/√fan_in."""
    arr = _target(tensor, dtype)
    if arr.size == 0:
        return arr
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(arr, mode))
    bound = math.sqrt(3.0) * std
    return uniform_(arr, -bound, bound, seed=seed, rng=rng, generator=generator)


def kaiming_normal_(tensor, a: float = 0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", *, dtype=np.float32, seed=None, rng=None,
                    generator=None):
    """He normal: N(0, σ²), σ = gain/√fan (√(2/fan_in) for ReLU; 2/((1 + a²)·fan_in)
    variance for leaky ReLU with slope a, lectures 6.10)."""
    arr = _target(tensor, dtype)
    if arr.size == 0:
        return arr
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(arr, mode))
    return normal_(arr, 0.0, std, seed=seed, rng=rng, generator=generator)


def lecun_uniform_(tensor, *, dtype=np.float32, seed=None, rng=None, generator=None):
    """LeCun uniform (not in torch): U(−B, B), B = √(3/fan_in), so variance 1/fan_in."""
    arr = _target(tensor, dtype)
    bound = math.sqrt(3.0 / _fan(arr, "fan_in"))
    return uniform_(arr, -bound, bound, seed=seed, rng=rng, generator=generator)


def lecun_normal_(tensor, *, dtype=np.float32, seed=None, rng=None, generator=None):
    """LeCun normal (not in torch): N(0, σ²) with σ = 1/√fan_in, untruncated (Keras's
    lecun_normal truncates at 2σ and rescales; this one does not)."""
    arr = _target(tensor, dtype)
    return normal_(arr, 0.0, 1.0 / math.sqrt(_fan(arr, "fan_in")), seed=seed, rng=rng,
                   generator=generator)


def orthogonal_(tensor, gain: float = 1.0, *, dtype=np.float32, seed=None, rng=None,
                generator=None):
    """A (semi-)orthogonal matrix times `gain` (Saxe et al.), as torch: QR of a Gaussian
    (rows, cols) matrix (cols = the product of the trailing dims), with Q's columns' signs
    set by diag(R) so the result is uniformly distributed. rows ≤ cols: W Wᵀ = gain²·I;
    rows ≥ cols: Wᵀ W = gain²·I."""
    arr = _target(tensor, dtype)
    if arr.ndim < 2:
        raise ValueError("Only tensors with 2 or more dimensions are supported")
    if arr.size == 0:
        return arr
    rows = arr.shape[0]
    cols = arr.size // rows
    flat = _get_rng(seed, rng, generator).normal(0.0, 1.0, (rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    d = np.sign(np.diag(r))
    q = q * np.where(d == 0, 1.0, d)
    if rows < cols:
        q = q.T
    return _fill(arr, gain * q.reshape(arr.shape))
