"""graphc.train: a compiled whole training step and a small fit loop (see graphc.frontends.train)."""
from graphc.frontends.train import *  # noqa: F401,F403
from graphc.frontends.train import __all__  # noqa: F401
