"""Tensor types: a dtype and a static shape, plus NumPy's broadcasting rule.

Every node of a graph carries one `TensorType`; shapes are plain tuples of ints,
known at trace time (graphc specialises a graph to the shapes it was traced with,
as `jax.jit` does).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class DType(enum.Enum):
    """The closed set of element types. The value is the short name printed in the IR."""

    float32 = "f32"
    float64 = "f64"
    int32 = "i32"
    int64 = "i64"
    bool = "bool"

    @property
    def np(self) -> np.dtype:
        return _NP_DTYPES[self]

    @property
    def is_float(self) -> bool:
        return self in (DType.float32, DType.float64)

    @property
    def is_int(self) -> bool:
        return self in (DType.int32, DType.int64)

    @property
    def itemsize(self) -> int:
        return self.np.itemsize

    @staticmethod
    def of(x) -> "DType":
        """The DType of a numpy dtype, array or scalar type; clear error for others."""
        dt = np.dtype(getattr(x, "dtype", x))
        for d in DType:
            if d.np == dt:
                return d
        raise TypeError(f"graphc has no dtype for numpy dtype {dt} "
                        f"(supported: {', '.join(d.name for d in DType)})")

    def __repr__(self) -> str:
        return f"DType.{self.name}"


_NP_DTYPES = {d: np.dtype(d.name if d is not DType.bool else np.bool_) for d in DType}


def promote(a: DType, b: DType) -> DType:
    """NumPy's promotion rule restricted to graphc's dtypes (int32 + float32 -> float64, as NumPy)."""
    return DType.of(np.result_type(a.np, b.np))


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: DType

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __str__(self) -> str:
        return f"{self.dtype.value}[{','.join(map(str, self.shape))}]"


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """NumPy broadcasting: align on the right, sizes must be equal or 1.

    >>> broadcast_shapes((3, 1), (4,))
    (3, 4)
    """
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(ndim):
        sizes = {s[len(s) - ndim + i] for s in shapes if len(s) - ndim + i >= 0}
        sizes.discard(1)
        if len(sizes) > 1:
            raise ValueError(f"shapes {', '.join(map(str, shapes))} do not broadcast "
                             f"(axis {i - ndim}: sizes {sorted(sizes)})")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def normalize_axes(axes, ndim: int) -> tuple[int, ...]:
    """Turn None / an int / a sequence into a sorted tuple of non-negative axes."""
    if axes is None:
        return tuple(range(ndim))
    if isinstance(axes, (int, np.integer)):
        axes = (axes,)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for a tensor of rank {ndim}")
        out.append(a % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ValueError(f"repeated axis in {tuple(axes)}")
    return tuple(sorted(out))
