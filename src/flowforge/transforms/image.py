"""Image transforms: space-to-depth squeezing, the logit preprocessing, and the multi-scale
factor-out of RealNVP and Glow."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_bool, check_number
from .base import Transform, check_event, event_shape_of, sum_except_batch, zeros_ladj
from .coupling import AffineCoupling, channel_mask

# Space-to-depth by 2: each 2x2 block of positions becomes 4 channels.
FACTOR = 2


def _image_shape(features: int | Sequence[int], what: str) -> tuple[int, int, int]:
    event = event_shape_of(features)
    if len(event) != 3:
        raise ValueError(f"{what} takes image events (C, H, W), got event shape {event}")
    c, h, w = event
    return (c, h, w)


def squeezed_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """The event shape after :class:`Squeeze`: ``(C, H, W) -> (4C, H/2, W/2)``; ``ValueError``
    for an odd ``H`` or ``W``."""
    c, h, w = _image_shape(tuple(shape), "squeeze")
    if h % FACTOR or w % FACTOR:
        raise ValueError(
            f"squeeze turns each 2x2 block into channels and needs an even height and width, "
            f"got shape {(c, h, w)}; crop or pad the images, or use fewer levels"
        )
    return (FACTOR * FACTOR * c, h // FACTOR, w // FACTOR)


class Squeeze(Transform):
    r"""Space-to-depth: :math:`(C, H, W) \to (4C, H/2, W/2)`, an exact permutation (log-det 0).

    Entry ``(c, 2i + a, 2j + b)`` moves to ``(4c + 2a + b, i, j)``: the four pixels of each
    2x2 block become four channels, so later couplings and 1x1 convolutions mix neighbouring
    pixels. The inverse (depth-to-space) puts them back. It changes the event shape:
    ``event_shape`` is what it takes, ``out_shape`` what it returns.

    Args:
        features: the image event shape ``(C, H, W)``, ``H`` and ``W`` even.

    Shapes: ``x (B, C, H, W) -> (B, 4C, H/2, W/2)``.

    References:
        Density estimation using Real NVP (Dinh et al., 2016) https://arxiv.org/abs/1605.08803
    """

    def __init__(self, features: Sequence[int]):
        super().__init__()
        self.event_shape = _image_shape(features, "Squeeze")
        self.out_shape = squeezed_shape(self.event_shape)

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(x, self.event_shape)
        b, (c, h, w) = x.shape[0], self.out_shape
        y = x.reshape(b, c // FACTOR**2, h, FACTOR, w, FACTOR).permute(0, 1, 3, 5, 2, 4)
        return y.reshape(b, c, h, w), zeros_ladj(x)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(y, self.out_shape, "y")
        b, (c, h, w) = y.shape[0], self.event_shape
        x = y.reshape(b, c, FACTOR, FACTOR, h // FACTOR, w // FACTOR).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c, h, w), zeros_ladj(y)


class Logit(Transform):
    r""":math:`y = \operatorname{logit}(\alpha + (1 - 2\alpha) x)`: data in :math:`[0, 1]` to
    the real line, with its log-determinant counted.

    The preprocessing of RealNVP for dequantised images: the logit's unbounded range suits a
    Gaussian base better than the unit interval, and :math:`\alpha` keeps it finite at 0 and 1.
    With :math:`s = \alpha + (1 - 2\alpha) x`,
    :math:`\log |\det J| = \sum_i \log(1 - 2\alpha) - \log s_i - \log(1 - s_i)`, so a density
    on ``y`` stays an exact density on ``x`` (and bits/dim in the data space stay exact).

    Args:
        features: the event shape, ``D`` or ``(C, H, W)``.
        alpha: :math:`\alpha \in (0, 1/2)`; 0.05 is RealNVP's choice for CIFAR-10.

    Shapes: ``x (B, *event_shape)`` with entries in ``[0, 1]`` (strictly: with
    :math:`0 < s < 1`; a ``ValueError`` otherwise), ``y`` any real.

    References:
        Density estimation using Real NVP (Dinh et al., 2016) https://arxiv.org/abs/1605.08803
    """

    def __init__(self, features: int | Sequence[int], alpha: float = 0.05):
        super().__init__()
        self.event_shape = event_shape_of(features)
        self.alpha = check_number(alpha, "alpha", above=0, below=0.5)
        # log(1 - 2 alpha): the constant part of every entry's log-derivative.
        self._log_width = math.log1p(-2 * self.alpha)

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(x, self.event_shape)
        s = self.alpha + (1 - 2 * self.alpha) * x
        # One check of the domain (s in (0, 1), a little wider than x in [0, 1], the image of
        # the inverse): outside it the logit is NaN, which would surface far from the cause.
        if bool(((s <= 0) | (s >= 1)).any()):
            raise ValueError(
                f"Logit takes x in [0, 1] (dequantised data), got values in "
                f"[{float(x.min()):.4g}, {float(x.max()):.4g}]; rescale the data to [0, 1] and "
                f"train without standardisation"
            )
        log_s, log_1ms = torch.log(s), torch.log1p(-s)
        return log_s - log_1ms, sum_except_batch(self._log_width - log_s - log_1ms)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(y, self.event_shape, "y")
        x = (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)
        # log s + log(1 - s) with s = sigmoid(y), in the stable softplus form.
        log_deriv = -F.softplus(-y) - F.softplus(y) - self._log_width
        return x, sum_except_batch(log_deriv)


def kept_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """The event shape that stays after :class:`FactorOut`: the first ``C - C // 2`` entries
    of dimension 1 (channels, or features of a vector)."""
    event = event_shape_of(tuple(shape), "shape")
    return (event[0] - event[0] // 2, *event[1:])


class FactorOut(Transform):
    r"""Multi-scale factor-out: :math:`y = [\,g(x_k),\ h(x_\ell; x_k, c)\,]`.

    The last ``C // 2`` channels :math:`x_\ell` (features of a vector) *leave*: nothing else
    transforms them, so in a :class:`~flowforge.distributions.Flow` they go straight to the
    base. The first ``C - C // 2`` channels :math:`x_k` *stay* and go through ``inner``
    (:math:`g`, the rest of the flow at this and coarser scales). The output keeps the input's
    layout, kept channels first, so the transform has one event shape in and out.

    With ``prior``, the leaving half first passes through a learned affine map conditioned on
    the kept half (and the context), :math:`h = x_\ell \odot e^{s(x_k, c)} + t(x_k, c)`:
    under a standard normal base this is Glow's learned conditional Gaussian
    :math:`p(x_\ell \mid x_k)`. Without it :math:`h` is the identity (RealNVP). The map is an
    :class:`~flowforge.transforms.AffineCoupling` with the channel mask, started at the
    identity.

    Args:
        features: the event shape, ``(C, H, W)`` or ``D``, with at least 2 channels.
        inner: the transform of the kept half, event shape :func:`kept_shape`; None keeps it
            as it is.
        prior: learn the conditional affine map of the leaving half.
        hidden: widths of the prior's network (3x3 convolutions on images, an MLP on vectors).
        context_features: ``E``, size of the conditioning vector (0 for none); ``inner`` gets
            the same context.
        activation: activation module class of the prior's network.

    Shapes: ``x (B, *event_shape)``, ``context (B, E)``.

    References:
        Density estimation using Real NVP (Dinh et al., 2016) https://arxiv.org/abs/1605.08803

        Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma & Dhariwal, 2018)
        https://arxiv.org/abs/1807.03039
    """

    def __init__(
        self,
        features: int | Sequence[int],
        inner: Transform | None = None,
        prior: bool = False,
        hidden: Sequence[int] = (64,),
        context_features: int = 0,
        activation: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        self.event_shape = event_shape_of(features)
        if self.event_shape[0] < 2:
            raise ValueError(
                f"a factor-out splits dimension 1 in two and needs at least 2 channels, got "
                f"event shape {self.event_shape}; squeeze the image first"
            )
        if inner is not None and not isinstance(inner, Transform):
            raise TypeError(f"inner must be a flowforge Transform, got {type(inner).__name__}")
        self.kept = self.event_shape[0] - self.event_shape[0] // 2
        self.inner = inner
        self.prior = None
        if check_bool(prior, "prior"):
            self.prior = AffineCoupling(
                self.event_shape,
                mask=channel_mask(self.event_shape),
                hidden=hidden,
                context_features=context_features,
                activation=activation,
                conditioner="conv" if len(self.event_shape) == 3 else "mlp",
            )

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(x, self.event_shape)
        ladj = zeros_ladj(x)
        if self.prior is not None:
            x, ladj = self.prior.forward_and_ladj(x, context)
        if self.inner is None:
            return x, ladj
        kept, step = self.inner.forward_and_ladj(x[:, : self.kept], context)
        return torch.cat([kept, x[:, self.kept :]], dim=1), ladj + step

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(y, self.event_shape, "y")
        ladj = zeros_ladj(y)
        if self.inner is not None:
            kept, ladj = self.inner.inverse_and_ladj(y[:, : self.kept], context)
            y = torch.cat([kept, y[:, self.kept :]], dim=1)
        if self.prior is None:
            return y, ladj
        x, step = self.prior.inverse_and_ladj(y, context)
        return x, ladj + step


class MultiScale(Transform):
    r"""One scale of a multi-scale flow: squeeze, ``transform``, factor out, unsqueeze.

    :math:`y = S^{-1}(\mathrm{FactorOut}(f(S(x)); g))`: the image ``(C, H, W)`` is squeezed to
    ``(4C, H/2, W/2)`` (:class:`Squeeze`), ``transform`` (:math:`f`, the flow steps of this
    scale) acts there, then half the channels leave and the other half go through ``inner``
    (:math:`g`, the coarser scales, usually another ``MultiScale`` or couplings), by
    :class:`FactorOut`, and the result is laid back out as ``(C, H, W)``. Every step is exact
    and the squeezes are permutations, so the event shape is the same in and out and
    ``Flow(MultiScale(...), StandardNormal((C, H, W)))`` is an ordinary flow: the entries that
    left at each scale are standard normal under the base, as in RealNVP and Glow.

    Args:
        features: the image event shape ``(C, H, W)``, ``H`` and ``W`` even.
        transform: the steps at this scale, event shape ``(4C, H/2, W/2)`` in and out.
        inner: the transform of the kept half ``(2C, H/2, W/2)``; None for the last scale,
            where nothing leaves (every channel stays in ``transform``'s output).
        prior: with ``inner``, Glow's learned conditional Gaussian of the leaving half given
            the kept half (see :class:`FactorOut`).
        hidden: widths of the prior's convolutional network.
        context_features: ``E``, size of the conditioning vector (0 for none).
        activation: activation module class of the prior's network.

    Shapes: ``x (B, C, H, W)``, ``context (B, E)``.

    References:
        Density estimation using Real NVP (Dinh et al., 2016) https://arxiv.org/abs/1605.08803

        Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma & Dhariwal, 2018)
        https://arxiv.org/abs/1807.03039
    """

    def __init__(
        self,
        features: Sequence[int],
        transform: Transform,
        inner: Transform | None = None,
        prior: bool = False,
        hidden: Sequence[int] = (64,),
        context_features: int = 0,
        activation: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        if not isinstance(transform, Transform):
            raise TypeError(
                f"transform must be a flowforge Transform, got {type(transform).__name__}"
            )
        self.squeeze = Squeeze(features)
        self.event_shape = self.squeeze.event_shape
        self.transform = transform
        self.split: FactorOut | None = None
        if check_bool(prior, "prior") and inner is None:
            raise ValueError(
                "prior=True models the channels that leave, but with inner=None nothing leaves "
                "(the last scale); give the kept half's transform as inner, or prior=False"
            )
        if inner is not None:
            self.split = FactorOut(
                self.squeeze.out_shape, inner, prior, hidden, context_features, activation
            )

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, _ = self.squeeze.forward_and_ladj(x)
        x, ladj = self.transform.forward_and_ladj(x, context)
        if self.split is not None:
            x, step = self.split.forward_and_ladj(x, context)
            ladj = ladj + step
        return self.squeeze.inverse_and_ladj(x)[0], ladj

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(y, self.event_shape, "y")
        y, _ = self.squeeze.forward_and_ladj(y)
        ladj = zeros_ladj(y)
        if self.split is not None:
            y, ladj = self.split.inverse_and_ladj(y, context)
        y, step = self.transform.inverse_and_ladj(y, context)
        return self.squeeze.inverse_and_ladj(y)[0], ladj + step
