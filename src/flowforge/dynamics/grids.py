r"""Time grids for the fixed-step solvers (:data:`GRIDS`): where ``steps`` steps fall in time.

A fixed-step solver steps from :math:`t_0` to :math:`t_1` through ``steps + 1`` points. The
``"uniform"`` grid spaces them equally (the default); the others concentrate them where the
field changes fastest, which matters most when there are few steps. Each grid is a
:class:`Grid` registered by name, chosen through the solver options::

    model.sample(n, method="euler", steps=4, grid="shift", shift=3.0)

A grid is defined on the unit interval in flowforge's time (t = 0 the noise, t = 1 the data);
over an interval :math:`[a, b]` it is :math:`a + (b - a)\,g(i / N)`, and from 1 down to 0 (an
``encode``) it is the same points in reverse order, so that ``decode`` and ``encode`` stay
inverse to the solver's accuracy. Both end points are hit exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import torch
from torch import Tensor

from .._checks import check_positive
from .._registry import Registry


class Grid:
    """A named grid of ``steps + 1`` times from ``t0`` to ``t1``.

    A grid declares :attr:`name`, :attr:`params` (its own options with their defaults) and
    implements :meth:`unit` (the increasing grid on [0, 1], in float64) and :meth:`check` (raise
    for a bad option). Calling it maps :meth:`unit` onto the interval, in either direction.

    Attributes:
        name: the registered name (what ``grid=`` selects).
        params: its options, with their defaults.
    """

    name: str = ""
    params: Mapping[str, object] = MappingProxyType({})

    def check(self, params: Mapping[str, object]) -> None:
        """Raise ``ValueError``/``TypeError`` for a bad value of one of :attr:`params`."""

    def unit(self, steps: int, **params: object) -> Tensor:
        """The grid on [0, 1]: ``(steps + 1,)`` float64, increasing, from 0 to 1."""
        raise NotImplementedError

    def __call__(
        self,
        steps: int,
        t0: float,
        t1: float,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        **params: object,
    ) -> Tensor:
        """The ``(steps + 1,)`` times from ``t0`` to ``t1`` (increasing or decreasing), both
        end points exactly; ``params`` are this grid's options (defaults for those left out).

        Raises ``ValueError`` if, in ``dtype``, two points fall on the same time (a solver
        needs strictly monotone times): an extreme option for this many steps.
        """
        values = {**self.params, **params}
        lo, hi = min(t0, t1), max(t0, t1)
        u = self.unit(steps, **values)
        t = lo + (hi - lo) * u
        # Rounding in the map may miss an end by an ulp; the ends are the interval's, exactly.
        t[0], t[-1] = lo, hi
        t = t.to(dtype=dtype or torch.get_default_dtype(), device=device)
        if not bool((t[1:] > t[:-1]).all()):
            shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
            raise ValueError(
                f"grid {self.name!r} ({shown}) with steps={steps} puts two of its points at the "
                f"same {str(t.dtype).removeprefix('torch.')} time; choose an option nearer the "
                "uniform grid or fewer steps"
            )
        return t.flip(0) if t0 > t1 else t

    def __repr__(self) -> str:
        shown = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.name!r}{shown})"


#: Every grid by name; an unknown name raises "grid must be one of ...".
GRIDS: Registry[Grid] = Registry("grid")


def grid_options() -> tuple[str, ...]:
    """Every option some registered grid takes, in registration order (``grid`` not included)."""
    return tuple(dict.fromkeys(k for g in GRIDS.values() for k in g.params))


def _unit(steps: int) -> Tensor:
    return torch.arange(steps + 1, dtype=torch.float64) / steps


class Uniform(Grid):
    r"""Equal steps: :math:`t_i = t_0 + (t_1 - t_0)\, i / N`, ``torch.linspace`` exactly."""

    name = "uniform"

    def unit(self, steps, **params):
        return _unit(steps)

    def __call__(self, steps, t0, t1, *, dtype=None, device=None, **params):
        # The grid the fixed-step solvers always used: linspace in the solve's dtype, in the
        # solve's direction (not a reversed increasing grid), so that no number moves.
        return torch.linspace(t0, t1, steps + 1, dtype=dtype, device=device)


class Shift(Grid):
    r"""The SD3 timestep shift: :math:`t'_i = u_i / (u_i + s (1 - u_i))` with :math:`u_i = i/N`.

    A shift :math:`s > 1` concentrates the steps near the noise (t = 0), where the field of a
    flow between noise and data turns fastest at few steps; :math:`s < 1` near the data;
    :math:`s = 1` is the uniform grid exactly.

    **Derivation.** SD3 writes time as the noise level :math:`\sigma` (:math:`\sigma = 1`
    noise, 0 data, :math:`x = (1 - \sigma) x_1 + \sigma \epsilon`) and shifts a uniform grid of
    noise levels by :math:`\sigma' = s\sigma / (1 + (s - 1)\sigma)`, which for :math:`s > 1`
    raises every level (:math:`\sigma' \ge \sigma`): more of the steps are spent at high noise.
    flowforge's time is :math:`t = 1 - \sigma`, so

    .. math::
        t' = 1 - \sigma' = \frac{1 + (s - 1)\sigma - s\sigma}{1 + (s - 1)\sigma}
           = \frac{1 - \sigma}{1 + (s - 1)\sigma} = \frac{t}{t + s (1 - t)},

    which lowers every time for :math:`s > 1` (:math:`t' \le t`): the points crowd towards
    t = 0, the noise end, as in SD3 — the same formula and the same meaning of :math:`s`
    (SD3's :math:`s = 3` is ``shift=3.0``). It is computed as :math:`u / (s - (s - 1) u)`, the
    same number; :math:`s = 1` returns the ``"uniform"`` grid itself, bit for bit.

    Options:
        shift: :math:`s > 0`; default 3.0, SD3's choice for its 1024² models.

    References:
        Scaling Rectified Flow Transformers for High-Resolution Image Synthesis (Esser et al.,
        2024), §5.3.2 https://arxiv.org/abs/2403.03206
    """

    name = "shift"
    params = MappingProxyType({"shift": 3.0})

    def check(self, params):
        check_positive(params["shift"], "shift", "a positive number (1: the uniform grid)")

    def __call__(self, steps, t0, t1, *, dtype=None, device=None, **params):
        if float(params.get("shift", self.params["shift"])) == 1.0:
            # The identity map: the uniform grid itself, in its direction and its rounding.
            return GRIDS["uniform"](steps, t0, t1, dtype=dtype, device=device)
        return super().__call__(steps, t0, t1, dtype=dtype, device=device, **params)

    def unit(self, steps, shift=3.0, **params):
        u = _unit(steps)
        s = float(shift)
        return u / (s - (s - 1.0) * u)


#: EDM's noise-level range for images in [-1, 1] (Karras et al. 2022, Table 1), in the
#: noise-to-signal ratio sigma: noise this small or large is indistinguishable from the ends.
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


class EDM(Grid):
    r"""The EDM (Karras) :math:`\rho`-schedule of noise levels, mapped to flow time.

    EDM spaces noise levels so that :math:`\sigma^{1/\rho}` is uniform:
    :math:`\sigma_i = (\sigma_{max}^{1/\rho} + \tfrac{i}{N}(\sigma_{min}^{1/\rho} -
    \sigma_{max}^{1/\rho}))^\rho`, :math:`i = 0..N` (their Eq. 5), with
    :math:`\sigma_{min} = 0.002`, :math:`\sigma_{max} = 80`; :math:`\rho = 7` concentrates the
    steps at low noise, near the data.

    **Mapping to flow time.** On the linear path :math:`x_t = t x_1 + (1 - t) x_0`,
    :math:`x_t / t = x_1 + \sigma x_0` with :math:`\sigma = (1 - t)/t`: EDM's variable, the
    noise-to-signal ratio (the rectified-flow ODE is EDM's ODE rescaled by :math:`t`). So
    :math:`t_i = 1 / (1 + \sigma_i)`, and the two ends move to the exact noise and data
    (:math:`\sigma = \infty`, :math:`t = 0`; :math:`\sigma = 0`, :math:`t = 1`): by at most
    :math:`1/81` and :math:`0.002` in time. (EDM's own sampler spends a last step going from
    :math:`\sigma_{min}` to 0; here it is merged into the last step.) For other schedulers the
    map is the linear path's, so the grid is EDM's only approximately.

    Options:
        rho: :math:`\rho > 0`; default 7.0, EDM's choice (larger: more steps near the data).

    References:
        Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022),
        Eq. 5 https://arxiv.org/abs/2206.00364
    """

    name = "edm"
    params = MappingProxyType({"rho": 7.0})

    def check(self, params):
        check_positive(params["rho"], "rho")

    def unit(self, steps, rho=7.0, **params):
        r = float(rho)
        hi, lo = SIGMA_MAX ** (1 / r), SIGMA_MIN ** (1 / r)
        sigma = (hi + _unit(steps) * (lo - hi)) ** r
        return 1.0 / (1.0 + sigma)  # its ends are replaced by 0 and 1 in Grid.__call__


for _grid in (Uniform(), Shift(), EDM()):
    GRIDS.register(_grid.name, _grid)
del _grid
