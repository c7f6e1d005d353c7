"""graphc.nn.functional: torch.nn.functional names and conventions (see graphc.frontends.nn.functional)."""
from graphc.frontends.nn.functional import *  # noqa: F401,F403
from graphc.frontends.nn.functional import __all__  # noqa: F401
