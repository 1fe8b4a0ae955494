"""The model registry: named recipes, created with ``create(name, dim=D)`` or
``create(name, shape=(C, H, W))`` and the recipe's options."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from .._checks import check_count, did_you_mean
from ..distributions.model import Model
from ..transforms.base import event_shape_of


@dataclass(frozen=True)
class Recipe:
    """A registered model: its name, a one-line summary, the function that builds it, the
    training settings it needs where the shared defaults do not suit it, and whether it takes
    images.

    ``build(shape, **options)`` takes the event shape first: ``(D,)`` for vectors, and for a
    recipe with ``images`` also ``(C, H, W)``.

    ``train_defaults`` maps :class:`~flowforge.train.TrainConfig` fields to values (e.g.
    ``{"lr": 1e-2}``): ``flowforge train`` and ``flowforge compare`` start from them and let a
    config file's ``[train]`` table and the command-line flags override them. The Python API
    leaves them to you: ``TrainConfig(**recipe(name).train_defaults, steps=...)``.
    """

    name: str
    summary: str
    build: Callable[..., Model]
    train_defaults: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    images: bool = False

    def options(self) -> dict[str, object]:
        """The keyword options of the recipe with their defaults (``shape`` excluded)."""
        params = inspect.signature(self.build).parameters
        return {k: p.default for k, p in params.items() if k not in ("shape", "dim")}


_REGISTRY: dict[str, Recipe] = {}


def register(
    name: str, summary: str, train: Mapping[str, object] | None = None, *, images: bool = False
) -> Callable[[Callable[..., Model]], Callable[..., Model]]:
    """Register ``build(shape, **options) -> Model`` under ``name``, with the training settings
    ``train`` it needs beyond the shared defaults (see :class:`Recipe`); ``images`` says that
    it accepts image shapes ``(C, H, W)`` besides vectors ``(D,)``."""

    def decorator(build: Callable[..., Model]) -> Callable[..., Model]:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered")
        train_defaults = MappingProxyType(dict(train or {}))
        _REGISTRY[name] = Recipe(name, summary, build, train_defaults, bool(images))
        return build

    return decorator


def available() -> list[str]:
    """Names of the registered models, in the order the methods were published."""
    return list(_REGISTRY)


def image_models() -> list[str]:
    """Names of the registered models that take images ``(C, H, W)``, in :func:`available`
    order."""
    return [name for name, r in _REGISTRY.items() if r.images]


def recipe(name: str) -> Recipe:
    """The :class:`Recipe` registered under ``name``; ``ValueError`` naming the valid ones."""
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown model {name!r}: {did_you_mean(name, _REGISTRY)}"
            f"available models are {', '.join(_REGISTRY)}"
        )
    return _REGISTRY[name]


def create(
    name: str, dim: int | None = None, *, shape: Sequence[int] | None = None, **options: object
) -> Model:
    """Build the model ``name`` for vectors of ``dim`` features or events of ``shape``.

    Args:
        name: one of :func:`available`.
        dim: ``D``, the number of features of one sample; the same as ``shape=(D,)``.
        shape: the event shape of one sample: ``(D,)``, or ``(C, H, W)`` for the recipes that
            take images (:func:`image_models`). Give exactly one of ``dim`` and ``shape``.
        **options: the recipe's keyword options (see ``recipe(name).options()``), e.g.
            ``layers``, ``hidden``, ``bins``, ``bound``, ``context_dim``, ``num_classes``.

    Raises:
        ValueError: unknown name, a shape the recipe does not take, or a bad value for ``dim``,
            ``shape`` or an option.
        TypeError: an option the recipe does not have, or a value of the wrong type.

    Example:
        >>> import flowforge as ff
        >>> model = ff.models.create("nsf", dim=2, layers=3, hidden=(64, 64))
        >>> model.sample(4).shape
        torch.Size([4, 2])
        >>> ff.models.create("realnvp", shape=(1, 4, 4), layers=2).sample(3).shape
        torch.Size([3, 1, 4, 4])
    """
    r = recipe(name)
    event: tuple[int, ...]
    if dim is not None and shape is None:
        event = (check_count(dim, "dim"),)
    elif shape is not None and dim is None:
        event = event_shape_of(shape, "shape")
    else:
        raise TypeError(
            f"create({name!r}, ...) needs exactly one of dim=D (vectors) or shape=(C, H, W), "
            f"got {'both' if dim is not None else 'neither'}"
        )
    if len(event) != 1 and not r.images:
        raise ValueError(
            f"model {name!r} takes flat vectors (D,), got shape {event}; "
            f"models that take images: {', '.join(image_models())}"
        )
    if len(event) not in (1, 3):
        raise ValueError(
            f"model {name!r} takes vectors (D,) or images (C, H, W), got shape {event} "
            f"(rank {len(event)})"
        )
    valid = r.options()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"{did_you_mean(unknown[0], valid)}its options are: {', '.join(valid)}"
        )
    model = r.build(event, **options)
    # How it was built, so a run trained from Python can write a config.json that rebuilds it.
    model.created_with = {
        "name": name,
        "dim": math.prod(event),
        "shape": list(event),
        "options": dict(options),
    }
    return model
