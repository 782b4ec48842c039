"""How long Kubernetes must wait for Sidegate to stop, and the warning when it will not.

On SIGTERM Sidegate serves on for ``drain_delay`` (the pod leaves its Services meanwhile), then
drains for at most ``drain_timeout``. The kubelet sends SIGKILL when the pod's
``terminationGracePeriodSeconds`` (30 s unless set) runs out, cutting whatever is still in
flight, so the grace period must cover both. ``sidegate validate --grace-period`` and
``sidegate inject`` call :func:`grace_needed` and :func:`grace_warning`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

from sidegate.errors import ConfigIssue

KUBERNETES_DEFAULT_GRACE = 30.0  # terminationGracePeriodSeconds when a pod spec does not say


class _DrainSettings(Protocol):
    @property
    def drain_delay(self) -> float: ...
    @property
    def drain_timeout(self) -> float: ...


def grace_needed(config: _DrainSettings | Mapping[str, Any]) -> float:
    """Seconds from SIGTERM to exit at most: ``drain_delay + drain_timeout``.

    ``config`` is a validated config (``SidegateConfig``), a compiled ``Snapshot``, or the
    normalised mapping (``Normalised``); anything with ``drain_delay`` and ``drain_timeout``.
    """
    if isinstance(config, Mapping):
        return float(config["drain_delay"]) + float(config["drain_timeout"])
    return float(config.drain_delay) + float(config.drain_timeout)


def grace_seconds(config: _DrainSettings | Mapping[str, Any]) -> int:
    """The smallest whole ``terminationGracePeriodSeconds`` that covers :func:`grace_needed`."""
    return math.ceil(grace_needed(config))


def grace_warning(
    config: _DrainSettings | Mapping[str, Any], grace_period: float, *, line: int | None = None
) -> ConfigIssue | None:
    """A warning naming the fields and the fix when the grace period is shorter than the stop
    takes, else None (``line``: where ``drain_timeout`` or ``drain_delay`` is written)."""
    needed = grace_needed(config)
    if needed <= grace_period:
        return None
    if isinstance(config, Mapping):
        delay, timeout = float(config["drain_delay"]), float(config["drain_timeout"])
    else:
        delay, timeout = float(config.drain_delay), float(config.drain_timeout)
    return ConfigIssue(
        "drain_delay",
        f"drain_delay + drain_timeout ({delay:g}s + {timeout:g}s = {needed:g}s) is longer than the "
        f"pod's terminationGracePeriodSeconds ({grace_period:g}s): Kubernetes would kill Sidegate "
        f"before requests in flight finish; set terminationGracePeriodSeconds to at least "
        f"{math.ceil(needed)} or shorten drain_delay or drain_timeout",
        line,
    )
