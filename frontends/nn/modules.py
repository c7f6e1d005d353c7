"""`Module`, `Parameter`, `functional_call` and the feed-forward layers, as in torch.nn.

A Module keeps its trainable arrays (`Parameter`s), its non-trainable state (buffers, e.g.
BatchNorm's running statistics) and its submodules in three dicts, discovered from
attribute assignment as in PyTorch::

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 8, seed=0)      # a submodule: parameters fc1.weight, fc1.bias
            self.scale = nn.Parameter(np.ones(8))   # a parameter: scale
            self.register_buffer("steps", np.zeros((), np.int64))   # a buffer: steps
            self.layers = [nn.Linear(8, 8), nn.Linear(8, 2)]        # a ModuleList: layers.0.weight ...

        def forward(self, x):
            ...

Plain numpy arrays assigned to new attributes are constants, not parameters (as plain
tensors in torch). Parameters are stored as plain numpy arrays: `model.fc1.weight` is an
ndarray, and assigning an array to a registered name replaces the parameter's value.

**Pure calls.** `functional_call(module, params, *inputs, buffers=None, key=None)` runs the
forward pass with the given (possibly traced) parameter values in place of the stored ones
and never mutates the module, so a whole training step can be differentiated and compiled::

    params = model.param_dict()
    def loss_fn(p, x, y):
        return F.cross_entropy(nn.functional_call(model, p, x), y)
    step = gc.compile(lambda p, x, y: gc.value_and_grad(loss_fn)(p, x, y))

State in, state out: with `buffers=` given it returns `(output, new_buffers)`, the buffers
after the call (BatchNorm's running statistics updated in training mode). `key=` is the
random key for Dropout (and the recurrent layers' inter-layer dropout): an int or an integer
scalar array (pass `np.int64(step)` to a compiled function so that a new key does not
retrace). The n-th random draw inside the call uses `key + n * 0x9E3779B1`, so a model with
one Dropout uses `key` itself. `training=` overrides the modules' train/eval mode for the
call (a Python bool, so a compiled function specialises on it).

Calling a module directly, `model(x)`, uses the stored arrays. On numpy arrays it runs at once
and, as in torch, updates the stored buffers (BatchNorm running statistics) in training mode;
Dropout then draws its masks from the module's own generator (its `seed=`). Inside a traced
function the stored arrays become constants, buffer updates are dropped, and Dropout in
training mode needs `functional_call(..., key=...)`.

**Initialisation.** Every layer takes `seed=` (an int) or `rng=` (a `numpy.random.Generator`)
and initialises as PyTorch does by default (B.13); with neither it draws from graphc's
default generator (`graphc.nn.init`). Parameters are float32 unless `dtype=` says otherwise;
`model.double()` / `model.to(np.float64)` convert every float parameter and buffer.

The classes live by concern in the sibling modules `module` (Parameter, Module), `stateless`
(functional_call), `containers`, `layers`, `norm_layers`, `activations` and `blocks`; this
module gathers them under torch.nn's names.
"""
from graphc.frontends.nn.module import *  # noqa: F401,F403
from graphc.frontends.nn.stateless import *  # noqa: F401,F403
from graphc.frontends.nn.containers import *  # noqa: F401,F403
from graphc.frontends.nn.layers import *  # noqa: F401,F403
from graphc.frontends.nn.norm_layers import *  # noqa: F401,F403
from graphc.frontends.nn.activations import *  # noqa: F401,F403
from graphc.frontends.nn.blocks import *  # noqa: F401,F403
# helpers that graphc.frontends.nn.rnn / attention and earlier code import from here
from graphc.frontends.nn.module import _make_rng, _seeded  # noqa: F401
from graphc.frontends.nn.stateless import _dropout_key  # noqa: F401
from graphc.frontends.nn.layers import _uniform  # noqa: F401

__all__ = [
    "Parameter", "Module", "functional_call", "Sequential", "ModuleList", "ModuleDict",
    "Identity", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
    "Flatten", "Unflatten", "Dropout", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "Embedding",
    "ReLU", "LeakyReLU", "PReLU", "ELU", "SELU", "GELU", "SiLU", "Mish", "Tanh", "Sigmoid",
    "Softplus", "Softsign", "Hardtanh", "Hardsigmoid", "Softmax", "LogSoftmax",
    "BasicBlock", "Highway", "DenseLayer", "DenseBlock",
]
