r"""Couplings: how noise :math:`x_0` is paired with data :math:`x_1` in a minibatch.

A coupling returns, for every data row ``j``, the index of the noise row it is paired with; the
data keep their order (and so their conditioning rows). Independent pairing is the plain CFM;
exact minibatch optimal transport straightens the paths (OT-CFM); the entropic (Sinkhorn) plan
goes with the Schrödinger-bridge path. The transport problems are solved by POT, on squared
Euclidean costs between flattened events: ``(B, *event)`` batches (images too) are paired as
``(B, prod(event))`` vectors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor

from .._checks import check_positive
from .._registry import Registry


class Coupling:
    r"""Pairs noise with data: ``coupling.pair(x0, x1) -> (B,)`` indices into ``x0``.

    ``coupling(x0, x1)`` returns the re-paired ``(x0[idx], x1)``. Under DDP
    (``torch.distributed`` initialised, several processes) the pairing is solved over the global
    batch: every process gathers all noise and data rows, rank 0's solution is broadcast, and each
    process keeps its own data rows with the noise rows (from any process) paired to them.
    """

    name = "coupling"
    #: independent pairing needs no global solve
    global_batch = True

    def pair(self, x0: Tensor, x1: Tensor) -> Tensor:
        """Indices ``(B,)`` into ``x0``: data row ``j`` is paired with ``x0[idx[j]]`` (under DDP,
        into the noise gathered from all processes, in rank order)."""
        _check_pair(x0, x1)
        if self.global_batch and _distributed():
            return self._pair_global(x0, x1)[1]
        return self._solve(x0.flatten(1), x1.flatten(1))

    def __call__(self, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        """The re-paired batch ``(x0', x1)``: noise re-ordered to match the data."""
        _check_pair(x0, x1)
        if self.global_batch and _distributed():
            noise, idx = self._pair_global(x0, x1)
            return noise[idx], x1
        return x0[self._solve(x0.flatten(1), x1.flatten(1))], x1

    def _solve(self, x0: Tensor, x1: Tensor) -> Tensor:
        raise NotImplementedError

    def _gathered(self, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    def _pair_global(self, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        """The gathered noise of all processes and, for this process's data rows, indices into
        it."""
        g0, g1 = self._gathered(x0), self._gathered(x1)
        idx = self._solve(g0.flatten(1), g1.flatten(1))
        dist.broadcast(idx, src=0)  # one solution everywhere, whatever each solver's randomness
        b, rank = x1.shape[0], dist.get_rank()
        return g0, idx[rank * b : (rank + 1) * b]

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class IndependentCoupling(Coupling):
    """Noise and data paired as drawn: the independent coupling of plain conditional flow
    matching (I-CFM)."""

    name = "independent"
    global_batch = False

    def __call__(self, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        _check_pair(x0, x1)
        return x0, x1  # already paired: no gather needed

    def _solve(self, x0: Tensor, x1: Tensor) -> Tensor:
        return torch.arange(x1.shape[0], device=x1.device)


class OTCoupling(Coupling):
    r"""Exact minibatch optimal transport: the pairing that minimises
    :math:`\sum_j \|x_0^{\pi(j)} - x_1^j\|^2` over permutations :math:`\pi`.

    Solved by POT's network simplex (``ot.emd``) on the squared-distance matrix; with uniform
    weights on equal batches the optimum is a permutation. Costs :math:`O(B^3)`: fine for the
    batches of a few hundred to a few thousand rows flow matching uses.

    References:
        Tong et al. (2023) https://arxiv.org/abs/2302.00482; Pooladian et al. (2023),
        Multisample Flow Matching https://arxiv.org/abs/2304.14772
    """

    name = "ot"

    def _solve(self, x0: Tensor, x1: Tensor) -> Tensor:
        import ot

        cost = torch.cdist(x0.detach(), x1.detach()).square()
        n = x1.shape[0]
        weights = torch.full((n,), 1.0 / n, dtype=cost.dtype, device=cost.device)
        plan = ot.emd(weights, weights, cost, numItermax=max(100_000, 50 * n * n))
        return plan.argmax(dim=0)


class SinkhornCoupling(Coupling):
    r"""Entropic optimal transport: data row ``j`` is paired with noise row ``i`` drawn from the
    Sinkhorn plan's column :math:`\pi(\cdot \mid j)`, with regularisation
    :math:`\varepsilon = 2\sigma^2` (the Schrödinger bridge with noise :math:`\sigma`).

    Solved by POT's log-domain Sinkhorn (``ot.sinkhorn(..., method="sinkhorn_log")``), stable for
    small :math:`\sigma`; as :math:`\sigma \to 0` it approaches :class:`OTCoupling`, and as
    :math:`\sigma \to \infty` the independent coupling.

    Args:
        sigma: :math:`\sigma > 0`, as for :class:`~flowforge.matching.SchrodingerBridgePath`.
        max_iter: Sinkhorn iterations at most.
        tol: stop when the plan's marginals are this close to uniform (POT's ``stopThr``); POT's
            default 1e-9 costs ten times the iterations of 1e-6 for no visible change in the
            pairs (marginal errors of 1e-7 on 256-row checkerboard batches).
    """

    name = "sinkhorn"

    def __init__(self, sigma: float = 0.5, max_iter: int = 1000, tol: float = 1e-6):
        self.sigma = check_positive(sigma, "sigma")
        self.max_iter = int(max_iter)
        self.tol = float(tol)

    def _solve(self, x0: Tensor, x1: Tensor) -> Tensor:
        import ot

        cost = torch.cdist(x0.detach(), x1.detach()).square()
        n = x1.shape[0]
        weights = torch.full((n,), 1.0 / n, dtype=cost.dtype, device=cost.device)
        plan = ot.sinkhorn(
            weights,
            weights,
            cost,
            2 * self.sigma**2,
            method="sinkhorn_log",
            numItermax=self.max_iter,
            stopThr=self.tol,
            warn=False,
        )
        columns = plan.T.clamp_min(0)
        return torch.multinomial(columns / columns.sum(dim=1, keepdim=True), 1).squeeze(1)


def _check_pair(x0: Tensor, x1: Tensor) -> None:
    if not isinstance(x0, Tensor) or not isinstance(x1, Tensor):
        raise TypeError("x0 and x1 must be tensors")
    if x0.shape != x1.shape or x0.ndim < 2:
        raise ValueError(
            f"x0 and x1 must be batches of the same shape (B, ...), "
            f"got {tuple(x0.shape)} and {tuple(x1.shape)}"
        )


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


#: Couplings by name, for recipes that choose one by name. Each builder takes the recipe's
#: coupling options by keyword (``sigma``) and uses only its own.
COUPLINGS: Registry[Callable[..., Coupling]] = Registry("coupling")


@COUPLINGS.register("independent")
def _independent(**_: object) -> IndependentCoupling:
    return IndependentCoupling()


@COUPLINGS.register("ot")
def _ot(**_: object) -> OTCoupling:
    return OTCoupling()


@COUPLINGS.register("sinkhorn")
def _sinkhorn(*, sigma: float, **_: object) -> SinkhornCoupling:
    return SinkhornCoupling(sigma)
