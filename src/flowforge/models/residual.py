"""The residual-flow recipe: Lipschitz residual blocks between ActNorm layers (Chen et al. 2019)."""

from __future__ import annotations

import functools

from .. import transforms as T
from .._checks import check_bool, check_choice, check_int
from ..distributions import conditioning_features
from ..estimators import LOGDET_ESTIMATORS, LogDetOptions
from ..nets.lipschitz import LIPSWISH_BETA, LipSwish
from ..transforms.residual import EVAL_LOGDET_ESTIMATED, EXACT_LOGDET_MAX_FEATURES
from .discrete import Hidden, Shape, _flow, _hidden_option, _vector_shape
from .registry import register


# With flowforge's schedule (warm-up, cosine decay) lr 1e-2 left the Gaussian plateau soonest
# in a sweep on the checkerboard: validation NLL after 2,000 steps 4.488 / 4.095 / 3.889 /
# 3.971 nats at lr 2e-3 / 5e-3 / 1e-2 / 2e-2 (docs/models.md). That sweep predates the
# input activation and beta = 16, which fixed the slow start itself (3.742 at lr 1e-2).
@register(
    "resflow",
    "Residual flow: Lipschitz residual blocks, Russian-roulette log-det, ActNorm",
    train={"lr": 1e-2},
)
def resflow(
    shape: Shape,
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
    num_classes: int = 0,
    input_activation: bool = True,
    beta: float = LIPSWISH_BETA,
):
    r"""A Residual Flow: ``layers`` blocks :math:`z = x + g(x)` with :math:`\mathrm{Lip}(g) \le`
    ``coeff`` (spectrally normalised :class:`~flowforge.nets.LipschitzMLP` branches of sizes
    ``hidden`` with LipSwish), each after an ``ActNorm`` (and one at the end) when ``actnorm``.

    Each branch applies LipSwish to its input first when ``input_activation``, and every LipSwish
    starts at :math:`\beta =` ``beta``: the defaults make the branches nonlinear from the start,
    without which the flow sits on the Gaussian fit for thousands of steps at lr 1e-3 (see
    :data:`~flowforge.nets.lipschitz.LIPSWISH_BETA`; ``input_activation=False, beta=1.0`` is
    the earlier branch).

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

    Vectors ``(D,)`` only (``shape``; an int ``D`` means ``(D,)``): the branches are MLPs.
    ``context_dim`` conditions on float features, ``num_classes`` on class labels; either
    enters each branch beside ``x`` and is not part of its Lipschitz constraint.
    """
    check_int(layers, "layers", 1)
    features = conditioning_features(context_dim, num_classes)
    dim = _vector_shape("resflow", shape)[0]
    check_bool(actnorm, "actnorm")
    check_bool(neumann_grad, "neumann_grad")
    hidden = _hidden_option(hidden)
    LOGDET_ESTIMATORS.check(estimator)
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
    check_choice(eval_estimator, "eval_estimator", evaluation)
    LipSwish(beta)  # validates beta once, before any block is built
    activation = functools.partial(LipSwish, beta)
    parts: list[T.Transform] = []
    for _ in range(layers):
        if actnorm:
            parts.append(T.ActNorm(dim))
        parts.append(
            T.ResidualBlock(
                dim,
                hidden,
                coeff,
                context_features=features,
                n_power_iterations=n_power_iterations,
                train_logdet=train,
                eval_logdet=evaluation[eval_estimator],
                tol=tol,
                max_iter=max_iter,
                activation=activation,
                input_activation=input_activation,
            )
        )
    if actnorm:
        parts.append(T.ActNorm(dim))
    return _flow((dim,), context_dim, parts, num_classes)
