"""The recipe of the diffusion baseline: ``diffusion`` (a VP diffusion model in continuous time)."""

from __future__ import annotations

from ..diffusion import SCHEDULES, Diffusion
from ..distributions import StandardNormal, conditioning_features
from ..dynamics import SolverOptions
from ..transforms.base import event_shape_of
from .continuous import Hidden, vector_field
from .matching import TRAIN_BY_OPTION
from .registry import register

# The lr of the flow-matching recipes suits the same regression on the same field: with
# flowforge's trainer (2,000 steps of batch 256 on the standardised checkerboard, the default
# cosine + v model) the test NLL was 3.986 at lr 5e-3, 3.914 at 1e-2 (medians of 3 seeds) and
# 4.310 at 2e-2 (seed 0); linear + epsilon: 4.187 / 4.136 / 4.040 at 1e-3 / 3e-3 / 1e-2
# (docs/diffusion.md).
TRAIN_DEFAULTS = {"lr": 1e-2}


@register(
    "diffusion",
    "Diffusion (DDPM / VP-SDE): a denoising network, sampled by DDPM, DDIM or its ODE",
    train=TRAIN_DEFAULTS,
    images=True,
    # field="unet": lr 2e-3, measured for diffusion with fm's (models/matching.py)
    train_by_option=TRAIN_BY_OPTION,
)
def diffusion(
    shape: tuple[int, ...],
    hidden: Hidden = (256, 256, 256),
    time_embedding: str = "concat",
    activation: str = "silu",
    field: str = "mlp",
    channels: int = 16,
    schedule: str = "cosine",
    beta_min: float = 0.1,
    beta_max: float = 20.0,
    prediction: str = "v",
    min_snr: float = 0.0,
    truncation: float = 1e-3,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    context_dim: int = 0,
    num_classes: int = 0,
    label_dropout: float = 0.1,
) -> Diffusion:
    """A variance-preserving :class:`~flowforge.diffusion.Diffusion` model with a
    :class:`~flowforge.nets.TimeMLP` network (the field network of ``fm``), from names.

    ``schedule``: ``"cosine"`` (Nichol & Dhariwal's, the default) or ``"linear"`` (DDPM's
    linear beta from ``beta_min`` to ``beta_max``, the VP-SDE of Song et al.; the beta options
    are used by it alone). ``prediction``: what the network predicts, ``"v"`` (Salimans & Ho,
    the default), ``"epsilon"`` (the noise, Ho et al.) or ``"x1"`` (the data). ``min_snr``:
    gamma of min-SNR weighting (Hang et al., 2023; 0 is the simple loss). ``truncation``:
    samples and densities live at ``t = 1 - truncation``.

    The defaults are measured (docs/diffusion.md): on the standardised checkerboard (2,000 steps
    of batch 256 with the recipe's lr 1e-2, seeds 0-2, medians) cosine + v reached a test NLL of
    3.914 and energy distances 0.0010 (dopri5) / 0.0036 (Euler, NFE 4) / 0.0079 (DDIM, 16
    steps) / 0.0056 (DDPM, 64 steps), against DDPM's linear + epsilon's 4.040 and 0.0033 /
    0.0078 / 0.0148 / 0.0106; cosine + epsilon (4.07 / 4.10, seeds 0 / 1), linear + v (4.39)
    and x1 (4.16) were worse, and min-SNR-5 on cosine + v cost NLL (3.956) for a small gain
    in few-step DDIM. ``fm`` under the same protocol (seed 0): 3.923, 0.0015 (dopri5). A
    v-model's probability-flow velocity on a VP path is the network's output times
    ``-alpha'_t / sigma_t``, with no term in x: fewer solver steps, and inverses exact to 1e-7
    where an untrained epsilon-model's (``alpha'_t / alpha_t * x``, 10 to 236 at the noise end)
    manages 1e-5.

    Sampling and likelihoods default to the probability-flow ODE with dopri5 at
    ``rtol``/``atol``; ``model.sample(n, method="ddpm", steps=50)`` draws ancestral samples,
    ``method="ddim"`` DDIM's, ``method="euler-maruyama"`` the reverse SDE's, and every ODE
    solver integrates the probability-flow ODE (``method="heun", steps=16``).

    ``shape`` is the event shape, ``(D,)`` for vectors or ``(C, H, W)`` for images (an int
    ``D`` means ``(D,)``). ``field`` picks the network as for ``fm``: ``"mlp"`` (over the
    flattened event for images) or, for images, ``"unet"`` (width ``channels``, 16 as for
    ``fm``, trained at lr 2e-3 by default);
    ``context_dim`` conditions on float features, ``num_classes`` on class labels, with
    ``label_dropout`` (default 0.1) for classifier-free guidance as for ``fm``.
    """
    shape = event_shape_of(shape, "shape")
    scheduler = SCHEDULES[schedule](beta_min=beta_min, beta_max=beta_max)
    features = conditioning_features(context_dim, num_classes)
    return Diffusion(
        vector_field(
            shape,
            hidden,
            time_embedding,
            activation,
            features,
            zero_output=False,
            field=field,
            channels=channels,
        ),
        StandardNormal(shape),
        scheduler=scheduler,
        prediction=prediction,
        min_snr=min_snr,
        truncation=truncation,
        context_dim=context_dim,
        num_classes=num_classes,
        label_dropout=label_dropout,
        solver=SolverOptions("dopri5", None, rtol, atol),
    )
