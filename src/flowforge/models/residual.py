"""The residual-flow recipe: Lipschitz residual blocks between ActNorm layers (Chen et al. 2019)."""

from __future__ import annotations

from .. import transforms as T
from .._checks import check_int
from ..dynamics import LOGDET_ESTIMATORS, LogDetOptions
from ..transforms.residual import EVAL_LOGDET_ESTIMATED, EXACT_LOGDET_MAX_FEATURES
from .discrete import Hidden, _flow, _hidden_option
from .registry import register


# At the shared lr of 1e-3 a residual flow sits for thousands of steps on the plateau of the
# Gaussian fit (its branches start near zero and their gradients are small there); with
# flowforge's schedule (warm-up, cosine decay) 1e-2 left it soonest in a sweep on the
# checkerboard: validation NLL after 2,000 steps 4.488 / 4.095 / 3.889 / 3.971 nats at
# lr 2e-3 / 5e-3 / 1e-2 / 2e-2 (docs/models.md).
@register(
    "resflow",
    "Residual flow: Lipschitz residual blocks, Russian-roulette log-det, ActNorm",
    train={"lr": 1e-2},
)
def resflow(
    dim: int,
    layers: int = 8,
    hidden: Hidden = (128, 128),
    coeff: float = 0.97,
    actnorm: bool = True,
    estimator: str = "roulette",
    order: int = 10,
    distribution: str = "geometric",
    p: float = 0.5,
    lam: float = 2.0,
    n_exact_terms: int = 2,
    neumann_grad: bool = True,
    eval_estimator: str = "auto",
    n_power_iterations: int = 1,
    tol: float = 1e-5,
    max_iter: int = 500,
    context_dim: int = 0,
):
    r"""A Residual Flow: ``layers`` blocks :math:`z = x + g(x)` with :math:`\mathrm{Lip}(g) \le`
    ``coeff`` (spectrally normalised :class:`~flowforge.nets.LipschitzMLP` branches of sizes
    ``hidden`` with LipSwish), each after an ``ActNorm`` (and one at the end) when ``actnorm``.

    Training maximises the likelihood with the log-det ``estimator`` of every block:
    ``"roulette"`` (default; unbiased: ``n_exact_terms`` terms always, more drawn from a
    ``distribution`` ``"geometric"`` with ``p`` or ``"poisson"`` with ``lam``), ``"series"``
    (the power series truncated at ``order``; biased) or ``"exact"`` (the brute-force Jacobian,
    for small ``dim``); ``neumann_grad`` uses the memory-saving Neumann-series gradient.
    Evaluation (``model.eval()``) uses ``eval_estimator``: ``"auto"`` is exact up to 64
    features and an unbiased roulette estimate with 10 exact terms beyond, ``"exact"`` always,
    ``"estimate"`` the roulette estimate always. ``model.log_prob_is_exact`` says which one the
    current mode gives. Sampling inverts each block by fixed-point iteration to ``tol`` (at most
    ``max_iter`` iterations, with a warning naming the residual if that is not enough).
    """
    check_int(layers, "layers", 1)
    check_int(context_dim, "context_dim", 0)
    hidden = _hidden_option(hidden)
    if estimator not in LOGDET_ESTIMATORS:
        raise ValueError(
            f"estimator must be one of {', '.join(LOGDET_ESTIMATORS)}, got {estimator!r}"
        )
    train = LogDetOptions(
        estimator,
        order=order,
        distribution=distribution,
        p=p,
        lam=lam,
        n_exact_terms=n_exact_terms,
        neumann_grad=neumann_grad and estimator != "exact",
    )
    evaluation = {
        "auto": "exact" if dim <= EXACT_LOGDET_MAX_FEATURES else EVAL_LOGDET_ESTIMATED,
        "exact": "exact",
        "estimate": EVAL_LOGDET_ESTIMATED,
    }
    if eval_estimator not in evaluation:
        raise ValueError(
            f"eval_estimator must be one of {', '.join(evaluation)}, got {eval_estimator!r}"
        )
    parts: list[T.Transform] = []
    for _ in range(layers):
        if actnorm:
            parts.append(T.ActNorm(dim))
        parts.append(
            T.ResidualBlock(
                dim,
                hidden,
                coeff,
                context_features=context_dim,
                n_power_iterations=n_power_iterations,
                train_logdet=train,
                eval_logdet=evaluation[eval_estimator],
                tol=tol,
                max_iter=max_iter,
            )
        )
    if actnorm:
        parts.append(T.ActNorm(dim))
    return _flow(dim, context_dim, parts)
