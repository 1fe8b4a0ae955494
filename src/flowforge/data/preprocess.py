r"""Standardisation stored with the model: train on :math:`u = (x - \mu) / \sigma`, answer in
the user's units."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch
from torch import Tensor

from ..distributions.batch import Batch, LossResult
from ..distributions.model import Model

# A feature whose std is below this fraction of the widest feature's is treated as constant:
# its std is raised to it so u = (x - mean) / std stays finite (a constant feature maps to 0),
# while a relative floor leaves data given in very small units (all stds tiny) untouched.
_RELATIVE_STD_FLOOR = 1e-6


def fit_standardization(x: Tensor) -> tuple[Tensor, Tensor]:
    r"""Per-feature mean and standard deviation of ``x``: :math:`\mu = \bar x`,
    :math:`\sigma = \max(s, 10^{-6} \max_j s_j)`.

    :math:`s` is the (population) standard deviation over the batch. A constant feature has
    :math:`s = 0`; the floor, relative to the widest feature, keeps :math:`1/\sigma` finite. If
    every feature is constant, :math:`\sigma = 1`.

    Args:
        x: ``(N, *event_shape)`` training data, ``N >= 1``, finite.

    Returns:
        ``(mean, std)``, each ``event_shape``, in the dtype of ``x``.

    Example:
        >>> import torch
        >>> from flowforge.data import fit_standardization
        >>> mean, std = fit_standardization(torch.tensor([[0.0, 5.0], [2.0, 5.0]]))
        >>> mean.tolist(), std[0].item()
        ([1.0, 5.0], 1.0)
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (N, *event_shape) with N >= 1, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x has NaN or infinite values; clean the data before standardising")
    mean = x.mean(dim=0)
    std = x.std(dim=0, correction=0)
    widest = float(std.max())
    if widest == 0.0:
        return mean, torch.ones_like(std)
    return mean, std.clamp_min(_RELATIVE_STD_FLOOR * widest)


