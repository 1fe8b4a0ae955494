r"""Residual blocks :math:`y = x + g(x)` with :math:`\mathrm{Lip}(g) < 1`: i-ResNets and
Residual Flows."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .._checks import check_int, check_number, check_positive
from ..estimators import LogDetOptions, as_logdet_options, residual_logdet
from ..nets.lipschitz import LipschitzConvNet, LipschitzMLP, LipSwish, frozen_power_iteration
from .base import Transform, check_event, check_features, event_shape_of

#: Up to this many features (entries of the event: an 8x8 one-channel image has 64) the default
#: evaluation log-det is exact: it costs ``D`` vector-Jacobian products, about as many as a
#: 64-term series, and an O(D^3) ``slogdet``.
EXACT_LOGDET_MAX_FEATURES = 64

#: Training default: unbiased, about 3 vector-Jacobian products per step on average
#: (2 exact terms, geometric(1/2) extra ones), memory independent of the number of terms.
TRAIN_LOGDET = LogDetOptions("roulette", n_exact_terms=2, p=0.5, neumann_grad=True)

#: Evaluation default beyond EXACT_LOGDET_MAX_FEATURES: unbiased, and 10 exact terms keep its
#: variance small.
EVAL_LOGDET_ESTIMATED = LogDetOptions("roulette", n_exact_terms=10)


class ResidualBlock(Transform):
    r"""A residual block :math:`y = x + g(x, c)`, invertible because :math:`\mathrm{Lip}_x(g) < 1`.

    This is the normalizing direction (data to base), as for every flowforge transform: it costs
    one evaluation of :math:`g` and its log-det

    .. math:: \log |\det(I + J_g(x))| = \sum_{k=1}^{\infty} \frac{(-1)^{k+1}}{k}
        \operatorname{tr}(J_g^k)

    is computed by the estimator of :attr:`logdet_options` (see
    :func:`~flowforge.estimators.residual_logdet`): ``train_logdet`` in training mode (default an
    unbiased Russian-roulette estimate with the Neumann-series gradient) and ``eval_logdet`` in
    evaluation mode (default exact up to :data:`EXACT_LOGDET_MAX_FEATURES` features, an unbiased
    roulette estimate beyond). :attr:`ladj_is_exact` says which kind the current mode returns.

    The inverse (sampling) solves :math:`x = y - g(x)` by Banach fixed-point iteration
    :math:`x_{k+1} = y - g(x_k)` from :math:`x_0 = y`, which converges geometrically at rate
    :math:`\mathrm{Lip}(g)`, until the update :math:`\max|x_{k+1} - x_k|` is at most ``tol``.
    That update is the residual :math:`|x_k + g(x_k) - y|` of the previous iterate, and bounds
    the error: :math:`\|x_{k+1} - x^*\| \le \frac{L}{1 - L} \|x_{k+1} - x_k\|` (Euclidean).
    After each inversion, :attr:`last_inverse_residual` holds the final update and
    :attr:`last_inverse_iterations` the iterations used; if ``max_iter`` iterations do not reach
    ``tol`` (or the iteration diverges), a ``RuntimeWarning`` reports the residual and the
    result of the last iteration is returned. The inverse's log-det is minus the forward one at
    the solution, from the same estimator. Gradients flow through the inverse by the implicit
    function theorem, :math:`\partial x / \partial y = (I + J_g)^{-1}`, applied by a second
    fixed-point iteration in the backward pass (first-order gradients only). The power iteration
    of the spectral norms is frozen during inversion, so every iteration sees the same map.

    On images the event ``(C, H, W)`` is given as ``features``; the default branch is then a
    :class:`~flowforge.nets.LipschitzConvNet` (whose spectral norms are those of the
    convolution operators), and the log-det estimators, the fixed point and its tolerance act on
    the flattened event (``D = C H W`` entries), so every statement above holds unchanged.

    Args:
        features: ``D``, or the image shape ``(C, H, W)``.
        hidden: hidden sizes of the default branch, a :class:`~flowforge.nets.LipschitzMLP`
            (vectors), or its hidden channel widths, a
            :class:`~flowforge.nets.LipschitzConvNet` (images).
        coeff: its Lipschitz bound :math:`c \in (0, 1)`; the closer to 1, the more expressive
            the block and the slower the inversion and the series.
        context_features: ``C``, size of the conditioning vector (0 for none).
        n_power_iterations: power-iteration steps per training call of each spectral norm.
        activation: activation of the default branch (1-Lipschitz), a module class or a
            factory such as ``functools.partial(LipSwish, beta)``.
        branch: a custom branch instead (then ``hidden``, ``coeff``, ``n_power_iterations``,
            ``activation`` and ``input_activation`` are unused): a module ``(B, D) -> (B, D)``
            (``(B, C, H, W) -> (B, C, H, W)`` on images),
            called as ``branch(x, context)`` when a context is given, whose Lipschitz constant
            in ``x`` the caller guarantees to be below 1.
        train_logdet: log-det estimator in training mode, options or a name.
        eval_logdet: log-det estimator in evaluation mode; default ``"exact"`` up to
            :data:`EXACT_LOGDET_MAX_FEATURES` features, :data:`EVAL_LOGDET_ESTIMATED` beyond.
        tol: absolute tolerance of the fixed-point inversion (> 0); float32 resolves about
            1e-7 relative, so 1e-5 is reachable for data of magnitude up to about 50.
        max_iter: iteration cap of the inversion; with :math:`L = 0.97` reaching 1e-5 from an
            :math:`O(1)` start takes :math:`\log(10^{-5}) / \log 0.97 \approx 380` iterations
            at worst.
        input_activation: the default branch applies its activation to ``x`` first, so that
            it is nonlinear at the scale of the data from the start (see
            :class:`~flowforge.nets.LipschitzMLP`); without it a residual flow learns far more
            slowly at small learning rates.

    Shapes: ``x (B, D)`` or ``(B, C, H, W)``, ``context (B, F)``.

    References:
        Invertible Residual Networks (Behrmann et al., 2019) https://arxiv.org/abs/1811.00995;
        Residual Flows for Invertible Generative Modeling (Chen et al., 2019)
        https://arxiv.org/abs/1906.02735

    Example:
        >>> import torch, flowforge as ff
        >>> block = ff.transforms.ResidualBlock(2, hidden=(32, 32), coeff=0.9).eval()
        >>> x = torch.randn(5, 2)
        >>> y, ladj = block.forward_and_ladj(x)
        >>> bool((block.inverse(y) - x).abs().max() < 1e-4), block.ladj_is_exact
        (True, True)
    """

    def __init__(
        self,
        features: int | Sequence[int],
        hidden: Sequence[int] = (128, 128),
        coeff: float = 0.97,
        context_features: int = 0,
        n_power_iterations: int = 1,
        activation: Callable[[], nn.Module] = LipSwish,
        branch: nn.Module | None = None,
        train_logdet: LogDetOptions | str = TRAIN_LOGDET,
        eval_logdet: LogDetOptions | str | None = None,
        tol: float = 1e-5,
        max_iter: int = 500,
        input_activation: bool = True,
    ):
        super().__init__()
        event = event_shape_of(features)
        if len(event) not in (1, 3):
            raise ValueError(
                f"features must be D (vectors) or an image shape (C, H, W), got {event}"
            )
        self.event_shape = event
        # Vectors keep their path exactly as it was (no reshapes).
        self._image = len(event) == 3
        features = math.prod(event)
        if branch is None:
            contraction = "a number in (0, 1): the branch must be a contraction for the block to "
            check_number(coeff, "coeff", above=0, below=1, described=contraction + "be invertible")
            # On images the branch convolves (spectral norms of the conv operators).
            net: Callable[..., nn.Module] = LipschitzConvNet if self._image else LipschitzMLP
            branch = net(
                event if self._image else features,
                hidden,
                coeff,
                activation=activation,
                n_power_iterations=n_power_iterations,
                context_features=context_features,
                input_activation=input_activation,
            )
        elif not isinstance(branch, nn.Module):
            raise TypeError(f"branch must be an nn.Module, got {type(branch).__name__}")
        check_positive(tol, "tol")
        check_int(max_iter, "max_iter", 1)
        self.features = features
        self.branch = branch
        self.train_logdet = as_logdet_options(train_logdet)
        if eval_logdet is None:
            eval_logdet = (
                "exact" if features <= EXACT_LOGDET_MAX_FEATURES else EVAL_LOGDET_ESTIMATED
            )
        self.eval_logdet = as_logdet_options(eval_logdet)
        self.tol = float(tol)
        self.max_iter = max_iter
        self.last_ladj_exact: bool | None = None
        self.last_inverse_residual: float | None = None
        self.last_inverse_iterations: int | None = None

    @property
    def logdet_options(self) -> LogDetOptions:
        """The log-det estimator of the current mode: ``train_logdet`` or ``eval_logdet``."""
        return self.train_logdet if self.training else self.eval_logdet

    @property
    def ladj_is_exact(self) -> bool:
        """Whether ``forward_and_ladj``/``inverse_and_ladj`` in the current mode are exact."""
        return self.logdet_options.exact

    def _g(self, x: Tensor, context: Tensor | None) -> Tensor:
        # x (B, D); an image branch sees (B, C, H, W) and its output is flattened back.
        if self._image:
            image = x.reshape(x.shape[0], *self.event_shape)
            gx = self.branch(image) if context is None else self.branch(image, context)
            return gx.flatten(1)
        return self.branch(x) if context is None else self.branch(x, context)

    def _flat(self, x: Tensor, name: str) -> Tensor:
        # The event as (B, D), checked: images are flattened, vectors pass as they are.
        if not self._image:
            check_features(x, self.features, name)
            return x
        check_event(x, self.event_shape, name)
        return x.flatten(1)

    def _unflat(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.event_shape) if self._image else x

    def _logdet(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        options = self.logdet_options
        self.last_ladj_exact = options.exact
        return residual_logdet(lambda v: self._g(v, context), x, options)

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = self._flat(x, "x")
        gx, logdet = self._logdet(x, context)
        return self._unflat(x + gx), logdet

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y = self._flat(y, "y")
        with frozen_power_iteration(self.branch):
            x = self._solve(y, context)
            _, logdet = self._logdet(x, context)
        return self._unflat(x), -logdet

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """:math:`x + g(x)` without the log-det."""
        x = self._flat(x, "x")
        return self._unflat(x + self._g(x, context))

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        """The fixed-point inverse without the log-det (sampling needs no more)."""
        y = self._flat(y, "y")
        with frozen_power_iteration(self.branch):
            return self._unflat(self._solve(y, context))

    def _solve(self, y: Tensor, context: Tensor | None) -> Tensor:
        x = self._fixed_point(y, context)
        if torch.is_grad_enabled():
            x = self._implicit_grad(x, y, context)
        return x

    @torch.no_grad()
    def _fixed_point(self, y: Tensor, context: Tensor | None) -> Tensor:
        x = y
        step, iterations = math.inf, 0
        while iterations < self.max_iter:
            iterations += 1
            x_next = y - self._g(x, context)
            step = float((x_next - x).abs().max())
            x = x_next
            if not step > self.tol:  # converged, or NaN: stop either way
                break
        self.last_inverse_residual = step
        self.last_inverse_iterations = iterations
        if not step <= self.tol:
            warnings.warn(
                f"ResidualBlock inverse did not converge: fixed-point residual {step:.3g} > "
                f"tol {self.tol:g} after {iterations} iterations; raise max_iter, or check "
                "that the branch is a contraction (converge its spectral norms with "
                "flowforge.nets.converge_spectral_norms)",
                RuntimeWarning,
                stacklevel=3,
            )
        return x

    def _implicit_grad(self, x: Tensor, y: Tensor, context: Tensor | None) -> Tensor:
        # x solves x + g(x) = y, so dx = (I + J)^{-1} (dy - dg/dtheta dtheta). The surrogate
        # s = y - g(x) carries dy - dg/dtheta dtheta; the hook first maps the incoming gradient
        # a to b = (I + J)^{-T} a, the fixed point of b = a - J^T b.
        x_leaf = x.detach().requires_grad_(True)
        gx = self._g(x_leaf, context)
        s = y - gx
        if not s.requires_grad:
            return x
        tol, max_iter = self.tol, self.max_iter

        def adjoint(a: Tensor) -> Tensor:
            b = a
            # Relative: the adjoint is linear in a. None under vmap (batched Jacobians), where
            # values cannot be read: then all max_iter iterations run.
            scale = _read(a.abs().max())
            step, iterations = None, 0
            while iterations < max_iter:
                iterations += 1
                (jtb,) = torch.autograd.grad(gx, x_leaf, b, retain_graph=True)
                b_next = a - jtb
                step = None if scale is None else float((b_next - b).abs().max())
                b = b_next
                if scale is not None and step is not None and not step > tol * scale:
                    break
            if scale is not None and step is not None and not step <= tol * scale:
                warnings.warn(
                    f"ResidualBlock inverse gradient did not converge: residual {step:.3g} > "
                    f"{tol * scale:.3g} after {iterations} iterations",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return b

        out = x.detach() + (s - s.detach())
        out.register_hook(adjoint)
        return out


def _read(value: Tensor) -> float | None:
    # A scalar's value, or None for a batched tensor under vmap, which cannot be read.
    try:
        return float(value)
    except RuntimeError:
        return None
