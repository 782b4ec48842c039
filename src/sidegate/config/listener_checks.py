"""Checks of the ``listeners:`` section that need the whole section or the file system.

* No two listeners may claim the same port on overlapping addresses (the second bind would
  fail at start, or, with a wildcard and a specific host, one would steal the other's traffic).
  Defaults count: an inbound listener on ``0.0.0.0:9902`` collides with the default health
  listener.
* An admin listener that is not on loopback needs ``listeners.admin.token_file``: without one,
  ``POST /reload``, cache purge and ``/config_dump`` would be open to the network.
* A ``token_file`` must exist, be readable and hold a token when the config is checked, so a
  typo in a Secret's mount path is a validation error, not an admin API that refuses everyone.

They run on the raw document (after ``${ENV}`` substitution) beside pydantic's checks, so every
problem of the file is reported at once; values of the wrong type are left to pydantic.
"""

from __future__ import annotations

import contextlib
import ipaddress

from sidegate.config.source import Document, Path, format_path, line_for
from sidegate.errors import ConfigIssue
from sidegate.units import parse_address

#: The listeners in the order their problems are reported, with their default addresses.
DEFAULTS = {"inbound": "0.0.0.0:8080", "admin": "127.0.0.1:9901", "health": "0.0.0.0:9902"}
EGRESS_DEFAULT = "127.0.0.1:15001"
_WILDCARDS = frozenset({"0.0.0.0", "::"})


def check_listeners(doc: Document) -> None:
    """Add an issue to ``doc`` for each listener problem (see the module docstring)."""
    listeners = doc.data.get("listeners", {})
    if not isinstance(listeners, dict):
        return
    addresses, written = _addresses(listeners)
    if doc.data.get("egress") is not None:  # the egress listener runs only with an egress section
        _egress_address(listeners, addresses, written)
    _check_collisions(doc, addresses, written)
    admin = listeners.get("admin")
    token_file = admin.get("token_file") if isinstance(admin, dict) else None
    if isinstance(token_file, str) and token_file:
        problem = token_file_problem(token_file)
        if problem:
            _add(doc, ("listeners", "admin", "token_file"), problem)
    elif token_file is None and "admin" in addresses and not is_loopback(addresses["admin"][0]):
        shown = _shown(addresses["admin"])
        _add(
            doc,
            ("listeners", "admin", "token_file"),
            f"the admin listener is on {shown}, not loopback, so reload, cache purge and "
            "config_dump would be open to the network: set listeners.admin.token_file to a file "
            "holding a bearer token (e.g. a mounted Secret), or bind listeners.admin.address to "
            "127.0.0.1 (probes and metrics for the kubelet and Prometheus are on listeners.health)",
        )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses; a wildcard or any other host is not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_file_problem(path: str) -> str | None:
    """Why the admin token file at ``path`` cannot be used, or None when it holds a token."""
    try:
        with open(path, "rb") as handle:
            text = handle.read(64 * 1024)
    except FileNotFoundError:
        return f"{path}: file not found; mount the Secret holding the admin token there, or fix the path"
    except IsADirectoryError:
        return f"{path}: is a directory; name the file inside it that holds the token (e.g. {path}/token)"
    except OSError as error:
        return f"{path}: cannot read it ({error.strerror or error}); make it readable by the sidegate user"
    if not text.strip():
        return f"{path}: the file is empty; put the bearer token in it"
    return None


def _addresses(listeners: dict[object, object]) -> tuple[dict[str, tuple[str, int]], set[str]]:
    """Each listener's ``(host, port)`` (its default when unset, none when off or invalid),
    and the names of those the file sets itself."""
    out: dict[str, tuple[str, int]] = {}
    written: set[str] = set()
    for name, default in DEFAULTS.items():
        section = listeners.get(name)
        value = section.get("address", default) if isinstance(section, dict) else default
        if isinstance(section, dict) and "address" in section:
            written.add(name)
        if not isinstance(value, str) or value == "off":
            continue
        try:
            out[name] = parse_address(value, allow_port_zero=True)
        except ValueError:
            continue  # pydantic reports it
    return out, written


def _egress_address(
    listeners: dict[object, object], addresses: dict[str, tuple[str, int]], written: set[str]
) -> None:
    section = listeners.get("egress")
    value = section.get("address", EGRESS_DEFAULT) if isinstance(section, dict) else EGRESS_DEFAULT
    if isinstance(section, dict) and "address" in section:
        written.add("egress")
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # pydantic reports it
            addresses["egress"] = parse_address(value, allow_port_zero=True)


def _check_collisions(doc: Document, addresses: dict[str, tuple[str, int]], written: set[str]) -> None:
    names = list(addresses)
    for i, later in enumerate(names):
        for earlier in names[:i]:
            if not _overlap(addresses[earlier], addresses[later]):
                continue
            # Report on a listener the file sets (the later one unless it is a default).
            here, other = (later, earlier) if later in written or earlier not in written else (earlier, later)
            address = _shown(addresses[here])
            where = f"listeners.{other}.address" + ("" if other in written else " (its default)")
            if _shown(addresses[other]) == address:
                message = f"{address!r} is also {where}"
            else:
                message = f"{address!r} overlaps {where} {_shown(addresses[other])!r}"
            fix = "; or set listeners.health.address: off" if "health" in (here, other) else ""
            _add(
                doc, ("listeners", here, "address"), f"{message}; give the {here} listener its own port{fix}"
            )


def _overlap(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Same port (not 0, which asks the OS for a free one) on the same host or a wildcard."""
    return a[1] == b[1] != 0 and (a[0] == b[0] or a[0] in _WILDCARDS or b[0] in _WILDCARDS)


def _shown(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _add(doc: Document, path: Path, message: str) -> None:
    doc.issues.append(ConfigIssue(format_path(path), message, line_for(doc.lines, path)))
