"""Classifiers fit on real labelled data, to score conditional samples: do they look like their
label?

:func:`fit_classifier` trains a classifier on real ``(x, y)`` pairs (scikit-learn underneath);
:func:`label_accuracy` is the fraction of a conditional model's samples that it recognises as
the label they were drawn for. Compare it with the classifier's accuracy on real test data
(:meth:`Classifier.accuracy`): samples cannot be recognised better than real data by much, and a
model whose samples score near the real-data accuracy draws convincing members of each class.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int, check_labels
from .._registry import Registry
from ._checks import check_samples

KNN_NEIGHBOURS = 15
"""``k`` of the nearest-neighbour classifier: enough neighbours that a vote averages away the
noise of single points, few enough that a class boundary a few points wide stays sharp."""

AUTO_KNN_MAX_DIM = 8
"""``kind="auto"`` picks ``"knn"`` up to this many features and ``"logistic"`` above: in a few
dimensions neighbours are near and follow any boundary; in many, distances concentrate and
neighbours stop being informative, while classes become nearly linearly separable."""

LOGISTIC_MAX_ITER = 2000
"""L-BFGS iterations of the logistic regression: far more than the 64-pixel digits need to
converge (about 300), so the fit ends at convergence, not at the cap, without a warning."""

MIN_PER_CLASS = 2
"""Training samples each class needs at least: one point says nothing about a class's spread."""


def _logistic(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # lbfgs fits the multinomial (softmax) model for more than two classes; C=1 is sklearn's
    # default L2 penalty, which keeps the weights of near-constant pixels from growing.
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(max_iter=LOGISTIC_MAX_ITER, random_state=seed),
    )


def _knn(seed: int) -> Any:
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # Standardised so that no feature dominates the distance by its units alone; the fit draws
    # no random numbers, so ``seed`` is unused.
    del seed
    return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=KNN_NEIGHBOURS))


CLASSIFIERS: Registry[Callable[[int], Any]] = Registry("kind")
"""The classifier kinds of :func:`fit_classifier`: each a constructor ``seed -> estimator``."""
CLASSIFIERS.register("logistic", _logistic)
CLASSIFIERS.register("knn", _knn)


def _check_labels(y: object, n: int, name: str, num_classes: int | None) -> Tensor:
    """Check that ``y`` is an ``(n,)`` integer tensor of classes in ``0..num_classes - 1``
    (any non-negative classes when ``num_classes`` is ``None``); return it as int64."""
    owner = None if num_classes is None else f"the classifier, which knows {num_classes} classes"
    return check_labels(y, num_classes, n, name, null=False, owner=owner)


