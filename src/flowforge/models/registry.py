"""The model registry: named recipes, created with ``create(name, dim=..., **options)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .._checks import check_count, did_you_mean
from ..distributions.model import Model


@dataclass(frozen=True)
class Recipe:
    """A registered model: its name, a one-line summary, the function that builds it and the
    training settings it needs where the shared defaults do not suit it.

    ``train_defaults`` maps :class:`~flowforge.train.TrainConfig` fields to values (e.g.
    ``{"lr": 1e-2}``): ``flowforge train`` and ``flowforge compare`` start from them and let a
    config file's ``[train]`` table and the command-line flags override them. The Python API
    leaves them to you: ``TrainConfig(**recipe(name).train_defaults, steps=...)``.
    """

    name: str
    summary: str
    build: Callable[..., Model]
    train_defaults: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def options(self) -> dict[str, object]:
        """The keyword options of the recipe with their defaults (``dim`` excluded)."""
        params = inspect.signature(self.build).parameters
        return {k: p.default for k, p in params.items() if k != "dim"}


_REGISTRY: dict[str, Recipe] = {}


def register(
    name: str, summary: str, train: Mapping[str, object] | None = None
) -> Callable[[Callable[..., Model]], Callable[..., Model]]:
    """Register ``build(dim, **options) -> Model`` under ``name``, with the training settings
    ``train`` it needs beyond the shared defaults (see :class:`Recipe`)."""

    def decorator(build: Callable[..., Model]) -> Callable[..., Model]:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered")
        _REGISTRY[name] = Recipe(name, summary, build, MappingProxyType(dict(train or {})))
        return build

    return decorator


def available() -> list[str]:
    """Names of the registered models, in the order the methods were published."""
    return list(_REGISTRY)


def recipe(name: str) -> Recipe:
    """The :class:`Recipe` registered under ``name``; ``ValueError`` naming the valid ones."""
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown model {name!r}: {did_you_mean(name, _REGISTRY)}"
            f"available models are {', '.join(_REGISTRY)}"
        )
    return _REGISTRY[name]


def create(name: str, dim: int, **options: object) -> Model:
    """Build the model ``name`` for ``dim``-dimensional data.

    Args:
        name: one of :func:`available`.
        dim: ``D``, the number of features of one sample.
        **options: the recipe's keyword options (see ``recipe(name).options()``), e.g.
            ``layers``, ``hidden``, ``bins``, ``bound``, ``context_dim``.

    Raises:
        ValueError: unknown name, or a bad value for ``dim`` or an option.
        TypeError: an option the recipe does not have, or a value of the wrong type.

    Example:
        >>> import flowforge as ff
        >>> model = ff.models.create("nsf", dim=2, layers=3, hidden=(64, 64))
        >>> model.sample(4).shape
        torch.Size([4, 2])
    """
    r = recipe(name)
    dim = check_count(dim, "dim")
    valid = r.options()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"{did_you_mean(unknown[0], valid)}its options are: {', '.join(valid)}"
        )
    model = r.build(dim, **options)
    # How it was built, so a run trained from Python can write a config.json that rebuilds it.
    model.created_with = {"name": name, "dim": dim, "options": dict(options)}
    return model
