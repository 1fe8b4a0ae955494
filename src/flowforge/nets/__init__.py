"""Conditioner and vector-field networks, and Lipschitz-constrained residual branches."""

from .conv import ConvConditioner, ResNetConditioner
from .lipschitz import (
    LipschitzConvNet,
    LipschitzMLP,
    LipSwish,
    SpectralConv2d,
    SpectralLinear,
    converge_spectral_norms,
    frozen_power_iteration,
    lipschitz_estimate,
)
from .made import MADE, MaskedLinear
from .mlp import MLP, MLPConditioner
from .unet import UNet
from .vector_field import TIME_EMBEDDINGS, SinusoidalEmbedding, TimeMLP

__all__ = [
    "MADE",
    "MLP",
    "TIME_EMBEDDINGS",
    "ConvConditioner",
    "LipSwish",
    "LipschitzConvNet",
    "LipschitzMLP",
    "MLPConditioner",
    "MaskedLinear",
    "ResNetConditioner",
    "SinusoidalEmbedding",
    "SpectralConv2d",
    "SpectralLinear",
    "TimeMLP",
    "UNet",
    "converge_spectral_norms",
    "frozen_power_iteration",
    "lipschitz_estimate",
]
