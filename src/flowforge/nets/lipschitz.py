r"""Lipschitz-constrained networks: spectrally normalised linear layers, LipSwish, and the
residual branch :math:`g` of a residual flow with :math:`\mathrm{Lip}(g) \le c < 1`.

Spectral norms are estimated by power iteration, which approaches :math:`\sigma_{\max}(W)` from
below: the estimate :math:`|u^\top W v|` (unit :math:`u, v`) never exceeds the true value. One
iteration per training step keeps the persistent vectors tracking the slowly changing weight;
in evaluation mode each layer runs the iteration to convergence once for every new weight (after
training steps, an EMA copy or a load of new weights, whose vectors belong to other weights), so
the bound holds to the precision of the converged estimate; :func:`converge_spectral_norms` does
the same on demand.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_bool, check_int, check_positive
from .mlp import _check_sizes

#: The maximum slope of :math:`x \sigma(\beta x)` over all :math:`x` and :math:`\beta > 0`
#: (1.0998..., at :math:`\beta x \approx 2.4`), rounded up; dividing by it makes LipSwish
#: 1-Lipschitz.
SWISH_MAX_SLOPE = 1.1

#: LipSwish's initial :math:`\beta`. A spectrally normalised hidden layer of width ``H``
#: shares its Lipschitz budget among its units, so each pre-activation varies over only about
#: :math:`\|x\| / \sqrt{H}` (0.09 for 128 units); at :math:`\beta = 1` LipSwish is nearly
#: linear there and a residual flow starts close to affine, on the Gaussian plateau. Its bend
#: is :math:`\sim 1/\beta` wide; 16 (a bend of 0.06) learned fastest of 1, 4, 8 and 16 on every
#: seed and budget measured (docs/benchmarks.md, residual flows), while staying smooth.
LIPSWISH_BETA = 16.0


class _SpectralNormed(nn.Module):
    r"""What :class:`SpectralLinear` and :class:`SpectralConv2d` share: a weight rescaled to
    :math:`W / \max(1, \hat\sigma / c)`, :math:`\hat\sigma = |\langle u, A v\rangle|` from
    power iteration on the layer's linear operator :math:`A` with persistent unit buffers
    ``u``, ``v``. A subclass sets ``weight`` and calls :meth:`_init_power_iteration`, and
    defines the operator (:meth:`_operator`) and its adjoint (:meth:`_adjoint`)."""

    # The power-iteration vectors (buffers), declared for the type checker.
    u: Tensor
    v: Tensor
    weight: nn.Parameter

    def _init_power_iteration(
        self, coeff: float, n_power_iterations: int, u: Tensor, v: Tensor
    ) -> None:
        self.coeff = check_positive(coeff, "coeff")
        self.n_power_iterations = check_int(n_power_iterations, "n_power_iterations", 1)
        self.register_buffer("u", _unit(u))
        self.register_buffer("v", _unit(v))
        # Set by frozen_power_iteration(): use the stored vectors even in training mode.
        self.power_iteration_frozen = False
        # The weight (version, storage) the vectors were last converged for, in eval mode.
        self._converged_for: tuple[int, int, int] | None = None
        self.converge()

    def _operator(self, v: Tensor, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def _adjoint(self, u: Tensor, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def _sigma(self, u: Tensor, v: Tensor, weight: Tensor) -> Tensor:
        r""":math:`|\langle u, A v\rangle|`, differentiable in ``weight``."""
        return (u * self._operator(v, weight)).sum().abs()

    @torch.no_grad()
    def power_iteration(self, iterations: int = 1) -> None:
        """Run ``iterations`` power-iteration steps, updating the ``u, v`` buffers in place."""
        w = self.weight.detach()
        u, v = self.u, self.v
        for _ in range(iterations):
            v = _unit(self._adjoint(u, w))
            u = _unit(self._operator(v, w))
        self.u.copy_(u)
        self.v.copy_(v)

    def compute_sigma(self, iterations: int = 0) -> Tensor:
        r"""Run ``iterations`` more power-iteration steps, then return :math:`\hat\sigma`, ``()``.

        The returned estimate is detached and never exceeds the true spectral norm.
        """
        check_int(iterations, "iterations", 0)
        if iterations:
            self.power_iteration(iterations)
        with torch.no_grad():
            return self._sigma(self.u, self.v, self.weight)

    @torch.no_grad()
    def converge(self, max_iterations: int = 1000, rtol: float = 1e-7) -> Tensor:
        r"""Iterate until :math:`\hat\sigma` changes by less than ``rtol`` (relative); return it.

        The estimate increases towards the largest singular value as the vectors converge; when
        the top two singular values are close, the vectors converge slowly but the estimate,
        bounded between them, is already close to the largest.
        """
        check_int(max_iterations, "max_iterations", 1)
        sigma = self.compute_sigma()
        # Check every few steps: one step changes the estimate little once it is nearly there.
        for _ in range(0, max_iterations, 5):
            new = self.compute_sigma(5)
            if abs(float(new - sigma)) <= rtol * float(new.abs()):
                return new
            sigma = new
        return sigma

    def normalized_weight(self) -> Tensor:
        r""":math:`W / \max(1, \hat\sigma / c)` with the stored vectors, shaped like ``weight``.

        Differentiable in ``W`` (through :math:`\hat\sigma` too); the vectors are not updated.
        """
        # Clones: the buffers change in place on the next training call, but this graph
        # must keep the vectors it was built with. abs (in _sigma): stale vectors (weights
        # changed since the last iteration) can give a negative <u, A v>; its size is still a
        # lower bound.
        sigma = self._sigma(self.u.clone(), self.v.clone(), self.weight)
        return self.weight / torch.clamp(sigma / self.coeff, min=1.0)

    def _update_vectors(self) -> None:
        """The vectors for this call: ``n_power_iterations`` steps in training mode (unless
        frozen); in evaluation mode, converged once for each new weight."""
        if self.training:
            if not self.power_iteration_frozen:
                self.power_iteration(self.n_power_iterations)
            return
        # After training steps, an EMA copy or a load, the stored vectors belong to other
        # weights. The key sees in-place updates (the version counter) and new storage (dtype
        # or device moves).
        key = (self.weight._version, self.weight.data_ptr(), self.u.data_ptr())
        if key != self._converged_for:
            self.converge()
            self._converged_for = (self.weight._version, self.weight.data_ptr(), self.u.data_ptr())


class SpectralLinear(_SpectralNormed):
    r"""A linear layer :math:`y = \tilde W x + b` with :math:`\tilde W = W / \max(1, \hat\sigma/c)`.

    :math:`\hat\sigma = |u^\top W v|` estimates the largest singular value of ``W`` by power
    iteration with persistent unit vectors ``u (out,)`` and ``v (in,)`` (buffers, saved with the
    weights). Only weights whose estimated norm exceeds ``c`` are rescaled ("soft" spectral
    normalisation), so :math:`\mathrm{Lip}(x \mapsto \tilde W x) = \|\tilde W\|_2 \le c` up to
    the error of the estimate. Gradients flow through :math:`\hat\sigma` with ``u, v`` fixed.

    In training mode every call first runs ``n_power_iterations`` steps
    :math:`v \leftarrow W^\top u / \|W^\top u\|,\ u \leftarrow W v / \|W v\|`; in evaluation mode
    (or inside :func:`frozen_power_iteration`) the stored vectors are used as they are.
    Power iteration underestimates :math:`\sigma`: the estimate is a lower bound that becomes
    tight as the vectors converge. The vectors are converged when the layer is created, and in
    evaluation mode the first call after any change of the weight (an optimizer step, an EMA
    copy, ``load_state_dict``, a dtype or device move) converges them again, so evaluation uses
    the bound to the precision of the converged estimate; :meth:`converge` (or
    :func:`converge_spectral_norms` on a whole model) does it on demand.

    Args:
        in_features: input size.
        out_features: output size.
        coeff: :math:`c > 0`, the bound on the layer's spectral norm.
        n_power_iterations: power-iteration steps per call in training mode (at least 1).
        bias: learn an additive bias.

    Shapes: ``x (B, in) -> (B, out)``.

    References:
        Spectral Normalization for Generative Adversarial Networks (Miyato et al., 2018)
        https://arxiv.org/abs/1802.05957;
        Residual Flows for Invertible Generative Modeling (Chen et al., 2019)
        https://arxiv.org/abs/1906.02735

    Example:
        >>> import torch, flowforge as ff
        >>> layer = ff.nets.SpectralLinear(3, 4, coeff=0.9)
        >>> bool(torch.linalg.matrix_norm(layer.normalized_weight(), 2) <= 0.9 + 1e-5)
        True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        coeff: float = 0.97,
        n_power_iterations: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        check_int(in_features, "in_features", 1)
        check_int(out_features, "out_features", 1)
        self.in_features = in_features
        self.out_features = out_features
        # nn.Linear's initialisation; never zero, since power iteration stalls on a zero weight.
        template = nn.Linear(in_features, out_features, bias=bias)
        self.weight = nn.Parameter(template.weight.detach().clone())
        if bias:
            self.bias = nn.Parameter(template.bias.detach().clone())
        else:
            self.register_parameter("bias", None)
        self._init_power_iteration(
            coeff, n_power_iterations, torch.randn(out_features), torch.randn(in_features)
        )

    def _operator(self, v: Tensor, weight: Tensor) -> Tensor:
        return weight @ v

    def _adjoint(self, u: Tensor, weight: Tensor) -> Tensor:
        return weight.T @ u

    def _sigma(self, u: Tensor, v: Tensor, weight: Tensor) -> Tensor:
        return torch.dot(u, weight @ v).abs()

    def forward(self, x: Tensor) -> Tensor:
        self._update_vectors()
        return F.linear(x, self.normalized_weight(), self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"coeff={self.coeff:g}, n_power_iterations={self.n_power_iterations}, "
            f"bias={self.bias is not None}"
        )


