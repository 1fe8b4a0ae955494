r"""Log-determinants of residual maps :math:`x \mapsto x + g(x)`: exact, power series, roulette.

For :math:`\mathrm{Lip}(g) < 1` the eigenvalues of :math:`J = \partial g / \partial x` lie in the
unit disc and

.. math:: \log |\det(I + J)| = \sum_{k=1}^{\infty} \frac{(-1)^{k+1}}{k} \operatorname{tr}(J^k),

whose traces Hutchinson's estimator gives from vector-Jacobian products
:math:`\varepsilon^\top J^k`, one per term. Beside the divergence estimators
(:mod:`~flowforge.estimators.divergence`), whose ``probe`` these share: one
implementation of the Hutchinson probe for every trace estimate.

The estimators:

- :func:`logdet_exact`: the ``D`` Jacobian rows in one batched backward pass and ``slogdet``;
- :func:`logdet_series`: the first ``n`` terms (biased by the truncation; the user picks ``n``);
- :func:`logdet_roulette`: a random number of terms, each reweighted by the probability of
  reaching it (unbiased; Chen et al., 2019).

Each takes the branch output ``gx = g(x)``, computed from ``x`` with gradients enabled, like the
divergence estimators; :func:`residual_logdet` evaluates ``g`` and dispatches by name, with the
options in one :class:`LogDetOptions`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_bool, check_choice, check_int, check_number, check_positive
from .._registry import Registry
from .probes import PROBES, probe

#: The log-det estimators by name (``LogDetOptions.estimator``): ``exact``, ``series`` and
#: ``roulette``, each mapped to its function (registered below, once defined).
LOGDET_ESTIMATORS: Registry[Callable[..., Tensor]] = Registry("estimator")
# Up to this many features the exact log-det takes one plain backward pass per Jacobian row.
_ROW_LOOP_MAX_FEATURES = 4
#: The laws of the number of random terms of the Russian-roulette estimator.
ROULETTE_DISTRIBUTIONS = ("geometric", "poisson")


@dataclass(frozen=True)
class LogDetOptions:
    r"""How to compute :math:`\log|\det(I + J_g)|`: an estimator by name and its settings.

    Attributes:
        estimator: ``"exact"``, ``"series"`` (truncated power series, biased) or
            ``"roulette"`` (Russian-roulette power series, unbiased).
        order: ``"series"``: the number of terms :math:`n`.
        distribution: ``"roulette"``: law of the number :math:`N \ge 0` of extra terms,
            ``"geometric"`` (:math:`P(N \ge j) = (1 - p)^j`, mean :math:`(1-p)/p`) or
            ``"poisson"`` (mean :math:`\lambda`).
        p: the geometric law's success probability, in :math:`(0, 1)`.
        lam: the Poisson law's mean :math:`\lambda > 0`.
        n_exact_terms: ``"roulette"``: terms always computed, with weight 1, before the random
            ones; more terms cost more and lower the variance.
        shared: ``"roulette"``: draw one :math:`N` for the whole batch (cost
            ``n_exact_terms + N`` products, as in Chen et al.) rather than one per sample
            (independent estimates, at the cost of the batch's largest :math:`N`).
        probe: ``"rademacher"`` or ``"gaussian"`` Hutchinson probes.
        neumann_grad: estimated estimators only: give the value with no graph and, for the
            gradient, the Neumann-series estimator of :func:`logdet_series`, whose memory does
            not grow with the number of terms.
    """

    estimator: str = "exact"
    order: int = 10
    distribution: str = "geometric"
    p: float = 0.5
    lam: float = 2.0
    n_exact_terms: int = 2
    shared: bool = True
    probe: str = "rademacher"
    neumann_grad: bool = False

    def __post_init__(self) -> None:
        LOGDET_ESTIMATORS.check(self.estimator)
        check_int(self.order, "order", 1)
        check_int(self.n_exact_terms, "n_exact_terms", 0)
        check_choice(self.distribution, "distribution", ROULETTE_DISTRIBUTIONS)
        check_number(self.p, "p", above=0, below=1)
        check_positive(self.lam, "lam")
        check_bool(self.shared, "shared")
        check_choice(self.probe, "probe", PROBES)
        check_bool(self.neumann_grad, "neumann_grad")
        if self.estimator == "exact" and self.neumann_grad:
            raise ValueError(
                "neumann_grad applies to the 'series' and 'roulette' estimators; the exact "
                "log-det is differentiated directly"
            )

    @property
    def exact(self) -> bool:
        """Whether these options give the exact log-determinant rather than an estimate."""
        return self.estimator == "exact"


def as_logdet_options(options: LogDetOptions | str) -> LogDetOptions:
    """``options`` itself, or ``LogDetOptions(estimator=options)`` for a name."""
    if isinstance(options, LogDetOptions):
        return options
    if isinstance(options, str):
        return LogDetOptions(estimator=options)
    raise TypeError(
        "log-det options must be a LogDetOptions or an estimator name, "
        f"got {type(options).__name__}"
    )


def logdet_exact(gx: Tensor, x: Tensor, create_graph: bool = False) -> Tensor:
    r"""Exact :math:`\log |\det(I + \partial g / \partial x)|` per sample, ``(B,)``.

    The ``D`` Jacobian rows come from one batched backward pass (``is_grads_batched``), then
    ``slogdet``: about ``D`` vector-Jacobian products and :math:`O(D^3)` per sample.

    Args:
        gx: ``(B, D)`` branch output :math:`g(x)`, computed from ``x`` with gradients enabled.
        x: ``(B, D)`` input that requires grad; rows must not interact.
        create_graph: keep the graph, to differentiate the log-det (training).
    """
    b, d = _check(gx, x)
    eye = torch.eye(d, dtype=gx.dtype, device=gx.device)
    if d <= _ROW_LOOP_MAX_FEATURES:
        # A few plain backward passes beat one vmapped pass of D in low dimension.
        rows = torch.stack(
            [
                torch.autograd.grad(
                    gx, x, eye[i].expand(b, d), create_graph=create_graph, retain_graph=True
                )[0]
                for i in range(d)
            ],
            dim=1,
        )  # rows[b, i, j] = d g_{b,i} / d x_{b,j}
    else:
        basis = eye.unsqueeze(1).expand(d, b, d)
        (rows,) = torch.autograd.grad(
            gx, x, basis, create_graph=create_graph, retain_graph=True, is_grads_batched=True
        )
        # rows[i, b, j] = d g_{b,i} / d x_{b,j}: the Jacobian of sample b is rows[:, b, :].
        rows = rows.transpose(0, 1)
    if d == 2:  # closed form, cheaper than a batched LU
        a = 1 + rows[:, 0, 0]
        det = a * (1 + rows[:, 1, 1]) - rows[:, 0, 1] * rows[:, 1, 0]
        return det.abs().log()
    return torch.linalg.slogdet(eye + rows)[1]


def logdet_series(
    gx: Tensor,
    x: Tensor,
    noise: Tensor,
    order: int,
    create_graph: bool = False,
    neumann_grad: bool = False,
) -> Tensor:
    r"""Truncated power series :math:`\sum_{k=1}^{n} \frac{(-1)^{k+1}}{k}\,
    \varepsilon^\top J^k \varepsilon`, ``(B,)``.

    An unbiased estimate of the truncated series :math:`\sum_{k \le n} (-1)^{k+1}
    \operatorname{tr}(J^k)/k`, whose bias against the log-det is at most
    :math:`D\,L^{n+1}/((n+1)(1-L))` for :math:`\mathrm{Lip}(g) \le L`. Costs ``n``
    vector-Jacobian products.

    Gradients (with ``create_graph``): by default, backpropagation through all ``n`` products,
    whose graphs are kept (memory grows with ``n``). With ``neumann_grad`` the value is computed
    with no graph, and the gradient is that of the surrogate
    :math:`\varepsilon^\top \big(\sum_{k=0}^{n-1} (-1)^k J^k\big) J \varepsilon` with the
    bracketed vector held fixed: the Neumann series of :math:`(I + J)^{-1}` in
    :math:`\partial \log\det(I + J) = \operatorname{tr}((I + J)^{-1} \partial J)`. Its
    expectation over the probe is the exact gradient of the truncated series, with respect to
    the parameters of :math:`g` and to ``x`` alike, and it keeps the graph of one product only.

    Args:
        gx: ``(B, D)`` branch output :math:`g(x)`, computed from ``x`` with gradients enabled.
        x: ``(B, D)`` input that requires grad.
        noise: ``(B, D)`` probe :math:`\varepsilon` (see :func:`~flowforge.estimators.probe`).
        order: :math:`n \ge 1`.
        create_graph: make the result differentiable (training).
        neumann_grad: use the Neumann-series gradient.

    References:
        Invertible Residual Networks (Behrmann et al., 2019) https://arxiv.org/abs/1811.00995;
        Residual Flows for Invertible Generative Modeling (Chen et al., 2019), section 3.2
        https://arxiv.org/abs/1906.02735
    """
    _check(gx, x)
    _check_noise(noise, x)
    order = check_int(order, "order", 1)
    weights = torch.ones(1, order, dtype=gx.dtype, device=gx.device)
    return _series(gx, x, noise, weights, create_graph, neumann_grad)


def logdet_roulette(
    gx: Tensor,
    x: Tensor,
    noise: Tensor,
    distribution: str = "geometric",
    p: float = 0.5,
    lam: float = 2.0,
    n_exact_terms: int = 2,
    shared: bool = True,
    create_graph: bool = False,
    neumann_grad: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Russian-roulette estimate of :math:`\log|\det(I + J)|`, unbiased, ``(B,)``.

    With :math:`m` = ``n_exact_terms`` and a random :math:`N \ge 0`,

    .. math:: \sum_{k=1}^{m} \frac{(-1)^{k+1}}{k} \varepsilon^\top J^k \varepsilon
        + \sum_{j=1}^{N} \frac{(-1)^{m+j+1}}{(m+j)\, P(N \ge j)}\,
        \varepsilon^\top J^{m+j} \varepsilon,

    since :math:`E[\mathbf 1\{N \ge j\}] / P(N \ge j) = 1` makes every term of the infinite
    series appear with its full weight on average. Its variance is finite when
    :math:`\sum_j L^{2j} / P(N \ge j) < \infty` for :math:`\mathrm{Lip}(g) \le L`: for the
    geometric law when :math:`L^2 < 1 - p`. The Poisson law's tail falls factorially, so that
    sum diverges for every :math:`L > 0`; in practice the terms that make it diverge are almost
    never drawn (:math:`P(N \ge 15) \approx 4 \cdot 10^{-9}` for :math:`\lambda = 2`), but
    prefer the geometric law for training.

    Gradients as in :func:`logdet_series` (with ``neumann_grad``: the Neumann series with the
    same random truncation and weights, an unbiased estimate of the exact gradient).

    Args:
        gx: ``(B, D)`` branch output :math:`g(x)`, computed from ``x`` with gradients enabled.
        x: ``(B, D)`` input that requires grad.
        noise: ``(B, D)`` probe :math:`\varepsilon`.
        distribution: ``"geometric"`` or ``"poisson"``, the law of :math:`N`.
        p: geometric success probability in :math:`(0, 1)`.
        lam: Poisson mean.
        n_exact_terms: :math:`m \ge 0`.
        shared: one :math:`N` for the whole batch, or one per sample.
        create_graph: make the result differentiable (training).
        neumann_grad: use the Neumann-series gradient.
        generator: random generator for :math:`N` (default: torch's global one).

    References:
        Residual Flows for Invertible Generative Modeling (Chen et al., 2019)
        https://arxiv.org/abs/1906.02735
    """
    options = LogDetOptions(
        "roulette",
        distribution=distribution,
        p=p,
        lam=lam,
        n_exact_terms=n_exact_terms,
        shared=shared,
        neumann_grad=neumann_grad,
    )
    b, _ = _check(gx, x)
    _check_noise(noise, x)
    weights = _roulette_weights(options, b, gx, generator)
    return _series(gx, x, noise, weights, create_graph, neumann_grad)


def residual_logdet(
    g: Callable[[Tensor], Tensor],
    x: Tensor,
    options: LogDetOptions | str = "exact",
    create_graph: bool | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Evaluate a residual branch and its log-det: ``(g(x) (B, D), log|det(I + J_g(x))| (B,))``.

    Args:
        g: a per-sample map ``(B, D) -> (B, D)``, the residual branch.
        x: ``(B, D)`` points.
        options: a :class:`LogDetOptions`, or an estimator name with default settings.
        create_graph: make the log-det differentiable; default: whenever gradients are enabled
            (training). Under ``torch.no_grad()`` (evaluation) nothing is kept and both outputs
            come back detached.
        generator: random generator for the probe and the roulette draws.

    Example:
        >>> import torch
        >>> from flowforge.estimators import residual_logdet
        >>> a = 0.5 * torch.eye(2)
        >>> gx, logdet = residual_logdet(lambda x: x @ a.T, torch.randn(3, 2))
        >>> torch.allclose(logdet, torch.full((3,), 2 * torch.log(torch.tensor(1.5))))
        True
    """
    options = as_logdet_options(options)
    grad_enabled = torch.is_grad_enabled()
    create_graph = grad_enabled if create_graph is None else create_graph
    with torch.enable_grad():
        # A fresh node to differentiate against: hooks registered on x itself (a residual
        # block's implicit inverse gradient) must only see the final backward pass.
        x_in = x.view_as(x) if x.requires_grad else x.detach().requires_grad_(True)
        gx = g(x_in)
        b, _ = _check(gx, x_in)
        if options.exact:
            logdet = logdet_exact(gx, x_in, create_graph)
        else:
            noise = probe(x_in, options.probe, generator)
            if options.estimator == "series":
                weights = torch.ones(1, options.order, dtype=gx.dtype, device=gx.device)
            else:
                weights = _roulette_weights(options, b, gx, generator)
            logdet = _series(gx, x_in, noise, weights, create_graph, options.neumann_grad)
    if not grad_enabled:
        return gx.detach(), logdet.detach()
    return gx, logdet


def _series(
    gx: Tensor, x: Tensor, noise: Tensor, weights: Tensor, create_graph: bool, neumann: bool
) -> Tensor:
    # weights: (1 or B, K), the weight of term k = 1..K (0 past a sample's random truncation).
    n_terms = weights.shape[1]
    keep = create_graph and not neumann
    w = noise
    total = gx.new_zeros(gx.shape[0])
    # Neumann vector sum_{k<K} (-1)^k c_{k+1} eps^T J^k: term k of the gradient pairs with
    # term k + 1 of the value, whose derivative it is in expectation.
    neumann_vec = noise * weights[:, :1] if neumann and n_terms else None
    for k in range(1, n_terms + 1):
        c = weights[:, k - 1]
        (w,) = torch.autograd.grad(gx, x, w, create_graph=keep, retain_graph=True)
        total = total + (-1) ** (k + 1) / k * c * (w * noise).sum(dim=1)
        if neumann and k < n_terms:
            neumann_vec = neumann_vec + (-1) ** k * weights[:, k : k + 1] * w
    if not create_graph:
        return total.detach()
    if neumann_vec is None:  # no Neumann gradient, or no terms at all
        return total
    (vjp,) = torch.autograd.grad(gx, x, neumann_vec.detach(), create_graph=True, retain_graph=True)
    surrogate = (vjp * noise).sum(dim=1)
    return total.detach() + (surrogate - surrogate.detach())


def _roulette_weights(
    options: LogDetOptions, batch: int, like: Tensor, generator: torch.Generator | None
) -> Tensor:
    # (1 or B, m + max N): weight 1 for the m exact terms, then 1{N >= j} / P(N >= j).
    draws = 1 if options.shared else batch
    device = like.device
    if options.distribution == "geometric":
        # Inverse CDF: N = floor(log U / log(1 - p)) has P(N >= j) = (1 - p)^j. 1 - rand is
        # in (0, 1], so the log is finite.
        u = 1 - torch.rand(draws, generator=generator, dtype=torch.float64, device=device)
        n = torch.floor(torch.log(u) / math.log1p(-options.p))
    else:
        rate = torch.full((draws,), options.lam, dtype=torch.float64, device=device)
        n = torch.poisson(rate, generator=generator)
    j = torch.arange(1, int(n.max()) + 1, dtype=torch.float64, device=device)
    if options.distribution == "geometric":
        survival = torch.exp(j * math.log1p(-options.p))
    else:
        # P(Poisson(lam) >= j) is the regularised lower incomplete gamma function P(j, lam).
        survival = torch.special.gammainc(j, torch.full_like(j, options.lam))
    reached = n[:, None] >= j[None, :]
    # Only reached terms are divided by their probability, which is then not zero: the
    # where() keeps the 0 * inf of unreached terms out.
    random = torch.where(reached, 1 / survival.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    exact = torch.ones(draws, options.n_exact_terms, dtype=torch.float64, device=device)
    return torch.cat([exact, random], dim=1).to(like.dtype)


LOGDET_ESTIMATORS.register("exact", logdet_exact)
LOGDET_ESTIMATORS.register("series", logdet_series)
LOGDET_ESTIMATORS.register("roulette", logdet_roulette)


def _check(gx: Tensor, x: Tensor) -> tuple[int, int]:
    if x.ndim != 2 or gx.shape != x.shape:
        raise ValueError(
            "g(x) and x must both have shape (B, D), "
            f"got g(x) {tuple(gx.shape)} and x {tuple(x.shape)}"
        )
    if not x.requires_grad:
        raise ValueError("x must require grad, and g(x) must be computed from it")
    return x.shape[0], x.shape[1]


def _check_noise(noise: Tensor, x: Tensor) -> None:
    if noise.shape != x.shape:
        raise ValueError(
            f"noise must have the shape of x {tuple(x.shape)}, got {tuple(noise.shape)}"
        )
