"""Coupling layers: half the features condition an elementwise map of the other half."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..nets.mlp import MLP
from .base import Transform, check_features
from .univariate import AdditiveTransformer, AffineTransformer, RQSplineTransformer, Transformer


class Coupling(Transform):
    r"""Coupling layer: :math:`y_A = x_A`, :math:`y_B = \tau(x_B; \theta(x_A, c))`.

    The Jacobian is block triangular, so :math:`\log |\det J| = \sum_{i \in B} \log \tau'(x_i)`,
    and the inverse applies :math:`\tau^{-1}` with the same parameters, since :math:`x_A = y_A`.

    Args:
        features: ``D`` (at least 2).
        transformer: the elementwise map :math:`\tau`.
        mask: ``(D,)`` booleans, ``True`` for the features that are transformed (set ``B``).
            Default: the last ``D // 2`` features, or the first ``D // 2`` if ``flip``.
        flip: with the default mask, transform the first half instead of the last.
        hidden: hidden sizes of the conditioner MLP.
        context_features: ``C``, size of the conditioning vector (0 for none).
        activation: activation module class of the conditioner.

    Shapes: ``x (B, D)``, ``context (B, C)``.
    """

    def __init__(
        self,
        features: int,
        transformer: Transformer,
        mask: Tensor | None = None,
        flip: bool = False,
        hidden: Sequence[int] = (128, 128),
        context_features: int = 0,
        activation: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        if features < 2:
            raise ValueError(f"a coupling layer needs at least 2 features, got {features}")
        if mask is None:
            mask = torch.arange(features) >= features - features // 2
            if flip:
                mask = mask.flip(0)
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != (features,) or mask.all() or not mask.any():
            raise ValueError(
                f"mask must be ({features},) booleans with both True and False entries"
            )
        self.features = features
        self.transformer = transformer
        identity_idx = torch.nonzero(~mask).squeeze(1)
        transformed_idx = torch.nonzero(mask).squeeze(1)
        self.register_buffer("identity_idx", identity_idx)
        self.register_buffer("transformed_idx", transformed_idx)
        self.register_buffer("_unsplit", torch.argsort(torch.cat([identity_idx, transformed_idx])))
        n_tr = transformed_idx.numel()
        self.conditioner = MLP(
            identity_idx.numel() + context_features,
            n_tr * transformer.num_params,
            hidden,
            activation,
        )

    def _params(self, x_id: Tensor, context: Tensor | None) -> Tensor:
        h = x_id if context is None else torch.cat([x_id, context], dim=-1)
        return self.conditioner(h).view(x_id.shape[0], -1, self.transformer.num_params)

    def _couple(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        x_id, x_tr = x[:, self.identity_idx], x[:, self.transformed_idx]
        params = self._params(x_id, context)
        if inverse:
            y_tr, log_deriv = self.transformer.inverse_and_log_deriv(x_tr, params)
        else:
            y_tr, log_deriv = self.transformer.forward_and_log_deriv(x_tr, params)
        y = torch.cat([x_id, y_tr], dim=1)[:, self._unsplit]
        return y, log_deriv.sum(dim=1)

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_features(x, self.features)
        return self._couple(x, context, inverse=False)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_features(y, self.features, "y")
        return self._couple(y, context, inverse=True)


class AdditiveCoupling(Coupling):
    r"""NICE's additive coupling, :math:`y_B = x_B + t(x_A)`; volume preserving.

    References:
        NICE: Non-linear Independent Components Estimation (Dinh et al., 2014)
        https://arxiv.org/abs/1410.8516
    """

    def __init__(self, features: int, **kwargs):
        super().__init__(features, AdditiveTransformer(), **kwargs)


class AffineCoupling(Coupling):
    r"""RealNVP's affine coupling, :math:`y_B = x_B \exp(s(x_A)) + t(x_A)`, with :math:`|s| < b`.

    Args:
        features: ``D``.
        scale_bound: ``b``, the soft bound on the log-scale (see :class:`AffineTransformer`).
        **kwargs: as :class:`Coupling`.

    References:
        Density estimation using Real NVP (Dinh et al., 2016) https://arxiv.org/abs/1605.08803
    """

    def __init__(self, features: int, scale_bound: float = 3.0, **kwargs):
        super().__init__(features, AffineTransformer(scale_bound), **kwargs)


class SplineCoupling(Coupling):
    r"""Rational-quadratic spline coupling: :math:`y_B = \mathrm{RQS}(x_B; \theta(x_A))`.

    Args:
        features: ``D``.
        bins: number of spline bins.
        bound: the spline acts on :math:`[-B, B]` and is the identity outside.
        **kwargs: as :class:`Coupling`.

    References:
        Neural Spline Flows (Durkan et al., 2019) https://arxiv.org/abs/1906.04032
    """

    def __init__(self, features: int, bins: int = 8, bound: float = 5.0, **kwargs):
        super().__init__(features, RQSplineTransformer(bins, bound), **kwargs)
