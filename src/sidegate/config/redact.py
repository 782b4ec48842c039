"""Redaction of secrets in a config dump (admin ``/config``, logs).

A value is hidden when the *name of its key* looks secret, whatever the value is: any name that
contains ``password``, ``passwd``, ``secret``, ``token``, ``credential``, ``authorization``,
``api_key``/``apikey``/``private_key``, or whose ``_``/``-``/``.``-separated words include
``key`` or ``keys`` (``key``, ``cache_key``, ``x-api-key``, ``keys``). Matching is
case-insensitive and goes through nested mappings and lists. Deciding by key name (not by value)
means a header edit such as ``set: {Authorization: "Bearer ${TOKEN}"}`` is hidden too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***REDACTED***"

_SECRET_WORDS = (
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "authorization",
    "api_key",
    "apikey",
    "private_key",
)
_KEY_WORDS = frozenset({"key", "keys"})
_SEPARATORS = re.compile(r"[_\-.\s]+")


def is_secret_name(name: str) -> bool:
    """True when a key called ``name`` holds something that must not be shown."""
    lowered = name.lower()
    if any(word in lowered for word in _SECRET_WORDS):
        return True
    return not _KEY_WORDS.isdisjoint(_SEPARATORS.split(lowered))


def redact(value: Any) -> Any:
    """A copy of ``value`` (JSON-like data) with every secret-looking key's value replaced."""
    if isinstance(value, Mapping):
        return {
            key: (REDACTED if isinstance(key, str) and is_secret_name(key) else redact(item))
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value
