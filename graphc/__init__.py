"""graphc: an educational deep-learning graph compiler.

Trace a NumPy-style function into a graph, derive its backward graph, optimise it, and
generate code for a backend:

>>> import numpy as np, graphc as gc
>>> def f(a, b):
...     return (a + b) * (b + 1)
>>> float(gc.grad(f, argnums=(0, 1))(2.0, 1.0)[1])   # df/db = (b + 1) + (a + b)
5.0
>>> fc = gc.compile(f, backend="numpy")
>>> fc(np.float32(2), np.float32(1))
array(6., dtype=float32)
"""
from graphc.errors import GraphcError, ShapeError, SignatureError, BackendError, VerifyError
from graphc.ir import Graph, Node
from graphc.ops import Op
from graphc.types import DType, TensorType
from graphc.interpret import interpret
from graphc.pipeline import STAGES, run_pipeline
from graphc.verify import verify

# The user-facing API lives in graphc.frontends; re-exported here as `gc.*`.
from graphc.frontends.api import trace, grad, value_and_grad, compile, Compiled
from graphc.frontends.tensor import Tensor
from graphc.frontends.numpy_api import (
    exp, log, sqrt, sin, cos, tanh, abs, absolute, sign, negative, reciprocal, square,
    add, subtract, multiply, divide, true_divide, power, maximum, minimum,
    less, less_equal, greater, greater_equal, equal, not_equal, where, clip,
    sum, mean, var, std, max, min, amax, amin, matmul, dot, reshape, transpose,
    concatenate, stack, broadcast_to, expand_dims, squeeze, zeros_like, ones_like,
    full_like, pad, random_uniform, stop_gradient,
)
from graphc.viz import draw

from numpy import float32, float64, int32, int64, bool_  # dtypes, as np.float32 etc.
__version__ = "0.1.0"


def __getattr__(name):
    """`gc.optim`, `gc.nn` and `gc.train` without importing them at `import graphc` (PEP 562)."""
    if name in ("optim", "nn", "train"):
        import importlib
        return importlib.import_module(f"graphc.{name}")
    raise AttributeError(f"module 'graphc' has no attribute {name!r}")
