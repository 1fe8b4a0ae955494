"""Optimal-transport distances: Monte-Carlo sliced Wasserstein and exact W2 through POT."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int
from ._checks import check_pair, check_real

# POT's network simplex result codes (ot.lp): anything but OPTIMAL means the cost is not W2^2.
_OPTIMAL = 1


def _quantile_coupling(
    n: int, m: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    r"""The monotone coupling of two uniform 1-D empirical measures of sizes ``n`` and ``m``.

    The quantile functions of the sorted samples are step functions, constant between the
    cumulative masses :math:`i / n` and :math:`j / m`. On each interval between consecutive
    breakpoints of the union, the optimal (monotone) plan matches one sorted ``x`` to one sorted
    ``y``. Breakpoints are kept as integers in units of :math:`1 / (nm)`, so no interval is lost
    or split by rounding.

    Returns:
        ``ix (K,)`` and ``iy (K,)``, indices into the sorted samples, and ``mass (K,)``, the
        length of each interval (``dtype``), summing to 1; :math:`K \le n + m - 1`.
    """
    bx = torch.arange(1, n + 1, device=device) * m
    by = torch.arange(1, m + 1, device=device) * n
    q = torch.unique(torch.cat([bx, by]))  # sorted; a shared breakpoint would give zero mass
    mass = torch.diff(q, prepend=q.new_zeros(1)).to(dtype) / (n * m)
    # The interval ending at q belongs to the ceil(q / m)-th sorted x and ceil(q / n)-th y.
    ix = (q + m - 1) // m - 1
    iy = (q + n - 1) // n - 1
    return ix, iy, mass


def sliced_wasserstein(
    x: Tensor, y: Tensor, n_projections: int = 256, p: float = 2.0, seed: int = 0
) -> float:
    r"""Sliced Wasserstein distance :math:`(\mathbb E_\theta W_p^p(\theta_\#P, \theta_\#Q))^{1/p}`.

    A Monte-Carlo estimate of :math:`\mathrm{SW}_p`: the directions :math:`\theta` are drawn
    uniformly on the unit sphere :math:`S^{D-1}` (normalised Gaussians from a generator seeded
    with ``seed``, on the CPU in float64, so they do not depend on the device). Both samples are
    projected on each direction, and the 1-D distance is exact: with sorted projections and
    uniform weights, :math:`W_p^p = \int_0^1 |F^{-1}(t) - G^{-1}(t)|^p \, dt`, the quantile
    functions being step functions. ``N != M`` is allowed: the integral is split at every
    :math:`i/N` and :math:`j/M`, which is the exact 1-D optimal transport between unequal
    sample sizes.

    The result is the :math:`p`-th root of the average of :math:`W_p^p` over the directions, in
    the units of the data. It is smaller than :math:`W_p`: for :math:`P = \mathcal N(0, I_D)`
    and :math:`Q = \mathcal N(\mu, I_D)` each direction gives
    :math:`W_2 = |\langle \mu, \theta \rangle|`, whose square averages to
    :math:`\lVert\mu\rVert^2 / D` over the sphere, so
    :math:`\mathrm{SW}_2 = \lVert\mu\rVert / \sqrt D` while :math:`W_2 = \lVert\mu\rVert`.
    Use it to compare models of one data set, not across dimensions. The Monte-Carlo error
    shrinks as :math:`1 / \sqrt{n_\text{projections}}`.

    Cost: :math:`O(n_\text{proj} (N + M)(D + \log(N + M)))` time, :math:`O(n_\text{proj}(N + M))`
    memory: cheap for large samples where exact transport is out of reach.

    Args:
        x: ``(N, *)`` samples of :math:`P`; images are flattened.
        y: ``(M, *)`` samples of :math:`Q`, same number of features, dtype and device.
        n_projections: the number of random directions.
        p: the order :math:`p \ge 1`.
        seed: the seed of the directions; equal seeds give equal directions.

    Returns:
        :math:`\mathrm{SW}_p`, a Python float.

    References:
        Sliced and Radon Wasserstein Barycenters of Measures (Bonneel et al., 2015), Journal of
        Mathematical Imaging and Vision 51:22-45 https://doi.org/10.1007/s10851-014-0506-3

    Example:
        >>> import torch
        >>> from flowforge.metrics import sliced_wasserstein
        >>> x = torch.randn(1000, 2)
        >>> round(sliced_wasserstein(x, x), 6)
        0.0
    """
    x, y = check_pair(x, y, 1)
    n_projections = check_int(n_projections, "n_projections", 1)
    # Below 1, |a - b|^p is not a metric cost and the monotone coupling is not optimal.
    p = check_real(p, "p", 1)
    seed = check_int(seed, "seed")

    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], n_projections, generator=g, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(device=x.device, dtype=x.dtype)
    ix, iy, mass = _quantile_coupling(x.shape[0], y.shape[0], x.device, x.dtype)
    with torch.no_grad():
        px = (x @ theta).sort(dim=0).values  # (N, n_projections)
        py = (y @ theta).sort(dim=0).values
        cost = (px[ix] - py[iy]).abs().pow(p)  # (K, n_projections)
        wpp = (mass[:, None] * cost).sum(dim=0)
        return float(wpp.mean() ** (1.0 / p))


def wasserstein2(x: Tensor, y: Tensor, max_samples: int = 5000) -> float:
    r"""Exact 2-Wasserstein distance :math:`W_2 = (\min_\pi \sum_{ij} \pi_{ij} |x_i-y_j|^2)^{1/2}`.

    The minimum runs over couplings :math:`\pi` of the uniform weights :math:`1/N` on ``x`` and
    :math:`1/M` on ``y``, solved exactly by POT's network simplex (``ot.emd2``) on the
    squared-Euclidean cost matrix, built in float64 on the CPU. The result is :math:`W_2`
    itself, the square root of that optimal cost, in the units of the data (not squared):
    translating a sample by :math:`s` gives :math:`W_2 = \lVert s \rVert`.

    Between two finite samples this is the exact distance of the empirical measures; as an
    estimate of :math:`W_2(P, Q)` it is biased upwards, strongly so in high dimension (the
    empirical measure of :math:`N` points converges at rate :math:`N^{-1/D}`). Compare models
    at equal sample sizes.

    Cost: :math:`O(NM)` memory and roughly cubic time in :math:`N + M` (a few seconds for
    2000 points against 2000), hence ``max_samples``.

    Args:
        x: ``(N, *)`` samples of :math:`P`; images are flattened.
        y: ``(M, *)`` samples of :math:`Q`, same number of features, dtype and device.
        max_samples: the largest ``N`` or ``M`` accepted.

    Returns:
        :math:`W_2`, a Python float.

    Raises:
        ValueError: ``N`` or ``M`` exceeds ``max_samples`` (subsample first), or bad inputs.
        RuntimeError: the solver stopped before optimality.

    References:
        Computational Optimal Transport (Peyré & Cuturi, 2019) https://arxiv.org/abs/1803.00567

        POT: Python Optimal Transport (Flamary et al., 2021), JMLR 22(78):1-8
        https://jmlr.org/papers/v22/20-451.html

    Example:
        >>> import torch
        >>> from flowforge.metrics import wasserstein2
        >>> x = torch.randn(100, 2, dtype=torch.float64)
        >>> round(wasserstein2(x, x + torch.tensor([3.0, 4.0], dtype=torch.float64)), 6)
        5.0
    """
    x, y = check_pair(x, y, 1)
    max_samples = check_int(max_samples, "max_samples", 1)
    n, m = x.shape[0], y.shape[0]
    if max(n, m) > max_samples:
        raise ValueError(
            f"exact W2 costs O(N*M) memory and about cubic time; got N={n}, M={m} samples, "
            f"more than max_samples={max_samples}: subsample both, e.g. x[torch.randperm(N)"
            f"[:{max_samples}]], or raise max_samples"
        )
    with torch.no_grad():
        xc = x.detach().to("cpu", torch.float64)
        yc = y.detach().to("cpu", torch.float64)
        cost = torch.cdist(xc, yc, compute_mode="donot_use_mm_for_euclid_dist").square().numpy()
    import ot  # POT imports scikit-learn: loaded on first use, not with flowforge

    a = np.full(n, 1.0 / n)
    b = np.full(m, 1.0 / m)
    # The pivot count stays well below the number of cost entries in practice (about 0.2 N M at
    # N = M = 2000, where POT's default cap of 1e5 is too low); N M still bounds the runtime.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a stop is reported below, as an error
        value, log = ot.emd2(a, b, cost, numItermax=max(100_000, n * m), log=True)
    if log["result_code"] != _OPTIMAL:
        raise RuntimeError(f"ot.emd2 did not reach the optimal transport plan: {log['warning']}")
    return math.sqrt(max(float(value), 0.0))
