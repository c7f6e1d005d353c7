"""torch.nn.functional for graphc: activations, losses and layers as compositions of primitives.

Every function here is built from the closed set of primitive ops in `graphc.ops` (no new
ops): it records graph nodes when given tracer tensors and, like the `gc.*` NumPy functions,
evaluates at once when given plain numpy arrays (`F.relu(np.array([-1., 2.]))` is an
array). Names, argument order and defaults follow `torch.nn.functional` (lectures,
Appendix B), with these graphc conventions:

* **Randomness** is explicit. `dropout(x, p, training, key)` and the other random functions
  take an integer `key` (a Python int or a traced integer scalar) for graphc's counter-based
  generator (`gc.random_uniform`): the same key gives the same mask on every backend, and a
  compiled training step can take a new key each step without retracing.
* **State is returned, never mutated.** `batch_norm(..., training=True)` with running
  statistics returns `(y, new_running_mean, new_running_var)`; otherwise it returns `y`.
* **Subgradients** (B.11): relu'(0) = 0, leaky_relu'(0) = negative_slope, hardtanh' = 0 at its
  corners, step/heaviside' = 0, |x|'(0) = 0, max pooling sends a window's gradient to its first
  maximum in scan order (as torch), `logsumexp`/`maxout` split ties evenly (as reduce-max).
* **Stability**: softmax/log_softmax/logsumexp subtract the maximum; sigmoid, softplus,
  logsigmoid, BCE-with-logits use exp(-|x|) forms and accurate log1p/expm1 compositions;
  no branch of a `where` can produce inf/nan that would poison a gradient.
* **erf** (for the exact `gelu`, torch's default) is composed from primitives with Cephes'
  rational approximations (ndtr.c, S. L. Moshier): in float64, |erf error| <= 5e-16 and erfc's
  relative error <= 1e-13 down to erfc ~ 1e-300 (checked against math.erf/erfc in the tests);
  `gelu(x, approximate="tanh")` is the tanh form.
* **graphc-only names**: besides torch's functions, `dropconnect(weight, p, training, key)`
  (DropConnect, lecture 7.21: inverted dropout applied to a weight tensor) has no torch
  counterpart.

Layers: `conv1d/2d/3d` are im2col (the kernel-offset windows are strided slices of the padded
input, stacked into a (C*k, N*L) matrix: the batch among the columns) then one matmul; `conv_transpose1d/2d/3d` dilate the
input by the stride and run the flipped-kernel convolution; pools use the same windows.

The functions live by concern in the sibling modules `_activation`, `_loss`, `_conv`,
`_pooling`, `_shape`, `_dropout`, `_norm` and `_attention_fn` (shared plumbing in `_util`);
this module gathers them under torch's names.
"""
from graphc.frontends.nn._activation import *  # noqa: F401,F403
from graphc.frontends.nn._loss import *  # noqa: F401,F403
from graphc.frontends.nn._conv import *  # noqa: F401,F403
from graphc.frontends.nn._pooling import *  # noqa: F401,F403
from graphc.frontends.nn._shape import *  # noqa: F401,F403
from graphc.frontends.nn._dropout import *  # noqa: F401,F403
from graphc.frontends.nn._norm import *  # noqa: F401,F403
from graphc.frontends.nn._attention_fn import *  # noqa: F401,F403

__all__ = [
    # activations
    "heaviside", "step", "threshold", "relu", "relu6", "leaky_relu", "prelu", "elu", "selu", "celu",
    "gelu", "erf", "erfc", "silu", "swish", "mish", "sigmoid", "logsigmoid", "tanh", "hardtanh",
    "hardsigmoid", "hardswish", "softplus", "softsign", "tanhshrink", "glu", "maxout",
    "softmax", "softmin", "log_softmax", "logsumexp",
    # losses
    "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "cross_entropy", "nll_loss", "kl_div",
    "multi_margin_loss", "hinge_embedding_loss", "hinge_loss", "soft_margin_loss",
    "margin_ranking_loss", "one_hot",
    # layers
    "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d", "unfold", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d",
    "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "adaptive_avg_pool3d", "flatten", "unflatten", "pad", "interpolate",
    "dropout", "dropout1d", "dropout2d", "dropout3d", "dropconnect", "batch_norm", "instance_norm",
    "layer_norm", "group_norm", "rms_norm", "normalize", "cosine_similarity", "embedding",
    "scaled_dot_product_attention", "additive_attention",
]
