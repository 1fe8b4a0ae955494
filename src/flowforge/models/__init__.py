"""The registry of named model recipes.

Example:
    >>> import flowforge as ff
    >>> "nsf" in ff.models.available()
    True
"""

from . import discrete, residual, glow, continuous, matching, meanflow, diffusion  # noqa: F401  (register the recipes)  # isort: skip
from .registry import Recipe, available, create, image_models, recipe, register

__all__ = ["Recipe", "available", "create", "image_models", "recipe", "register"]
