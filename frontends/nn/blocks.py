"""Composite blocks built from the layers: the ResNet BasicBlock and the Highway layer."""
from __future__ import annotations

import numpy as np

from graphc.frontends.nn import functional as F
from graphc.frontends.nn.module import Module, _make_rng
from graphc.frontends.nn.containers import Sequential
from graphc.frontends.nn.layers import Conv2d, Linear
from graphc.frontends.nn.norm_layers import BatchNorm2d
from graphc.frontends.nn.activations import ReLU

__all__ = ["BasicBlock", "Highway"]


class BasicBlock(Module):
    """ResNet basic block (He et al. 2015; torchvision names): conv1 (3x3, stride, no bias) →
    bn1 → relu → conv2 (3x3, no bias) → bn2, plus the shortcut, then relu.

    BasicBlock(inplanes, planes, stride=1, downsample=None, *, dtype, seed, rng). The shortcut
    is the identity when the shape is unchanged; otherwise (downsample=None) a projection
    `downsample = Sequential(Conv2d(inplanes, planes, 1, stride, bias=False), BatchNorm2d(planes))`.
    downsample=True forces the projection, False forces the identity, a Module is used as given."""
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, *, dtype=np.float32,
                 seed=None, rng=None):
        super().__init__()
        r = _make_rng(seed, rng)
        self.conv1 = Conv2d(inplanes, planes, 3, stride, 1, bias=False, dtype=dtype, rng=r)
        self.bn1 = BatchNorm2d(planes, dtype=dtype)
        self.relu = ReLU()
        self.conv2 = Conv2d(planes, planes, 3, 1, 1, bias=False, dtype=dtype, rng=r)
        self.bn2 = BatchNorm2d(planes, dtype=dtype)
        if downsample is None:
            downsample = stride != 1 or inplanes != planes
        if downsample is True:
            downsample = Sequential(Conv2d(inplanes, planes, 1, stride, bias=False, dtype=dtype,
                                           rng=r), BatchNorm2d(planes, dtype=dtype))
        if downsample is False:
            if stride != 1 or inplanes != planes:
                raise ValueError("an identity shortcut needs stride 1 and inplanes == planes")
            downsample = None
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


class Highway(Module):
    """Highway layer (Srivastava et al. 2015): y = T(x)⊙H(x) + (1 − T(x))⊙x with
    H = act(Linear(x)) (the submodule `transform`) and T = σ(Linear(x)) (`gate`, bias
    initialised to gate_bias, negative so that the layer starts close to the identity)."""

    def __init__(self, features, activation=None, gate_bias=-1.0, *, dtype=np.float32,
                 seed=None, rng=None):
        super().__init__()
        r = _make_rng(seed, rng)
        self.transform = Linear(features, features, dtype=dtype, rng=r)
        self.gate = Linear(features, features, dtype=dtype, rng=r)
        self.gate.bias = np.full(features, gate_bias, dtype)
        self.activation = activation if activation is not None else ReLU()

    def forward(self, x):
        t = F.sigmoid(self.gate(x))
        return t * self.activation(self.transform(x)) + (1 - t) * x
