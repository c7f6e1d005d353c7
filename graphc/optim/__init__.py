"""graphc.optim: optimisers and LR schedules, named as in torch.optim (see graphc.frontends.optim)."""
from graphc.frontends.optim import *  # noqa: F401,F403
from graphc.optim import lr_scheduler  # noqa: F401
