"""Datasets: the classic 2-D densities, the 8x8 digits, the user's files and images;
standardisation.

``load(source)`` turns a built-in name (see ``available()``), a ``.npy`` / ``.npz`` / ``.csv``
path or a folder of PNG/JPEG images into a :class:`Dataset` of train / validation / test
tensors, with the exact log-density and entropy where they are known, and the levels of
discrete data. :class:`Standardize` wraps a model trained on standardised
data so that it answers in the user's units.
"""

from .dataset import FILE_FRACTIONS, TOY_SIZES, Dataset, available, describe, load
from .digits import DIGITS_LEVELS, DIGITS_SPLIT, dequantize, load_digits_dataset, quantize
from .files import encode_labels, load_array, read_columns, read_labelled, split_array
from .images import (
    IMAGE_LEVELS,
    IMAGE_SUFFIXES,
    LAYOUTS,
    MODES,
    ImageValues,
    image_files,
    image_layout,
    load_image_dataset,
    read_image_array,
    read_image_folder,
)
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
    "IMAGE_LEVELS",
    "IMAGE_SUFFIXES",
    "LAYOUTS",
    "MODES",
    "TOY_DENSITIES",
    "TOY_SIZES",
    "Dataset",
    "EntropyEstimate",
    "ImageValues",
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
    "image_files",
    "image_layout",
    "load",
    "load_array",
    "load_digits_dataset",
    "load_image_dataset",
    "monte_carlo_entropy",
    "moons",
    "pinwheel",
    "quantize",
    "read_columns",
    "read_image_array",
    "read_image_folder",
    "read_labelled",
    "rings",
    "split_array",
    "swissroll",
    "two_spirals",
]