@dataclass(frozen=True, eq=False)
class Classifier:
    """A classifier of ``(B, *event_shape)`` samples into ``num_classes`` labels, fit on real data.

    Made by :func:`fit_classifier`. Samples are flattened to ``(B, D)`` and computed with in
    float64 on the CPU (scikit-learn); results come back on the samples' device.

    Attributes:
        kind: ``"logistic"`` or ``"knn"``.
        num_classes: ``K``; labels are ``0..K-1``.
        dim: ``D``, the number of features of one (flattened) sample.
        train_accuracy: the accuracy on the training data it was fit to.
        estimator: the fitted scikit-learn pipeline (standardisation, then the classifier).
    """

    kind: str
    num_classes: int
    dim: int
    train_accuracy: float
    estimator: Any

    def _features(self, x: object, name: str) -> np.ndarray:
        flat = check_samples(x, name, 1)
        if flat.shape[1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else ()
            raise ValueError(
                f"{name} must have {self.dim} features per sample like the classifier's "
                f"training data, got shape {shape} ({flat.shape[1]} features)"
            )
        return flat.detach().to("cpu", torch.float64).numpy()

    def predict(self, x: Tensor) -> Tensor:
        """The most likely class of each sample.

        Args:
            x: ``(B, *)`` samples with ``D`` features in all (images are flattened).

        Returns:
            ``(B,)`` int64 labels in ``0..K-1``, on ``x``'s device.
        """
        labels = self.estimator.predict(self._features(x, "x"))
        return torch.as_tensor(labels, dtype=torch.int64, device=x.device)

    def accuracy(self, x: Tensor, y: Tensor) -> float:
        """The fraction of samples ``x (B, *)`` classified as their label ``y (B,)``."""
        right = self._correct(x, y, "x", "y")
        return float(right.double().mean())

    def class_accuracies(self, x: Tensor, y: Tensor) -> tuple[float, ...]:
        """The accuracy within each class: ``K`` floats, NaN for a class absent from ``y``.

        Args:
            x: ``(B, *)`` samples.
            y: ``(B,)`` their labels in ``0..K-1``.
        """
        right = self._correct(x, y, "x", "y").double().cpu()
        y = y.cpu()
        out = []
        for k in range(self.num_classes):
            mask = y == k
            out.append(float(right[mask].mean()) if bool(mask.any()) else math.nan)
        return tuple(out)

    def _correct(self, x: object, y: object, xname: str, yname: str) -> Tensor:
        n = check_samples(x, xname, 1).shape[0]
        labels = _check_labels(y, n, yname, self.num_classes)
        x = cast(Tensor, x)  # check_samples accepted it
        return self.predict(x) == labels.to(x.device)


def fit_classifier(
    x: Tensor, y: Tensor, kind: str = "auto", seed: int = 0, *, num_classes: int | None = None
) -> Classifier:
    r"""Fit a classifier of samples ``x`` into labels ``y`` on real (training) data.

    - ``"logistic"``: multinomial logistic regression,
      :math:`p(y = k \mid x) \propto \exp(w_k^\top \tilde x + b_k)`, on features standardised to
      zero mean and unit variance (:math:`\tilde x`), with scikit-learn's default L2 penalty
      (``C = 1``). Linear class boundaries; the standard probe for image-like data (the 8x8
      digits: about 0.95 test accuracy).
    - ``"knn"``: the majority vote of the ``k = 15`` nearest training points (Euclidean, on
      standardised features). Any boundary shape, so right for low-dimensional data whose
      classes are rings, spirals or moons, where a linear boundary fails.
    - ``"auto"`` (default): ``"knn"`` for ``D <= 8`` features, ``"logistic"`` above. In a few
      dimensions the nearest neighbours of a point are close and their vote follows any
      boundary; in many, distances between points concentrate (the nearest is barely nearer
      than the farthest), so neighbours carry little information, while classes in many
      dimensions are usually close to linearly separable and logistic regression needs far
      fewer samples.

    Args:
        x: ``(N, *)`` finite float training samples; images are flattened to ``(N, D)``.
        y: ``(N,)`` integer labels in ``0..K-1``; every class must have at least 2 samples.
        kind: ``"auto"``, ``"logistic"`` or ``"knn"``.
        seed: seed of the fit (no current kind draws random numbers; kept so that results
            stay reproducible if one does).
        num_classes: ``K``; default ``max(y) + 1``.

    Returns:
        The fitted :class:`Classifier`.

    Raises:
        TypeError: ``x`` not a float tensor, ``y`` not an integer tensor.
        ValueError: shapes that do not match, NaN values, labels out of range, a class with
            fewer than 2 samples (or none), fewer than 15 samples for ``"knn"``, an unknown
            ``kind``.

    Example:
        >>> import torch
        >>> from flowforge.metrics import fit_classifier
        >>> x = torch.cat([torch.randn(50, 2) - 3, torch.randn(50, 2) + 3])
        >>> y = torch.arange(2).repeat_interleave(50)
        >>> clf = fit_classifier(x, y)
        >>> clf.kind, clf.accuracy(x, y)
        ('knn', 1.0)
    """
    flat = check_samples(x, "x", 2)
    n, dim = flat.shape
    if num_classes is not None:
        num_classes = check_int(num_classes, "num_classes", 2)
    labels = _check_labels(y, n, "y", num_classes)
    k = num_classes if num_classes is not None else int(labels.max()) + 1
    if k < 2:
        raise ValueError(f"y must hold at least 2 classes to classify, got only class {k - 1}")
    counts = torch.bincount(labels.cpu(), minlength=k)
    if bool((counts < MIN_PER_CLASS).any()):
        few = [(c, int(counts[c])) for c in range(k) if counts[c] < MIN_PER_CLASS]
        shown = ", ".join(f"class {c}: {m}" for c, m in few[:5])
        raise ValueError(
            f"every class 0..{k - 1} needs at least {MIN_PER_CLASS} training samples in y, "
            f"got {shown}; give more data, or pass num_classes only for the classes present"
        )
    if kind == "auto":
        kind = "knn" if dim <= AUTO_KNN_MAX_DIM else "logistic"
    make = CLASSIFIERS.get(kind, "kind")
    if kind == "knn" and n < KNN_NEIGHBOURS:
        raise ValueError(
            f"kind='knn' votes over {KNN_NEIGHBOURS} neighbours and needs at least that many "
            f"training samples, got {n}; use kind='logistic' or more data"
        )
    seed = check_int(seed, "seed", 0)
    features = flat.detach().to("cpu", torch.float64).numpy()
    targets = labels.cpu().numpy()
    estimator = make(seed).fit(features, targets)
    train_accuracy = float((estimator.predict(features) == targets).mean())
    return Classifier(
        kind=kind, num_classes=k, dim=dim, train_accuracy=train_accuracy, estimator=estimator
    )


def label_accuracy(classifier: Classifier, samples: Tensor, labels: Tensor | int) -> float:
    """The fraction of conditional ``samples`` that ``classifier`` recognises as the label they
    were drawn for.

    Args:
        classifier: from :func:`fit_classifier`, fit on real data.
        samples: ``(N, *)`` samples of a model, each drawn for its label.
        labels: ``(N,)`` the labels they were drawn for, in ``0..K-1``, or one int for all.

    Returns:
        The accuracy in ``[0, 1]``; set it beside ``classifier.accuracy`` on real test data.

    Example:
        >>> import torch
        >>> from flowforge.metrics import fit_classifier, label_accuracy
        >>> x = torch.cat([torch.randn(50, 2) - 3, torch.randn(50, 2) + 3])
        >>> clf = fit_classifier(x, torch.arange(2).repeat_interleave(50))
        >>> label_accuracy(clf, torch.randn(20, 2) + 3, 1)
        1.0
    """
    if not isinstance(classifier, Classifier):
        raise TypeError(
            f"classifier must be a Classifier from fit_classifier, got {type(classifier).__name__}"
        )
    n = check_samples(samples, "samples", 1).shape[0]
    if isinstance(labels, numbers.Integral) and not isinstance(labels, bool):
        labels = torch.full((n,), int(labels), dtype=torch.int64)
    right = classifier._correct(samples, labels, "samples", "labels")
    return float(right.double().mean())
