"""graphc.nn.init: torch.nn.init names and conventions (see graphc.frontends.nn.init)."""
from graphc.frontends.nn.init import *  # noqa: F401,F403
