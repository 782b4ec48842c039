"""Loading a config file: read, parse, substitute, validate, and report *every* problem at once.

The steps, each adding :class:`~sidegate.errors.ConfigIssue` values rather than stopping:

1. read the file (missing, unreadable, not UTF-8, empty);
2. parse the YAML with line marks and duplicate-key detection (:mod:`sidegate.config.source`);
3. substitute ``${ENV}`` references in string values, then apply the ``profiles:`` the pod's labels
   select (:mod:`sidegate.config.profiles`): what follows checks the merged config;
4. validate against :class:`~sidegate.config.model.SidegateConfig`, turning pydantic's errors into
   dotted paths, lines and messages that say what was found and what would work;
5. check what needs the whole file: each route's upstream exists, route names are unique;
6. set up each filter whose config is valid, and check that the request headers filters and
   route matches rely on reach them (:mod:`sidegate.config.reach`), even when step 4 failed
   elsewhere; what works but surprises is a warning.

Only a YAML syntax error, an unreadable file or a top level that is not a mapping stop early,
since nothing after them would be meaningful. If any issue was found, :class:`ConfigError` is
raised with all of them, sorted by line.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from sidegate.config.listener_checks import check_listeners
from sidegate.config.model import Route, SidegateConfig
from sidegate.config.profiles import ProfileChoice, annotate, apply_profiles
from sidegate.config.reach import check_reach
from sidegate.config.source import Document, Path, format_path, line_for, parse_yaml, substitute_env
from sidegate.errors import ConfigError, ConfigIssue
from sidegate.filters.registry import lookup


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config, with the text it came from and where each value is in that text."""

    config: SidegateConfig
    source: str
    text: str
    lines: Mapping[Path, int] = field(default_factory=dict)
    warnings: tuple[ConfigIssue, ...] = ()  # what works, but not as one may think
    profiles: ProfileChoice = field(default_factory=ProfileChoice)  # in force, and the labels read

    def line_of(self, path: Path) -> int | None:
        """Line of ``path`` (e.g. ``("routes", 0, "filters")``), or of its nearest ancestor."""
        return line_for(self.lines, path)


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Load and validate the config file at ``path``; raise :class:`ConfigError` listing every issue.

    ``environ`` (default: ``os.environ``) supplies ``${NAME}`` substitutions (and
    ``pod.labels_env``); ``labels``, when given, are the pod's labels instead of those the
    ``pod:`` section says where to read (``sidegate validate --labels``).
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise ConfigError([ConfigIssue("", "file not found")], source) from None
    except IsADirectoryError:
        raise ConfigError([ConfigIssue("", "is a directory, not a config file")], source) from None
    except OSError as exc:
        raise ConfigError([ConfigIssue("", f"cannot read file: {exc.strerror or exc}")], source) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([ConfigIssue("", "the file is not valid UTF-8 text", line)], source) from None
    return load_config_text(text, source, environ, labels)


def load_config_text(
    text: str,
    source: str = "<string>",
    environ: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Like :func:`load_config`, for config text already in memory (tests, admin uploads)."""
    if not text.strip() or _only_comments(text):
        msg = "the config is empty; it needs at least `upstreams` and `routes`"
        raise ConfigError([ConfigIssue("", msg, 1)], source)
    doc = parse_yaml(text)
    if doc.fatal:
        raise ConfigError(_sorted(doc.issues), source)
    if not isinstance(doc.data, dict):
        found = "nothing" if doc.data is None else type(doc.data).__name__
        msg = f"the top level must be a mapping (`listeners:`, `upstreams:`, `routes:`), found {found}"
        raise ConfigError([*doc.issues, ConfigIssue("", msg, 1)], source)
    environ = os.environ if environ is None else environ
    applied = apply_profiles(doc, environ, substitute_env(doc, environ), labels)
    skip = applied.skip
    config = _validate(doc, skip)
    _check_references(doc)
    warnings = _sorted(annotate([*applied.warnings, *check_reach(doc, skip)], applied.notes))
    if doc.issues or config is None:
        raise ConfigError(_sorted(annotate(doc.issues, applied.notes)), source, warnings)
    return LoadedConfig(
        config=config,
        source=source,
        text=text,
        lines=doc.lines,
        warnings=tuple(warnings),
        profiles=applied.choice,
    )


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines())


def _sorted(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    return sorted(issues, key=lambda issue: issue.line or 0)


def _validate(doc: Document, skip: set[Path]) -> SidegateConfig | None:
    try:
        return SidegateConfig.model_validate(doc.data)
    except ValidationError as exc:
        for error in exc.errors():
            path, key_error = _path_of(error["loc"])
            if any(path[: len(bad)] == bad for bad in skip):
                continue  # already reported as an unset ${VARIABLE}
            message = _message(error, path, key_error)
            doc.issues.append(ConfigIssue(format_path(path), message, line_for(doc.lines, path)))
    except Exception as exc:  # a filter's validator may raise anything: still no traceback
        doc.issues.append(ConfigIssue("", f"validation failed: {type(exc).__name__}: {exc}"))
    return None


def _path_of(loc: tuple[int | str, ...]) -> tuple[Path, bool]:
    """Pydantic's ``loc`` as a config path; pydantic marks errors in a dict *key* with ``[key]``."""
    key_error = bool(loc) and loc[-1] == "[key]"
    return tuple(part for part in loc if part != "[key]"), key_error


def _message(error: ErrorDetails, path: Path, key_error: bool) -> str:
    kind, value = error["type"], error["input"]
    text = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "missing":
        return f"required key `{path[-1]}` is missing"
    if kind == "extra_forbidden":
        return _unknown_key(path)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value), got {_show(value)}"
    if kind == "list_type":
        return f"expected a list, got {_show(value)}"
    if kind == "too_short" and error.get("ctx", {}).get("min_length") == 1:
        return "must not be empty"
    if key_error and kind != "value_error":
        return f"invalid name {_show(value)}: {text}"
    bound = _BOUNDS.get(kind)
    if bound is not None:
        limit = error.get("ctx", {}).get(bound[1])
        return f"must be {bound[0]} {limit}, got {_show(value)}"
    if kind in ("value_error", "assertion_error", "unknown_filter") or isinstance(value, dict | list):
        return text
    return f"{text[:1].lower()}{text[1:]}, got {_show(value)}"