class Standardize(Model):
    r"""A model of :math:`x` built from a model of the standardised :math:`u = (x - \mu)/\sigma`.

    .. math:: \log p_X(x) = \log p_U\big((x - \mu)/\sigma\big) - \sum_i \log \sigma_i,

    the change of variables of the elementwise affine map. ``sample`` and ``decode`` return
    :math:`x = \sigma u + \mu`, in the user's units; ``encode`` standardises and then encodes;
    ``loss`` is the inner model's loss on :math:`u` (it differs from the NLL of :math:`x` by the
    constant :math:`\sum_i \log \sigma_i`). ``mean`` and ``std`` are buffers, so they are saved
    in the state dict (and ``model.safetensors``) with the weights and follow ``.to()``.

    Args:
        model: the inner model, of :math:`u`; ``event_shape`` and ``context_dim`` are its own.
        mean: :math:`\mu`, shape ``event_shape`` (or anything that broadcasts to it).
        std: :math:`\sigma > 0`, shape ``event_shape`` (or anything that broadcasts to it).

    Example:
        >>> import torch, flowforge as ff
        >>> x = 100 + 10 * torch.randn(500, 2)
        >>> model = ff.data.Standardize(
        ...     ff.models.create("maf", dim=2), *ff.data.fit_standardization(x)
        ... )
        >>> model.loss(x).shape, model.sample(3).shape
        (torch.Size([]), torch.Size([3, 2]))
    """

    mean: Tensor  # a buffer
    std: Tensor  # a buffer

    def __init__(self, model: Model, mean: Tensor | float, std: Tensor | float):
        super().__init__()
        if not isinstance(model, Model):
            raise TypeError(f"model must be a flowforge Model, got {type(model).__name__}")
        self.inner = model
        self.event_shape = tuple(model.event_shape)
        self.context_dim = int(model.context_dim)
        self.num_classes = int(model.num_classes)
        self.label_dropout = float(model.label_dropout)
        dtype = model.dtype
        mean = self._statistic(mean, "mean", dtype)
        std = self._statistic(std, "std", dtype)
        if not bool((std > 0).all()):
            raise ValueError(f"std must be positive everywhere, got minimum {float(std.min())}")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def _statistic(self, value: Tensor | float, name: str, dtype: torch.dtype) -> Tensor:
        if isinstance(value, bool) or not isinstance(value, (Tensor, int, float)):
            raise TypeError(f"{name} must be a torch.Tensor or a float, got {type(value).__name__}")
        value = torch.as_tensor(value, dtype=dtype)
        try:
            value = torch.broadcast_to(value, self.event_shape).clone()
        except RuntimeError:
            raise ValueError(
                f"{name} must have the model's event_shape {self.event_shape}, "
                f"got {tuple(value.shape)}"
            ) from None
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} has NaN or infinite values")
        return value

    # -- the affine map -------------------------------------------------------------------------
    def _standardize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def _unstandardize(self, u: Tensor) -> Tensor:
        return u * self.std + self.mean

    def _log_abs_std(self) -> Tensor:
        r""":math:`\sum_i \log \sigma_i`, the log-det of :math:`u \mapsto x`."""
        return torch.log(self.std).sum()

    # -- the model protocol, delegated ---------------------------------------------------------
    def _described(self) -> str:
        return self.inner._described()

    @property
    def solver_keys(self) -> tuple[str, ...]:
        """The inner model's solver options (a continuous model's are passed through)."""
        return self.inner.solver_keys

    def _log_prob(self, x: Tensor, context: Tensor | None, **solver: object) -> Tensor:
        return self.inner._log_prob(self._standardize(x), context, **solver) - self._log_abs_std()

    def _loss(self, batch: Batch) -> LossResult:
        # Only the data are in the user's units; given noise x0 lives in the model's space.
        return self.inner._loss(replace(batch, x1=self._standardize(batch.x1)))

    def _encode(self, x: Tensor, context: Tensor | None, **solver: object) -> Tensor:
        return self.inner._encode(self._standardize(x), context, **solver)

    def _decode(self, z: Tensor, context: Tensor | None, **solver: object) -> Tensor:
        return self._unstandardize(self.inner._decode(z, context, **solver))

    def _base_sample(self, n: int) -> Tensor:
        return self.inner._base_sample(n)

    def _null(self, n: int) -> Tensor:
        return self.inner._null(n)

    def _sample_and_log_prob(
        self, z: Tensor, context: Tensor | None, **solver: object
    ) -> tuple[Tensor, Tensor]:
        # The inner model's one-pass way where it has one (flows and continuous flows).
        u, log_p = self.inner._sample_and_log_prob(z, context, **solver)
        return self._unstandardize(u), log_p - self._log_abs_std()

    # -- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, object]:
        """The statistics as JSON-ready lists: ``{"mean": [...], "std": [...]}``, nested like
        ``event_shape``; the inner model is configured and saved on its own."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, model: Model, data: Mapping[str, object]) -> Standardize:
        """Rebuild around ``model`` from :meth:`to_dict`'s output (e.g. read from config.json).

        Raises:
            ValueError: ``data`` lacks ``mean`` or ``std``, or they do not fit the model.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"data must be a mapping, got {type(data).__name__}")
        missing = [k for k in ("mean", "std") if k not in data]
        if missing:
            raise ValueError(f"standardisation data lacks {' and '.join(missing)}")
        stats = []
        for k in ("mean", "std"):
            try:
                stats.append(torch.tensor(data[k], dtype=torch.float64))
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(
                    f"{k} must be a (nested) list of numbers, got {data[k]!r}"
                ) from None
            if tuple(stats[-1].shape) != tuple(model.event_shape):
                raise ValueError(
                    f"{k} must have the model's event_shape {tuple(model.event_shape)}, "
                    f"got {tuple(stats[-1].shape)}"
                )
        return cls(model, stats[0], stats[1])

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, log_det={float(self._log_abs_std()):.4g}"
