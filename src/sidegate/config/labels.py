"""The pod's labels, as Kubernetes hands them to a container, for ``profiles:`` to match.

Two sources (``pod:`` in the config, :mod:`sidegate.config.pod`):

- the downward API file (``labels_file``, default ``/etc/podinfo/labels``): Kubernetes writes one
  ``key="value"`` line per label, sorted, the value quoted the way Go's ``%q`` quotes
  (``strconv.Quote``: ``\\"``, ``\\\\``, ``\\n``, ``\\t``..., ``\\xNN`` for a byte that is not
  valid UTF-8, ``\\uNNNN`` and ``\\UNNNNNNNN`` for unprintable runes), and no newline after the
  last line. The file changes when the labels do (``kubectl label pod``): the kubelet swaps the
  volume's ``..data`` symlink, and the config watcher reloads (:mod:`sidegate.watch`);
- an environment variable (``labels_env``), ``key=value,key2=value2``, for runs outside
  Kubernetes and for tests. It wins over the file when it is set.

Neither parser trusts its input: a malformed line is a :class:`LabelsError` that says which line
and what a good one looks like.
"""

from __future__ import annotations

import re

_LINE = re.compile(r'(?P<key>[^=\s"]+)="(?P<value>(?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(?:x([0-9A-Fa-f]{2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|([0-7]{3})|(.))", re.DOTALL)
_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"'}


class LabelsError(ValueError):
    """Labels that cannot be read: the message names the line and shows a good one."""


def parse_downward_labels(text: str) -> dict[str, str]:
    """The labels in a downward API ``labels`` file (``key="value"`` lines, Go-quoted values)."""
    labels: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        found = _LINE.fullmatch(line.strip())
        if found is None:
            shown = line if len(line) <= 60 else line[:57] + "..."
            raise LabelsError(f'line {number} is {shown!r}, not key="value" (the downward API format)')
        labels[found["key"]] = _unquote(found["value"], number)
    return labels


def parse_env_labels(text: str) -> dict[str, str]:
    """The labels in ``key=value,key2=value2`` (blanks around each part ignored; empty: none)."""
    labels: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise LabelsError(f"{item.strip()!r} is not key=value (write key=value,key2=value2)")
        labels[key.strip()] = value.strip()
    return labels


def format_labels(labels: dict[str, str]) -> str:
    """``k=v,k2=v2``, the form ``--labels`` and ``labels_env`` take, for messages."""
    return ",".join(f"{key}={value}" for key, value in labels.items()) or "(no labels)"


def _unquote(body: str, number: int) -> str:
    """The text of a Go double-quoted string's body; its escapes may spell bytes (``\\xNN``)."""
    out = bytearray()
    position = 0
    for escape in _ESCAPE.finditer(body):
        out += body[position : escape.start()].encode("utf-8")
        position = escape.end()
        hex_byte, short, long, octal, simple = escape.groups()
        if hex_byte is not None or octal is not None:
            out.append(int(hex_byte, 16) if hex_byte is not None else int(octal, 8) & 0xFF)
        elif short is not None or long is not None:
            out += _rune(int(short or long, 16), number)
        elif simple in _SIMPLE:
            out += _SIMPLE[simple].encode("utf-8")
        else:
            raise LabelsError(f"line {number} has an unknown escape \\{simple} in a quoted value")
    out += body[position:].encode("utf-8")
    return out.decode("utf-8", "replace")


def _rune(code: int, number: int) -> bytes:
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        raise LabelsError(f"line {number} has an escape for U+{code:X}, which is no Unicode character")
    return chr(code).encode("utf-8")
