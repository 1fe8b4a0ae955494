"""The model protocol every flowforge family implements."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._checks import (
    check_batch,
    check_context,
    check_count,
    check_int,
    check_probability,
    log_class_weights,
)
from .batch import Batch, LossResult

#: Largest size of the learned label embedding: ``min(K + 1, 64)`` features for ``K`` classes,
#: one per label (and the null label) up to 64, what an MLP conditioner takes without growing.
MAX_LABEL_FEATURES = 64


def label_features(num_classes: int) -> int:
    """The size of the learned embedding of ``num_classes`` labels (and the null label)."""
    return min(int(num_classes) + 1, MAX_LABEL_FEATURES)


def conditioning_features(context_dim: int, num_classes: int) -> int:
    """The size of the float conditioning vector a model's networks take: ``context_dim``
    features, or the label embedding's size for a model of ``num_classes`` labels, or 0.

    Raises ``ValueError`` when both are set: a model conditions on features or on labels.
    """
    context_dim = check_int(context_dim, "context_dim", 0)
    num_classes = check_int(num_classes, "num_classes", 0)
    if context_dim and num_classes:
        raise ValueError(
            f"a model conditions on float features (context_dim) or on class labels "
            f"(num_classes), not both; got context_dim={context_dim}, num_classes={num_classes}"
        )
    if num_classes == 1:
        raise ValueError("num_classes must be >= 2 (one class needs no label), got 1")
    return label_features(num_classes) if num_classes else context_dim


class Model(nn.Module):
    r"""A generative model with an exact (or stated) log-density: the protocol of the registry.

    Every family implements :meth:`log_prob`, :meth:`sample`, :meth:`encode` and :meth:`decode`;
    :meth:`loss` defaults to the negative log-likelihood. Inputs are validated here, at the
    public boundary, so families implement the underscored methods on checked tensors.

    Continuous-time models integrate an ODE in ``log_prob``, ``encode``, ``decode`` and
    ``sample``, and take solver choices there as keyword options
    (``model.sample(n, method="euler", steps=8)``); :attr:`solver_keys` names the ones a model
    accepts. A discrete flow accepts none and says so.

    **Conditioning.** ``context`` is either ``None`` (an unconditional model), a float tensor
    of ``C`` features per sample, ``(B, C)``, for a model built with ``context_dim=C``, or an
    integer tensor of class labels, ``(B,)`` with values in ``0..K-1``, for a model built with
    ``num_classes=K``. Label ``K`` is the *null label* (no class), reserved for
    classifier-free guidance. A label model embeds its labels with a learned table of
    :func:`label_features` features per label (:attr:`label_embedding`) and its networks see
    that float vector; a family calls :meth:`_condition` where the context enters a network.

    Attributes:
        event_shape: shape of one sample, e.g. ``(D,)`` or ``(C, H, W)``.
        context_dim: ``C``, size of the conditioning vector (0 for none, and for label models).
        num_classes: ``K``, the number of class labels (0 for none).
    """

    event_shape: tuple[int, ...]
    context_dim: int = 0
    num_classes: int = 0
    label_embedding: nn.Embedding  # set by _setup_conditioning for a label model
    null_context: nn.Parameter  # the learned "no features" row of a feature model with dropout
    label_dropout: float = 0.0
    #: How :func:`flowforge.models.create` built the model (name, shape, options), if it did.
    created_with: dict[str, Any]

    @property
    def solver_keys(self) -> tuple[str, ...]:
        """The keyword options the public methods accept: none for a discrete flow; a
        continuous-time model's come from the solvers it can use."""
        return ()

    def _setup_conditioning(
        self, context_dim: int, num_classes: int = 0, label_dropout: float = 0.0
    ) -> int:
        """Set :attr:`context_dim`, :attr:`num_classes` and :attr:`label_dropout` (and the
        label embedding, or a feature model's learned null row) from a constructor's arguments;
        return the size of the float context the networks take."""
        features = conditioning_features(context_dim, num_classes)
        self.context_dim = int(context_dim)
        self.num_classes = int(num_classes)
        self.label_dropout = check_probability(label_dropout, "label_dropout")
        if not (self.num_classes or self.context_dim):
            self.label_dropout = 0.0  # nothing to drop: an unconditional model
        if self.label_dropout == 1:
            raise ValueError(
                "label_dropout must be below 1: at 1 every label is dropped and the model never "
                "learns the conditional field; 0.1 to 0.2 is usual"
            )
        if self.num_classes:
            self.label_embedding = nn.Embedding(self.num_classes + 1, features)
        elif self.context_dim and self.label_dropout:
            # A learned stand-in for "no features", as the null label is for labels.
            self.null_context = nn.Parameter(torch.zeros(self.context_dim))
        return features

    @property
    def conditional(self) -> bool:
        """Whether the model takes a context (class labels or float features)."""
        return bool(self.num_classes or self.context_dim)

    def _null(self, n: int) -> Tensor:
        """``n`` rows of the null context, raw (before :meth:`_condition`): the null label ``K``
        of a label model, the learned null row of a feature model trained with label dropout."""
        if self.num_classes:
            return torch.full((n,), self.num_classes, dtype=torch.int64, device=self.device)
        if self.context_dim and self.label_dropout:
            return self.null_context.expand(n, -1)
        raise ValueError(
            f"{self._described()} has no null context: it is unconditional, or conditioned on "
            "features without label_dropout"
        )

    def _drop_labels(self, context: Tensor | None) -> Tensor | None:
        """Training with condition dropout: each sample's context replaced by the null one with
        probability :attr:`label_dropout`, so one network learns the conditional and the
        unconditional model (classifier-free guidance)."""
        if context is None or not self.label_dropout or not self.training:
            return context
        drop = torch.rand(context.shape[0], device=context.device) < self.label_dropout
        null = self._null(context.shape[0])
        if context.ndim == 1:
            return torch.where(drop, null, context)
        return torch.where(drop[:, None], null.to(context.dtype), context)

    @property
    def null_label(self) -> int:
        """``K``, the label index that means "no class" (``ValueError`` without labels)."""
        if not self.num_classes:
            raise ValueError(f"{self._described()} has no class labels (num_classes=0)")
        return self.num_classes

    def _condition(self, context: Tensor | None) -> Tensor | None:
        """The float conditioning vector the networks take: the label embedding of a label
        model's ``(B,)`` labels, ``(B, E)``; float features and ``None`` unchanged."""
        if context is None or not self.num_classes:
            return context
        return self.label_embedding(context)

    # -- what a family implements -------------------------------------------------------------
    # ``context`` below is checked (float features, or int64 labels) but not yet embedded.
    def _log_prob(self, x: Tensor, context: Tensor | None, **solver: object) -> Tensor:
        raise NotImplementedError

    def _encode(self, x: Tensor, context: Tensor | None, **solver: object) -> Tensor:
        raise NotImplementedError

    def _decode(self, z: Tensor, context: Tensor | None, **solver: object) -> Tensor:
        raise NotImplementedError

    def _base_sample(self, n: int) -> Tensor:
        raise NotImplementedError

    def _loss(self, batch: Batch) -> LossResult:
        return LossResult(-self._log_prob(batch.x1, batch.context).mean())

    def _sample_and_log_prob(
        self, z: Tensor, context: Tensor | None, **solver: object
    ) -> tuple[Tensor, Tensor]:
        # Two passes by default; a family with a one-pass way (a flow, a CNF) overrides this.
        x = self._decode(z, context, **solver)
        return x, self._log_prob(x, context, **solver)

    # -- the public protocol ------------------------------------------------------------------
    def loss(self, x: Tensor | Batch, context: Tensor | None = None) -> Tensor:
        """The family's training objective on a batch ``x (B, *event_shape)``: a scalar.

        ``x`` may also be a :class:`Batch` (then ``context`` comes with it); see
        :meth:`objective` for the named terms of the loss.
        """
        return self.objective(x if isinstance(x, Batch) else Batch(x, context)).loss

    def objective(self, batch: Batch) -> LossResult:
        """The training objective on a :class:`Batch`, with its named terms: what the trainer
        minimises and logs.

        ``batch.x0`` (noise paired with ``batch.x1``) is used by the families that regress
        along a path between the two (flow matching); maximum-likelihood families ignore it.
        """
        if not isinstance(batch, Batch):
            raise TypeError(f"batch must be a flowforge Batch, got {type(batch).__name__}")
        x1, context = self._check(batch.x1, batch.context, "batch.x1", "batch.context")
        x0 = batch.x0
        if x0 is not None:
            x0 = check_batch(x0, "batch.x0", self.event_shape, self.dtype)
            if x0.shape[0] != x1.shape[0]:
                raise ValueError(
                    f"batch.x0 must hold one base point per sample of batch.x1, "
                    f"({x1.shape[0]}, ...), got {tuple(x0.shape)}"
                )
        context = self._drop_labels(context)
        if x1 is not batch.x1 or context is not batch.context:
            batch = Batch(x1, context, x0)
        return self._loss(batch)

    def log_prob(self, x: Tensor, context: Tensor | None = None, **solver: object) -> Tensor:
        """Log-density of ``x (B, *event_shape)`` in nats, shape ``(B,)``.

        ``solver``: solver options of a continuous-time model (see :attr:`solver_keys`).
        """
        x, context = self._check(x, context)
        return self._log_prob(x, context, **self._check_solver(solver))

    def encode(self, x: Tensor, context: Tensor | None = None, **solver: object) -> Tensor:
        """Map data ``x`` to its base point ``z`` (compression), both ``(B, *event_shape)``."""
        x, context = self._check(x, context)
        return self._encode(x, context, **self._check_solver(solver))

    def decode(self, z: Tensor, context: Tensor | None = None, **solver: object) -> Tensor:
        """Map base points ``z`` to data ``x`` (sampling), both ``(B, *event_shape)``."""
        z, context = self._check(z, context, "z")
        return self._decode(z, context, **self._check_solver(solver))

    def sample(self, n: int, context: Tensor | None = None, **solver: object) -> Tensor:
        """Draw ``n`` samples, shape ``(n, *event_shape)``, as plain tensors without gradient.

        ``context`` is ``(n, C)`` (one row per sample) or ``(C,)`` / ``(1, C)`` (shared by all).

        Sampling runs under ``torch.no_grad()``, like ``torch.distributions``' ``sample``: the
        result can go straight to ``.numpy()`` or a plot, and no graph is kept (residual blocks
        skip their implicit gradients). For samples to differentiate through (a reparameterised
        draw), call ``decode(z)`` on base noise, or :meth:`sample_and_log_prob` where a family
        has it; both keep autograd, as :meth:`log_prob`, :meth:`encode` and :meth:`loss` do.
        """
        n = check_count(n)
        solver = self._check_solver(solver)
        context = self._sample_context(n, context)
        with torch.no_grad():
            return self._decode(self._base_sample(n), context, **solver)

    def sample_and_log_prob(
        self, n: int, context: Tensor | int | None = None, **solver: object
    ) -> tuple[Tensor, Tensor]:
        """Draw ``n`` samples and their log-densities: ``(n, *event_shape)``, ``(n,)``.

        One pass where the family allows it (a flow's inverse with its log-det, a CNF's one
        solve of the state and the divergence), else a sample then :meth:`log_prob`. Unlike
        :meth:`sample` it keeps autograd (a reparameterised draw, e.g. for variational
        inference). ``context`` as for :meth:`sample`.
        """
        n = check_count(n)
        solver = self._check_solver(solver)
        context = self._sample_context(n, context)
        return self._sample_and_log_prob(self._base_sample(n), context, **solver)

    def classify(self, x: Tensor, prior: Tensor | None = None, **solver: object) -> Tensor:
        r"""The class of each point by Bayes' rule: :math:`\log p(y \mid x)`, ``(B, K)``.

        :math:`\log p(y \mid x) = \log p(x \mid y) + \log p(y) - \log \sum_{y'} p(x \mid y')
        p(y')`, from the model's conditional densities over its ``K`` labels (the null label is
        not a class): a classifier for free from any model built with ``num_classes``, exact
        when its ``log_prob`` is. Costs ``K`` evaluations of :meth:`log_prob`;
        ``.argmax(dim=1)`` gives the predicted labels.

        Args:
            x: ``(B, *event_shape)`` points.
            prior: ``(K,)`` non-negative class weights :math:`p(y)` (normalised here), e.g. the
                training set's class counts; default uniform.
            **solver: solver options of a continuous model.
        """
        if not self.num_classes:
            raise ValueError(
                f"classify needs a model of class labels (built with num_classes=K); "
                f"{self._described()} has none"
            )
        k = self.num_classes
        log_prior = log_class_weights(prior, k, "prior")
        x = check_batch(x, "x", self.event_shape, self.dtype)
        labels = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        joint = torch.stack(
            [self.log_prob(x, labels + y, **solver).double() for y in range(k)], dim=1
        ) + log_prior.to(x.device)
        return torch.log_softmax(joint, dim=1).to(x.dtype)

    # -- helpers ------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        """The floating-point dtype of the model's parameters (or buffers, if it has none)."""
        found = _first(self, "_parameters", floating=True)
        if found is None:
            found = _first(self, "_buffers", floating=True)
        return found.dtype if found is not None else torch.get_default_dtype()

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (or buffers, if it has none)."""
        found = _first(self, "_parameters")
        if found is None:
            found = _first(self, "_buffers")
        return found.device if found is not None else torch.device("cpu")

    def _described(self) -> str:
        """What an error message calls this model: its class; a wrapper names what it wraps."""
        return type(self).__name__

    def _check_solver(self, solver: dict[str, object]) -> dict[str, object]:
        unknown = sorted(set(solver) - set(self.solver_keys))
        if "guidance" in unknown and not self.solver_keys:
            raise TypeError(
                f"{self._described()} is a discrete flow and takes no guidance: it samples "
                "p(x | y) exactly with context=y, while a guided distribution, proportional to "
                "p(x | y)^w p(x)^(1 - w), has no one-pass sampler; classifier-free guidance is "
                "for the continuous-time models (ffjord and the flow-matching recipes)"
            )
        if unknown and not self.solver_keys:
            raise TypeError(
                f"{self._described()} is not a continuous-time model and takes no solver "
                f"options (got {', '.join(unknown)})"
            )
        if unknown:
            raise TypeError(
                f"unknown solver option {', '.join(map(repr, unknown))}; "
                f"{self._described()} takes {', '.join(self.solver_keys)}"
            )
        return solver

    def _check(
        self, x: Tensor, context: object, name: str = "x", context_name: str = "context"
    ) -> tuple[Tensor, Tensor | None]:
        x = check_batch(x, name, self.event_shape, self.dtype)
        context = check_context(
            context, self.context_dim, x.shape[0], self.dtype, context_name, self.num_classes
        )
        return x, context

    def _sample_context(self, n: int, context: object) -> Tensor | None:
        """Check a sampling context: one per sample, or one shared by all ``n`` (a label as an
        int, a 0-d or ``(1,)`` tensor; features as ``(C,)`` or ``(1, C)``)."""
        if self.num_classes:
            if isinstance(context, int) and not isinstance(context, bool):
                context = torch.tensor([context])
            if isinstance(context, Tensor) and context.ndim <= 1 and context.numel() == 1:
                context = context.reshape(1).expand(n)
        elif isinstance(context, Tensor) and self.context_dim:
            if context.ndim == 1:
                context = context.unsqueeze(0)
            if context.ndim == 2 and context.shape[0] == 1:
                context = context.expand(n, -1)
        return check_context(context, self.context_dim, n, self.dtype, "context", self.num_classes)


def _first(module: nn.Module, kind: str, floating: bool = False) -> Tensor | None:
    """The first parameter (``kind="_parameters"``) or buffer (``"_buffers"``) of ``module``
    in ``module.parameters()`` order, optionally the first floating-point one.

    A direct walk of the module tree: ``next(module.parameters())`` builds generators over every
    submodule and costs more than the rest of a small model's input checks.
    """
    for t in getattr(module, kind).values():
        if t is not None and (not floating or t.is_floating_point()):
            return t
    for child in module._modules.values():
        if child is not None:
            found = _first(child, kind, floating)
            if found is not None:
                return found
    return None
