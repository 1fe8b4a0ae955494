"""Bijections with log-absolute-determinants on events of any shape: the transform contract
and its implementations, image ops (squeeze, logit, multi-scale factor-out) included."""

from .autoregressive import (
    MaskedAffineAutoregressive,
    MaskedAutoregressive,
    MaskedSplineAutoregressive,
)
from .base import Compose, Inverse, Transform
from .coupling import (
    CONDITIONERS,
    AdditiveCoupling,
    AffineCoupling,
    Coupling,
    SplineCoupling,
    channel_mask,
    checkerboard_mask,
)
from .elementwise import ActNorm, ElementwiseAffine
from .image import FactorOut, Logit, MultiScale, Squeeze, kept_shape, squeezed_shape
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
    "CONDITIONERS",
    "ActNorm",
    "AdditiveCoupling",
    "AdditiveTransformer",
    "AffineCoupling",
    "AffineTransformer",
    "Compose",
    "Coupling",
    "ElementwiseAffine",
    "FactorOut",
    "Inverse",
    "LULinear",
    "Logit",
    "MaskedAffineAutoregressive",
    "MaskedAutoregressive",
    "MaskedSplineAutoregressive",
    "MultiScale",
    "Permutation",
    "RQSplineTransformer",
    "RandomPermutation",
    "ResidualBlock",
    "Reverse",
    "SplineCoupling",
    "Squeeze",
    "Transform",
    "Transformer",
    "channel_mask",
    "checkerboard_mask",
    "kept_shape",
    "squeezed_shape",
]