class SpectralConv2d(_SpectralNormed):
    r"""A 2-D convolution :math:`y = \tilde K * x + b` with
    :math:`\tilde K = K / \max(1, \hat\sigma/c)`, :math:`\hat\sigma` the spectral norm of the
    convolution *operator* on images ``(in_channels, H, W)``.

    The operator :math:`A: x \mapsto K * x` (stride 1, zero "same" padding ``kernel_size // 2``)
    is a linear map from :math:`\mathbb{R}^{C_{in} H W}` to :math:`\mathbb{R}^{C_{out} H W}`;
    its norm, not the norm of the reshaped kernel (which neither bounds nor equals it), is the
    Lipschitz constant of the layer. Power iteration runs on the operator itself with persistent
    unit images ``u (out_channels, H, W)`` and ``v (in_channels, H, W)`` (buffers):
    :math:`v \leftarrow A^\top u / \|A^\top u\|` by ``conv_transpose2d`` (the adjoint of a
    stride-1 convolution), :math:`u \leftarrow A v / \|A v\|` by ``conv2d``, and
    :math:`\hat\sigma = |\langle u, A v\rangle|` (Gouk et al. 2018; Behrmann et al. 2019).
    Everything else follows :class:`SpectralLinear`: the estimate is a lower bound that becomes
    tight as the vectors converge; one iteration per training call (``n_power_iterations``),
    convergence at creation and in evaluation mode after every change of the weight, gradients
    through :math:`\hat\sigma` with ``u, v`` fixed, and :func:`frozen_power_iteration` /
    :func:`converge_spectral_norms` act on it too.

    Args:
        in_channels: :math:`C_{in}`.
        out_channels: :math:`C_{out}`.
        kernel_size: odd kernel size ``k`` (``k x k``), so that "same" padding keeps ``H, W``.
        spatial: ``(H, W)``, the image size the operator acts on (its norm depends on it).
        coeff: :math:`c > 0`, the bound on the operator's spectral norm.
        n_power_iterations: power-iteration steps per call in training mode (at least 1).
        bias: learn a per-channel bias.

    Shapes: ``x (B, in_channels, H, W) -> (B, out_channels, H, W)``.

    References:
        Regularisation of Neural Networks by Enforcing Lipschitz Continuity (Gouk et al., 2018)
        https://arxiv.org/abs/1804.04368;
        Invertible Residual Networks (Behrmann et al., 2019) https://arxiv.org/abs/1811.00995;
        Residual Flows for Invertible Generative Modeling (Chen et al., 2019)
        https://arxiv.org/abs/1906.02735

    Example:
        >>> import torch, flowforge as ff
        >>> conv = ff.nets.SpectralConv2d(1, 2, 3, (4, 4), coeff=0.9)
        >>> conv(torch.randn(5, 1, 4, 4)).shape
        torch.Size([5, 2, 4, 4])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        spatial: Sequence[int],
        coeff: float = 0.97,
        n_power_iterations: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        check_int(in_channels, "in_channels", 1)
        check_int(out_channels, "out_channels", 1)
        check_int(kernel_size, "kernel_size", 1)
        if kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be odd so that 'same' padding keeps the image size, got "
                f"{kernel_size}; use 1, 3 or 5"
            )
        if not isinstance(spatial, Sequence) or len(spatial) != 2:
            raise ValueError(f"spatial must be the image size (H, W), got {spatial!r}")
        height = check_int(spatial[0], "spatial[0]", 1)
        width = check_int(spatial[1], "spatial[1]", 1)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.spatial = (height, width)
        self.padding = kernel_size // 2
        # nn.Conv2d's initialisation; never zero, since power iteration stalls on a zero kernel.
        template = nn.Conv2d(in_channels, out_channels, kernel_size, bias=bias)
        self.weight = nn.Parameter(template.weight.detach().clone())
        if template.bias is not None:
            self.bias = nn.Parameter(template.bias.detach().clone())
        else:
            self.register_parameter("bias", None)
        self._init_power_iteration(
            coeff,
            n_power_iterations,
            torch.randn(out_channels, height, width),
            torch.randn(in_channels, height, width),
        )

    def _operator(self, v: Tensor, weight: Tensor) -> Tensor:
        # A v for one image v (C_in, H, W) -> (C_out, H, W).
        return F.conv2d(v.unsqueeze(0), weight, padding=self.padding).squeeze(0)

    def _adjoint(self, u: Tensor, weight: Tensor) -> Tensor:
        # A^T u (C_out, H, W) -> (C_in, H, W): the transposed convolution, exact for stride 1.
        return F.conv_transpose2d(u.unsqueeze(0), weight, padding=self.padding).squeeze(0)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1:] != (self.in_channels, *self.spatial):
            raise ValueError(
                f"x must have shape (B, {self.in_channels}, {self.spatial[0]}, "
                f"{self.spatial[1]}) (the spatial size the operator norm is computed for), "
                f"got {tuple(x.shape)}"
            )
        self._update_vectors()
        return F.conv2d(x, self.normalized_weight(), self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"spatial={self.spatial}, coeff={self.coeff:g}, "
            f"n_power_iterations={self.n_power_iterations}, bias={self.bias is not None}"
        )


def _unit(t: Tensor) -> Tensor:
    # t / ||t|| over all entries; eps keeps a (near-)zero operator from producing NaNs.
    return t / t.norm().clamp_min(1e-12)


@contextmanager
def frozen_power_iteration(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every :class:`SpectralLinear` and :class:`SpectralConv2d` in
    ``module`` uses its stored vectors.

    A residual block's fixed-point inversion evaluates its branch many times; freezing keeps the
    map the same at every iteration, even in training mode. The previous settings are restored.

    Example:
        >>> import torch, flowforge as ff
        >>> net = ff.nets.LipschitzMLP(2, hidden=(8,))
        >>> with ff.nets.frozen_power_iteration(net):
        ...     y = net(torch.randn(4, 2))
    """
    layers = [m for m in module.modules() if isinstance(m, _SpectralNormed)]
    before = [m.power_iteration_frozen for m in layers]
    for m in layers:
        m.power_iteration_frozen = True
    try:
        yield module
    finally:
        for m, b in zip(layers, before, strict=True):
            m.power_iteration_frozen = b


