"""Flow matching: probability paths, couplings, time samplers, the CFM loss and the model.

Built as composition of small parts, each replaceable on its own: ``scheduler(t)`` gives the
path's coefficients, ``path.sample(x0, x1, t)`` a point and its velocity, ``coupling(x0, x1)``
the pairing, ``time_sampler(n)`` the times, and :func:`cfm_loss` the regression. A trained
:class:`FlowMatching` model is a CNF: it gets ``log_prob``, ``encode`` and ``decode`` from
:mod:`flowforge.dynamics`.
"""

from .couplings import COUPLINGS, Coupling, IndependentCoupling, OTCoupling, SinkhornCoupling
from .loss import cfm_loss
from .meanflow import MeanFlow, meanflow_loss, meanflow_target
from .model import FlowMatching
from .paths import PARAMETERIZATIONS, PATHS, AffinePath, PathSample, SchrodingerBridgePath
from .reflow import FixedTime, Pairs, decode_pairs, reflow_noise
from .schedulers import (
    SCHEDULERS,
    CondOTScheduler,
    CosineScheduler,
    PolynomialScheduler,
    Scheduler,
    SchedulerOutput,
    VPCosineScheduler,
    VPScheduler,
)
from .time import TIME_SAMPLERS, LogitNormalTime, ModeTime, TimeSampler, UniformTime

__all__ = [
    "COUPLINGS",
    "PARAMETERIZATIONS",
    "PATHS",
    "SCHEDULERS",
    "TIME_SAMPLERS",
    "AffinePath",
    "CondOTScheduler",
    "CosineScheduler",
    "Coupling",
    "FixedTime",
    "FlowMatching",
    "IndependentCoupling",
    "LogitNormalTime",
    "MeanFlow",
    "ModeTime",
    "OTCoupling",
    "Pairs",
    "PathSample",
    "PolynomialScheduler",
    "Scheduler",
    "SchedulerOutput",
    "SchrodingerBridgePath",
    "SinkhornCoupling",
    "TimeSampler",
    "UniformTime",
    "VPCosineScheduler",
    "VPScheduler",
    "cfm_loss",
    "decode_pairs",
    "meanflow_loss",
    "meanflow_target",
    "reflow_noise",
]
