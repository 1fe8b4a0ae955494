r"""Classic 2-D densities used to test and compare flows.

Every sampler has the signature ``sampler(n, seed=None, generator=None) -> (n, 2)`` float32
tensor and is deterministic: with neither ``seed`` nor ``generator`` it draws from a private
generator seeded with 0. All of them lie roughly in :math:`[-4, 4]^2`, the range the spline
flows act on. The checkerboard and the eight Gaussians have exact log-densities, so a report
can show the entropy :math:`H = -\mathbb{E}[\log p(x)]`, the floor of any model's test NLL.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_count, check_int

Sampler = Callable[..., Tensor]


# -- helpers ----------------------------------------------------------------------------------
def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    """The generator to draw from: ``generator`` if given, else a fresh one seeded ``seed``."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    if seed is None:
        seed = 0
    return torch.Generator().manual_seed(check_int(seed, "seed", 0, "an int >= 0 or None"))


def _check_points(x: object, name: str = "x") -> Tensor:
    """Check that ``x`` is a floating ``(B, 2)`` tensor of 2-D points."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"{name} must have shape (B, 2), got {tuple(x.shape)}")
    return x


# -- checkerboard -----------------------------------------------------------------------------
def checkerboard(
    n: int, seed: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    r"""``n`` samples of the 2-D checkerboard: uniform on 8 of the 16 squares of :math:`[-4, 4]^2`.

    The squares have side 2 and the support has area 32, so the density is :math:`1/32` on it
    and the entropy, the lowest NLL any model can reach, is :math:`\ln 32 \approx 3.466` nats.

    Args:
        n: number of samples.
        seed: seed of a private generator (0 when ``None``; ignored when ``generator`` is given).
        generator: the random generator to draw from.

    Returns:
        ``(n, 2)`` float32 samples.

    References:
        FFJORD (Grathwohl et al., 2018) https://arxiv.org/abs/1810.01367, its toy data.

    Example:
        >>> from flowforge.data import checkerboard, checkerboard_log_prob
        >>> x = checkerboard(1000, seed=1)
        >>> bool((checkerboard_log_prob(x) > -4).all())
        True
    """
    n = check_count(n)
    g = _generator(seed, generator)
    x1 = torch.rand(n, generator=g) * 4 - 2
    x2 = torch.rand(n, generator=g) - 2 * torch.randint(0, 2, (n,), generator=g)
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], dim=1) * 2


def checkerboard_log_prob(x: Tensor) -> Tensor:
    r"""Exact log-density of the checkerboard: :math:`-\ln 32` on its support, else :math:`-\infty`.

    The support is the union of the 8 closed squares with even
    :math:`\lfloor x_1/2 \rfloor + \lfloor x_2/2 \rfloor`; a density is only defined up to its
    values on the (measure-zero) edges, and closing the squares keeps samples that float32
    rounding puts exactly on an edge inside the support.

    Args:
        x: ``(B, 2)`` points.

    Returns:
        ``(B,)`` log-densities, in the dtype of ``x``.
    """
    x = _check_points(x)
    half = x / 2
    cell = torch.floor(half)
    black = (cell[:, 0] + cell[:, 1]) % 2 == 0
    # An edge x_i = 2k borders a black and a white square, so it lies in the closed support.
    on_edge = (half == cell).any(dim=1)
    inside = (x.abs() <= 4).all(dim=1) & (black | on_edge)
    value = torch.full_like(x[:, 0], -math.log(32.0))
    return torch.where(inside, value, torch.full_like(value, -math.inf))


CHECKERBOARD_ENTROPY = math.log(32.0)
"""Entropy of the checkerboard in nats, the floor of any model's test NLL."""


# -- eight Gaussians --------------------------------------------------------------------------
EIGHT_GAUSSIANS_RADIUS = 2 * math.sqrt(2)
"""Radius of the circle the eight centres lie on (FFJORD's 4 divided by its rescaling √2)."""

EIGHT_GAUSSIANS_STD = 0.5 / math.sqrt(2)
"""Standard deviation of each component (FFJORD's 0.5 divided by its rescaling √2)."""


