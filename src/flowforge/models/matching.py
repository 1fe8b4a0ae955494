"""Recipes for flow matching: ``fm`` (Lipman et al.), ``rectified`` (Liu et al.), ``otfm``
(Tong et al.) and ``sbfm`` (Schrödinger-bridge CFM), one builder with different defaults."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ..distributions import StandardNormal, conditioning_features
from ..dynamics import SolverOptions
from ..matching import COUPLINGS, PATHS, TIME_SAMPLERS, FlowMatching
from ..transforms.base import event_shape_of
from .continuous import Hidden, vector_field
from .registry import register


def flow_matching(
    shape: tuple[int, ...],
    hidden: Hidden = (256, 256, 256),
    time_embedding: str = "concat",
    activation: str = "silu",
    field: str = "mlp",
    channels: int = 16,
    path: str = "condot",
    sigma_min: float = 1e-4,
    exponent: float = 2.0,
    sigma: float = 0.5,
    coupling: str = "independent",
    time_sampler: str = "uniform",
    loc: float = 0.0,
    scale: float = 1.0,
    mode_scale: float = 1.29,
    shift: float = 1.0,
    stratified: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    context_dim: int = 0,
    num_classes: int = 0,
    label_dropout: float = 0.1,
) -> FlowMatching:
    """A :class:`~flowforge.matching.FlowMatching` model with a :class:`~flowforge.nets.TimeMLP`
    (or, for images, :class:`~flowforge.nets.UNet`) field, from names.

    ``path``: ``"condot"`` (linear, ``sigma_min``), ``"cosine"``, ``"polynomial"``
    (``exponent``), ``"vp"`` (the diffusion path) or ``"bridge"`` (Schrödinger bridge,
    ``sigma``). ``coupling``: ``"independent"``, ``"ot"`` (exact minibatch OT) or ``"sinkhorn"``
    (entropic, ``sigma``). ``time_sampler``: ``"uniform"``, ``"logit-normal"`` (``loc``,
    ``scale``) or ``"mode"`` (``mode_scale``), each with ``shift``; the times are drawn
    independently unless ``stratified=True`` (one time per stratum of [0, 1] in each batch:
    the same law, a lower-variance loss, but no measurable gain in test NLL or samples on the
    checkerboard, 3 seeds, docs/matching.md). Sampling and likelihoods default to dopri5 at
    ``rtol``/``atol``; pass solver options to go faster
    (``model.sample(n, method="euler", steps=8)``).

    ``shape`` is the event shape, ``(D,)`` for vectors or ``(C, H, W)`` for images (an int
    ``D`` means ``(D,)``). ``field`` picks the network: ``"mlp"`` (a ``TimeMLP`` of
    ``hidden``, ``time_embedding``, ``activation``, over the flattened event for images) or,
    for images, ``"unet"`` (a :class:`~flowforge.nets.UNet` of width ``channels``, trained at
    lr 2e-3 by default; see docs/matching.md for when it pays). ``channels=16`` is measured: on
    the 8x8 digits in 90 s on one CPU core it reached 241 steps and 2.231 test bits/dim, against
    51 steps and 2.782 for 32 channels and 2.451 for the MLP. ``context_dim`` conditions on
    float features, ``num_classes`` on class labels.
    ``label_dropout`` (default 0.1, used only by a conditional model): the probability that a
    training sample's label (or features) is replaced by the null one, so that the field also
    learns the unconditional velocity and classifier-free guidance works
    (``model.sample(n, context=y, guidance=2.0)``); 0.1 to 0.2 is the usual range (Ho &
    Salimans, 2022), and it costs the conditional fit little (docs/conditioning.md).
    """
    shape = event_shape_of(shape, "shape")
    p = PATHS[path](sigma_min=sigma_min, exponent=exponent, sigma=sigma)
    build_coupling = COUPLINGS[coupling]
    build_times = TIME_SAMPLERS[time_sampler]
    features = conditioning_features(context_dim, num_classes)
    return FlowMatching(
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
        path=p,
        coupling=build_coupling(sigma=sigma),
        time_sampler=build_times(
            loc=loc, scale=scale, mode_scale=mode_scale, shift=shift, stratified=stratified
        ),
        context_dim=context_dim,
        solver=SolverOptions("dopri5", None, rtol, atol),
        num_classes=num_classes,
        label_dropout=label_dropout,
    )


_SIGNATURE = inspect.signature(flow_matching)


def _preset(name: str, summary: str, doc: str, **defaults: Any) -> None:
    """Register ``flow_matching`` under ``name`` with other defaults; the registry reads a
    recipe's options and defaults from its signature, so the preset gets its own."""

    def build(shape: tuple[int, ...], **options: Any) -> FlowMatching:
        return flow_matching(shape, **{**defaults, **options})

    build.__signature__ = _SIGNATURE.replace(  # type: ignore[attr-defined]
        parameters=[
            p.replace(default=defaults.get(p.name, p.default))
            for p in _SIGNATURE.parameters.values()
        ]
    )
    build.__doc__ = doc + "\n\n" + (flow_matching.__doc__ or "")
    build.__name__ = name
    register(name, summary, train=TRAIN_DEFAULTS, images=True, train_by_option=TRAIN_BY_OPTION)(
        build
    )


