"""Value types of the config model: durations, sizes, addresses, header names, paths, regexes.

Each is an ``Annotated`` pydantic type whose validator raises :class:`ValueError` with the bad
value and what would work; :mod:`sidegate.config.load` shows that message next to the dotted path.
Durations and sizes accept numbers or unit strings (:mod:`sidegate.units`) and say so in
the JSON Schema. Header and query *values* accept YAML numbers and booleans as their text.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, GetJsonSchemaHandler, WithJsonSchema
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from sidegate.routing.router import UNMATCHABLE_HEADERS
from sidegate.units import is_hostname, parse_address, parse_duration, parse_size

KiB = 1024
MiB = 1024 * 1024
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FRAMING_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade"}
)


def _listen_address(value: str) -> str:
    parse_address(value, allow_port_zero=True)
    return value


def _endpoint_address(value: str) -> str:
    parse_address(value)
    return value


def _header_name(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"invalid header name {value!r}: use letters, digits and -_.!#$%&'*+^`|~")
    return value


def _matchable_header_name(value: str) -> str:
    lname = value.lower()
    if lname == "host":
        raise ValueError("match on the Host header with `hosts` (e.g. hosts: [api.example.com])")
    if lname.encode() in UNMATCHABLE_HEADERS:
        raise ValueError(f"header {value!r} is consumed by the HTTP layer and cannot be matched")
    return value


def _editable_header_name(value: str) -> str:
    if value.lower() in _FRAMING_HEADERS:
        raise ValueError(f"header {value!r} controls message framing and cannot be edited")
    return value


def _header_value(value: str) -> str:
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError(f"header value {value!r} contains CR, LF or NUL")
    return value


def scalar_to_str(value: object) -> object:
    """YAML reads ``2`` and ``true`` as numbers and booleans; a header or query value is text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _path_value(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} must start with '/' (e.g. '/{value}')")
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value.encode())
    except (re.error, UnicodeEncodeError) as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


def _host_pattern(value: str) -> str:
    host = value.lower()
    if host == "*":
        return host
    name = host[2:] if host.startswith("*.") else host
    if ":" in name:
        raise ValueError(f"host {value!r} must not include a port; hosts are matched without it")
    if not is_hostname(name):
        raise ValueError(f"invalid host {value!r}: use 'api.example.com' or '*.example.com'")
    return host


def _method(value: str) -> str:
    method = value.upper()
    if not _TOKEN.fullmatch(method):
        raise ValueError(f"invalid HTTP method {value!r}")
    return method


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "description": "number with unit ms, s, m or h"},
            ],
            "examples": ["500ms", "2s", "1.5m", "1h", 30],
        }
    ),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "description": "number with unit B, KB, MB, GB, KiB, MiB or GiB"},
            ],
            "examples": ["64KiB", "10MiB", "1GiB", "512KB", "100B", 4096],
        }
    ),
]
ListenAddress = Annotated[str, AfterValidator(_listen_address)]
EndpointAddress = Annotated[str, AfterValidator(_endpoint_address)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
MatchHeaderName = Annotated[str, AfterValidator(_header_name), AfterValidator(_matchable_header_name)]
EditableHeaderName = Annotated[str, AfterValidator(_header_name), AfterValidator(_editable_header_name)]
HeaderValue = Annotated[str, BeforeValidator(scalar_to_str), AfterValidator(_header_value)]
PathValue = Annotated[str, AfterValidator(_path_value)]
Regex = Annotated[str, AfterValidator(_regex)]
HostPattern = Annotated[str, AfterValidator(_host_pattern)]
Method = Annotated[str, AfterValidator(_method)]


class OrPlainString:
    """JSON Schema marker: the value may also be written as a plain string."""

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"anyOf": [{"type": "string"}, handler(schema)]}
