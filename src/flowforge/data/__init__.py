"""Datasets: the classic 2-D densities, the 8x8 digits, the user's files; standardisation.

``load(source)`` turns a built-in name (see ``available()``) or a ``.npy`` / ``.npz`` / ``.csv``
path into a :class:`Dataset` of train / validation / test tensors, with the exact log-density
and entropy where they are known. :class:`Standardize` wraps a model trained on standardised
data so that it answers in the user's units.
"""

from .dataset import FILE_FRACTIONS, TOY_SIZES, Dataset, available, describe, load
from .digits import DIGITS_LEVELS, DIGITS_SPLIT, dequantize, load_digits_dataset
from .files import encode_labels, load_array, read_columns, read_labelled, split_array
from .preprocess import Standardize, fit_standardization
from .toy import (
    CHECKERBOARD_ENTROPY,
    EIGHT_GAUSSIANS_RADIUS,
    EIGHT_GAUSSIANS_STD,
    TOY_DENSITIES,
    EntropyEstimate,
    ToyDensity,
    checkerboard,
    checkerboard_entropy,
    checkerboard_log_prob,
    circles,
    eight_gaussians,
    eight_gaussians_entropy,
    eight_gaussians_log_prob,
    monte_carlo_entropy,
    moons,
    pinwheel,
    rings,
    swissroll,
    two_spirals,
)

__all__ = [
    "CHECKERBOARD_ENTROPY",
    "DIGITS_LEVELS",
    "DIGITS_SPLIT",
    "EIGHT_GAUSSIANS_RADIUS",
    "EIGHT_GAUSSIANS_STD",
    "FILE_FRACTIONS",
    "TOY_DENSITIES",
    "TOY_SIZES",
    "Dataset",
    "EntropyEstimate",
    "Standardize",
    "ToyDensity",
    "available",
    "checkerboard",
    "checkerboard_entropy",
    "checkerboard_log_prob",
    "circles",
    "dequantize",
    "describe",
    "eight_gaussians",
    "eight_gaussians_entropy",
    "eight_gaussians_log_prob",
    "encode_labels",
    "fit_standardization",
    "load",
    "load_array",
    "load_digits_dataset",
    "monte_carlo_entropy",
    "moons",
    "pinwheel",
    "read_columns",
    "read_labelled",
    "rings",
    "split_array",
    "swissroll",
    "two_spirals",
]
