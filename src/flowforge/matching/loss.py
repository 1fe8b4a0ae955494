"""The conditional flow-matching regression."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor


def cfm_loss(
    prediction: Tensor,
    target: Tensor,
    t: Tensor | None = None,
    weighting: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    r"""The conditional flow-matching loss
    :math:`\frac1B \sum_i w(t_i)\, \frac1D \|v_\theta(t_i, x_{t_i}) - \dot x_{t_i}\|^2`,
    ``D`` the number of entries of one event (``C H W`` for images).

    Its gradient equals that of the regression onto the (intractable) marginal velocity, so
    minimising it learns the marginal field (Lipman et al., 2022, Theorem 2).

    Args:
        prediction: ``(B, *)`` the network's velocity at ``(t, x_t)``.
        target: ``(B, *)`` the conditional velocity ``dx_t`` of the path.
        t: ``(B,)`` times, needed with ``weighting``.
        weighting: optional :math:`w(t) \ge 0`, ``(B,) -> (B,)``; none weighs all times alike.

    Returns:
        A scalar.
    """
    check_same_shape(prediction, target)
    if weighting is None:  # every sample has prod(event) values: the mean of means is the mean
        return (prediction - target).square().mean()
    per_sample = (prediction - target).square().flatten(1).mean(dim=1)
    if t is None:
        raise ValueError("a weighting needs the times t")
    return (weighting(t) * per_sample).mean()


def check_same_shape(prediction: Tensor, target: Tensor) -> None:
    """A regression's prediction and target must have the same shape: ``ValueError`` else."""
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target must have the same shape, got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}"
        )
