"""Arrays that live in a backend's device memory, as JAX's `jax.Array`.

A backend with its own memory (OpenCL) can return results as device arrays instead of numpy
arrays (`gc.compile(..., device_outputs=True)`), and takes them back as arguments without a
round trip through the host: a training step's parameters stay on the device between calls.
The core only knows this base class; each backend subclasses it (`OpenCLArray`) and fills in
`_fetch` (device -> host) and `_release` (give the memory up).

The contents of a device array never change after it is made, so its host copy is fetched
on first use (`np.asarray(x)`, `x.numpy()`, `float(x)`) and kept. Donating it to a compiled
function (`donate_argnums`) consumes it: the backend may reuse its memory, and any later use
raises a GraphcError, as JAX does with a donated buffer.

>>> import numpy as np
>>> class HostArray(DeviceArray):          # a toy backend whose "device" is a numpy array
...     def __init__(self, a):
...         super().__init__(a.shape, a.dtype)
...         self.a = a
...     def _fetch(self):
...         return self.a.copy()
>>> x = HostArray(np.arange(3.0))
>>> x, x.shape, len(x), np.asarray(x).sum()
(HostArray([0., 1., 2.]), (3,), 3, np.float64(3.0))
>>> x.delete(); x.is_deleted()
True
"""
from __future__ import annotations

import math

import numpy as np

from graphc.errors import GraphcError


class DeviceArray:
    """Base class: an immutable array in a backend's memory, with numpy's shape and dtype."""

    def __init__(self, shape: tuple, dtype):
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self._host: np.ndarray | None = None
        self._deleted = False

    # ---- what a backend provides ----------------------------------------------------------
    def _fetch(self) -> np.ndarray:
        """A new host array with the contents (device -> host copy)."""
        raise NotImplementedError

    def _release(self) -> None:
        """Give the device memory up (called once, by `delete`)."""

    # ---- numpy's view -----------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def numpy(self) -> np.ndarray:
        """The contents as a read-only numpy array, copied from the device once and kept
        (read-only because it stands for this immutable array; `np.array(x)` is writable)."""
        self.check_alive()
        if self._host is None:
            host = self._fetch().reshape(self.shape)
            host.setflags(write=False)
            self._host = host
        return self._host

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        if copy or (dtype is not None and np.dtype(dtype) != a.dtype):
            return np.array(a, dtype=dtype)
        return a

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d device array")
        return self.shape[0]

    def __float__(self) -> float:
        return float(self.numpy())

    def __int__(self) -> int:
        return int(self.numpy())

    def __reduce__(self):
        # pickle and copy.deepcopy give the contents as a numpy array (device memory does
        # not travel)
        return np.array, (self.numpy(),)

    def __repr__(self) -> str:
        if self._deleted:
            return f"{type(self).__name__}(<deleted>, shape={self.shape}, dtype={self.dtype})"
        body = np.array2string(self.numpy(), separator=", ", threshold=20)
        return f"{type(self).__name__}({body})" if self.dtype in (np.float64, np.int64) \
            else f"{type(self).__name__}({body}, dtype={self.dtype})"

    # ---- donation ---------------------------------------------------------------------------
    def is_deleted(self) -> bool:
        return self._deleted

    def delete(self) -> None:
        """Free the device memory now; any later use raises."""
        if not self._deleted:
            self._deleted, self._host = True, None
            self._release()

    def check_alive(self, what: str = "a device array") -> None:
        if self._deleted:
            raise GraphcError(
                f"{what} ({type(self).__name__} {self.dtype}{list(self.shape)}) was deleted: it "
                f"was donated to a compiled function (donate_argnums) or deleted by hand",
                stage="run",
                hint="a donated array is consumed by the call; use the call's result, or keep "
                     "a copy (np.array(x)) before donating it")
