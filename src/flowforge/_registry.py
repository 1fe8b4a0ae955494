"""One helper for every name-to-object table: :class:`Registry`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar, overload

from ._checks import check_choice

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """A table of named objects (classes, constructors, functions), in registration order.

    Read like a ``dict`` (``registry[name]``, ``name in registry``, iteration over the names);
    an unknown name raises the one ``ValueError`` of :func:`~flowforge._checks.check_choice`:
    ``"{argument} must be one of a, b, c; got 'x'"``, with a did-you-mean hint.

    Args:
        argument: what the name is called in the error message (e.g. ``"scheduler"``).

    Example:
        >>> ACTS = Registry("activation")
        >>> @ACTS.register("relu")
        ... def relu(x):
        ...     return max(x, 0.0)
        >>> ACTS["relu"](-1.0)
        0.0
    """

    def __init__(self, argument: str):
        self.argument = argument
        self._items: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: object = None) -> object:
        """Add ``obj`` under ``name`` (or, without ``obj``, a decorator that adds what it
        decorates and returns it unchanged). A name may be registered only once."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.argument} name must be a non-empty str, got {name!r}")

        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(
                    f"{self.argument} {name!r} is already registered; choose another name"
                )
            self._items[name] = item
            return item

        return add if obj is None else add(obj)  # type: ignore[arg-type]

    def check(self, name: object, argument: str | None = None) -> str:
        """Return ``name`` if it is registered; otherwise raise the "must be one of" error,
        naming ``argument`` (default: the registry's)."""
        return check_choice(name, argument or self.argument, self._items)

    def get(self, name: object, argument: str | None = None) -> T:  # type: ignore[override]
        """The object registered under ``name``; an unknown name raises ``ValueError``
        naming ``argument`` (default: the registry's)."""
        return self._items[self.check(name, argument)]

    def __getitem__(self, name: object) -> T:
        return self.get(name)

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.argument!r}: {', '.join(self._items)})"
