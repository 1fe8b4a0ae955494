"""Masked autoregressive transforms (MAF) and, through :class:`Inverse`, IAF."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..nets.made import MADE
from .base import Transform, check_event, event_shape_of, sum_except_batch
from .univariate import AffineTransformer, RQSplineTransformer, Transformer


class MaskedAutoregressive(Transform):
    r"""Autoregressive map :math:`y_i = \tau(x_i; \theta_i(x_{<i}, c))` with a MADE conditioner.

    The Jacobian is triangular, :math:`\log |\det J| = \sum_i \log \tau'(x_i)`. The forward
    direction takes one network pass; the inverse takes ``D`` passes, one per feature, because
    :math:`x_i` needs :math:`x_{<i}` first. Used as the data-to-noise direction this is MAF
    (fast density); wrapped in :class:`Inverse` it is IAF (fast sampling).

    Vectors only: the autoregressive order runs over the ``D`` features of a flat event.

    Args:
        features: ``D`` (or ``(D,)``).
        transformer: the elementwise map :math:`\tau`.
        hidden: hidden sizes of the MADE.
        context_features: ``C``, size of the conditioning vector (0 for none).
        order: autoregressive order, a permutation of ``0..D-1`` (default: natural order).
        activation: activation module class of the MADE.

    Shapes: ``x (B, D)``, ``context (B, C)``.

    References:
        Masked Autoregressive Flow for Density Estimation (Papamakarios et al., 2017)
        https://arxiv.org/abs/1705.07057
    """

    def __init__(
        self,
        features: int | Sequence[int],
        transformer: Transformer,
        hidden: Sequence[int] = (128, 128),
        context_features: int = 0,
        order: Tensor | None = None,
        activation: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        self.event_shape = event_shape_of(features)
        if len(self.event_shape) != 1:
            raise ValueError(
                f"a masked autoregressive transform takes flat vectors (D,), got event shape "
                f"{self.event_shape}; use a coupling layer for images"
            )
        features = self.event_shape[0]
        self.features = features
        self.transformer = transformer
        self.made = MADE(
            features, transformer.num_params, hidden, context_features, order, activation
        )

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(x, self.event_shape)
        y, log_deriv = self.transformer.forward_and_log_deriv(x, self.made(x, context))
        return y, sum_except_batch(log_deriv)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(y, self.event_shape, "y")
        # After pass k the first k features in the order are exact; the last pass computes
        # every parameter from exact inputs, so its log-derivative is the exact one.
        x = y.new_zeros(y.shape)
        for _ in range(self.features):
            x, log_deriv = self.transformer.inverse_and_log_deriv(y, self.made(x, context))
        return x, sum_except_batch(log_deriv)


class MaskedAffineAutoregressive(MaskedAutoregressive):
    r"""MAF layer with affine transformer, :math:`y_i = x_i \exp(s_i) + t_i`, :math:`|s_i| < b`."""

    def __init__(self, features: int | Sequence[int], scale_bound: float = 3.0, **kwargs):
        super().__init__(features, AffineTransformer(scale_bound), **kwargs)


class MaskedSplineAutoregressive(MaskedAutoregressive):
    r"""Autoregressive rational-quadratic spline layer (the autoregressive neural spline flow).

    References:
        Neural Spline Flows (Durkan et al., 2019) https://arxiv.org/abs/1906.04032
    """

    def __init__(self, features: int | Sequence[int], bins: int = 8, bound: float = 5.0, **kwargs):
        super().__init__(features, RQSplineTransformer(bins, bound), **kwargs)
