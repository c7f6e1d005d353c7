"""The backend-neutral device-array protocol (graphc.device) without any device: a toy
subclass whose memory is a numpy array goes through check_args, the tracer and backends
without device memory, which copy it down; a deleted one raises wherever it is used."""
import doctest

import numpy as np
import pytest

import graphc as gc
from graphc import device as device_module
from graphc.device import DeviceArray
from graphc.errors import GraphcError, SignatureError
from graphc.interpret import check_args


class Toy(DeviceArray):
    fetches = 0

    def __init__(self, a):
        super().__init__(a.shape, a.dtype)
        self.a = a

    def _fetch(self):
        Toy.fetches += 1
        return self.a.copy()


def test_doctests():
    assert doctest.testmod(device_module, verbose=False).failed == 0


def test_check_args_checks_shape_and_dtype_and_copies_only_when_asked():
    g = gc.trace(lambda w: w * 2, np.zeros(3, np.float32))
    t = Toy(np.ones(3, np.float32))
    before = Toy.fetches
    assert check_args(g, [t], keep_device=True)[0] is t and Toy.fetches == before
    host = check_args(g, [t])[0]
    assert type(host) is np.ndarray and Toy.fetches == before + 1
    with pytest.raises(SignatureError, match="must be f32\\[3\\], got float64\\[3\\]"):
        check_args(g, [Toy(np.ones(3))])


def test_backends_without_device_memory_copy_device_arrays_down():
    t = Toy(np.arange(4, dtype=np.float32))
    for backend in ("numpy", "reference"):
        f = gc.compile(lambda w, b: ({"y": w * b}, w.sum()), backend=backend,
                       device_outputs=True)
        out, s = f(t, np.float32(2))   # traced from the device array's shape and dtype
        assert type(out["y"]) is np.ndarray
        np.testing.assert_array_equal(out["y"], np.arange(4) * 2)
        assert float(s) == 6.0


def test_host_copy_is_read_only_cached_and_deleted_arrays_raise():
    t = Toy(np.arange(3.0))
    h = np.asarray(t)
    assert np.asarray(t) is h and not h.flags.writeable
    assert np.array(t) is not h and np.array(t).flags.writeable
    assert np.asarray(t, dtype=np.float32).dtype == np.float32
    assert float(Toy(np.array(2.5))) == 2.5 and int(Toy(np.array(7))) == 7
    with pytest.raises(TypeError, match="0-d"):
        len(Toy(np.array(1.0)))
    t.delete()
    assert t.is_deleted() and "deleted" in repr(t)
    for use in (np.asarray, float, gc.compile(lambda w: w + 1)):
        with pytest.raises(GraphcError, match="was donated"):
            use(t)
