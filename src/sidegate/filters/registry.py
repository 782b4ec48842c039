"""Filters registered by name; the config's ``filters:`` keys are looked up here at load time.

The config checker (a child process) and the serving process each have their own registry, both
filled by importing :mod:`sidegate.filters.builtin`: a filter must be registered on import of a
module that both import, or the checker will call its name unknown.
"""

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
    model = cls.config_model
    # A subclass without its own @dataclass would silently have no fields of its own.
    params = vars(model).get("__dataclass_params__")
    if params is None or not params.frozen:
        raise TypeError(f"{cls.__qualname__}.config_model must be declared @dataclass(frozen=True)")
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