_BOUNDS = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
}


def _show(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _unknown_key(path: Path) -> str:
    key = str(path[-1])
    allowed = _keys_at(path[:-1])
    if allowed is None:
        return f"unknown key {key!r}"
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key {key!r}; {hint}allowed keys: {', '.join(allowed)}"


def _keys_at(path: Path) -> list[str] | None:
    """The keys allowed in the mapping at ``path``: the fields of the model or filter config
    dataclass that validates it (None when it is not one)."""
    current: Any = SidegateConfig
    in_filters = False
    for part in path:
        current = _unwrap(current)
        if in_filters:
            filter_cls = lookup(str(part))
            current, in_filters = (filter_cls.config_model if filter_cls else None), False
        elif (fields := _fields_of(current)) is not None:
            if not isinstance(part, str) or part not in fields:
                return None
            in_filters = current is Route and part == "filters"
            current = fields[part]
        elif typing.get_origin(current) in (list, dict):
            current = typing.get_args(current)[-1]
        else:
            return None
    fields = _fields_of(_unwrap(current))
    return None if fields is None else list(fields)


def _fields_of(cls: Any) -> dict[str, Any] | None:
    """Field name -> annotation of a pydantic model or a dataclass; None for anything else."""
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return {name: info.annotation for name, info in cls.model_fields.items()}
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls, include_extras=True)
        return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}
    return None


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` -> ``X``."""
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) not in (list, dict) and len(args) == 1:
            annotation = args[0]
            continue
        return annotation


def _check_consumers(doc: Document) -> None:
    """A consumer name, and an API key, belong to one consumer only."""
    consumers = doc.data.get("consumers")
    if not isinstance(consumers, list):
        return
    names: dict[str, int] = {}
    keys: dict[str, str] = {}
    for i, consumer in enumerate(consumers):
        if not isinstance(consumer, dict):
            continue
        name = consumer.get("name")
        if isinstance(name, str) and name:
            if name in names:
                _add(
                    doc,
                    ("consumers", i, "name"),
                    f"{name!r} is also consumers[{names[name]}]; names are unique",
                )
            names.setdefault(name, i)
        api_keys = consumer.get("api_keys")
        for j, key in enumerate(api_keys if isinstance(api_keys, list) else ()):
            if not isinstance(key, str):
                continue
            if key in keys:
                msg = f"{keys[key]} has this API key too; a key names one consumer"
                _add(doc, ("consumers", i, "api_keys", j), msg)
            keys.setdefault(key, f"consumers[{i}] ({name})")


def _check_references(doc: Document) -> None:
    """Checks across the file: listeners (:mod:`sidegate.config.listener_checks`), each route's
    upstream is defined, route names are unique, and consumer names and keys too."""
    check_listeners(doc)
    _check_consumers(doc)
    data = doc.data
    routes, upstreams = data.get("routes"), data.get("upstreams")
    if not isinstance(routes, list):
        return
    seen: dict[str, int] = {}
    for i, route in enumerate(routes):
        if not isinstance(route, dict):
            continue
        name = route.get("name")
        if isinstance(name, str) and name:
            if name in seen:
                first = seen[name]
                at = line_for(doc.lines, ("routes", first, "name"))
                where = f"routes[{first}]" + (f", line {at}" if at else "")
                _add(
                    doc,
                    ("routes", i, "name"),
                    f"duplicate route name {name!r} (also {where}); names must be unique",
                )
            else:
                seen[name] = i
        upstream = route.get("upstream")
        if isinstance(upstream, str) and isinstance(upstreams, dict) and upstream not in upstreams:
            known = ", ".join(sorted(str(n) for n in upstreams)) or "(none defined)"
            _add(doc, ("routes", i, "upstream"), f"unknown upstream {upstream!r}; known upstreams: {known}")


def _add(doc: Document, path: Path, message: str) -> None:
    doc.issues.append(ConfigIssue(format_path(path), message, line_for(doc.lines, path)))
