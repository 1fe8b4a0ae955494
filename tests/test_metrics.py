"""Metrics against known answers: closed forms, hand computations, brute force and identities.

Where a closed form concerns a distribution, the samples are quantile grids
(:math:`\\Phi^{-1}((i - 1/2) / N)`) when the answer must be sharp: their empirical measure
approaches the normal at rate :math:`1/N`, not :math:`1/\\sqrt N` like random draws.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import ot
import pytest
import torch
from scipy.stats import norm, wasserstein_distance
from torch import Tensor

import flowforge as ff
from flowforge.metrics import (
    BANDWIDTH_MULTIPLIERS,
    NFECounter,
    NLLResult,
    bits_per_dim,
    energy_distance,
    median_distance,
    mmd,
    nll,
    sample_distances,
    sliced_wasserstein,
    wasserstein2,
)

F64 = torch.float64


def normal_grid(n: int) -> Tensor:
    """The ``n`` quantiles of N(0, 1) at probabilities (i + 1/2) / n, float64 ``(n,)``."""
    return torch.tensor(norm.ppf((np.arange(n) + 0.5) / n), dtype=F64)


class StandardNormalModel:
    """A model whose ``log_prob`` is the N(0, I) log-density (and that records grad mode)."""

    def __init__(self):
        self.grad_enabled: list[bool] = []

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        self.grad_enabled.append(torch.is_grad_enabled())
        return -0.5 * x.square().sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi)


class LookupModel:
    """A density on [0, 1) that is constant on each of ``L`` cells: p(x) = L * P[floor(L x)]."""

    def __init__(self, probs: Tensor):
        self.probs = probs

    def log_prob(self, x: Tensor) -> Tensor:
        levels = self.probs.numel()
        cell = (x[:, 0] * levels).floor().long()
        return torch.log(levels * self.probs[cell])


# -- nll ------------------------------------------------------------------------------------------
def test_nll_of_standard_normal_samples_is_its_entropy():
    d, n = 3, 4000
    x = torch.randn(n, d, dtype=F64)
    result = nll(StandardNormalModel(), x)
    entropy = d / 2 * (1 + math.log(2 * math.pi))
    assert isinstance(result, NLLResult) and result.n == n
    assert abs(result.mean - entropy) < 4 * result.stderr
    # -log p = |x|^2 / 2 + const has variance D / 2, so the standard error is sqrt(D / 2 / n).
    assert result.stderr == pytest.approx(math.sqrt(d / 2 / n), rel=0.1)


def test_nll_runs_without_grad():
    model = StandardNormalModel()
    nll(model, torch.randn(10, 2), batch_size=3)
    assert model.grad_enabled == [False] * 4


def test_nll_does_not_depend_on_chunking():
    model = ff.models.create("maf", dim=3).eval()
    x = torch.randn(50, 3)
    whole = nll(model, x)
    chunked = nll(model, x, batch_size=7)
    assert chunked.n == whole.n == 50
    assert chunked.mean == pytest.approx(whole.mean, rel=1e-6)
    assert chunked.stderr == pytest.approx(whole.stderr, rel=1e-5)
    expected = -model.log_prob(x).detach().double()
    assert whole.mean == pytest.approx(float(expected.mean()), rel=1e-6)


def test_nll_passes_each_chunk_its_own_context():
    class Centred:
        def log_prob(self, x, context=None):
            return -(x - context).square().sum(1)

    context = torch.randn(10, 2)
    result = nll(Centred(), context.clone(), context=context, batch_size=3)
    assert result.mean == 0.0 and result.stderr == 0.0


def test_nll_reports_non_finite_log_probs():
    class Holes:
        def log_prob(self, x):
            lp = torch.zeros(x.shape[0])
            lp[x[:, 0] < 0] = -math.inf
            return lp

    x = torch.ones(10, 1)
    x[[1, 4, 8], 0] = -1.0
    with pytest.raises(ValueError, match=r"3 of 10 samples \(first: 1, 4, 8\)"):
        nll(Holes(), x, batch_size=4)


def test_nll_rejects_bad_arguments():
    model, x = StandardNormalModel(), torch.randn(5, 2)
    with pytest.raises(TypeError, match="model must have a log_prob"):
        nll(object(), x)
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        nll(model, x.numpy())
    with pytest.raises(ValueError, match="at least 2 samples"):
        nll(model, x[:1])
    with pytest.raises(ValueError, match=r"context must have one row per sample of x, shape \(5"):
        nll(model, x, context=torch.zeros(4, 1))
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        nll(model, x, batch_size=0)

    class Column:
        def log_prob(self, x):
            return torch.zeros(x.shape[0], 1)

    with pytest.raises(ValueError, match=r"shape \(5,\), got \(5, 1\)"):
        nll(Column(), x)


# -- bits per dimension ---------------------------------------------------------------------------
def test_bits_per_dim_converts_nats_by_hand():
    assert bits_per_dim(10.0, 5) == pytest.approx(10.0 / (5 * math.log(2)), rel=1e-15)
    assert bits_per_dim(64 * math.log(2), 64) == pytest.approx(1.0, rel=1e-15)
    assert bits_per_dim(64 * math.log(2), 64, levels=256) == pytest.approx(9.0, rel=1e-15)
    assert bits_per_dim(-3.0, 2, levels=17) == pytest.approx(
        -3.0 / (2 * math.log(2)) + math.log2(17), rel=1e-15
    )
    assert bits_per_dim(torch.tensor(2.0), 1) == pytest.approx(2 / math.log(2))


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_uniform_density_on_dequantised_uniform_data_gives_log2_levels(levels):
    d, n = 4, 1000
    v = torch.randint(0, levels, (n, d))
    x = (v + torch.rand(n, d)) / levels  # uniform dequantisation into [0, 1)^D

    class Uniform:
        def log_prob(self, x):
            inside = ((x >= 0) & (x < 1)).all(1)
            return torch.where(inside, 0.0, -math.inf)

    result = nll(Uniform(), x)
    assert result.mean == 0.0
    # log2(L) bits per dimension is the entropy of uniform data on L levels, exactly.
    assert bits_per_dim(result.mean, d, levels=levels) == pytest.approx(math.log2(levels), 1e-15)


def test_dequantisation_bound_is_tight_for_a_piecewise_constant_density():
    # p(x) = L P(v) on the cell of v gives log p(x) - log L = log P(v): the bound is an equality,
    # so the corrected bits/dim equals the discrete data's -log2 P(v) per dimension, sample by
    # sample; with the correction's sign flipped it would be off by 2 log2(L) = 4 bits.
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)
    v = torch.multinomial(probs, 5000, replacement=True)
    x = ((v + torch.rand(5000, dtype=F64)) / 4).unsqueeze(1)
    bpd = bits_per_dim(nll(LookupModel(probs), x).mean, dim=1, levels=4)
    assert bpd == pytest.approx(float(-torch.log2(probs[v]).mean()), rel=1e-12)
    entropy_bits = float(-(probs * probs.log2()).sum())
    assert bpd == pytest.approx(entropy_bits, abs=0.05)


def test_bits_per_dim_rejects_bad_arguments():
    with pytest.raises(ValueError, match="dim must be an int >= 1, got 0"):
        bits_per_dim(1.0, 0)
    with pytest.raises(ValueError, match="levels must be an int >= 2, got 1"):
        bits_per_dim(1.0, 2, levels=1)
    with pytest.raises(TypeError, match="levels must be an int"):
        bits_per_dim(1.0, 2, levels=256.0)
    with pytest.raises(ValueError, match="nll_nats must be a finite number"):
        bits_per_dim(math.nan, 2)
    with pytest.raises(TypeError, match=r"pass nll\(...\).mean"):
        bits_per_dim(NLLResult(1.0, 0.1, 10), 2)


# -- MMD ------------------------------------------------------------------------------------------
def gaussian_mmd2(shift: float, bandwidths, d: int) -> float:
    """MMD² between N(0, I_D) and N(mu, I_D), |mu| = shift, for a sum of RBF kernels.

    For Z ~ N(m, s² I_D): E exp(-|Z|² / (2h²)) = (h² / (h² + s²))^(D/2) exp(-|m|² / (2(h² + s²)));
    X - X' and X - Y have variance s² = 2 per coordinate.
    """
    total = 0.0
    for h in bandwidths:
        ratio = (h * h / (h * h + 2)) ** (d / 2)
        total += 2 * ratio - 2 * ratio * math.exp(-(shift**2) / (2 * (h * h + 2)))
    return total


def test_mmd_by_hand():
    x = torch.tensor([[0.0], [1.0]], dtype=F64)
    y = torch.tensor([[0.0], [2.0]], dtype=F64)

    def k(d2, h):
        return math.exp(-d2 / (2 * h * h))

    def by_hand(h):
        kxx, kyy = k(1, h), k(4, h)  # the single off-diagonal pair of each sample
        kxy = (k(0, h) + k(4, h) + k(1, h) + k(1, h)) / 4
        return kxx + kyy - 2 * kxy

    assert mmd(x, y, bandwidths=1.0) == pytest.approx(by_hand(1.0), rel=1e-14)
    # Summed kernels: MMD² is the sum of the single-bandwidth values.
    assert mmd(x, y, bandwidths=[0.5, 3.0]) == pytest.approx(by_hand(0.5) + by_hand(3.0), 1e-14)


def test_mmd_between_gaussians_matches_closed_form():
    bandwidths = (0.5, 1.0, 2.0)
    g = normal_grid(40)
    x = torch.cartesian_prod(g, g)  # a 1600-point grid of N(0, I_2)
    mu = torch.tensor([0.6, 0.8], dtype=F64)
    expected = gaussian_mmd2(1.0, bandwidths, d=2)
    assert mmd(x, x + mu, bandwidths) == pytest.approx(expected, abs=5e-3)
    # The same from random samples, within four standard deviations of the estimator.
    z = torch.randn(1000, 2, dtype=F64)
    y = torch.randn(1000, 2, dtype=F64) + mu
    assert mmd(z, y, bandwidths) == pytest.approx(expected, abs=0.09)


def test_mmd_is_unbiased_under_the_null():
    # Over many small samples of one distribution the estimates average to 0 and are often
    # negative; the biased V-statistic would average about 2 (K - E k) / N = 0.2 here.
    values = torch.tensor([mmd(torch.randn(20, 2), torch.randn(20, 2)) for _ in range(300)])
    stderr = float(values.std() / math.sqrt(values.numel()))
    assert abs(float(values.mean())) < 4 * stderr < 0.05
    assert (values < 0).any()


def test_mmd_default_bandwidths_are_median_multiples():
    x, y = torch.randn(200, 3), torch.randn(150, 3) + 0.5
    pooled = torch.cat([x, y])
    median = float(torch.pdist(pooled).median())
    assert median_distance(x, y) == pytest.approx(median)
    explicit = mmd(x, y, [median * c for c in BANDWIDTH_MULTIPLIERS])
    assert mmd(x, y) == pytest.approx(explicit, rel=1e-6)
    assert mmd(x, y) == pytest.approx(mmd(y, x), rel=1e-5)
    assert mmd(x, y) > 0.05 > abs(mmd(x, torch.randn(150, 3)))


def test_block_processing_gives_the_same_sums(monkeypatch):
    # Large samples are processed in row blocks; force blocks of a few rows and compare.
    from flowforge.metrics import discrepancy

    x, y = torch.randn(23, 3, dtype=F64), torch.randn(17, 3, dtype=F64) + 0.5
    whole = (mmd(x, y, [0.5, 2.0]), energy_distance(x, y))
    monkeypatch.setattr(discrepancy, "_BLOCK_ENTRIES", 50)  # 2 or 3 rows per block
    blocked = (mmd(x, y, [0.5, 2.0]), energy_distance(x, y))
    assert blocked == pytest.approx(whole, rel=1e-12)


def test_mmd_rejects_degenerate_bandwidths():
    x = torch.zeros(10, 2)
    with pytest.raises(ValueError, match="median pairwise distance of x and y is 0"):
        mmd(x, x)
    with pytest.raises(ValueError, match=r"bandwidths\[1\] must be a positive number, got -1.0"):
        mmd(torch.randn(5, 2), torch.randn(5, 2), [1.0, -1.0])
    with pytest.raises(ValueError, match="bandwidths must hold at least one"):
        mmd(torch.randn(5, 2), torch.randn(5, 2), [])


# -- energy distance ------------------------------------------------------------------------------
def test_energy_distance_by_hand():
    x = torch.tensor([[0.0], [2.0]], dtype=F64)
    # E|X - Y| = (1 + 3 + 1 + 1) / 4 = 1.5; the U-statistics of |X - X'|, |Y - Y'| are 2 each.
    assert energy_distance(x, x + 1.0) == -1.0
    # In 2-D with Euclidean norms: x = {(0, 0), (3, 4)}, y = {(0, 0), (0, 4)}.
    a = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=F64)
    b = torch.tensor([[0.0, 0.0], [0.0, 4.0]], dtype=F64)
    assert energy_distance(a, b) == pytest.approx(2 * (0 + 4 + 5 + 3) / 4 - 5 - 4, rel=1e-15)


def expected_abs_normal(m: float, s: float) -> float:
    """E|Z| for Z ~ N(m, s²): s sqrt(2/pi) exp(-m²/(2s²)) + m (1 - 2 Phi(-m/s))."""
    return s * math.sqrt(2 / math.pi) * math.exp(-m * m / (2 * s * s)) + m * (
        1 - 2 * norm.cdf(-m / s)
    )


def test_energy_distance_between_normals_matches_closed_form():
    mu = 1.0
    # X - Y ~ N(-mu, 2), X - X' ~ N(0, 2), Y - Y' ~ N(0, 2).
    expected = 2 * expected_abs_normal(mu, math.sqrt(2)) - 2 * expected_abs_normal(0, math.sqrt(2))
    x = normal_grid(2000).unsqueeze(1)
    assert energy_distance(x, x + mu) == pytest.approx(expected, abs=3e-3)
    # Invariant to translating and rotating both samples; symmetric.
    z, y = torch.randn(300, 3, dtype=F64), torch.randn(200, 3, dtype=F64) + 0.5
    rotation = torch.linalg.qr(torch.randn(3, 3, dtype=F64))[0]
    shift = torch.tensor([5.0, -2.0, 1.0], dtype=F64)
    value = energy_distance(z, y)
    assert energy_distance(z @ rotation + shift, y @ rotation + shift) == pytest.approx(value)
    assert energy_distance(y, z) == pytest.approx(value)


# -- sliced Wasserstein ---------------------------------------------------------------------------
def test_sliced_wasserstein_in_one_dimension_is_exact_wasserstein():
    # In 1-D every direction is +-1, so SW_p is W_p itself, also for unequal sample sizes.
    x, y = torch.randn(7, 1, dtype=F64), 2 * torch.randn(11, 1, dtype=F64) + 1
    w1 = wasserstein_distance(x[:, 0].numpy(), y[:, 0].numpy())
    assert sliced_wasserstein(x, y, n_projections=3, p=1) == pytest.approx(w1, rel=1e-12)
    a, b = np.full(7, 1 / 7), np.full(11, 1 / 11)
    w2 = math.sqrt(ot.emd2(a, b, ot.dist(x.numpy(), y.numpy())))
    assert sliced_wasserstein(x, y, n_projections=3) == pytest.approx(w2, rel=1e-12)


def test_unequal_sample_sizes_by_hand():
    # Quantiles of {0, 2} and {0, 1, 2} differ by 1 on (1/3, 2/3] only: W2² = 1/3.
    x = torch.tensor([[0.0], [2.0]], dtype=F64)
    y = torch.tensor([[0.0], [1.0], [2.0]], dtype=F64)
    assert sliced_wasserstein(x, y, n_projections=1) == pytest.approx(math.sqrt(1 / 3), 1e-15)
    assert wasserstein2(x, y) == pytest.approx(math.sqrt(1 / 3), rel=1e-12)


def test_sliced_wasserstein_of_shifted_gaussians():
    mu = torch.tensor([2.0, 0.0, 0.0, 0.0], dtype=F64)  # |mu| = 2, D = 4: SW_2 = |mu| / sqrt(D) = 1
    x = torch.randn(100, 4, dtype=F64)
    # A translated copy: each direction gives exactly |<mu, theta>|, so only the Monte-Carlo
    # error over directions remains (standard deviation about 0.007 at 5000 directions).
    assert sliced_wasserstein(x, x + mu, n_projections=5000) == pytest.approx(1.0, abs=0.03)
    # Independent samples: the sampling error adds (standard deviation about 0.03).
    z, y = torch.randn(1000, 4, dtype=F64), torch.randn(1000, 4, dtype=F64) + mu
    assert sliced_wasserstein(z, y, n_projections=1000) == pytest.approx(1.0, abs=0.12)
    # Each projection is 1-Lipschitz, so SW_2 <= W_2 = |mu| for the translated copy.
    assert sliced_wasserstein(x, x + mu) <= wasserstein2(x, x + mu) == pytest.approx(2.0)


def test_sliced_wasserstein_identities():
    x, y = torch.randn(40, 3, dtype=F64), torch.randn(30, 3, dtype=F64) + 1
    value = sliced_wasserstein(x, y, seed=3)
    assert sliced_wasserstein(y, x, seed=3) == value
    assert sliced_wasserstein(x, y, seed=3) == value
    assert sliced_wasserstein(x, y, seed=4) != value
    shift = torch.tensor([10.0, -3.0, 2.0], dtype=F64)
    assert sliced_wasserstein(x + shift, y + shift, seed=3) == pytest.approx(value, rel=1e-12)
    assert sliced_wasserstein(-2.5 * x, -2.5 * y, seed=3) == pytest.approx(2.5 * value, 1e-12)
    assert sliced_wasserstein(x, x) == 0.0
    p1 = sliced_wasserstein(x, y, p=1, seed=3)
    assert 0 < p1 <= value  # W_1 <= W_2 on each direction, and the mean of roots <= root of mean


def test_sliced_wasserstein_rejects_bad_arguments():
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match=r"p must be a number >= 1, got 0\.5"):
        sliced_wasserstein(x, x, p=0.5)
    with pytest.raises(ValueError, match="n_projections must be an int >= 1, got 0"):
        sliced_wasserstein(x, x, n_projections=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        sliced_wasserstein(x, x, seed=1.5)


# -- exact W2 -------------------------------------------------------------------------------------
def test_wasserstein2_matches_brute_force_over_permutations():
    # Between two uniform samples of equal size an optimal plan is a permutation (Birkhoff).
    x, y = torch.randn(6, 2, dtype=F64), torch.randn(6, 2, dtype=F64) + 0.3
    cost = torch.cdist(x, y).square()
    best = min(
        float(cost[range(6), list(perm)].mean()) for perm in itertools.permutations(range(6))
    )
    assert wasserstein2(x, y) == pytest.approx(math.sqrt(best), rel=1e-12)
    assert wasserstein2(y, x) == pytest.approx(math.sqrt(best), rel=1e-12)


def test_wasserstein2_of_a_translated_copy_is_the_shift():
    x = torch.randn(50, 3, dtype=F64)
    shift = torch.tensor([1.0, -2.0, 2.0], dtype=F64)
    assert wasserstein2(x, x + shift) == pytest.approx(3.0, rel=1e-12)
    assert wasserstein2(x, x) == 0.0


def test_wasserstein2_limits_the_sample_size():
    x = torch.randn(11, 2)
    with pytest.raises(ValueError, match="N=11, M=5 samples, more than max_samples=10"):
        wasserstein2(x, x[:5], max_samples=10)


# -- all distances at once, input checks ----------------------------------------------------------
def test_sample_distances_computes_each_metric_on_subsamples():
    samples, data = torch.randn(60, 2), torch.randn(80, 2) + 1
    d = sample_distances(samples, data, seed=1)
    assert d == {
        "mmd": mmd(samples, data),
        "energy_distance": energy_distance(samples, data),
        "sliced_wasserstein": sliced_wasserstein(samples, data, seed=1),
        "wasserstein2": wasserstein2(samples, data),
    }
    # Larger sets are subsampled to max_w2 rows, reproducibly.
    small = sample_distances(samples, data, seed=1, max_w2=20)
    assert small == sample_distances(samples, data, seed=1, max_w2=20)
    assert small != sample_distances(samples, data, seed=2, max_w2=20)
    assert all(isinstance(v, float) for v in small.values())


DISTANCES = [mmd, energy_distance, sliced_wasserstein, wasserstein2]


@pytest.mark.parametrize("metric", DISTANCES, ids=lambda f: f.__name__)
def test_distances_validate_their_inputs(metric):
    x = torch.randn(6, 2)
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        metric(x.numpy(), x)
    with pytest.raises(ValueError, match=r"y must have shape \(N, D\).*got \(6,\)"):
        metric(x, x[:, 0])
    with pytest.raises(ValueError, match=r"same number of features.*\(6, 3\) \(3 features\)"):
        metric(x, torch.randn(6, 3))
    bad = x.clone()
    bad[2, 1] = math.nan
    with pytest.raises(
        ValueError, match=r"y has NaN or infinite values in 1 of 6 rows \(first: 2\)"
    ):
        metric(x, bad)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        metric(x.long(), x)
    with pytest.raises(TypeError, match="same dtype"):
        metric(x, x.double())
    # U-statistics need two samples per set; transport distances one.
    fewest = 2 if metric in (mmd, energy_distance) else 1
    with pytest.raises(ValueError, match=f"y must hold at least {fewest} sample"):
        metric(x, x[: fewest - 1])


@pytest.mark.parametrize("metric", DISTANCES, ids=lambda f: f.__name__)
def test_distances_flatten_images_and_return_floats(metric):
    x, y = torch.randn(8, 1, 4, 4), torch.randn(9, 16)
    value = metric(x, y)
    assert isinstance(value, float)
    assert value == pytest.approx(metric(x.reshape(8, 16), y), rel=1e-6)


# -- NFE ------------------------------------------------------------------------------------------
def test_nfe_counter_counts_calls():
    field = torch.nn.Linear(2, 2)
    counter = NFECounter(lambda t, x, context=None: field(x) * t)
    x = torch.ones(5, 2)
    steps = 8
    for k in range(steps):  # Euler: one evaluation per step
        x = x + counter(torch.tensor(k / steps), x) / steps
    assert counter.nfe == steps
    counter.reset()
    assert counter.nfe == 0
    with counter.counting() as outer:
        counter(torch.tensor(0.0), x)
        with counter.counting() as inner:
            counter(torch.tensor(0.5), x)
            counter(torch.tensor(1.0), x)
            assert inner.nfe == 2
        counter(torch.tensor(1.0), x)
    counter(torch.tensor(1.0), x)  # after the blocks: counted in total only
    assert (outer.nfe, inner.nfe, counter.nfe) == (4, 2, 5)


def test_nfe_counter_is_a_transparent_module():
    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 2)

        def forward(self, t, x, context=None):
            c = torch.zeros(x.shape[0], 1) if context is None else context
            return self.linear(torch.cat([x, c], 1)) * t

    field = Field()
    counter = NFECounter(field)
    assert list(counter.parameters()) == list(field.parameters())
    x, context, t = torch.randn(4, 2), torch.randn(4, 1), torch.tensor(0.5)
    # torchdiffeq calls func(t, y) with two arguments; flowforge passes context as well.
    torch.testing.assert_close(counter(t, x), field(t, x))
    torch.testing.assert_close(counter(t, x, context), field(t, x, context))
    counter(t, x, context).sum().backward()
    assert field.linear.weight.grad is not None
    assert counter.nfe == 3
    assert "nfe=3" in repr(counter)
    assert set(counter.state_dict()) == {"field.linear.weight", "field.linear.bias"}
    with pytest.raises(TypeError, match="field must be a callable"):
        NFECounter(3)


def test_marginal_log_prob_of_a_labelled_mixture():
    # Two labels, each an exactly known Gaussian: log p(x) = log sum_y p(y) N(x; mu_y, 1).
    class TwoGaussians:
        def log_prob(self, x, context):
            mu = context.double()[:, None] * 3.0
            return (-0.5 * (x - mu).square() - 0.5 * math.log(2 * math.pi)).sum(dim=1)

    x = torch.linspace(-2, 5, 9, dtype=torch.float64)[:, None]
    w = torch.tensor([1.0, 3.0])
    got = ff.metrics.marginal_log_prob(TwoGaussians(), x, 2, weights=w)
    normal = torch.distributions.Normal
    expected = torch.log(
        0.25 * normal(0.0, 1.0).log_prob(x[:, 0]).exp()
        + 0.75 * normal(3.0, 1.0).log_prob(x[:, 0]).exp()
    )
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match=r"weights must be a \(2,\) tensor"):
        ff.metrics.marginal_log_prob(TwoGaussians(), x, 2, weights=torch.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        ff.metrics.marginal_log_prob(TwoGaussians(), x, 2, weights=torch.tensor([-1.0, 2.0]))


# -- classifiers of conditional samples -----------------------------------------------------------
def test_knn_classifies_the_8gaussians_components():
    data = ff.data.load("8gaussians", n_train=5000, n_val=10, n_test=4000)
    clf = ff.metrics.fit_classifier(data.train, data.labels["train"])
    # auto: two features are few enough for neighbours.
    assert clf.kind == "knn" and clf.num_classes == 8 and clf.dim == 2
    # Neighbouring centres are 3 standard deviations from their midpoint: Bayes error ~0.2 %.
    assert clf.accuracy(data.test, data.labels["test"]) > 0.98
    predicted = clf.predict(data.test)
    assert predicted.dtype == torch.int64 and predicted.shape == (4000,)
    assert set(predicted.tolist()) == set(range(8))


def test_logistic_classifies_the_digits():
    data = ff.data.load("digits")
    clf = ff.metrics.fit_classifier(data.train, data.labels["train"])
    assert clf.kind == "logistic" and clf.num_classes == 10 and clf.dim == 64
    assert clf.accuracy(data.test, data.labels["test"]) > 0.9
    per_class = clf.class_accuracies(data.test, data.labels["test"])
    assert len(per_class) == 10 and min(per_class) > 0.7
    # The same images as (N, 1, 8, 8) are classified alike.
    images = ff.data.load("digits", image=True)
    assert torch.equal(clf.predict(images.test), clf.predict(data.test))


def test_classifier_of_shuffled_labels_is_at_chance():
    data = ff.data.load("digits")
    shuffled = data.labels["train"][torch.randperm(len(data.train))]
    for kind in ("logistic", "knn"):
        clf = ff.metrics.fit_classifier(data.train, shuffled, kind=kind)
        # Chance is 0.1; 447 test points give a standard error of 0.014.
        assert abs(clf.accuracy(data.test, data.labels["test"]) - 0.1) < 0.06


def test_label_accuracy_counts_samples_recognised_as_their_label():
    x = torch.cat([torch.randn(60, 3) - 4, torch.randn(60, 3) + 4, torch.randn(60, 3) * 0.1])
    y = torch.arange(3).repeat_interleave(60)
    clf = ff.metrics.fit_classifier(x, y, kind="logistic")
    samples = torch.cat([torch.randn(10, 3) - 4, torch.randn(10, 3) + 4])
    # Drawn for labels 0 and 1, but the first 10 are claimed to be class 1 too: half are right.
    assert ff.metrics.label_accuracy(clf, samples, torch.ones(20, dtype=torch.int64)) == 0.5
    assert ff.metrics.label_accuracy(clf, samples[10:], 1) == 1.0
    per_class = clf.class_accuracies(samples, torch.tensor([0] * 10 + [1] * 10))
    assert per_class[:2] == (1.0, 1.0) and math.isnan(per_class[2])


def test_fit_classifier_rejects_bad_inputs():
    x, y = torch.randn(40, 2), torch.arange(4).repeat(10)
    fit = ff.metrics.fit_classifier
    with pytest.raises(TypeError, match=r"y must be a \(B,\) integer tensor.*y\.long\(\)"):
        fit(x, y.float())
    with pytest.raises(ValueError, match=r"shape \(40,\), got \(39,\)"):
        fit(x, y[:39])
    with pytest.raises(ValueError, match="labels in 0 or more, got labels from -1"):
        fit(x, y - 1)
    with pytest.raises(ValueError, match=r"class 2: 0"):
        fit(x, torch.where(y == 2, 3, y))
    with pytest.raises(ValueError, match=r"class 4: 0, class 5: 0"):
        fit(x, y, num_classes=6)
    with pytest.raises(ValueError, match="at least 2 classes"):
        fit(x, torch.zeros(40, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"15 neighbours and needs at least that many .*, got 8"):
        fit(x[:8], y[:8], kind="knn")
    with pytest.raises(ValueError, match="kind must be one of logistic, knn; got 'knm'"):
        fit(x, y, kind="knm")
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit(torch.full((40, 2), math.nan), y)
    clf = fit(x, y, kind="logistic")
    with pytest.raises(ValueError, match=r"must have 2 features per sample.*got shape \(5, 3\)"):
        clf.predict(torch.randn(5, 3))
    with pytest.raises(
        ValueError, match=r"labels in 0\.\.3 for the classifier, which knows 4 classes, got label 4"
    ):
        ff.metrics.label_accuracy(clf, torch.randn(5, 2), 4)
    with pytest.raises(TypeError, match="classifier must be a Classifier"):
        ff.metrics.label_accuracy(object(), torch.randn(5, 2), 0)
