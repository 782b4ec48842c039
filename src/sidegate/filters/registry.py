"""Filters registered by name; the config's ``filters:`` keys are looked up here at load time."""

from __future__ import annotations

from typing import TypeVar

from sidegate.filters.base import Filter

_REGISTRY: dict[str, type[Filter]] = {}

F = TypeVar("F", bound=type[Filter])


def register(cls: F) -> F:
    """Class decorator: make a filter available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"filter name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def lookup(name: str) -> type[Filter] | None:
    _load_builtins()
    return _REGISTRY.get(name)


def known_names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


_loaded = False


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from sidegate.filters import builtin  # noqa: F401  (registers on import)


__all__: list[str] = ["known_names", "lookup", "register"]
