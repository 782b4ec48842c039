"""Checks of what a file asks of its filters and routes, beyond the shape of each value.

:mod:`sidegate.config.load` runs them on the parsed data after the model, whatever the model
found, so that one run reports every problem of a file:

* each filter config that is valid by itself is set up (``cls(config)``) as the serving process
  will do it, so that a mistake only the filter can see (a ``jwt`` without keys, an unknown
  ``rate_limit`` key) is reported with the rest; a
  :class:`~sidegate.filters.base.ConfigValueError` names the line of the value itself;
* a request header that a filter reads (:meth:`~sidegate.filters.base.Filter.request_headers`)
  or a route matches on, but that never reaches it, is an error that says what to use instead.
  Sidegate removes from every request the identity headers it sets itself
  (``identity.consumer_header``, ``identity.tenant_header``: a client cannot pose as a tenant),
  and takes the forwarding headers (X-Forwarded-*, Forwarded, Via, X-Request-Id, traceparent)
  and the hop-by-hop ones out of the header list filters see. Routes still match the forwarding
  headers (the router reads them where the parser keeps them), not the identity ones;
* what works but is not what it seems is a warning: a limit keyed by consumer or tenant with no
  filter before it that names the caller (every request then counts under its client address),
  or a route that requires an identity header to be absent (always true).
"""

from __future__ import annotations

from typing import Any

from sidegate.config.model import Identity, filter_adapter
from sidegate.config.source import Document, Path, format_path, line_for
from sidegate.errors import ConfigIssue
from sidegate.filters.base import ConfigValueError, Filter, FilterConfig
from sidegate.filters.registry import lookup
from sidegate.routing.router import FIELD_HEADERS, UNMATCHABLE_HEADERS

_IDENTITY_DEFAULTS = {
    name: Identity.model_fields[name].default for name in ("consumer_header", "tenant_header")
}
# What a forwarding header stands for, so that a filter can say what to use instead.
_KINDS = {"x-forwarded-for": "client", "forwarded": "client", "x-forwarded-host": "host", "host": "host"}
_ANY_OTHER = "name a header the client sends"


def check_reach(doc: Document, skip: set[Path]) -> list[ConfigIssue]:
    """Add to ``doc.issues`` what the filters and route matches cannot do; return the warnings.

    ``skip``: paths already reported (an unset ``${VARIABLE}``), whose filter is not set up.
    """
    warnings: list[ConfigIssue] = []
    routes = doc.data.get("routes")
    if not isinstance(routes, list):
        return warnings
    identity = _identity(doc.data)
    for index, route in enumerate(routes):
        if isinstance(route, dict):
            _check_match(doc, index, route.get("match"), identity, warnings)
            _check_filters(doc, index, route.get("filters"), identity=identity, skip=skip, warnings=warnings)
    return warnings


def _identity(data: dict[Any, Any]) -> dict[str, tuple[str, str]]:
    """Lower-case identity header name -> (what it names, the setting), for the headers sent."""
    section = data.get("identity")
    section = section if isinstance(section, dict) else {}
    out = {}
    for setting, default in _IDENTITY_DEFAULTS.items():
        name = section.get(setting, default)
        if isinstance(name, str) and name.strip():
            out[name.strip().lower()] = (setting.removesuffix("_header"), f"identity.{setting}")
    return out


def _hidden(header: str, identity: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """``(what it is, why filters never see it)`` for a header that never reaches them."""
    name = header.strip().lower()
    if name in identity:
        kind, setting = identity[name]
        return kind, (
            f"Sidegate removes {header} from every request and sets it for the app itself ({setting})"
        )
    if name.encode() in FIELD_HEADERS:
        return _KINDS.get(name, ""), (
            f"Sidegate takes {header} out of the headers filters see, to rewrite it for the app"
        )
    if name.encode() in UNMATCHABLE_HEADERS:
        return _KINDS.get(name, ""), f"{header} is consumed by the HTTP layer"
    return None


def _check_filters(
    doc: Document,
    index: int,
    filters: object,
    *,
    identity: dict[str, tuple[str, str]],
    skip: set[Path],
    warnings: list[ConfigIssue],
) -> None:
    if not isinstance(filters, dict):
        return
    caller_named_by = ""
    for name, raw in filters.items():
        path: Path = ("routes", index, "filters", name)
        cls = lookup(name) if isinstance(name, str) else None
        if cls is None or any(_within(bad, path) or _within(path, bad) for bad in skip):
            continue  # an unknown filter or a bad ${VARIABLE}: reported already
        try:
            config = filter_adapter(cls.config_model).validate_python({} if raw is None else raw)
        except Exception:  # the model reports what is wrong with it
            continue
        _set_up(doc, cls, config, path)
        for where, header in cls.request_headers(config):
            hidden = _hidden(header, identity)
            if hidden is not None:
                kind, why = hidden
                instead = cls.header_alternatives.get(kind, _ANY_OTHER)
                _add(doc.issues, doc, (*path, *where), f"{why}, so {name} never sees it; {instead}")
        if not caller_named_by:
            for where in cls.caller_needed(config):
                msg = (
                    "no filter before this one names the caller (api_key, jwt): "
                    "every request counts under its client address"
                )
                _add(warnings, doc, (*path, *where), msg)
        if cls.names_caller:
            caller_named_by = name


def _set_up(doc: Document, cls: type[Filter], config: FilterConfig, path: Path) -> None:
    """Build the filter as the serving process will: what it refuses is a config error."""
    try:
        cls(config)
    except ConfigValueError as exc:
        for where, message in exc.problems:
            _add(doc.issues, doc, (*path, *where), message)
    except ValueError as exc:
        _add(doc.issues, doc, path, str(exc))
    except Exception as exc:
        _add(doc.issues, doc, path, f"cannot set up filter: {exc}")


def _check_match(
    doc: Document,
    index: int,
    match: object,
    identity: dict[str, tuple[str, str]],
    warnings: list[ConfigIssue],
) -> None:
    headers = match.get("headers") if isinstance(match, dict) else None
    if not isinstance(headers, dict):
        return
    for header, spec in headers.items():
        if not isinstance(header, str) or header.strip().lower() not in identity:
            continue
        path = ("routes", index, "match", "headers", header)
        _, setting = identity[header.strip().lower()]
        removed = f"Sidegate removes {header} from every request before routing ({setting})"
        if isinstance(spec, dict) and spec.get("present") is False:
            _add(warnings, doc, path, f"always true: {removed}")
        else:
            msg = f"can never match: {removed}; match on a header the client sends"
            _add(doc.issues, doc, path, msg)


def _within(path: Path, ancestor: Path) -> bool:
    return path[: len(ancestor)] == ancestor


def _add(issues: list[ConfigIssue], doc: Document, path: Path, message: str) -> None:
    issues.append(ConfigIssue(format_path(path), message, line_for(doc.lines, path)))
