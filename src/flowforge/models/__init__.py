"""The registry of named model recipes.

Example:
    >>> import flowforge as ff
    >>> "nsf" in ff.models.available()
    True
"""

from . import discrete  # noqa: F401  (registers the discrete flows)
from .registry import Recipe, available, create, recipe, register

__all__ = ["Recipe", "available", "create", "recipe", "register"]