def _eight_centres(dtype: torch.dtype = torch.float32) -> Tensor:
    r"""The ``(8, 2)`` centres: angles :math:`k\pi/4` on the circle of radius :math:`2\sqrt 2`."""
    angle = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    centres = EIGHT_GAUSSIANS_RADIUS * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return centres.to(dtype)


def eight_gaussians(
    n: int, seed: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    r"""``n`` samples of an equal mixture of 8 isotropic Gaussians with centres on a circle.

    .. math:: p(x) = \frac18 \sum_{k=0}^{7} \mathcal{N}(x; \mu_k, \sigma^2 I), \quad
        \mu_k = r (\cos \tfrac{k\pi}{4}, \sin \tfrac{k\pi}{4}),

    with FFJORD's convention :math:`r = 2\sqrt2 \approx 2.83`, :math:`\sigma = 0.5/\sqrt2
    \approx 0.354` (its centres at radius 4 and noise 0.5, both divided by :math:`\sqrt2`), so
    samples lie in :math:`[-4.5, 4.5]^2` with overwhelming probability. The exact density is
    :func:`eight_gaussians_log_prob`; its entropy (no closed form) is estimated by
    :func:`eight_gaussians_entropy`.

    Args:
        n: number of samples.
        seed: seed of a private generator (0 when ``None``; ignored when ``generator`` is given).
        generator: the random generator to draw from.

    Returns:
        ``(n, 2)`` float32 samples.

    References:
        FFJORD (Grathwohl et al., 2018) https://arxiv.org/abs/1810.01367, its toy data.
    """
    return _eight_gaussians(check_count(n), _generator(seed, generator))[0]


def _eight_gaussians(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    k = torch.randint(0, 8, (n,), generator=g)
    noise = torch.randn(n, 2, generator=g)
    return _eight_centres()[k] + EIGHT_GAUSSIANS_STD * noise, k


def eight_gaussians_log_prob(x: Tensor) -> Tensor:
    r"""Exact log-density of :func:`eight_gaussians`, a log-sum-exp over the components.

    .. math:: \log p(x) = \operatorname{logsumexp}_k
        \Big(-\frac{\lVert x - \mu_k \rVert^2}{2\sigma^2}\Big) - \log 8 - \log(2\pi\sigma^2).

    Args:
        x: ``(B, 2)`` points.

    Returns:
        ``(B,)`` log-densities, in the dtype of ``x``.
    """
    x = _check_points(x)
    var = EIGHT_GAUSSIANS_STD**2
    centres = _eight_centres(x.dtype).to(x.device)
    # (B, 8) squared distances coordinate by coordinate: several times faster than reducing a
    # (B, 8, 2) difference over its short last axis, which matters for the Monte-Carlo entropy.
    dx, dy = x[:, :1] - centres[:, 0], x[:, 1:] - centres[:, 1]
    sq = dx * dx + dy * dy
    return torch.logsumexp(-sq / (2 * var), dim=1) - math.log(8.0) - math.log(2 * math.pi * var)


# -- densities without a closed form ----------------------------------------------------------
def two_spirals(
    n: int, seed: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    r"""``n`` samples of two interleaved Archimedean spirals, one the other turned by 180°.

    An angle :math:`\theta = 3\pi\sqrt{u}`, :math:`u \sim U[0, 1)`, gives the point
    :math:`\pm\frac{\theta}{3}(-\cos\theta, \sin\theta)` (each arm with probability 1/2); the
    square root spreads points evenly along the arc, whose length grows like :math:`\theta^2`.
    Gaussian noise of standard deviation 0.1 is added. Arms reach radius :math:`\pi`.

    Args:
        n: number of samples.
        seed: seed of a private generator (0 when ``None``; ignored when ``generator`` is given).
        generator: the random generator to draw from.

    Returns:
        ``(n, 2)`` float32 samples.

    References:
        FFJORD (Grathwohl et al., 2018) https://arxiv.org/abs/1810.01367, its toy data.
    """
    return _two_spirals(check_count(n), _generator(seed, generator))[0]


def _two_spirals(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    turns = 1.5  # 540° of spiral per arm
    theta = 2 * math.pi * turns * torch.sqrt(torch.rand(n, generator=g))
    which = torch.randint(0, 2, (n,), generator=g)
    arm = 1 - 2 * which.float()
    radius = theta / (2 * turns)  # the outer end at radius pi, inside [-4, 4]^2
    x = (arm * radius).unsqueeze(1) * torch.stack([-torch.cos(theta), torch.sin(theta)], dim=1)
    return x + 0.1 * torch.randn(n, 2, generator=g), which


def pinwheel(n: int, seed: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    r"""``n`` samples of a pinwheel: 5 curved blades, Gaussians bent by a radius-dependent twist.

    Blade :math:`k` (each with probability 1/5) draws :math:`a = 1 + 0.3\,\epsilon_1` along its
    axis and :math:`b = 0.1\,\epsilon_2` across it, :math:`\epsilon \sim \mathcal{N}(0, I)`, and
    rotates :math:`(a, b)` by :math:`2\pi k/5 + 0.25\,e^{a}`: points further out turn further,
    which curves the blade. The result is scaled by 2.

    Args:
        n: number of samples.
        seed: seed of a private generator (0 when ``None``; ignored when ``generator`` is given).
        generator: the random generator to draw from.

    Returns:
        ``(n, 2)`` float32 samples.

    References:
        Johnson et al., "Composing graphical models with neural networks for structured
        representations and fast inference", 2016. https://arxiv.org/abs/1603.06277
    """
    return _pinwheel(check_count(n), _generator(seed, generator))[0]


def _pinwheel(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    blades = 5
    blade = torch.randint(0, blades, (n,), generator=g)
    a = 1 + 0.3 * torch.randn(n, generator=g)
    b = 0.1 * torch.randn(n, generator=g)
    angle = 2 * math.pi * blade.float() / blades + 0.25 * torch.exp(a)
    cos, sin = torch.cos(angle), torch.sin(angle)
    return 2 * torch.stack([cos * a - sin * b, sin * a + cos * b], dim=1), blade


def rings(n: int, seed: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    r"""``n`` samples of 4 concentric rings of radii 0.75, 1.5, 2.25 and 3.

    Each sample picks a ring with probability 1/4, an angle uniformly, and adds radial
    Gaussian noise of standard deviation 0.08.

    Args:
        n: number of samples.
        seed: seed of a private generator (0 when ``None``; ignored when ``generator`` is given).
        generator: the random generator to draw from.

    Returns:
        ``(n, 2)`` float32 samples.

    References:
        FFJORD (Grathwohl et al., 2018) https://arxiv.org/abs/1810.01367, its toy data.
    """
    return _rings(check_count(n), _generator(seed, generator))[0]


def _rings(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    ring = torch.randint(1, 5, (n,), generator=g)
    angle = 2 * math.pi * torch.rand(n, generator=g)
    radius = 0.75 * ring.float() + 0.08 * torch.randn(n, generator=g)
    x = radius.unsqueeze(1) * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return x, ring - 1


def moons(n: int, seed: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    r"""``n`` samples of two interleaved half circles ("moons").

    With :math:`t \sim U[0, \pi)` the upper moon is :math:`(\cos t, \sin t)` and the lower
    :math:`(1 - \cos t, \tfrac12 - \sin t)`, each with probability 1/2; the pair is centred at
    the origin, scaled by 2 (to about :math:`[-3, 3] \times [-1.5, 1.5]`), and Gaussian noise
    of standard deviation 0.1 is added.

    Args:
        n: number of samples.
        seed: seed of a private generator (0 when ``None``; ignored when ``generator`` is given).
        generator: the random generator to draw from.

    Returns:
        ``(n, 2)`` float32 samples.
    """
    return _moons(check_count(n), _generator(seed, generator))[0]


def _moons(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    t = math.pi * torch.rand(n, generator=g)
    which = torch.randint(0, 2, (n,), generator=g)
    lower = which.bool()
    x = torch.where(lower, 1 - torch.cos(t), torch.cos(t))
    y = torch.where(lower, 0.5 - torch.sin(t), torch.sin(t))
    # (0.5, 0.25) is the centre of the pair's bounding box [-1, 2] x [-0.5, 1].
    points = 2 * torch.stack([x - 0.5, y - 0.25], dim=1)
    return points + 0.1 * torch.randn(n, 2, generator=g), which


def circles(n: int, seed: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    r"""``n`` samples of two concentric circles of radii 3 and 1.5.

    Each sample picks a circle with probability 1/2 and an angle uniformly; Gaussian noise of
    standard deviation 0.1 is added to both coordinates.

    Args:
        n: number of samples.
        seed: seed of a private generator (0 when ``None``; ignored when ``generator`` is given).
        generator: the random generator to draw from.

    Returns:
        ``(n, 2)`` float32 samples.
    """
    return _circles(check_count(n), _generator(seed, generator))[0]


def _circles(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    which = torch.randint(0, 2, (n,), generator=g)
    radius = torch.where(which.bool(), 3.0, 1.5)
    angle = 2 * math.pi * torch.rand(n, generator=g)
    x = radius.unsqueeze(1) * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return x + 0.1 * torch.randn(n, 2, generator=g), 1 - which  # 0: the outer circle


def swissroll(n: int, seed: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    r"""``n`` samples of the 2-D Swiss roll: a spiral :math:`\frac{t}{4}(\cos t, \sin t)`.

    :math:`t \sim U[\tfrac32\pi, \tfrac92\pi)`, so the roll makes 1.5 turns out to radius
    :math:`9\pi/8 \approx 3.53`; Gaussian noise of standard deviation 0.25 is added (the noise
    1 of the 3-D Swiss roll, in these units).

    Args:
        n: number of samples.
        seed: seed of a private generator (0 when ``None``; ignored when ``generator`` is given).
        generator: the random generator to draw from.

    Returns:
        ``(n, 2)`` float32 samples.

    References:
        Roweis and Saul, "Nonlinear dimensionality reduction by locally linear embedding",
        Science, 2000 (the Swiss roll manifold).
    """
    n = check_count(n)
    g = _generator(seed, generator)
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g))
    scale = 0.25  # brings the outer end, radius 4.5 pi, to 3.53
    x = (scale * t).unsqueeze(1) * torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    return x + scale * torch.randn(n, 2, generator=g)


# -- entropies --------------------------------------------------------------------------------
@dataclass(frozen=True)
class EntropyEstimate:
    r"""An entropy :math:`H = -\mathbb{E}[\log p(x)]` in nats and its standard error.

    Attributes:
        nats: the estimate.
        stderr: its standard error (0 for a closed form).
        n: number of Monte-Carlo samples (0 for a closed form).
    """

    nats: float
    stderr: float
    n: int


def monte_carlo_entropy(
    sampler: Sampler,
    log_prob: Callable[[Tensor], Tensor],
    n: int = 2**20,
    seed: int = 0,
    chunk: int = 2**16,
) -> EntropyEstimate:
    r"""Monte-Carlo entropy :math:`\hat H = -\frac1n \sum_i \log p(x_i)`, :math:`x_i \sim p`.

    The standard error is :math:`\hat s / \sqrt n`, with :math:`\hat s` the sample standard
    deviation of :math:`\log p(x_i)`. The log-densities are evaluated in float64 and drawn in
    chunks from one generator, so memory stays small and the result depends only on ``seed``.

    Args:
        sampler: ``sampler(n, generator=g) -> (n, 2)``, one of this module's samplers.
        log_prob: the exact log-density of ``sampler``'s distribution, ``(B, 2) -> (B,)``.
        n: number of samples.
        seed: seed of the generator the samples are drawn from.
        chunk: samples drawn and evaluated at a time.

    Returns:
        The :class:`EntropyEstimate`.
    """
    n = check_count(n)
    chunk = check_count(chunk, "chunk")
    g = _generator(seed, None)
    total = total_sq = 0.0
    done = 0
    while done < n:
        m = min(chunk, n - done)
        lp = log_prob(sampler(m, generator=g).double())
        if not bool(torch.isfinite(lp).all()):
            raise ValueError("log_prob is not finite at a sample of sampler: they do not match")
        total += float(lp.sum())
        total_sq += float(lp.pow(2).sum())
        done += m
    mean = total / n
    var = max(total_sq / n - mean**2, 0.0) * n / max(n - 1, 1)
    return EntropyEstimate(nats=-mean, stderr=math.sqrt(var / n), n=n)


@functools.cache
def eight_gaussians_entropy() -> EntropyEstimate:
    r"""Entropy of :func:`eight_gaussians`, by Monte Carlo with :math:`2^{20}` samples, seed 0.

    Close to :math:`\ln 8 + \ln(2\pi e\sigma^2) \approx 2.84` nats, the value for components
    that do not overlap; the standard error is about :math:`10^{-3}`. Computed once, cached.
    """
    return monte_carlo_entropy(eight_gaussians, eight_gaussians_log_prob)


# -- the table of toy densities ---------------------------------------------------------------
def checkerboard_entropy() -> EntropyEstimate:
    r"""Entropy of :func:`checkerboard` in closed form: :math:`\ln 32` nats, standard error 0."""
    return EntropyEstimate(nats=CHECKERBOARD_ENTROPY, stderr=0.0, n=0)


@dataclass(frozen=True)
class ToyDensity:
    """A named 2-D density: its sampler, exact log-density and entropy where known, a summary.

    Attributes:
        name: the name ``load`` and the CLI know it by.
        sample: ``sample(n, seed=None, generator=None) -> (n, 2)``.
        log_prob: exact log-density ``(B, 2) -> (B,)``, or ``None`` without a closed form.
        entropy: ``entropy() -> EntropyEstimate``, or ``None`` without a log-density.
        summary: one line for ``flowforge datasets``.
        labelled: ``labelled(n, generator) -> (x (n, 2), labels (n,))``, the same draw as
            ``sample`` with the part of the mixture each point came from, or ``None`` where no
            label is natural.
        labels: what the label is (``"component"``, ``"arm"``...) and how many there are.
    """

    name: str
    sample: Sampler
    log_prob: Callable[[Tensor], Tensor] | None
    entropy: Callable[[], EntropyEstimate] | None
    summary: str
    labelled: Callable[[int, torch.Generator], tuple[Tensor, Tensor]] | None = None
    labels: tuple[str, int] | None = None

    def sample_with_labels(self, n: int, seed: int | None = None) -> tuple[Tensor, Tensor]:
        """``n`` points and their labels, the points identical to ``sample(n, seed=seed)``."""
        if self.labelled is None:
            raise ValueError(f"the {self.name} density has no natural labels")
        return self.labelled(check_count(n), _generator(seed, None))


TOY_DENSITIES: dict[str, ToyDensity] = {
    d.name: d
    for d in [
        ToyDensity(
            "checkerboard",
            checkerboard,
            checkerboard_log_prob,
            checkerboard_entropy,
            "uniform on 8 of the 16 squares of [-4, 4]^2; exact density, entropy ln 32",
        ),
        ToyDensity(
            "8gaussians",
            eight_gaussians,
            eight_gaussians_log_prob,
            eight_gaussians_entropy,
            f"8 Gaussians (std {EIGHT_GAUSSIANS_STD:.2f}) on a circle of radius "
            f"{EIGHT_GAUSSIANS_RADIUS:.2f}; exact density, entropy by Monte Carlo; "
            "labels: the component (0 at angle 0, counter-clockwise)",
            _eight_gaussians,
            ("component", 8),
        ),
        ToyDensity(
            "2spirals",
            two_spirals,
            None,
            None,
            "two interleaved spirals, 1.5 turns each; labels: the arm",
            _two_spirals,
            ("arm", 2),
        ),
        ToyDensity(
            "pinwheel",
            pinwheel,
            None,
            None,
            "5 curved Gaussian blades; labels: the blade",
            _pinwheel,
            ("blade", 5),
        ),
        ToyDensity(
            "rings",
            rings,
            None,
            None,
            "4 concentric rings, radii 0.75 to 3; labels: the ring, innermost 0",
            _rings,
            ("ring", 4),
        ),
        ToyDensity(
            "moons",
            moons,
            None,
            None,
            "two interleaved half circles; labels: the moon, upper 0",
            _moons,
            ("moon", 2),
        ),
        ToyDensity(
            "circles",
            circles,
            None,
            None,
            "two concentric circles, radii 1.5 and 3; labels: the circle, outer 0",
            _circles,
            ("circle", 2),
        ),
        ToyDensity("swissroll", swissroll, None, None, "a Swiss roll spiral, 1.5 turns"),
    ]
}
"""The built-in 2-D densities by name, in the order ``flowforge datasets`` lists them."""
