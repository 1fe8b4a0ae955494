"""The residual-flow recipe: Lipschitz residual blocks between ActNorm layers (Chen et al. 2019)."""

from __future__ import annotations

import functools
import math

from .. import transforms as T
from .._checks import check_bool, check_choice, check_int
from ..distributions import conditioning_features
from ..estimators import LOGDET_ESTIMATORS, LogDetOptions
from ..nets.lipschitz import LIPSWISH_BETA, LipSwish
from ..transforms.base import event_shape_of
from ..transforms.residual import EVAL_LOGDET_ESTIMATED, EXACT_LOGDET_MAX_FEATURES
from .discrete import Hidden, Shape, _flow, _hidden_option
from .registry import register

#: The image branches' default hidden channels. On the 8x8 digits (60 s, one thread, shared
#: machine) 64 channels took 20 steps to a test 3.19 bits/dim, 32 channels 50-100 steps to
#: 3.05-3.09 (4 or 8 blocks, squeezed or not): a convolution costs ``H W`` times an MLP layer
#: of its width, and in a time budget steps count more than width (docs/models.md).
IMAGE_HIDDEN = (32, 32)


# With flowforge's schedule (warm-up, cosine decay) lr 1e-2 left the Gaussian plateau soonest
# in a sweep on the checkerboard: validation NLL after 2,000 steps 4.488 / 4.095 / 3.889 /
# 3.971 nats at lr 2e-3 / 5e-3 / 1e-2 / 2e-2 (docs/models.md). That sweep predates the
# input activation and beta = 16, which fixed the slow start itself (3.742 at lr 1e-2).
@register(
    "resflow",
    "Residual flow: Lipschitz residual blocks, Russian-roulette log-det, ActNorm",
    train={"lr": 1e-2},
    images=True,
)
def resflow(
    shape: Shape,
    layers: int = 8,
    hidden: Hidden | None = None,
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
    squeeze: bool | None = None,
):
    r"""A Residual Flow: ``layers`` blocks :math:`z = x + g(x)` with :math:`\mathrm{Lip}(g) \le`
    ``coeff`` (spectrally normalised :class:`~flowforge.nets.LipschitzMLP` branches of sizes
    ``hidden`` with LipSwish), each after an ``ActNorm`` (and one at the end) when ``actnorm``.
    ``hidden=None`` is ``(128, 128)`` on vectors and ``(32, 32)`` on images (convolutions cost
    ``H W`` times an MLP layer of the same width: see :data:`IMAGE_HIDDEN`).

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

    ``shape`` is ``(D,)`` for vectors (an int ``D`` means ``(D,)``), where the branches are
    MLPs, or an image ``(C, H, W)``, where each branch is a
    :class:`~flowforge.nets.LipschitzConvNet` (3x3, 1x1 between hidden layers, 3x3 convolutions
    of ``hidden`` channels, each bounded by the spectral norm of its convolution *operator*),
    ActNorm is per channel, and the log-det estimators act on the ``C H W`` entries (``"auto"``
    is exact for an 8x8 one-channel image, 64 entries). With ``squeeze`` (default ``None``: on
    images with even ``H, W``) the second half of the blocks act on the squeezed image
    ``(4C, H/2, W/2)``, whose 3x3 convolutions see twice as far at a quarter of the positions;
    the flow squeezes back at the end, so the base and the samples keep the shape
    ``(C, H, W)``.
    ``context_dim`` conditions on float features, ``num_classes`` on class labels; either
    enters each branch beside ``x`` (on images as a per-channel bias of the first hidden layer)
    and is not part of its Lipschitz constraint.
    """
    check_int(layers, "layers", 1)
    features = conditioning_features(context_dim, num_classes)
    event = event_shape_of(shape, "shape")
    if len(event) not in (1, 3):
        raise ValueError(f"resflow takes vectors (D,) or images (C, H, W), got shape {event}")
    image = len(event) == 3
    dim = math.prod(event)
    check_bool(actnorm, "actnorm")
    check_bool(neumann_grad, "neumann_grad")
    if squeeze is None:
        squeeze = image and event[1] % 2 == 0 and event[2] % 2 == 0
    check_bool(squeeze, "squeeze")
    if squeeze and not (image and event[1] % 2 == 0 and event[2] % 2 == 0):
        raise ValueError(
            f"squeeze=True halves the height and width of an image and needs (C, H, W) with "
            f"even H and W, got shape {event}; use squeeze=False"
        )
    hidden = _hidden_option((IMAGE_HIDDEN if image else (128, 128)) if hidden is None else hidden)
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
    current = event if image else (dim,)
    for i in range(layers):
        if squeeze and i == layers // 2:
            parts.append(T.Squeeze(current))
            current = T.squeezed_shape(current)
        if actnorm:
            parts.append(T.ActNorm(current if image else dim))
        parts.append(
            T.ResidualBlock(
                current if image else dim,
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
        parts.append(T.ActNorm(current if image else dim))
    if current != event and image:
        parts.append(T.Inverse(T.Squeeze(event)))
    return _flow(event, context_dim, parts, num_classes)
