r"""The variance-preserving diffusion model in continuous flow-matching time.

Data :math:`x_1` are noised along the affine Gaussian path
:math:`x_t = \alpha_t x_1 + \sigma_t \varepsilon`, :math:`\varepsilon \sim N(0, I)`
(:math:`t = 0` noise, :math:`t = 1` data; the VP schedules have
:math:`\alpha_t^2 + \sigma_t^2 = 1`). A network predicts the noise :math:`\varepsilon`
(Ho et al., 2020), Salimans & Ho's :math:`v = \alpha_t\varepsilon - \sigma_t x_1`, or the data
:math:`x_1` from :math:`(t, x_t, c)`; any of the three determines the others and the velocity of
the probability-flow ODE (:meth:`~flowforge.matching.AffinePath.convert`, linear in the
prediction), so the trained model is a :class:`~flowforge.dynamics.CNF` whose field is that
velocity: every ODE solver, guidance, ``log_prob``, ``encode`` and ``decode`` work as for flow
matching, and the stochastic samplers (``"ddpm"``, ``"ddim"``, ``"euler-maruyama"``) work
through :meth:`Diffusion.gaussian_path`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_number
from .._registry import Registry
from ..distributions.batch import Batch, LossResult
from ..distributions.normal import BaseDistribution, StandardNormal
from ..dynamics import CNF, SolverOptions
from ..matching import (
    PARAMETERIZATIONS,
    AffinePath,
    Scheduler,
    TimeSampler,
    UniformTime,
    VPCosineScheduler,
    VPScheduler,
    cfm_loss,
)
from ..matching.schedulers import SCHEDULERS

#: What a diffusion network may predict: the noise, Salimans & Ho's v, or the data.
PREDICTIONS = ("epsilon", "v", "x1")

#: The diffusion schedules by name: ``"linear"`` is DDPM's linear :math:`\beta` (the VP-SDE,
#: ``beta_min``/``beta_max``), ``"cosine"`` Nichol & Dhariwal's cosine :math:`\bar\alpha`. Each
#: builder takes the recipe's schedule options by keyword and uses only its own.
SCHEDULES: Registry[Callable[..., Scheduler]] = Registry("schedule")


@SCHEDULES.register("linear")
def _linear(*, beta_min: float = 0.1, beta_max: float = 20.0, **_: object) -> Scheduler:
    return VPScheduler(beta_min, beta_max)


@SCHEDULES.register("cosine")
def _cosine(**_: object) -> Scheduler:
    return SCHEDULERS["vp-cosine"]()


def _times(t: Tensor | float, x: Tensor) -> Tensor:
    """A time as one value per sample of ``x``: a number, ``()`` or ``(B,)`` -> ``(B,)``."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]) if t.ndim == 0 else t.reshape(x.shape[0])


def min_snr_weight(snr: Tensor, gamma: float, prediction: str) -> Tensor:
    r"""Min-SNR-:math:`\gamma` loss weights (Hang et al., 2023) for a network predicting
    ``prediction``, on a variance-preserving path (:math:`\mathrm{snr} = \alpha_t^2/\sigma_t^2`).

    :math:`\min(\mathrm{snr}, \gamma)/\mathrm{snr}` for :math:`\varepsilon`,
    :math:`\min(\mathrm{snr}, \gamma)/(\mathrm{snr} + 1)` for :math:`v` and
    :math:`\min(\mathrm{snr}, \gamma)` for :math:`x_1`: each the same weighting of the data
    error, :math:`\min(\mathrm{snr}, \gamma)\,\|\hat x_1 - x_1\|^2`, written on the prediction's
    own error (:math:`\|\hat\varepsilon - \varepsilon\|^2 = \mathrm{snr}\,\|\hat x_1 - x_1\|^2`,
    :math:`\|\hat v - v\|^2 = (\mathrm{snr} + 1)\,\|\hat x_1 - x_1\|^2`). It caps the weight of
    the nearly clean times, whose easy targets otherwise dominate the gradient.

    Args:
        snr: ``(B,)`` signal-to-noise ratios, ``> 0``.
        gamma: :math:`\gamma > 0` (5 is the paper's choice).
        prediction: ``"epsilon"``, ``"v"`` or ``"x1"``.

    Returns:
        ``(B,)`` weights.

    References:
        Efficient Diffusion Training via Min-SNR Weighting Strategy (Hang et al., 2023)
        https://arxiv.org/abs/2303.09556
    """
    check_choice(prediction, "prediction", PREDICTIONS)
    capped = snr.clamp(max=gamma)
    if prediction == "epsilon":
        return capped / snr
    if prediction == "v":
        return capped / (snr + 1)
    return capped


