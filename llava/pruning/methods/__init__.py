"""Built-in pruning methods; importing this package registers them."""

from . import divprune, fastervlm, random_select, uniform, visionzip, vispruner, vtc_cls  # noqa: F401
