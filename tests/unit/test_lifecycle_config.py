"""The lifecycle settings: ``drain_delay``, ``upstreams.NAME.health_check`` and the grace period."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sidegate.config.check import normalise
from sidegate.config.compile import compile_checked
from sidegate.config.grace import grace_needed, grace_seconds, grace_warning
from sidegate.config.load import load_config_text
from sidegate.config.snapshot import HealthCheckSpec
from sidegate.errors import ConfigError
from support.configs import MINIMAL

SIDEGATE = str(Path(sys.executable).parent / "sidegate")
WITH_CHECK = MINIMAL.replace(
    'app: {endpoints: ["127.0.0.1:3000"]}',
    'app: {endpoints: ["127.0.0.1:3000"], health_check: CHECK}',
)


def issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    return [str(issue) for issue in caught.value.issues]


def test_defaults() -> None:
    snapshot = compile_checked(normalise(load_config_text(MINIMAL)))
    assert (snapshot.drain_delay, snapshot.drain_timeout) == (5.0, 20.0)
    assert snapshot.upstreams["app"].health_check is None
    checked = compile_checked(normalise(load_config_text(WITH_CHECK.replace("CHECK", "{}"))))
    assert checked.upstreams["app"].health_check == HealthCheckSpec("/", 5.0, 1.0, 2, 3)


def test_a_health_check_compiles() -> None:
    text = WITH_CHECK.replace(
        "CHECK", "{path: '/healthz?deep=1', interval: 2s, timeout: 500ms, unhealthy_threshold: 1}"
    )
    snapshot = compile_checked(normalise(load_config_text(text)))
    assert snapshot.upstreams["app"].health_check == HealthCheckSpec("/healthz?deep=1", 2.0, 0.5, 2, 1)


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        ("{interval: 1s, timeout: 1s}", "timeout (1s) must be shorter than interval (1s)"),
        ("{path: healthz}", "'healthz' is not a request path: start it with '/'"),
        ('{path: "/a b"}', "'/a b' is not a request path"),
        ('{path: "/a\\r\\nX: y"}', "is not a request path"),
        ("{healthy_threshold: 0}", "health_check.healthy_threshold"),
        ("{interval: 0}", "health_check.interval"),
        ("{intervall: 1s}", "health_check.intervall"),
    ],
)
def test_a_health_check_that_cannot_work_is_refused(check: str, expected: str) -> None:
    found = issues(WITH_CHECK.replace("CHECK", check))
    assert any(expected in issue for issue in found), found
    assert all(issue.startswith("upstreams.app.health_check") for issue in found), found


def test_drain_delay_may_be_zero_but_not_negative() -> None:
    assert compile_checked(normalise(load_config_text(MINIMAL + "drain_delay: 0\n"))).drain_delay == 0.0
    assert any(i.startswith("drain_delay") for i in issues(MINIMAL + "drain_delay: -1s\n"))


def test_grace_needed_is_delay_plus_timeout() -> None:
    loaded = load_config_text(MINIMAL + "drain_delay: 3s\ndrain_timeout: 25.5s\n")
    snapshot = compile_checked(normalise(loaded))
    assert grace_needed(loaded.config) == grace_needed(snapshot) == 28.5
    assert grace_needed({"drain_delay": 3, "drain_timeout": 25.5}) == 28.5
    assert grace_seconds(snapshot) == 29
    assert grace_warning(snapshot, 30) is None
    warning = grace_warning(snapshot, 20, line=14)
    assert warning is not None and warning.line == 14 and warning.path == "drain_delay"
    assert "drain_delay + drain_timeout (3s + 25.5s = 28.5s)" in warning.message
    assert "terminationGracePeriodSeconds (20s)" in warning.message
    assert "set terminationGracePeriodSeconds to at least 29" in warning.message


def validate(tmp_path: Path, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "sidegate.yaml"
    path.write_text(text)
    return subprocess.run(
        [SIDEGATE, "validate", "--config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_validate_warns_when_the_grace_period_is_too_short(tmp_path: Path) -> None:
    text = MINIMAL + "drain_timeout: 30s\n"  # + the default drain_delay 5s: over Kubernetes' 30 s
    result = validate(tmp_path, text)
    assert result.returncode == 0
    assert "(1 route, 1 upstream; 1 warning)" in result.stdout
    path = tmp_path / "sidegate.yaml"
    assert result.stderr.startswith(
        f"{path}:10: drain_delay: warning: drain_delay + drain_timeout (5s + 30s = 35s)"
    )
    assert "at least 35" in result.stderr
    fits = validate(tmp_path, text, "--grace-period", "35")
    assert fits.returncode == 0 and fits.stderr == ""
    assert validate(tmp_path, MINIMAL).stderr == ""  # 5 s + 20 s fit in the default 30 s


def test_a_bad_grace_period_is_a_usage_error(tmp_path: Path) -> None:
    for bad in ("soon", "-1", "inf"):
        result = validate(tmp_path, MINIMAL, "--grace-period", bad)
        assert result.returncode == 2
        assert "--grace-period: expected a number of seconds" in result.stderr
