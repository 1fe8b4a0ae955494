"""The model registry: named recipes, created with ``create(name, dim=D)`` or
``create(name, shape=(C, H, W))`` and the recipe's options."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
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
    ``{"lr": 1e-2}``): the settings of the recipe built with its default options.
    ``train_by_option`` changes them where an option takes another network: ``{"field":
    {"unet": {"lr": 2e-3}}}`` says that a model built with ``field="unet"`` trains with lr
    2e-3. :meth:`training` merges the two for the options a model is built with; ``flowforge
    train`` and ``flowforge compare`` start from it and let a config file's ``[train]`` table
    and the command-line flags override it. The Python API leaves them to you:
    ``TrainConfig(**recipe(name).training(field="unet"), steps=...)``.
    """

    name: str
    summary: str
    build: Callable[..., Model]
    train_defaults: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    images: bool = False
    train_by_option: Mapping[str, Mapping[object, Mapping[str, object]]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def options(self) -> dict[str, object]:
        """The keyword options of the recipe with their defaults (``shape`` excluded)."""
        params = inspect.signature(self.build).parameters
        return {k: p.default for k, p in params.items() if k not in ("shape", "dim")}

    def training(self, **options: object) -> Mapping[str, object]:
        """The training defaults of this recipe built with ``options`` (the others at their
        defaults): :attr:`train_defaults`, with the entries of :attr:`train_by_option` for the
        values the options take. Unknown options are left to :func:`create` to refuse.

        Example:
            >>> import flowforge as ff
            >>> dict(ff.models.recipe("fm").training())
            {'lr': 0.01}
            >>> dict(ff.models.recipe("fm").training(field="unet"))
            {'lr': 0.002}
        """
        merged = dict(self.train_defaults)
        defaults = self.options()
        for option, by_value in self.train_by_option.items():
            value = options.get(option, defaults.get(option))
            if isinstance(value, Hashable) and value in by_value:
                merged.update(by_value[value])
        return MappingProxyType(merged)


_REGISTRY: dict[str, Recipe] = {}


def register(
    name: str,
    summary: str,
    train: Mapping[str, object] | None = None,
    *,
    images: bool = False,
    train_by_option: Mapping[str, Mapping[object, Mapping[str, object]]] | None = None,
) -> Callable[[Callable[..., Model]], Callable[..., Model]]:
    """Register ``build(shape, **options) -> Model`` under ``name``, with the training settings
    ``train`` it needs beyond the shared defaults and the ones ``train_by_option`` sets for
    particular option values (see :class:`Recipe`); ``images`` says that it accepts image
    shapes ``(C, H, W)`` besides vectors ``(D,)``."""

    def decorator(build: Callable[..., Model]) -> Callable[..., Model]:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered")
        train_defaults = MappingProxyType(dict(train or {}))
        by_option = MappingProxyType(
            {
                option: MappingProxyType(
                    {value: MappingProxyType(dict(t)) for value, t in by_value.items()}
                )
                for option, by_value in (train_by_option or {}).items()
            }
        )
        unknown = sorted(set(by_option) - set(inspect.signature(build).parameters))
        if unknown:
            raise ValueError(
                f"train_by_option of model {name!r} names {', '.join(map(repr, unknown))}, "
                f"which its builder does not take"
            )
        _REGISTRY[name] = Recipe(name, summary, build, train_defaults, bool(images), by_option)
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
