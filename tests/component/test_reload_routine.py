"""The one reload routine (:class:`sidegate.reload.Reloader`), with a fake checker and a fake swap.

The single process and the supervisor differ only in the swap they hand it; what a reload
reports (its answer, the metric, ``/config_dump``'s ``last_reload``, the log record) is decided
here once, so it is checked here once, with no gateway and no checker process.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from sidegate import reload
from sidegate.config.check import check_text
from sidegate.config.compile import compile_checked
from sidegate.config.isolated import Normalised
from sidegate.config.snapshot import Snapshot
from sidegate.errors import ConfigError, ConfigIssue
from sidegate.observe.metrics import Metrics
from sidegate.reload import ConfigState, Reloader, Swapped
from support.configs import MINIMAL


class Checker:
    """Stands in for the checker process: answers the checked config, or raises its error."""

    def __init__(self) -> None:
        self.error: ConfigError | None = None
        self.asked: list[str] = []

    def __call__(self, path: str) -> Normalised:
        self.asked.append(path)
        if self.error is not None:
            raise self.error
        return check_text(MINIMAL, path)


class Swap:
    """A process's swap: records what it was given, answers what the test says."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.swapped: list[Snapshot] = []
        self.answer = Swapped([])

    async def __call__(self, checked: Normalised, snapshot: Snapshot) -> Swapped:
        self.swapped.append(snapshot)
        self.metrics.config_version += 1
        return self.answer


@pytest.fixture
def checker(monkeypatch: pytest.MonkeyPatch) -> Checker:
    fake = Checker()
    monkeypatch.setattr(reload, "validate_file", fake)
    return fake


def routine() -> tuple[Reloader, ConfigState, Metrics, Swap]:
    metrics = Metrics()
    metrics.config_version = 1
    state = ConfigState("gw.yaml", compile_checked(check_text(MINIMAL, "gw.yaml")))
    swap = Swap(metrics)
    return Reloader(state, metrics, swap, logging.getLogger("test.reload")), state, metrics, swap


def reload_record(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "reload"]
    return {k: getattr(record, k) for k in ("result", "version", "unconfirmed") if hasattr(record, k)}


def test_a_good_file_is_swapped_in_and_reported(checker: Checker, caplog: pytest.LogCaptureFixture) -> None:
    reloader, state, _, swap = routine()
    with caplog.at_level(logging.INFO, "test.reload"):
        ok, message = asyncio.run(reloader())
    assert (ok, message) == (True, "version 2")
    assert checker.asked == ["gw.yaml"] and len(swap.swapped) == 1
    assert state.last_error is None and state.restart_pending == []
    assert reload_record(caplog) == {"result": "ok", "version": 2}  # one process: no workers to count


def test_a_bad_file_keeps_the_old_config(checker: Checker, caplog: pytest.LogCaptureFixture) -> None:
    reloader, state, metrics, swap = routine()
    checker.error = ConfigError([ConfigIssue("routes[0].upstream", "no such upstream", 7)], "gw.yaml")
    with caplog.at_level(logging.INFO, "test.reload"):
        ok, message = asyncio.run(reloader())
    assert not ok and "no such upstream" in message
    assert swap.swapped == [] and metrics.config_version == 1
    assert state.last_error == message
    assert reload_record(caplog) == {"result": "rejected", "version": 1}


def test_workers_that_do_not_confirm_make_a_partial_reload(
    checker: Checker, caplog: pytest.LogCaptureFixture
) -> None:
    reloader, state, _, swap = routine()
    swap.answer = Swapped(["workers stays 2 until restart"], unconfirmed=1)
    with caplog.at_level(logging.INFO, "test.reload"):
        ok, message = asyncio.run(reloader())
    assert (ok, message) == (True, "version 2; workers stays 2 until restart")
    assert state.last_error == "1 workers did not confirm"
    assert state.restart_pending == ["workers stays 2 until restart"]
    assert reload_record(caplog) == {"result": "partial", "version": 2, "unconfirmed": 1}


def test_reloads_never_overlap(checker: Checker) -> None:
    _, state, metrics, _ = routine()
    inside: list[int] = []

    async def slow(checked: Normalised, snapshot: Snapshot) -> Swapped:
        inside.append(1)
        assert len(inside) == 1, "a second reload swapped while the first was still swapping"
        await asyncio.sleep(0.01)
        inside.pop()
        return Swapped([])

    reloader = Reloader(state, metrics, slow, logging.getLogger("test.reload"))

    async def both() -> list[tuple[bool, str]]:
        return list(await asyncio.gather(reloader(), reloader()))

    assert [ok for ok, _ in asyncio.run(both())] == [True, True]
