"""Every sample distance at once, on bounded subsamples: the summary a comparison reports."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_int
from ._checks import check_pair
from .discrepancy import _energy, _mmd
from .transport import sliced_wasserstein, wasserstein2


def _subsample(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """At most ``k`` rows of ``x``, drawn without replacement (all of them, in order, if fewer)."""
    if x.shape[0] <= k:
        return x
    keep = torch.randperm(x.shape[0], generator=generator)[:k]
    return x[keep.to(x.device)]


def sample_distances(
    samples: Tensor,
    data: Tensor,
    seed: int = 0,
    max_w2: int = 2000,
    *,
    unbiased: bool = True,
    bandwidths: float | Sequence[float] | None = None,
    exact_w2: bool = True,
    stderr: bool = False,
) -> dict[str, float]:
    r"""All the sample distances between model samples and data, on subsamples of ``max_w2`` rows.

    Draws at most ``max_w2`` rows of each set without replacement (with a generator seeded with
    ``seed``; a set that small already is used whole), then computes on those same subsamples:

    - ``"mmd"``: :func:`mmd`, the unbiased MMD² with the default median-heuristic bandwidths
      (unitless);
    - ``"energy_distance"``: :func:`energy_distance`, unbiased (units of the data);
    - ``"sliced_wasserstein"``: :func:`sliced_wasserstein` with :math:`p = 2` and 256
      directions seeded with ``seed`` (units of the data);
    - ``"wasserstein2"``: :func:`wasserstein2`, the exact :math:`W_2` (units of the data);
      left out with ``exact_w2=False``, as it costs the most by far.

    Lower is better for all four; 0 means the distributions match (the unbiased MMD² and
    energy distance can dip slightly below 0 by sampling noise; with ``unbiased=False`` they are
    the V-statistics, never negative, and like the two Wasserstein distances above 0 even for
    two samples of one distribution: compare with the value for two draws of the data).
    ``max_w2`` bounds the cost, set by exact :math:`W_2` (seconds at 2000 points, cubic
    beyond). Each value depends on the sample size, so compare models at equal ``max_w2`` and
    equal sizes of ``samples``.

    Args:
        samples: ``(N, *)`` samples of the model, ``N >= 2``; images are flattened.
        data: ``(M, *)`` data, ``M >= 2``, same number of features, dtype and device.
        seed: the seed of the subsampling and of the sliced-Wasserstein directions.
        max_w2: the largest number of rows of each set used.
        unbiased: MMD² and energy distance as U-statistics (default) or V-statistics.
        bandwidths: the MMD bandwidths (see :func:`mmd`); ``None``: the median heuristic on
            the pooled subsamples. Fix them (e.g. from the data) to compare several models.
        exact_w2: compute the exact :math:`W_2` too.
        stderr: add ``"mmd_stderr"`` and ``"energy_distance_stderr"``, the standard errors of
            those two (see :class:`~flowforge.metrics.discrepancy.Estimate`), at no extra cost.

    Returns:
        ``{"mmd": ..., "energy_distance": ..., "sliced_wasserstein": ..., "wasserstein2": ...}``,
        Python floats.

    Example:
        >>> import torch
        >>> from flowforge.metrics import sample_distances
        >>> d = sample_distances(torch.randn(300, 2), torch.randn(300, 2), max_w2=200)
        >>> sorted(d)
        ['energy_distance', 'mmd', 'sliced_wasserstein', 'wasserstein2']
    """
    x, y = check_pair(samples, data, 2, names=("samples", "data"))
    seed = check_int(seed, "seed")
    # Two rows at least: MMD and the energy distance are U-statistics over distinct pairs.
    max_w2 = check_int(max_w2, "max_w2", 2)
    g = torch.Generator().manual_seed(seed)
    x = _subsample(x, max_w2, g)
    y = _subsample(y, max_w2, g)
    kernel = _mmd(x, y, bandwidths, unbiased)
    energy = _energy(x, y, unbiased)
    out = {
        "mmd": kernel.value,
        "energy_distance": energy.value,
        "sliced_wasserstein": sliced_wasserstein(x, y, seed=seed),
    }
    if stderr:
        out["mmd_stderr"], out["energy_distance_stderr"] = kernel.stderr, energy.stderr
    if exact_w2:
        out["wasserstein2"] = wasserstein2(x, y, max_samples=max_w2)
    return out
