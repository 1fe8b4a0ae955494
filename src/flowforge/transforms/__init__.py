"""Bijections with log-absolute-determinants: the transform contract and its implementations."""

from .autoregressive import (
    MaskedAffineAutoregressive,
    MaskedAutoregressive,
    MaskedSplineAutoregressive,
)
from .base import Compose, Inverse, Transform
from .coupling import AdditiveCoupling, AffineCoupling, Coupling, SplineCoupling
from .elementwise import ActNorm, ElementwiseAffine
from .linear import LULinear
from .permutation import Permutation, RandomPermutation, Reverse
from .residual import ResidualBlock
from .univariate import (
    AdditiveTransformer,
    AffineTransformer,
    RQSplineTransformer,
    Transformer,
)

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AdditiveTransformer",
    "AffineCoupling",
    "AffineTransformer",
    "Compose",
    "Coupling",
    "ElementwiseAffine",
    "Inverse",
    "LULinear",
    "MaskedAffineAutoregressive",
    "MaskedAutoregressive",
    "MaskedSplineAutoregressive",
    "Permutation",
    "RQSplineTransformer",
    "RandomPermutation",
    "ResidualBlock",
    "Reverse",
    "SplineCoupling",
    "Transform",
    "Transformer",
]