def converge_spectral_norms(
    module: nn.Module, max_iterations: int = 1000, rtol: float = 1e-7
) -> None:
    """Converge the power iteration of every :class:`SpectralLinear` and
    :class:`SpectralConv2d` in ``module``.

    Call it after training (and on an EMA copy, whose copied vectors belong to the live
    weights), before evaluation, so that each layer's spectral norm bound holds to the precision
    of a converged estimate. See :meth:`SpectralLinear.converge`.
    """
    for m in module.modules():
        if isinstance(m, _SpectralNormed):
            m.converge(max_iterations, rtol)


class LipSwish(nn.Module):
    r"""LipSwish, :math:`\phi(x) = x\, \sigma(\beta x) / 1.1`, a smooth 1-Lipschitz activation.

    :math:`\beta = \mathrm{softplus}(\rho) > 0` is learned (one scalar, starting at ``beta``,
    default :data:`LIPSWISH_BETA`). The slope of :math:`x \sigma(\beta x)` is at most 1.0998
    for every :math:`\beta`, so :math:`\mathrm{Lip}(\phi) \le 1`; its smoothness keeps the
    log-determinant's power series and its gradients well behaved.

    Args:
        beta: the initial :math:`\beta > 0`.

    Shapes: ``(*) -> (*)``.

    References:
        Residual Flows for Invertible Generative Modeling (Chen et al., 2019)
        https://arxiv.org/abs/1906.02735
    """

    def __init__(self, beta: float = LIPSWISH_BETA):
        super().__init__()
        beta = check_positive(beta, "beta")
        # softplus's inverse, log(expm1(beta)), written so that it cannot overflow.
        self.raw_beta = nn.Parameter(torch.tensor(beta + math.log(-math.expm1(-beta))))

    @property
    def beta(self) -> Tensor:
        r""":math:`\beta > 0`, ``()``."""
        return F.softplus(self.raw_beta)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.beta * x) / SWISH_MAX_SLOPE


