"""graphc.frontends.nn: layers as Modules, their functional forms and initialisers.
Public as `graphc.nn`, `graphc.nn.functional`, `graphc.nn.init`."""
from graphc.frontends.nn import functional, init
from graphc.frontends.nn.modules import *  # noqa: F401,F403
from graphc.frontends.nn.modules import __all__ as _modules_all
from graphc.frontends.nn.rnn import *  # noqa: F401,F403
from graphc.frontends.nn.rnn import __all__ as _rnn_all
from graphc.frontends.nn.attention import *  # noqa: F401,F403
from graphc.frontends.nn.attention import __all__ as _attention_all

__all__ = ["functional", "init"] + _modules_all + _rnn_all + _attention_all
