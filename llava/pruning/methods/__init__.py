"""Built-in pruning methods; importing this package registers them."""

from . import fastervlm  # noqa: F401
