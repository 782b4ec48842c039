"""L5: the one config reload routine, shared by the single process and the supervisor.

A reload, whatever asked for it (``POST /reload``, SIGHUP, a change of the file), goes through
the same steps, in this order:

1. check the file in the config checker (a child process, :mod:`sidegate.config.isolated`), off
   the event loop: it answers in milliseconds, a cold start takes up to a second;
2. compile the checked config on the loop (filters may take loop-bound resources);
3. on a bad file: keep serving the old config, and report (log, metric, ``/config_dump``);
4. swap the snapshot: the caller's :data:`Swap` (one gateway applies it; a supervisor sends the
   checked config to every worker) says which settings wait for a restart and how many workers
   did not confirm;
5. report the outcome: the reload metric, :class:`ConfigState` and one log record.

Reloads never overlap: a second one waits for the first to finish.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sidegate.config.compile import compile_checked
from sidegate.config.isolated import Normalised, validate_file
from sidegate.config.snapshot import Snapshot
from sidegate.errors import ConfigError
from sidegate.observe.metrics import Metrics


@dataclass(frozen=True, slots=True)
class Swapped:
    """What swapping in a new snapshot did."""

    warnings: list[str]  # settings that keep their old value until a restart
    unconfirmed: int | None = None  # workers that did not confirm (a supervisor's; None: no workers)


#: Swaps the new config in (checked, and compiled once here); may ask worker processes to.
Swap = Callable[[Normalised, Snapshot], Awaitable[Swapped]]


class ConfigState:
    """The config file and what became of its last load, for /config_dump and the metrics."""

    def __init__(self, path: str, running: Snapshot) -> None:
        self.path = path
        self.last_error: str | None = None
        self.last_attempt = time.time()
        self.loaded_at = time.time()
        self.restart_pending: list[str] = []
        # What the process is bound to: a reload cannot move these.
        self._running = {
            "inbound": str(running.inbound),
            "admin": str(running.admin),
            "health": str(running.health or "off"),
        }
        self._workers = running.workers
        self.labels_file = labels_file_of(running.dump)

    def watched(self) -> tuple[str, ...]:
        """The files whose change reloads: the config, and the labels file its profiles read."""
        return (self.path,) if self.labels_file is None else (self.path, self.labels_file)

    def dump(self, snapshot: Snapshot, version: int) -> dict[str, Any]:
        config = copy.deepcopy(dict(snapshot.dump))
        listeners = config.get("listeners", {})
        for name, address in self._running.items():  # show what serves, not what waits a restart
            if isinstance(listeners.get(name), dict):
                listeners[name]["address"] = address
        config["workers"] = self._workers
        return {
            "source": self.path,
            "version": version,
            "loaded_at": self.loaded_at,
            "last_reload": {
                "ok": self.last_error is None,
                "error": self.last_error,
                "at": self.last_attempt,
            },
            "restart_pending": self.restart_pending,
            "profiles": profiles_in_force(config),
            "config": config,
        }


class Reloader:
    """The reload routine of one process: call it to reload; answers ``(ok, message)``.

    ``metrics`` holds the reload counters and the config version that ``swap`` advances;
    ``log`` is the logger the process reports under (``sidegate``, or ``sidegate.supervisor``).
    """

    def __init__(self, state: ConfigState, metrics: Metrics, swap: Swap, log: logging.Logger) -> None:
        self._state = state
        self._metrics = metrics
        self._swap = swap
        self._log = log
        self._lock = asyncio.Lock()

    async def __call__(self) -> tuple[bool, str]:
        async with self._lock:
            state = self._state
            state.last_attempt = time.time()
            began = time.monotonic()
            try:
                # The checker child reads the file (a missing or unreadable one is an issue too).
                loop = asyncio.get_running_loop()
                checked = await loop.run_in_executor(None, validate_file, state.path)
                checked_in = round(time.monotonic() - began, 3)
                snapshot = compile_checked(checked)
            except ConfigError as error:
                return self._rejected(error, began)
            swapped = await self._swap(checked, snapshot)
            return self._swapped(checked, swapped, began, checked_in)

    def _rejected(self, error: ConfigError, began: float) -> tuple[bool, str]:
        self._state.last_error = str(error)
        self._metrics.config_reload(False)
        version = self._metrics.config_version
        fields = reload_fields("rejected", version, issues=issue_list(error))
        fields["seconds"] = round(time.monotonic() - began, 3)
        msg = "config reload rejected, still serving version %d: %s"
        self._log.error(msg, version, error, extra=fields)
        return False, str(error)

    def _swapped(
        self, checked: Normalised, swapped: Swapped, began: float, checked_in: float
    ) -> tuple[bool, str]:
        state, warnings, unconfirmed = self._state, swapped.warnings, swapped.unconfirmed or 0
        self._metrics.config_reload(not unconfirmed)
        state.last_error = f"{unconfirmed} workers did not confirm" if unconfirmed else None
        state.loaded_at = time.time()
        state.restart_pending = warnings
        state.labels_file = labels_file_of(checked.config)
        log_warnings(checked)
        for warning in warnings:
            self._log.warning("config reload: %s", warning, extra={"event": "restart_pending"})
        version = self._metrics.config_version
        seconds = round(time.monotonic() - began, 3)
        result = "partial" if unconfirmed else "ok"
        fields = reload_fields(result, version, profiles=profiles_in_force(checked.config)["in_force"])
        if swapped.unconfirmed is not None:
            fields["unconfirmed"] = unconfirmed
        fields.update(seconds=seconds, checked_in=checked_in)
        msg = "config reloaded: version %d (%.3f s, checked in %.3f s)"
        self._log.info(msg, version, seconds, checked_in, extra=fields)
        return True, f"version {version}" + ("; " + "; ".join(warnings) if warnings else "")


def labels_file_of(config: Mapping[str, Any]) -> str | None:
    """The labels file a config's profiles are chosen by (None: no profiles, or labels from env)."""
    pod = config.get("pod")
    if not config.get("profiles") or not isinstance(pod, Mapping) or pod.get("labels_env"):
        return None
    path = pod.get("labels_file")
    return path if isinstance(path, str) and path else None


def profiles_in_force(config: Mapping[str, Any]) -> dict[str, Any]:
    """``/config_dump``'s ``profiles``: those in force, every one defined, and the labels read."""
    pod = config.get("pod")
    pod = pod if isinstance(pod, Mapping) else {}
    defined = [p.get("name") for p in config.get("profiles") or () if isinstance(p, Mapping)]
    return {
        "in_force": list(pod.get("profiles_in_force") or ()),
        "defined": defined,
        "labels": pod.get("labels"),
        "labels_from": pod.get("labels_from") or None,
    }


def log_warnings(checked: Normalised) -> None:
    """The checker's warnings about a config that works, but not as one may think; and the
    profiles in force, when the config has any."""
    chosen = profiles_in_force(checked.config)
    if chosen["defined"]:
        in_force = ", ".join(chosen["in_force"]) or "none (the base config)"
        fields = {"event": "profiles", **chosen}
        logging.getLogger("sidegate.config").info("profiles in force: %s", in_force, extra=fields)
    for issue in checked.warnings:
        fields = {"event": "config_warning", **issue.fields(checked.source)}
        logging.getLogger("sidegate.config").warning(issue.located(checked.source), extra=fields)


def reload_fields(result: str, version: int, **more: Any) -> dict[str, Any]:
    """The structured fields of a reload's log record."""
    return {"event": "reload", "result": result, "version": version, **more}


def issue_list(error: ConfigError) -> list[dict[str, object]]:
    return [issue.fields(error.source) for issue in error.issues]
