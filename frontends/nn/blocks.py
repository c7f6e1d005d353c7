"""Composite blocks built from the layers: the ResNet BasicBlock, the Highway layer and the
DenseNet DenseLayer / DenseBlock."""
from __future__ import annotations

import numpy as np

from graphc.frontends.nn import functional as F
from graphc.frontends.nn.module import Module, _make_rng
from graphc.frontends.nn.containers import Sequential
from graphc.frontends.nn.layers import Conv2d, Linear
from graphc.frontends.nn.norm_layers import BatchNorm2d
from graphc.frontends.nn.activations import ReLU
from graphc.frontends.nn.norm_layers import Dropout
from graphc.frontends import numpy_api as gnp

__all__ = ["BasicBlock", "Highway", "DenseLayer", "DenseBlock"]


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


class DenseLayer(Module):
    """DenseNet-BC layer (Huang et al. 2017; torchvision's `_DenseLayer` names and arguments):
    norm1 (BatchNorm2d) → relu1 → conv1 (1x1, bn_size·growth_rate channels, no bias) → norm2 →
    relu2 → conv2 (3x3, padding 1, growth_rate channels, no bias) → dropout (drop_rate).

    DenseLayer(num_input_features, growth_rate, bn_size, drop_rate=0.0, *, dtype, seed, rng).
    The input is the concatenation of all earlier feature maps; it returns only the
    growth_rate new channels (DenseBlock concatenates them)."""

    def __init__(self, num_input_features, growth_rate, bn_size, drop_rate=0.0, *,
                 dtype=np.float32, seed=None, rng=None):
        super().__init__()
        r = _make_rng(seed, rng)
        self.norm1 = BatchNorm2d(num_input_features, dtype=dtype)
        self.relu1 = ReLU()
        self.conv1 = Conv2d(num_input_features, bn_size * growth_rate, 1, 1, bias=False,
                            dtype=dtype, rng=r)
        self.norm2 = BatchNorm2d(bn_size * growth_rate, dtype=dtype)
        self.relu2 = ReLU()
        self.conv2 = Conv2d(bn_size * growth_rate, growth_rate, 3, 1, 1, bias=False,
                            dtype=dtype, rng=r)
        self.drop_rate = float(drop_rate)
        self.dropout = Dropout(drop_rate) if drop_rate > 0 else None

    def forward(self, x):
        out = self.conv1(self.relu1(self.norm1(x)))
        out = self.conv2(self.relu2(self.norm2(out)))
        return self.dropout(out) if self.dropout is not None else out


class DenseBlock(Module):
    """DenseNet dense block (torchvision's `_DenseBlock`): layer i sees the concatenation (along
    channels) of the block input and the outputs of layers 0..i-1; the block returns the
    concatenation of all of them, num_input_features + num_layers·growth_rate channels.
    Submodules `denselayer1`, `denselayer2`, ... as in torchvision.

    DenseBlock(num_layers, num_input_features, bn_size, growth_rate, drop_rate=0.0, *, dtype,
    seed, rng)."""

    def __init__(self, num_layers, num_input_features, bn_size, growth_rate, drop_rate=0.0, *,
                 dtype=np.float32, seed=None, rng=None):
        super().__init__()
        r = _make_rng(seed, rng)
        self.num_layers = int(num_layers)
        for i in range(self.num_layers):
            setattr(self, f"denselayer{i + 1}",
                    DenseLayer(num_input_features + i * growth_rate, growth_rate, bn_size,
                               drop_rate, dtype=dtype, rng=r))

    def forward(self, x):
        features = [x]
        for i in range(self.num_layers):
            layer = getattr(self, f"denselayer{i + 1}")
            features.append(layer(gnp.concatenate(features, axis=1)))
        return gnp.concatenate(features, axis=1)
