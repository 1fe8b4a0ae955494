"""Every sample distance at once, on bounded subsamples: the summary a comparison reports."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_int
from ._checks import check_pair
from .discrepancy import energy_distance, mmd
from .transport import sliced_wasserstein, wasserstein2


def _subsample(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """At most ``k`` rows of ``x``, drawn without replacement (all of them, in order, if fewer)."""
    if x.shape[0] <= k:
        return x
    keep = torch.randperm(x.shape[0], generator=generator)[:k]
    return x[keep.to(x.device)]


def sample_distances(
    samples: Tensor, data: Tensor, seed: int = 0, max_w2: int = 2000
) -> dict[str, float]:
    r"""All the sample distances between model samples and data, on subsamples of ``max_w2`` rows.

    Draws at most ``max_w2`` rows of each set without replacement (with a generator seeded with
    ``seed``; a set that small already is used whole), then computes on those same subsamples:

    - ``"mmd"``: :func:`mmd`, the unbiased MMD² with the default median-heuristic bandwidths
      (unitless);
    - ``"energy_distance"``: :func:`energy_distance`, unbiased (units of the data);
    - ``"sliced_wasserstein"``: :func:`sliced_wasserstein` with :math:`p = 2` and 256
      directions seeded with ``seed`` (units of the data);
    - ``"wasserstein2"``: :func:`wasserstein2`, the exact :math:`W_2` (units of the data).

    Lower is better for all four; 0 means the distributions match (MMD² and the energy
    distance can dip slightly below 0 by sampling noise). ``max_w2`` bounds the cost, set by
    exact :math:`W_2` (seconds at 2000 points, cubic beyond). Each value depends on the
    sample size, so compare models at equal ``max_w2`` and equal sizes of ``samples``.

    Args:
        samples: ``(N, *)`` samples of the model, ``N >= 2``; images are flattened.
        data: ``(M, *)`` data, ``M >= 2``, same number of features, dtype and device.
        seed: the seed of the subsampling and of the sliced-Wasserstein directions.
        max_w2: the largest number of rows of each set used.

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
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    # Two rows at least: MMD and the energy distance are U-statistics over distinct pairs.
    max_w2 = check_int(max_w2, "max_w2", 2)
    g = torch.Generator().manual_seed(seed)
    x = _subsample(x, max_w2, g)
    y = _subsample(y, max_w2, g)
    return {
        "mmd": mmd(x, y),
        "energy_distance": energy_distance(x, y),
        "sliced_wasserstein": sliced_wasserstein(x, y, seed=seed),
        "wasserstein2": wasserstein2(x, y, max_samples=max_w2),
    }
