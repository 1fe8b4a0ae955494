"""Conditioner and vector-field networks."""

from .made import MADE, MaskedLinear
from .mlp import MLP
from .vector_field import TIME_EMBEDDINGS, SinusoidalEmbedding, TimeMLP

__all__ = ["MADE", "MLP", "TIME_EMBEDDINGS", "MaskedLinear", "SinusoidalEmbedding", "TimeMLP"]
