"""Two-sample discrepancies from pairwise distances: kernel MMD and the energy distance."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import Tensor

from ._checks import check_pair, check_real

#: Multipliers of the median pairwise distance that give the default MMD bandwidths: two
#: octaves either side of the median heuristic, so the kernel sees both fine and coarse structure.
BANDWIDTH_MULTIPLIERS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)

# At most this many entries of a distance matrix at once (64 MiB in float32): large samples are
# processed in row blocks instead of materialising the whole N x M matrix.
_BLOCK_ENTRIES = 2**24

# The median heuristic uses at most this many pooled points (about 8.4 million distances), a
# seeded random subset beyond that: the median is already stable, and the cost stays bounded.
_MEDIAN_POINTS = 4096


def _distances(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distances ``(n, m)`` between the rows of ``a (n, D)`` and ``b (m, D)``.

    Computed from differences, not from ``|a|^2 + |b|^2 - 2 a.b``: that expansion cancels
    catastrophically for nearby points, so a point's distance to itself would not be exactly 0.
    """
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _pair_sums(
    a: Tensor, b: Tensor, fn: Callable[[Tensor], Tensor], same: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Sums of :math:`f(\lVert a_i - b_j \rVert)` over all pairs (:math:`i \ne j` if ``same``):
    the total, the row sums ``(n,)`` (over :math:`j`) and the column sums ``(m,)`` (over
    :math:`i`), the last two for standard errors.

    ``same`` means ``b`` is ``a``: the diagonal terms are then exactly :math:`f(0)` each, since
    the distances are computed from differences, and are subtracted.
    """
    step = max(1, _BLOCK_ENTRIES // b.shape[0])
    rows, cols = [], b.new_zeros(b.shape[0])
    for start in range(0, a.shape[0], step):
        block = fn(_distances(a[start : start + step], b))
        rows.append(block.sum(dim=1))
        cols = cols + block.sum(dim=0)
    row_sums = torch.cat(rows)
    if same:
        f0 = fn(a.new_zeros(()))
        row_sums, cols = row_sums - f0, cols - f0
    return row_sums.sum(), row_sums, cols


@dataclass(frozen=True)
class Estimate:
    r"""A two-sample statistic and its standard error.

    Attributes:
        value: the estimate.
        stderr: its standard error, from the first-order (Hoeffding) projection of the
            statistic onto single points: :math:`\sqrt{\mathrm{Var}(a_i)/N + \mathrm{Var}(b_j)/M}`
            with :math:`a_i, b_j` each point's influence. Near 0 for two samples of one
            distribution, where the statistic is degenerate and its spread is of the order of
            its (V-statistic) bias instead.
    """

    value: float
    stderr: float


def _mmd_form(x: Tensor, y: Tensor, fn: Callable[[Tensor], Tensor], unbiased: bool) -> Estimate:
    r""":math:`\bar K_{xx} + \bar K_{yy} - 2 \bar K_{xy}` for :math:`K = f(\lVert a - b \rVert)`
    (means over distinct or all pairs), with its standard error."""
    n, m = x.shape[0], y.shape[0]
    with torch.no_grad():
        sxx, rxx, _ = _pair_sums(x, x, fn, same=unbiased)
        syy, ryy, _ = _pair_sums(y, y, fn, same=unbiased)
        sxy, rxy, cxy = _pair_sums(x, y, fn)
        value = sxx / _pairs(n, unbiased) + syy / _pairs(m, unbiased) - 2.0 * sxy / (n * m)
        # Influence of each point: twice its mean kernel to its own sample minus to the other.
        a = 2.0 * rxx / (n - 1 if unbiased else n) - 2.0 * rxy / m
        b = 2.0 * ryy / (m - 1 if unbiased else m) - 2.0 * cxy / n
        var = a.var() / n + b.var() / m
    # A V-statistic is a squared distance between empirical distributions, >= 0 exactly; only
    # float rounding can put it a hair below 0 (identical samples), so that is clipped.
    estimate = float(value) if unbiased else max(float(value), 0.0)
    return Estimate(estimate, float(var.clamp(min=0).sqrt()))


def median_distance(x: Tensor, y: Tensor) -> float:
    r"""Median pairwise distance :math:`\mathrm{median}_{i<j} |z_i - z_j|` of :math:`z = x \cup y`.

    Beyond 4096 pooled points, the median is taken over a random subset of 4096 of them, drawn
    with a fixed seed so the result is reproducible.

    Args:
        x: ``(N, *)`` samples.
        y: ``(M, *)`` samples of the same dimension.
    """
    x, y = check_pair(x, y, 1)
    pooled = torch.cat([x, y])
    if pooled.shape[0] > _MEDIAN_POINTS:
        g = torch.Generator().manual_seed(0)
        keep = torch.randperm(pooled.shape[0], generator=g)[:_MEDIAN_POINTS]
        pooled = pooled[keep.to(pooled.device)]
    with torch.no_grad():
        return float(torch.pdist(pooled).median())


def _check_bandwidths(bandwidths: float | Sequence[float]) -> list[float]:
    if isinstance(bandwidths, (Tensor, np.ndarray)):
        bandwidths = bandwidths.reshape(-1).tolist()
    if not isinstance(bandwidths, Sequence):
        bandwidths = [bandwidths]
    if len(bandwidths) == 0:
        raise ValueError("bandwidths must hold at least one positive number, got an empty sequence")
    return [check_real(h, f"bandwidths[{i}]", above=0) for i, h in enumerate(bandwidths)]


def mmd(
    x: Tensor,
    y: Tensor,
    bandwidths: float | Sequence[float] | None = None,
    *,
    unbiased: bool = True,
) -> float:
    r"""Estimate of the squared maximum mean discrepancy :math:`\mathrm{MMD}^2(P, Q)`.

    .. math::
        \widehat{\mathrm{MMD}}^2 = \frac{1}{N(N-1)} \sum_{i \ne j} k(x_i, x_j)
            + \frac{1}{M(M-1)} \sum_{i \ne j} k(y_i, y_j)
            - \frac{2}{NM} \sum_{i, j} k(x_i, y_j),

    with the sum of Gaussian (RBF) kernels
    :math:`k(a, b) = \sum_{h} \exp\!\big(-\lVert a - b \rVert^2 / (2 h^2)\big)` over the
    bandwidths :math:`h`. Each kernel is characteristic, so :math:`\mathrm{MMD}^2 = 0` exactly
    when :math:`P = Q`; with the kernels summed, :math:`\mathrm{MMD}^2` is the sum of the
    single-bandwidth values, and several bandwidths keep the test sensitive at several scales.
    The estimate is an unbiased U-statistic, so it scatters around 0 for two samples of one
    distribution and can be slightly negative; it lies in :math:`[-2K, 2K]` for :math:`K`
    bandwidths. It is unitless.

    With ``unbiased=False`` the within-sample sums run over all pairs, :math:`i = j` included,
    divided by :math:`N^2` and :math:`M^2`: the biased V-statistic
    :math:`\lVert \hat\mu_P - \hat\mu_Q \rVert^2_{\mathcal H}` of the empirical kernel mean
    embeddings, never negative, and above 0 by a sample-size-dependent bias even when
    :math:`P = Q`: compare it with the value for two samples of the data of the same sizes.

    By default the bandwidths are the median pairwise distance :math:`m` of the pooled sample
    (the median heuristic) times :data:`BANDWIDTH_MULTIPLIERS` ``(0.25, 0.5, 1, 2, 4)``. These
    depend on the samples, so compare two models against one data set with fixed ``bandwidths``
    (e.g. from :func:`median_distance` of the data) when the values must be comparable.

    Cost: :math:`O((N + M)^2 D)` time, memory bounded by processing row blocks.

    Args:
        x: ``(N, *)`` samples of :math:`P`, ``N >= 2``; images are flattened.
        y: ``(M, *)`` samples of :math:`Q`, ``M >= 2``, same number of features, dtype and device.
        bandwidths: one or several positive bandwidths :math:`h`, in the units of the data,
            or ``None`` for the median heuristic above.
        unbiased: the U-statistic (default) or, with ``False``, the V-statistic (``>= 0``).

    Returns:
        :math:`\widehat{\mathrm{MMD}}^2`, a Python float.

    Raises:
        ValueError: bad shapes or values (see the user guide), a non-positive bandwidth, or a
            median pairwise distance of 0 with ``bandwidths=None``.

    References:
        A Kernel Two-Sample Test (Gretton et al., 2012), JMLR 13(25):723-773
        https://jmlr.org/papers/v13/gretton12a.html

    Example:
        >>> import torch
        >>> from flowforge.metrics import mmd
        >>> x, y = torch.randn(500, 2), torch.randn(500, 2) + 1.0
        >>> mmd(x, y) > mmd(x, torch.randn(500, 2))
        True
    """
    x, y = check_pair(x, y, 2)
    return _mmd(x, y, bandwidths, unbiased).value


def _mmd(
    x: Tensor, y: Tensor, bandwidths: float | Sequence[float] | None, unbiased: bool
) -> Estimate:
    """:func:`mmd` with its standard error, for checked ``x`` and ``y``."""
    if bandwidths is None:
        median = median_distance(x, y)
        if median == 0.0:
            raise ValueError(
                "the median pairwise distance of x and y is 0 (more than half of the pairs "
                "coincide), so the median heuristic gives no bandwidth; pass bandwidths="
            )
        bandwidths = [median * c for c in BANDWIDTH_MULTIPLIERS]
    else:
        bandwidths = _check_bandwidths(bandwidths)

    def kernel(d: Tensor) -> Tensor:
        d2 = d.square()
        # bandwidths is non-empty, so the sum is a Tensor (never the start value 0).
        return cast(Tensor, sum(torch.exp(d2 * (-0.5 / (h * h))) for h in bandwidths))

    return _mmd_form(x, y, kernel, unbiased)


def energy_distance(x: Tensor, y: Tensor, *, unbiased: bool = True) -> float:
    r"""Energy distance :math:`\mathcal E = 2 \mathbb E|X-Y| - \mathbb E|X-X'| - \mathbb E|Y-Y'|`.

    With :math:`|\cdot|` the Euclidean norm, :math:`X, X' \sim P` and :math:`Y, Y' \sim Q`
    independent. :math:`\mathcal E \ge 0`, with equality exactly when :math:`P = Q` (for finite
    first moments). It is estimated without bias, with U-statistics for the within-sample terms:

    .. math::
        \hat{\mathcal E} = \frac{2}{NM} \sum_{i,j} \lVert x_i - y_j \rVert
            - \frac{1}{N(N-1)} \sum_{i \ne j} \lVert x_i - x_j \rVert
            - \frac{1}{M(M-1)} \sum_{i \ne j} \lVert y_i - y_j \rVert,

    which can be slightly negative when :math:`P = Q`. With ``unbiased=False`` the within-sample
    means run over all :math:`N^2` and :math:`M^2` pairs (the zero distances of :math:`i = j`
    included): the V-statistic, the energy distance between the two empirical distributions,
    never negative, and above 0 by a sample-size-dependent bias even when :math:`P = Q`. This
    is the squared form (in the units of
    the data): ``scipy.stats.energy_distance`` returns the square root of the biased
    V-statistic version instead. It is :math:`\mathrm{MMD}^2` with the distance-induced kernel,
    needs no bandwidth, and is invariant to rotations and translations of both samples.

    Cost: :math:`O((N + M)^2 D)` time, memory bounded by processing row blocks.

    Args:
        x: ``(N, *)`` samples of :math:`P`, ``N >= 2``; images are flattened.
        y: ``(M, *)`` samples of :math:`Q`, ``M >= 2``, same number of features, dtype and device.
        unbiased: the U-statistic (default) or, with ``False``, the V-statistic (``>= 0``).

    Returns:
        :math:`\hat{\mathcal E}`, a Python float.

    References:
        Energy statistics: A class of statistics based on distances (Székely & Rizzo, 2013),
        Journal of Statistical Planning and Inference 143(8):1249-1272
        https://doi.org/10.1016/j.jspi.2013.03.018

    Example:
        >>> import torch
        >>> from flowforge.metrics import energy_distance
        >>> x = torch.tensor([[0.0], [2.0]])
        >>> energy_distance(x, x + 1.0)  # 2 * 1.5 - 2 - 2
        -1.0
    """
    x, y = check_pair(x, y, 2)
    return _energy(x, y, unbiased).value


def _energy(x: Tensor, y: Tensor, unbiased: bool) -> Estimate:
    """:func:`energy_distance` with its standard error, for checked ``x`` and ``y``."""

    def negative(d: Tensor) -> Tensor:
        # 2 E|X-Y| - E|X-X'| - E|Y-Y'| is the MMD form with the "kernel" -|a - b|.
        return -d

    return _mmd_form(x, y, negative, unbiased)


def _pairs(n: int, unbiased: bool) -> int:
    """Number of pairs in a within-sample sum: distinct (U-statistic) or all (V-statistic)."""
    return n * (n - 1) if unbiased else n * n
