"""graphc.nn: layers as Modules (implemented in graphc.frontends.nn), with
`graphc.nn.functional` and `graphc.nn.init` beside them, named as in torch.nn."""
from graphc.frontends.nn import *  # noqa: F401,F403
from graphc.nn import functional, init  # noqa: F401
