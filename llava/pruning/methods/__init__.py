"""Built-in pruning methods; importing this package registers them."""

from . import cdpruner, divprune, fastervlm, random_select, uniform, visionzip, vispruner, vtc_cls  # noqa: F401
from .. import fastv as _fastv  # noqa: F401,E402  (in-LLM methods, live beside the LLM hooks)
from .. import dart as _dart, fitprune as _fitprune, pdrop as _pdrop, sparsevlm as _sparsevlm  # noqa: F401,E402
