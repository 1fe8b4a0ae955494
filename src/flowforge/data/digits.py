r"""scikit-learn's 8x8 handwritten digits as a continuous density on :math:`[0, 1)^{64}`."""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from .._checks import check_bool, check_int, check_seed
from .dataset import _MAX_LEVELS, Dataset

DIGITS_LEVELS = 17
"""Number of grey levels of a digits pixel: the integers 0 to 16."""

DIGITS_SPLIT = (1000, 350, 447)
"""Sizes of the fixed train / validation / test split of the 1797 digits."""

_SPLIT_SEED = 0
"""Seed of the permutation behind the split; fixed so test numbers compare across runs."""

DIGITS_SUMMARY = (
    "1797 8x8 handwritten digits (64-D or 1x8x8), 17 grey levels dequantised to [0, 1), "
    "fixed 1000/350/447 split, labels 0-9"
)
"""One line for ``flowforge datasets``."""

# Dequantisation offsets are drawn uniformly on [m, 1 - m] rather than [0, 1): float32 rounding
# of x and then of L * x moves L * x by at most L * 2^-25 + 2^-17 <= 2^-16 < m for L <= 256, so
# floor(L * x) == v stays exact and x < 1. The narrower interval changes the dequantisation
# bound of a 64-pixel image by 64 * ln(1 - 2m), about 4e-3 nats.
_MARGIN = 2.0**-15  # for every L <= _MAX_LEVELS (256, defined with Dataset)


@functools.cache
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as ``(1797, 64)`` integers 0..16 and their ``(1797,)`` labels; cached."""
    # Imported here: scikit-learn takes seconds to import and only this dataset needs it.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    values = np.asarray(bunch.data, dtype=np.int64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    return values, labels


def dequantize(values: Tensor, levels: int, generator: torch.Generator) -> Tensor:
    r"""Uniform dequantisation :math:`x = (v + u) / L`, :math:`u \sim U[0, 1)^D`: integers to
    :math:`[0, 1)`.

    A density :math:`p` of :math:`x` bounds the probability of the integers :math:`v` by
    :math:`\log P(v) \ge \mathbb{E}_u[\log p(x)] - D \log L`, so the continuous NLL plus
    :math:`D \log L` is an upper bound on the discrete one. :math:`v = \lfloor L x \rfloor` holds
    exactly for the returned float32 values.

    Args:
        values: ``(N, *)`` integers in ``[0, levels)``.
        levels: ``L``, the number of discrete levels, at most 256.
        generator: the random generator ``u`` is drawn from.

    Returns:
        float32 tensor shaped like ``values``, in :math:`[0, 1)`.

    References:
        Theis et al., "A note on the evaluation of generative models", 2016.
        https://arxiv.org/abs/1511.01844
    """
    if not isinstance(values, Tensor):
        raise TypeError(f"values must be a torch.Tensor, got {type(values).__name__}")
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise TypeError(f"values must be an integer tensor, got {values.dtype}")
    levels = check_int(levels, "levels", 2, maximum=_MAX_LEVELS)
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= levels):
        raise ValueError(
            f"values must lie in [0, {levels - 1}], got [{int(values.min())}, {int(values.max())}]"
        )
    u = _MARGIN + (1 - 2 * _MARGIN) * torch.rand(
        values.shape, generator=generator, dtype=torch.float64
    )
    return ((values.double() + u) / levels).float()


def quantize(x: Tensor, levels: int) -> Tensor:
    r"""The levels :math:`v = \lfloor L x \rfloor` of dequantised values :math:`x \in [0, 1)`.

    The inverse of :func:`dequantize`'s rounding: ``quantize(dequantize(v, L, g), L) == v``
    exactly, so fresh noise can be drawn for the same levels,
    ``dequantize(quantize(x, L), L, g)`` (the training loop does this for every batch of
    dequantised data, :func:`~flowforge.train.train`'s ``levels``).

    Args:
        x: ``(N, *)`` floating-point values in ``[0, 1)``.
        levels: ``L``, the number of discrete levels, at most 256.

    Returns:
        ``uint8`` tensor shaped like ``x`` (every level fits: ``L <= 256``).

    Raises:
        ValueError: ``x`` has values outside ``[0, 1)`` (it was not dequantised from levels).

    Example:
        >>> import torch
        >>> from flowforge.data import dequantize, quantize
        >>> v = torch.tensor([[0, 16, 3]])
        >>> bool((quantize(dequantize(v, 17, torch.Generator()), 17) == v).all())
        True
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"x must be a floating-point tensor of dequantised values, got {x.dtype}")
    levels = check_int(levels, "levels", 2, maximum=_MAX_LEVELS)
    if x.numel() and not (float(x.min()) >= 0 and float(x.max()) < 1):
        raise ValueError(
            f"x must lie in [0, 1) to be dequantised levels, got values in "
            f"[{float(x.min()):g}, {float(x.max()):g}]; give levels only for data made with "
            "flowforge.data.dequantize (digits, image files), on the unstandardised scale"
        )
    return torch.floor(x.double() * levels).to(torch.uint8)


def load_digits_dataset(image: bool = False, seed: int = 0) -> Dataset:
    r"""The 1797 8x8 digits of scikit-learn, dequantised, with a fixed 1000/350/447 split.

    Each pixel is an integer :math:`v \in \{0, \dots, 16\}` (17 levels), made continuous by
    :func:`dequantize`: :math:`x = (v + u) / 17`, :math:`u \sim U[0, 1)`, so
    :math:`x \in [0, 1)` and :math:`v = \lfloor 17 x \rfloor`. The split comes from one fixed
    permutation (the same for every ``seed``, so test numbers compare across runs); ``seed``
    only chooses the dequantisation noise. The images ship with scikit-learn: no download.

    Args:
        image: return images ``(N, 1, 8, 8)`` instead of flat vectors ``(N, 64)``.
        seed: seed of the dequantisation noise.

    Returns:
        A :class:`Dataset` named ``"digits"`` with ``levels=17`` and the class labels 0..9 of
        every split; no exact log-density.

    References:
        Alpaydin and Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine Learning
        Repository, 1998. https://doi.org/10.24432/C50P49

    Example:
        >>> from flowforge.data import load_digits_dataset
        >>> ds = load_digits_dataset(image=True)
        >>> tuple(ds.train.shape), tuple(ds.test.shape), ds.levels
        ((1000, 1, 8, 8), (447, 1, 8, 8), 17)
    """
    check_bool(image, "image")
    check_seed(seed)
    values, labels = _raw_digits()
    perm = torch.randperm(len(values), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    g = torch.Generator().manual_seed(seed)
    x = dequantize(torch.from_numpy(values)[perm], DIGITS_LEVELS, g)
    y = torch.from_numpy(labels)[perm]
    event_shape = (1, 8, 8) if image else (64,)
    x = x.reshape(len(x), *event_shape)
    n_train, n_val, _ = DIGITS_SPLIT
    cuts = [0, n_train, n_train + n_val, len(x)]
    splits = {k: slice(cuts[i], cuts[i + 1]) for i, k in enumerate(("train", "val", "test"))}
    return Dataset(
        name="digits",
        train=x[splits["train"]].clone(),
        val=x[splits["val"]].clone(),
        test=x[splits["test"]].clone(),
        event_shape=event_shape,
        labels={k: y[s].clone() for k, s in splits.items()},
        num_classes=10,
        levels=DIGITS_LEVELS,
        dequantization="uniform",
        description=DIGITS_SUMMARY,
        image_shape=(1, 8, 8),
    )
