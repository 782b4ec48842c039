"""Filters registered by name; the config's ``filters:`` keys are looked up here at load time.

The config checker (a child process) and the serving process each have their own registry. A
built-in filter's module (:data:`sidegate.filters.builtin.BUILTIN`) is imported, and registers
itself, the first time its name is looked up, so a process loads only the filters its config uses.
"""

from __future__ import annotations

import importlib
from typing import TypeVar

from sidegate.filters.base import Filter
from sidegate.filters.builtin import BUILTIN

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
    """The filter class registered as ``name`` (a built-in one's module imported on first use)."""
    cls = _REGISTRY.get(name)
    if cls is None:
        module = BUILTIN.get(name)
        if module is not None:
            importlib.import_module(module)  # registers it
            cls = _REGISTRY.get(name)
    return cls


def known_names() -> list[str]:
    return sorted(set(_REGISTRY) | set(BUILTIN))


__all__: list[str] = ["known_names", "lookup", "register"]