class PredictionField(nn.Module):
    r"""The velocity of the probability-flow ODE from a network's prediction:
    :math:`v(t, x, c) = \mathrm{convert}(f_\theta(t, x, c))` from ``prediction`` to
    ``"velocity"`` on ``path`` (:meth:`~flowforge.matching.AffinePath.convert`).

    Shapes: ``t ()`` or ``(B,)``, ``x (B, *event)``, ``context (B, C)`` -> ``(B, *event)``.

    Args:
        network: ``f_\theta(t, x, context=None)``, e.g. a :class:`~flowforge.nets.TimeMLP`.
        path: the model's :class:`~flowforge.matching.AffinePath`.
        prediction: what the network predicts, ``"epsilon"``, ``"v"`` or ``"x1"``.
    """

    def __init__(self, network: nn.Module, path: AffinePath, prediction: str):
        super().__init__()
        if not callable(network):
            raise TypeError(f"network must be a module f(t, x, context), got {network!r}")
        if not isinstance(path, AffinePath):
            raise TypeError(f"path must be an AffinePath, got {type(path).__name__}")
        self.network = network
        self.path = path
        self.prediction = check_choice(prediction, "prediction", PREDICTIONS)

    def predict(
        self, t: Tensor | float, x: Tensor, context: Tensor | None = None, target: str = "v"
    ) -> Tensor:
        """The network's prediction at ``(t, x)`` converted to ``target`` (any of
        :data:`~flowforge.matching.PARAMETERIZATIONS`)."""
        out = self.network(t, x) if context is None else self.network(t, x, context)
        return self.path.convert(out, x, _times(t, x), self.prediction, target)

    def forward(self, t: Tensor | float, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.predict(t, x, context, "velocity")

    def extra_repr(self) -> str:
        return f"prediction={self.prediction}, path={self.path!r}"


class Diffusion(CNF):
    r"""A diffusion model (Ho et al., 2020; Song et al., 2021) in continuous time: a network
    trained to denoise, and the CNF of its probability-flow ODE.

    **Training.** For data :math:`x_1`, noise :math:`\varepsilon \sim N(0, I)` (the batch's
    ``x0`` when it carries one) and times :math:`t = (1 - \tau)\,u`, :math:`u` from
    ``time_sampler`` (uniform: :math:`t \sim U[0, 1 - \tau]`, :math:`\tau` the ``truncation``),
    the network sees :math:`x_t = \alpha_t x_1 + \sigma_t\varepsilon` and regresses its target,
    :math:`\varepsilon`, :math:`v = \alpha_t\varepsilon - \sigma_t x_1` or :math:`x_1`: the
    "simple" loss :math:`\frac1B \sum_i w_i \frac1D \|f_\theta(t_i, x_{t_i}) - y_i\|^2` with
    :math:`w = 1`, or with ``min_snr`` :math:`= \gamma > 0` the min-SNR weights
    (:func:`min_snr_weight`).

    **Sampling and likelihood.** The field is :class:`PredictionField`, the velocity that the
    prediction implies: sampling and likelihoods integrate it from :math:`t = 0` to
    :math:`1 - \tau` (:attr:`span`), where the samples and the density live; at :math:`t = 1`
    an :math:`\varepsilon`-model's velocity is singular (:math:`\sigma_t \to 0`). Any ODE
    solver by name (dopri5 at 1e-5 by default), and the stochastic samplers ``"ddpm"``,
    ``"ddim"``, ``"euler-maruyama"`` (``model.sample(n, method="ddim", steps=20)``), which take
    their path from :meth:`gaussian_path`. ``log_prob`` is exact through the ODE, so the model
    sits beside every other family with a test NLL.

    Args:
        network: ``f_\theta(t, x, context=None)``, ``(B, *event) -> (B, *event)``.
        base: the noise, a :class:`~flowforge.distributions.StandardNormal` of the event
            shape (default: of the network's ``event_shape``).
        scheduler: :math:`(\alpha_t, \sigma_t)`, default Nichol & Dhariwal's cosine VP
            schedule (:class:`~flowforge.matching.VPCosineScheduler`;
            :class:`~flowforge.matching.VPScheduler` is DDPM's linear :math:`\beta`); min-SNR's
            weights assume a variance-preserving one.
        prediction: ``"v"`` (default), ``"epsilon"`` or ``"x1"``; the defaults are the
            recipe's, chosen by measurement (:func:`flowforge.models.diffusion.diffusion`).
        min_snr: :math:`\gamma \ge 0` of min-SNR weighting; 0 is the unweighted simple loss.
        truncation: :math:`\tau \in (0, 0.5)`: training times, samples and densities end at
            :math:`t = 1 - \tau`.
        time_sampler: the law of :math:`u` (default: uniform).
        context_dim, num_classes, label_dropout, solver: as for
            :class:`~flowforge.matching.FlowMatching`.

    References:
        Denoising Diffusion Probabilistic Models (Ho et al., 2020) https://arxiv.org/abs/2006.11239;
        Score-Based Generative Modeling through Stochastic Differential Equations (Song et al.,
        2021) https://arxiv.org/abs/2011.13456; Improved Denoising Diffusion Probabilistic
        Models (Nichol & Dhariwal, 2021) https://arxiv.org/abs/2102.09672; Progressive
        Distillation for Fast Sampling of Diffusion Models (Salimans & Ho, 2022)
        https://arxiv.org/abs/2202.00512; Efficient Diffusion Training via Min-SNR Weighting
        Strategy (Hang et al., 2023) https://arxiv.org/abs/2303.09556

    Example:
        >>> import torch
        >>> from flowforge.diffusion import Diffusion
        >>> from flowforge.nets import TimeMLP
        >>> model = Diffusion(TimeMLP(2, (32, 32)), prediction="epsilon")
        >>> model.loss(torch.randn(16, 2)).shape
        torch.Size([])
        >>> model.sample(4, method="ddim", steps=10).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        network: nn.Module,
        base: BaseDistribution | None = None,
        scheduler: Scheduler | None = None,
        prediction: str = "v",
        min_snr: float = 0.0,
        truncation: float = 1e-3,
        time_sampler: TimeSampler | None = None,
        context_dim: int = 0,
        num_classes: int = 0,
        label_dropout: float = 0.0,
        solver: SolverOptions | None = None,
    ):
        if base is None:
            shape = getattr(network, "event_shape", None)
            if shape is None:
                raise ValueError(
                    "base is needed for a network without an event_shape: pass "
                    "base=StandardNormal(shape)"
                )
            base = StandardNormal(tuple(shape))
        if type(base) is not StandardNormal:
            # The path, the loss and the samplers take the noise to be N(0, I) (a DiagNormal,
            # a StandardNormal subclass, learns another).
            raise TypeError(
                f"base must be a StandardNormal (diffusion noises the data with N(0, I)), got "
                f"{type(base).__name__}"
            )
        scheduler = scheduler or VPCosineScheduler()
        if not isinstance(scheduler, Scheduler):
            raise TypeError(
                f"scheduler must be a flowforge Scheduler, e.g. VPCosineScheduler() or "
                f"VPScheduler(), got {scheduler!r}"
            )
        path = AffinePath(scheduler)
        # The network lives once in the module tree, inside the field (state_dict keys
        # field.field.network.*); :attr:`network` reads it from there.
        super().__init__(
            PredictionField(network, path, prediction),
            base,
            context_dim,
            num_classes=num_classes,
            label_dropout=label_dropout,
            solver=solver,
        )
        self.path = path
        self.prediction = self._prediction_field.prediction
        self.min_snr = check_number(min_snr, "min_snr", 0)
        # Below 0.5 keeps the span on the data half of the path; a truncation that large is
        # already a different model.
        self.truncation = check_number(truncation, "truncation", above=0.0, below=0.5)
        self.span = (0.0, 1.0 - self.truncation)
        time_sampler = time_sampler or UniformTime()
        if not isinstance(time_sampler, TimeSampler):
            raise TypeError(
                f"time_sampler must be a flowforge TimeSampler, got {type(time_sampler).__name__}"
            )
        self.time_sampler = time_sampler

    @property
    def _prediction_field(self) -> PredictionField:
        return cast(PredictionField, self.field.field)

    @property
    def network(self) -> nn.Module:
        """The denoising network :math:`f_\\theta(t, x, c)` (held by :attr:`field`)."""
        return self._prediction_field.network

    def gaussian_path(self) -> AffinePath:
        """The model's :class:`~flowforge.matching.AffinePath`, for the stochastic samplers."""
        return self.path

    def predict(
        self,
        x: Tensor,
        t: Tensor | float,
        context: Tensor | None = None,
        target: str = "epsilon",
    ) -> Tensor:
        r"""The network's prediction at ``(t, x)`` as ``target``: ``"epsilon"``, ``"v"``,
        ``"x1"`` or ``"velocity"`` (converted exactly by the path, whatever it predicts); the
        score is :math:`-\hat\varepsilon / \sigma_t`.

        Args:
            x: ``(B, *event_shape)`` noisy points :math:`x_t`.
            t: a time in :math:`[0, 1]`, shared, or ``(B,)`` one per point.
            context: the conditioning, as for :meth:`log_prob`.
            target: the parameterisation returned.

        Returns:
            ``(B, *event_shape)``.
        """
        x, context = self._check(x, context)
        check_choice(target, "target", PARAMETERIZATIONS)
        if isinstance(t, Tensor):
            if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != x.shape[0]):
                raise ValueError(
                    f"t must be a number, a 0-d tensor or one time per point, shape "
                    f"({x.shape[0]},), got {tuple(t.shape)}"
                )
            bad = ~((t >= 0) & (t <= 1))
            if bool(bad.any()):
                raise ValueError(f"t must lie in [0, 1] (t = 0 noise, t = 1 data), got {t}")
        else:
            check_number(t, "t", 0.0, 1.0)
        return self._prediction_field.predict(t, x, self._condition(context), target)

    def _target(self, x1: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        if self.prediction == "epsilon":
            return eps
        if self.prediction == "v":
            return alpha * eps - sigma * x1
        return x1

    def _loss(self, batch: Batch) -> LossResult:
        x1 = batch.x1
        eps = batch.x0
        if eps is None:
            eps = self._base_sample(x1.shape[0])
            if eps.dtype != x1.dtype or eps.device != x1.device:
                eps = eps.to(x1)
        n = x1.shape[0]
        t = self.time_sampler(n, device=x1.device, dtype=x1.dtype) * (1.0 - self.truncation)
        s = self.path.scheduler(t)
        shape = (n, *([1] * (x1.ndim - 1)))
        alpha, sigma = s.alpha_t.reshape(shape), s.sigma_t.reshape(shape)
        x_t = alpha * x1 + sigma * eps
        context = self._condition(batch.context)
        network = self.network
        out = network(t, x_t) if context is None else network(t, x_t, context)
        # The network's evaluation counts as one of the field's, as a flow-matching step's does
        # (the trainer logs the NFE per step from the counter).
        self.field.nfe += 1
        target = self._target(x1, eps, alpha, sigma)
        weighting = None
        if self.min_snr:
            weights = min_snr_weight(
                (s.alpha_t / s.sigma_t).square(), self.min_snr, self.prediction
            )

            def weighting(_: Tensor) -> Tensor:  # cfm_loss takes the weights as a function of t
                return weights

        loss = cfm_loss(out, target, t, weighting)
        return LossResult(loss, {"mse": loss.detach()})

    def extra_repr(self) -> str:
        return (
            f"event_shape={self.event_shape}, path={self.path!r}, prediction={self.prediction}, "
            f"min_snr={self.min_snr:g}, truncation={self.truncation:g}, "
            f"solver={self.solver.method}"
        )
