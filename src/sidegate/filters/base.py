"""The filter interface: the extension point of the request path.

A filter is configured per route (``filters: {name: config}``), compiled once at config load
into an instance shared by every request on that route, and called at the phases it implements.
Only overridden hooks are called: the compiled route keeps, per phase, the tuple of filters that
do work there, so an unused phase costs nothing.

The hooks and their answers are :mod:`sidegate.filters.hooks` (the request loop's side, with the
phase chart); this module adds what a filter is at config load: its config class and the
services it is bound to.

Filter configs are plain frozen dataclasses, so that the serving process never imports pydantic:

- constraints are ``typing.Annotated`` metadata from ``annotated_types`` (``Ge(200)``, ``Le(599)``,
  ``MinLen(1)``...) and a field's description is the docstring written under it. The config
  checker (:mod:`sidegate.config.check`, a short-lived child process) validates a route's config
  with ``pydantic.TypeAdapter(config_model)``, which reads both, and sends it on as plain JSON;
- the serving process rebuilds the instance from that JSON with :meth:`FilterConfig.from_plain`,
  without validating again.

So a config class is declared with ``@dataclass(frozen=True)`` itself (the registry checks), and
its fields hold only what survives JSON: ``str``, ``int``, ``float``, ``bool``, ``None``, enums,
``tuple``/``list``/``frozenset`` of those, ``dict`` with ``str`` keys, nested frozen dataclasses,
and ``X | None`` of any of them (a union of two other types is passed on as JSON gave it).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Self, TypeVar

from sidegate.config.snapshot import (
    CacheSettings,
    ConsumerSpec,
    HeaderEdits,
    IdentitySpec,
    RedisSpec,
    Rewrite,
    UpstreamSpec,
)
from sidegate.filters.context import RequestContext
from sidegate.filters.hooks import Answer, FilterHooks, Wait

__all__ = [
    "Answer",
    "ConfigValueError",
    "Filter",
    "FilterConfig",
    "FilterHooks",
    "FilterServices",
    "RequestContext",
    "Wait",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class FilterConfig:
    """Base of every filter's config: a frozen dataclass whose unknown keys are errors."""

    # Read by pydantic in the config checker only: forbid unknown keys, and describe each field
    # in the JSON Schema with the docstring under it.
    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid", "use_attribute_docstrings": True}

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> Self:
        """The config from the checker's JSON (nested dataclasses, tuples and enums rebuilt)."""
        return _build(cls, data)


def _build(cls: type[T], data: Mapping[str, Any]) -> T:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)  # Annotated metadata stripped
    return cls(**{name: _convert(hints.get(name, Any), value) for name, value in data.items()})


_HINTS: dict[type, dict[str, Any]] = {}


def _convert(kind: Any, value: Any) -> Any:
    """``value`` (as JSON gave it) as the type ``kind`` describes."""
    if value is None:
        return None
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union or origin is types.UnionType:
        rest = [arg for arg in args if arg is not type(None)]
        return _convert(rest[0], value) if len(rest) == 1 else value
    if isinstance(kind, type) and origin is None:
        if dataclasses.is_dataclass(kind):
            return _build(kind, value)
        if issubclass(kind, Enum):
            return kind(value)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    if origin in (tuple, list, frozenset, set) and isinstance(value, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return tuple(_convert(arg, item) for arg, item in zip(args, value, strict=False))
        item_kind = args[0] if args else Any
        return origin(_convert(item_kind, item) for item in value)
    if origin in (dict, Mapping) and isinstance(value, dict) and len(args) == 2:
        return {key: _convert(args[1], item) for key, item in value.items()}
    return value


ConfigPath = tuple[str | int, ...]  # a place inside a filter's config: ("limits", 1, "key")


class ConfigValueError(ValueError):
    """What a filter's constructor raises for config values that cannot work: each message with
    where the value is in the filter's config, so that the error names that value's line."""

    def __init__(self, path: ConfigPath, message: str, *more: tuple[ConfigPath, str]) -> None:
        super().__init__("; ".join(m for _, m in ((path, message), *more)))
        self.problems = ((path, message), *more)


@dataclass(frozen=True, slots=True)
class FilterServices:
    """What a filter may learn about where it runs, given once when the config is compiled."""

    route: str
    upstream: UpstreamSpec
    cache: CacheSettings
    rewrite: Rewrite | None = None  # the route's path rewrite, as the upstream request gets it
    request_edits: HeaderEdits | None = None  # the route's request header edits
    response_timeout: float = 0.0  # the route's upstream response timeout (0: none)
    consumers: tuple[ConsumerSpec, ...] = ()  # top-level consumers
    identity: IdentitySpec = field(default_factory=IdentitySpec)
    redis: RedisSpec = field(default_factory=RedisSpec)


class Filter(FilterHooks):
    """Base class of filters. Subclasses set ``name`` and ``config_model`` and override hooks
    (:class:`~sidegate.filters.hooks.FilterHooks`)."""

    config_model: ClassVar[type[FilterConfig]] = FilterConfig
    #: True for a filter that names the caller (``ctx.consumer``, ``ctx.tenant``) for later ones.
    names_caller: ClassVar[bool] = False
    #: What to do instead of reading a request header that never reaches filters, by what that
    #: header is: "consumer", "tenant" (the identity headers), "client", "host" (forwarding ones).
    header_alternatives: ClassVar[Mapping[str, str]] = {}
    #: Config fields whose value is a request header name (or a list of them) the filter reads.
    header_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def request_headers(cls, config: FilterConfig) -> Iterable[tuple[ConfigPath, str]]:
        """The request headers ``config`` has this filter read, each with where it is named
        (by default, those of :attr:`header_fields`).

        The config checker refuses a header that Sidegate removes from requests before the
        filters run (the identity headers it sets, the forwarding headers it rewrites).
        """
        for name in cls.header_fields:
            value = getattr(config, name)
            if isinstance(value, str):
                if value:
                    yield (name,), value
            else:
                yield from (((name, i), header) for i, header in enumerate(value))

    @classmethod
    def caller_needed(cls, config: FilterConfig) -> Iterable[ConfigPath]:
        """Where ``config`` relies on a caller named by an earlier filter (a warning if none is)."""
        return ()

    def __init__(self, config: FilterConfig) -> None:
        self.config = config

    def bind(self, services: FilterServices) -> None:
        """Called once per compiled route, before any request: the route's upstream and the
        pod-wide settings. Must not do I/O (the config may be checked, never served)."""

    def delegate(self, hook: str, fast: Callable[..., object]) -> None:
        """Have the chain call ``fast`` for ``hook`` on this instance (from :meth:`bind`).

        For a compiled fast path (:mod:`sidegate.filters.fastpath`): an instance attribute shadows
        the class's method, so the compiled exchange calls ``fast`` with no interpreted frame in
        between. ``fast`` must decide as the class's method would, handing it every case it does
        not cover; the chain still lists the filter for ``hook`` only if its class implements it.
        """
        if not type(self).implements(hook):
            raise ValueError(f"{type(self).__name__} does not implement {hook}")
        setattr(self, hook, fast)
