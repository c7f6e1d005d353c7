"""Activation layers (as torch.nn): one Module class per elementwise F.<function>, made by
`_activation`, and PReLU with its learned slope."""
from __future__ import annotations

import numpy as np

from graphc.frontends.nn import functional as F
from graphc.frontends.nn.module import Module, Parameter

__all__ = [
    "ReLU", "LeakyReLU", "PReLU", "ELU", "SELU", "GELU", "SiLU", "Mish", "Tanh", "Sigmoid",
    "Softplus", "Softsign", "Hardtanh", "Hardsigmoid", "Softmax", "LogSoftmax",
]


def _activation(name: str, fname: str, params: tuple = (), doc: str = ""):
    """A Module class calling F.<fname>(x, *params) with the constructor's arguments."""
    names = [p[0] for p in params]

    def __init__(self, *args, inplace=False, **kwargs):
        Module.__init__(self)
        vals = dict(params)
        for n, v in zip(names, args):
            vals[n] = v
        for n, v in kwargs.items():
            if n not in vals:
                raise TypeError(f"{name}() got an unexpected keyword argument {n!r}")
            vals[n] = v
        for n in names:
            object.__setattr__(self, n, vals[n])

    def forward(self, x):
        return getattr(F, fname)(x, **{n: getattr(self, n) for n in names})

    def extra_repr(self):
        return ", ".join(f"{n}={getattr(self, n)}" for n in names)

    sig = ", ".join(f"{n}={v!r}" for n, v in params)
    return type(name, (Module,), {"__init__": __init__, "forward": forward,
                                  "extra_repr": extra_repr, "__module__": __name__,
                                  "__doc__": f"{name}({sig}): {doc or 'F.' + fname}, elementwise."})


ReLU = _activation("ReLU", "relu", doc="max(x, 0), gradient 0 at 0")
LeakyReLU = _activation("LeakyReLU", "leaky_relu", (("negative_slope", 0.01),))
ELU = _activation("ELU", "elu", (("alpha", 1.0),))
SELU = _activation("SELU", "selu")
GELU = _activation("GELU", "gelu", (("approximate", "none"),))
SiLU = _activation("SiLU", "silu")
Mish = _activation("Mish", "mish")
Tanh = _activation("Tanh", "tanh")
Sigmoid = _activation("Sigmoid", "sigmoid")
Softplus = _activation("Softplus", "softplus", (("beta", 1.0), ("threshold", 20.0)))
Softsign = _activation("Softsign", "softsign")
Hardtanh = _activation("Hardtanh", "hardtanh", (("min_val", -1.0), ("max_val", 1.0)))
Hardsigmoid = _activation("Hardsigmoid", "hardsigmoid")
Softmax = _activation("Softmax", "softmax", (("dim", -1),), "softmax along dim")
LogSoftmax = _activation("LogSoftmax", "log_softmax", (("dim", -1),), "log-softmax along dim")


class PReLU(Module):
    """PReLU(num_parameters=1, init=0.25): max(x, 0) + weight * min(x, 0), one slope shared
    (or one per channel, dim 1)."""

    def __init__(self, num_parameters=1, init=0.25, *, dtype=np.float32):
        super().__init__()
        self.num_parameters = int(num_parameters)
        self.weight = Parameter(np.full(num_parameters, init, dtype))

    def forward(self, x):
        return F.prelu(x, self.weight)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"
