"""graphc.optim.lr_scheduler: the LR schedules, as torch.optim.lr_scheduler (see
graphc.frontends.lr_scheduler; they are also graphc.optim.<name>)."""
from graphc.frontends.lr_scheduler import *  # noqa: F401,F403
from graphc.frontends.lr_scheduler import __all__  # noqa: F401
