"""Merging what the sidecar needs into a round-trip YAML tree, changing only what differs.

Injecting twice must equal injecting once, and a hand-tuned field that Sidegate does not own
(an extra env variable, an ``ephemeral-storage`` limit) must survive a re-injection. So a value
is written only when it differs from what is there; lists of named items (``env``, ``ports``,
``volumeMounts``, ``volumes``) are merged by ``name``, an item Sidegate owns replaced whole; and
``resources`` is merged key by key. Untouched nodes keep their comments, quoting and order,
because ruamel.yaml's round-trip maps and sequences are edited in place.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, MutableSequence
from typing import Any, Final

# Keys of the container merged key by key; any other value Sidegate sets is replaced whole.
DEEP_KEYS: Final = frozenset({"resources", "requests", "limits"})


def merge_into(target: MutableMapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Make ``target`` hold every key of ``wanted``; True when anything changed."""
    changed = False
    for key, value in wanted.items():
        current = target.get(key)
        if key in DEEP_KEYS and isinstance(value, Mapping) and isinstance(current, MutableMapping):
            changed |= merge_into(current, value)
        elif _named_list(value) and isinstance(current, MutableSequence):
            changed |= merge_named(current, value)
        elif key not in target or current != value:
            target[key] = value
            changed = True
    return changed


def merge_named(target: MutableSequence[Any], wanted: list[Any]) -> bool:
    """Put each named item of ``wanted`` in ``target``: replace the one of that name, else append."""
    changed = False
    for item in wanted:
        index = find_named(target, item["name"])
        if index is None:
            target.append(item)
            changed = True
        elif target[index] != item:
            target[index] = item
            changed = True
    return changed


def find_named(items: object, name: str) -> int | None:
    """Index of the mapping whose ``name`` is ``name`` in a sequence, or None."""
    if not isinstance(items, MutableSequence):
        return None
    for index, item in enumerate(items):
        if isinstance(item, Mapping) and item.get("name") == name:
            return index
    return None


def _named_list(value: object) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, Mapping) and "name" in item for item in value)
    )