# A regression loss on a one-evaluation step tolerates, and needs, a larger step size than the
# shared lr 1e-3: in a sweep with flowforge's trainer (2,000 steps of batch 256 on the
# checkerboard) the validation NLL of rectified / otfm was 4.19 / 4.10 at lr 1e-3, 4.13 / 3.87 at
# 5e-3, 3.93 / 3.81 at 1e-2, 3.87 / 3.76 at 2e-2, and training collapsed at 5e-2; 1e-2 keeps a
# margin of 5 from the collapse (docs/matching.md). With the trainer's cosine decay it also wins on
# samples: fm / otfm Euler energy distances below the peers' Adam-1e-3 ones from NFE 4 on (3
# seeds, docs/benchmarks.md).
TRAIN_DEFAULTS = {"lr": 1e-2}

# The U-Net field wants a smaller step: on the (1, 8, 8) digits (300 steps, seed 0) fm reached
# 2.358 test bits/dim at lr 1e-2 and 2.119 at 2e-3, diffusion 2.731 and 2.118 (docs/matching.md,
# "U-Net field"); the MLP keeps 1e-2.
UNET_TRAIN_DEFAULTS: Mapping[str, object] = {"lr": 2e-3}
TRAIN_BY_OPTION: Mapping[str, Mapping[object, Mapping[str, object]]] = {
    "field": {"unet": UNET_TRAIN_DEFAULTS}
}


_PRESETS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "fm": (
        "Flow matching: the conditional-OT (linear) path, independent pairs",
        "Flow matching (Lipman et al., 2022): the linear path with sigma_min = 1e-4.",
        {},
    ),
    "rectified": (
        "Rectified flow: straight lines between independent noise and data",
        "Rectified flow (Liu et al., 2022): the linear path with sigma_min = 0 (1-rectified "
        "flow; reflow is a second training on the model's own noise/sample pairs).",
        {"sigma_min": 0.0},
    ),
    "otfm": (
        "OT-CFM: flow matching with exact minibatch optimal-transport pairs",
        "OT-CFM (Tong et al., 2023): the linear path (sigma_min = 0) between noise and data "
        "paired by exact minibatch optimal transport: straighter paths, fewer solver steps.",
        {"sigma_min": 0.0, "coupling": "ot"},
    ),
    "sbfm": (
        "Schrödinger-bridge CFM: Brownian-bridge paths, entropic-OT pairs",
        "SB-CFM (Tong et al., 2023): the Brownian-bridge path with noise sigma between pairs "
        "drawn from the entropic OT plan of regularisation 2 sigma^2.",
        {"path": "bridge", "coupling": "sinkhorn"},
    ),
}
for _name, (_summary, _doc, _defaults) in _PRESETS.items():
    _preset(_name, _summary, _doc, **_defaults)