class LipschitzMLP(nn.Module):
    r"""A residual branch :math:`g(x, c) = W_L \phi(\cdots \phi(W_1 \phi(x) + V c + b_1) \cdots)
    + b_L` with :math:`\mathrm{Lip}_x(g) \le` ``coeff``.

    The activation on the input (``input_activation``, the default, as in Chen et al.'s code)
    gives the branch a nonlinearity at the scale of the data from the start. Without it every
    nonlinearity acts on a hidden unit, and a spectral norm bound on a wide first layer shares
    the Lipschitz budget among all its units: each pre-activation then varies over about
    :math:`\|x\| / \sqrt{\text{width}}`, where LipSwish is nearly linear, so the branch starts
    close to affine and a flow of such blocks sits on the Gaussian fit for thousands of steps
    at lr 1e-3 (docs/benchmarks.md, residual flows).

    Every :math:`W_l` is a :class:`SpectralLinear` with per-layer bound
    :math:`c^{1/L}` (``L`` linear layers) and every activation is 1-Lipschitz, so the product of
    the layer bounds, which bounds the Lipschitz constant of the composition, is exactly
    :math:`c`. The context enters the first layer through an unconstrained linear map :math:`V`:
    the bound is only needed in :math:`x`.

    Args:
        features: ``D``, input and output size.
        hidden: hidden layer sizes.
        coeff: :math:`c > 0`, the bound on :math:`\mathrm{Lip}_x(g)`; a residual block needs
            :math:`c < 1`.
        activation: activation module class (or a factory of modules, called once per
            activation); must be 1-Lipschitz for the bound to hold (:class:`LipSwish`,
            ``nn.ReLU``, ``nn.ELU``, ``nn.Tanh``).
        n_power_iterations: power-iteration steps per call in training mode.
        context_features: ``C``, size of the conditioning vector (0 for none).
        input_activation: apply an activation to ``x`` before the first linear layer.

    Shapes: ``x (B, D)``, ``context (B, C)`` -> ``(B, D)``.

    References:
        Invertible Residual Networks (Behrmann et al., 2019) https://arxiv.org/abs/1811.00995;
        Residual Flows for Invertible Generative Modeling (Chen et al., 2019)
        https://arxiv.org/abs/1906.02735

    Example:
        >>> import torch, flowforge as ff
        >>> g = ff.nets.LipschitzMLP(2, hidden=(32, 32), coeff=0.9)
        >>> g(torch.randn(5, 2)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (128, 128),
        coeff: float = 0.97,
        activation: Callable[[], nn.Module] = LipSwish,
        n_power_iterations: int = 1,
        context_features: int = 0,
        input_activation: bool = True,
    ):
        super().__init__()
        check_int(features, "features", 1)
        check_int(context_features, "context_features", 0)
        check_bool(input_activation, "input_activation")
        sizes = (features, *_check_sizes(hidden), features)
        self.features = features
        self.context_features = context_features
        self.coeff = check_positive(coeff, "coeff")
        n_layers = len(sizes) - 1
        self.layer_coeff = self.coeff ** (1 / n_layers)
        self.linears = nn.ModuleList(
            SpectralLinear(a, b, self.layer_coeff, n_power_iterations)
            for a, b in itertools.pairwise(sizes)
        )
        self.input_activation = activation() if input_activation else None
        self.activations = nn.ModuleList(activation() for _ in range(n_layers - 1))
        self.context_linear = (
            nn.Linear(context_features, sizes[1], bias=False) if context_features else None
        )

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ValueError(f"x must have shape (B, {self.features}), got {tuple(x.shape)}")
        h = self.linears[0](x if self.input_activation is None else self.input_activation(x))
        bias = _context_bias(self.context_linear, context, x.shape[0])
        if bias is not None:
            h = h + bias
        for act, linear in zip(self.activations, self.linears[1:], strict=True):
            h = linear(act(h))
        return h


class LipschitzConvNet(nn.Module):
    r"""A convolutional residual branch on images with :math:`\mathrm{Lip}_x(g) \le` ``coeff``:
    :math:`g(x, c) = K_L * \phi(\cdots \phi(K_1 * \phi(x) + V c + b_1) \cdots) + b_L`.

    The branch of Chen et al.'s image Residual Flows: a 3x3 convolution, 1x1 convolutions
    between the hidden layers, and a 3x3 convolution back to the input channels (``hidden=(h,
    h)`` is 3x3 -> 1x1 -> 3x3). Every :math:`K_l` is a :class:`SpectralConv2d` whose operator
    norm is bounded by :math:`c^{1/L}`, and every activation is 1-Lipschitz, so
    :math:`\mathrm{Lip}_x(g) \le c`. The context enters as a per-channel bias of the first hidden
    layer through an unconstrained linear map :math:`V` (outside the bound, which is only needed
    in :math:`x`). ``input_activation`` as for :class:`LipschitzMLP`.

    Args:
        shape: the image shape ``(C, H, W)``, input and output.
        hidden: hidden channel widths (at least one).
        coeff: :math:`c > 0`, the bound on :math:`\mathrm{Lip}_x(g)`; a residual block needs
            :math:`c < 1`.
        activation: activation module class or factory; must be 1-Lipschitz.
        n_power_iterations: power-iteration steps per call in training mode.
        context_features: ``F``, size of the conditioning vector (0 for none).
        input_activation: apply an activation to ``x`` before the first convolution.

    Shapes: ``x (B, C, H, W)``, ``context (B, F)`` -> ``(B, C, H, W)``.

    References:
        Residual Flows for Invertible Generative Modeling (Chen et al., 2019)
        https://arxiv.org/abs/1906.02735

    Example:
        >>> import torch, flowforge as ff
        >>> g = ff.nets.LipschitzConvNet((1, 4, 4), hidden=(8, 8), coeff=0.9)
        >>> g(torch.randn(5, 1, 4, 4)).shape
        torch.Size([5, 1, 4, 4])
    """

    def __init__(
        self,
        shape: Sequence[int],
        hidden: Sequence[int] = (64, 64),
        coeff: float = 0.97,
        activation: Callable[[], nn.Module] = LipSwish,
        n_power_iterations: int = 1,
        context_features: int = 0,
        input_activation: bool = True,
    ):
        super().__init__()
        if not isinstance(shape, Sequence) or len(shape) != 3:
            raise ValueError(f"shape must be an image shape (C, H, W), got {shape!r}")
        channels, height, width = (check_int(d, "shape entries", 1) for d in shape)
        check_int(context_features, "context_features", 0)
        check_bool(input_activation, "input_activation")
        sizes = (channels, *_check_sizes(hidden), channels)
        self.shape = (channels, height, width)
        self.context_features = context_features
        self.coeff = check_positive(coeff, "coeff")
        n_layers = len(sizes) - 1
        self.layer_coeff = self.coeff ** (1 / n_layers)
        # 3x3 on the way in and out (spatial mixing), 1x1 between hidden layers (Chen et al.).
        kernels = [3 if i in (0, n_layers - 1) else 1 for i in range(n_layers)]
        self.convs = nn.ModuleList(
            SpectralConv2d(a, b, k, (height, width), self.layer_coeff, n_power_iterations)
            for (a, b), k in zip(itertools.pairwise(sizes), kernels, strict=True)
        )
        self.input_activation = activation() if input_activation else None
        self.activations = nn.ModuleList(activation() for _ in range(n_layers - 1))
        self.context_linear = (
            nn.Linear(context_features, sizes[1], bias=False) if context_features else None
        )

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if x.ndim != 4 or x.shape[1:] != self.shape:
            shape = ", ".join(map(str, self.shape))
            raise ValueError(f"x must have shape (B, {shape}), got {tuple(x.shape)}")
        h = self.convs[0](x if self.input_activation is None else self.input_activation(x))
        bias = _context_bias(self.context_linear, context, x.shape[0])
        if bias is not None:
            h = h + bias[:, :, None, None]
        for act, conv in zip(self.activations, self.convs[1:], strict=True):
            h = conv(act(h))
        return h


def lipschitz_estimate(
    fn: Callable[[Tensor], Tensor], x: Tensor, steps: int = 0, lr: float = 0.05
) -> Tensor:
    r"""An empirical lower bound on :math:`\mathrm{Lip}(f)`: :math:`\max_i \|J_f(x_i)\|_2`, ``()``.

    The spectral norm of the autograd Jacobian at every point of ``x``; with ``steps > 0`` the
    points then climb the Jacobian norm by that many Adam steps, and the largest norm seen is
    returned. A true bound is the supremum over all points, so this is an estimate from below:
    use it to check a claimed bound, not to certify one. Evaluate networks with
    :class:`SpectralLinear` layers in eval mode (or frozen), so the estimate does not move them.

    Args:
        fn: a per-sample map ``(B, m) -> (B, n)``: rows must not interact.
        x: ``(B, m)`` points to start from.
        steps: gradient-ascent steps on the points.
        lr: Adam's learning rate for the ascent.
    """
    if x.ndim != 2:
        raise ValueError(f"x must have shape (B, m), got {tuple(x.shape)}")
    check_int(steps, "steps", 0)
    check_positive(lr, "lr")
    points = x.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([points], lr=lr) if steps else None
    best = torch.zeros((), dtype=x.dtype, device=x.device)
    for step in range(steps + 1):
        last = step == steps
        with torch.enable_grad():
            y = fn(points)
            basis = torch.eye(y.shape[1], dtype=y.dtype, device=y.device)
            basis = basis.unsqueeze(1).expand(y.shape[1], *y.shape)
            (rows,) = torch.autograd.grad(
                y, points, basis, create_graph=not last, is_grads_batched=True
            )
            norms = torch.linalg.matrix_norm(rows.transpose(0, 1), ord=2)
        best = torch.maximum(best, norms.detach().max())
        if optimizer is not None and not last:  # no optimizer: steps == 0, one pass
            optimizer.zero_grad()
            (-norms.sum()).backward(inputs=[points])
            optimizer.step()
    return best


def _context_bias(linear: nn.Linear | None, context: Tensor | None, batch: int) -> Tensor | None:
    """The first layer's bias ``(B, hidden)`` from ``context`` ``(B, E)`` through ``linear``
    (``None`` for a network without context); a missing, unexpected or misshaped context is a
    ``ValueError``."""
    if linear is None:
        if context is not None:
            raise ValueError(
                "this network takes no context (context_features=0), but context was given"
            )
        return None
    if context is None or context.shape != (batch, linear.in_features):
        got = None if context is None else tuple(context.shape)
        raise ValueError(f"context must have shape ({batch}, {linear.in_features}), got {got}")
    return linear(context)
