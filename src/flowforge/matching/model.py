"""The flow-matching model: a continuous normalizing flow trained by regression, not simulation."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from ..distributions.batch import Batch, LossResult
from ..distributions.normal import BaseDistribution, StandardNormal
from ..dynamics import CNF, SolverOptions
from .couplings import Coupling, IndependentCoupling
from .loss import cfm_loss
from .paths import AffinePath, SchrodingerBridgePath
from .time import TimeSampler, UniformTime


class FlowMatching(CNF):
    r"""A CNF whose field is trained by conditional flow matching.

    Each training step draws noise :math:`x_0` from the base for a batch of data :math:`x_1`,
    re-pairs them with the ``coupling``, draws times with the ``time_sampler``, takes the point
    :math:`x_t` and velocity :math:`\dot x_t` of the ``path`` between each pair, and regresses
    :math:`v_\theta(t, x_t, c)` onto :math:`\dot x_t` (:func:`~flowforge.matching.cfm_loss`): one
    evaluation of the field per step, no ODE solve. A :class:`~flowforge.Batch` that carries its
    own noise (``Batch(x1, x0=z)``: a model's own noise/sample pairs, for reflow or
    distillation) is regressed along the path from the given ``x0``, without drawing noise or
    re-pairing. The trained model is a
    :class:`~flowforge.dynamics.CNF` like any other, so ``sample``, ``decode``, ``encode`` and
    the exact ``log_prob`` integrate its field, with solver options as keywords
    (``model.sample(n, method="euler", steps=4)``).

    Args:
        field: the vector field ``v(t, x, context=None)``.
        base: the noise distribution at :math:`t = 0`, of any ``event_shape`` (``(D,)`` for
            vectors, ``(C, H, W)`` for images).
        path: an :class:`AffinePath` (default: the linear conditional-OT path) or a
            :class:`SchrodingerBridgePath`.
        coupling: how noise is paired with data (default: independently).
        time_sampler: the distribution of :math:`t` (default: uniform).
        weighting: optional per-time weight :math:`w(t)` of the loss.
        context_dim: ``C`` conditioning features (0 for none).
        num_classes: ``K`` class labels to condition on (0 for none; see
            :class:`~flowforge.Model`).
        label_dropout: the probability that a training sample's condition is replaced by the
            null one, so the field also learns the unconditional velocity (classifier-free
            guidance: ``sample(n, context=y, guidance=w)``).
        solver: default solver of sampling and likelihood (default: dopri5 at 1e-5).

    References:
        Flow Matching for Generative Modeling (Lipman et al., 2022)
        https://arxiv.org/abs/2210.02747; Flow Straight and Fast (Liu et al., 2022)
        https://arxiv.org/abs/2209.03003; Improving and generalizing flow-based generative
        models with minibatch optimal transport (Tong et al., 2023)
        https://arxiv.org/abs/2302.00482
    """

    def __init__(
        self,
        field: nn.Module,
        base: BaseDistribution,
        path: AffinePath | SchrodingerBridgePath | None = None,
        coupling: Coupling | None = None,
        time_sampler: TimeSampler | None = None,
        weighting: Callable[[Tensor], Tensor] | None = None,
        context_dim: int = 0,
        solver: SolverOptions | None = None,
        num_classes: int = 0,
        label_dropout: float = 0.0,
    ):
        super().__init__(
            field,
            base,
            context_dim,
            num_classes=num_classes,
            label_dropout=label_dropout,
            solver=solver,
        )
        path = path or AffinePath()
        coupling = coupling or IndependentCoupling()
        time_sampler = time_sampler or UniformTime()
        for name, value, kind in (
            ("path", path, (AffinePath, SchrodingerBridgePath)),
            ("coupling", coupling, Coupling),
            ("time_sampler", time_sampler, TimeSampler),
        ):
            if not isinstance(value, kind):
                raise TypeError(f"{name} must be a flowforge {name}, got {type(value).__name__}")
        if weighting is not None and not callable(weighting):
            raise TypeError(f"weighting must be a function of t, got {type(weighting).__name__}")
        self.path = path
        self.coupling = coupling
        self.time_sampler = time_sampler
        self.weighting = weighting

    def gaussian_path(self) -> AffinePath:
        r"""The model's path, for the stochastic samplers (``method="ddpm"``, ``"ddim"``,
        ``"euler-maruyama"``): an :class:`AffinePath` between independent standard-normal
        noise and the data, on which the score follows from the velocity,
        :math:`\nabla\log p_t(x) = -\hat\varepsilon(t, x) / \sigma_t`.

        Raises ``ValueError`` saying why for a model without one: the Schrödinger-bridge
        path (not affine), pairs drawn by a coupling other than the independent one (with
        minibatch-OT pairs, :math:`x_t` given :math:`x_1` is not Gaussian, so the score does not
        follow from the velocity), or a base other than the standard normal.
        """
        why = None
        path = self.path
        if not isinstance(path, AffinePath):
            why = f"its path is {path!r}, not an affine one"
        elif not isinstance(self.coupling, IndependentCoupling):
            why = (
                f"its noise is paired with the data by {self.coupling!r}: x_t given x1 is then "
                "not Gaussian, so the score does not follow from the velocity"
            )
        elif not isinstance(self.base, StandardNormal):
            why = f"its base is {type(self.base).__name__}, not the standard normal"
        if why is not None or not isinstance(path, AffinePath):
            raise ValueError(
                f"the stochastic samplers step along an affine Gaussian path with independent "
                f"standard-normal noise, and {self._described()} is not on one: {why}; sample "
                "it with an ODE method (method='dopri5', or 'euler'/'heun'/'rk4' with steps)"
            )
        return path

    def _pairs(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """The (noise, data) pairs of a training batch: drawn and re-paired by the coupling, or
        the batch's own ``x0`` as it comes."""
        x1 = batch.x1
        if batch.x0 is None:
            x0 = self._base_sample(x1.shape[0])
            if x0.dtype != x1.dtype or x0.device != x1.device:
                x0 = x0.to(x1)
            # The data keep their order, so each context row stays with its data row.
            return self.coupling(x0, x1)
        return batch.x0, x1  # given pairs (reflow, distillation) are kept as they come

    def _loss(self, batch: Batch) -> LossResult:
        x0, x1 = self._pairs(batch)
        t = self.time_sampler(x1.shape[0], device=x1.device, dtype=x1.dtype)
        sample = self.path.sample(x0, x1, t)
        context = self._condition(batch.context)
        loss = cfm_loss(self.field(t, sample.x_t, context), sample.dx_t, t, self.weighting)
        return LossResult(loss, {"cfm": loss.detach()})

    def extra_repr(self) -> str:
        return (
            f"event_shape={self.event_shape}, path={self.path!r}, coupling={self.coupling!r}, "
            f"time_sampler={self.time_sampler!r}, solver={self.solver.method}"
        )
