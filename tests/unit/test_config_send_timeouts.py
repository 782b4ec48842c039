"""The send timeouts: the client's (``listeners.inbound.limits.send_timeout``) and the app's
(a route's ``timeouts.send``), their defaults, what they compile to, and what a mistake says."""

from __future__ import annotations

import pytest

from sidegate.config.check import check_text
from sidegate.config.compile import compile_checked
from sidegate.config.load import load_config_text
from sidegate.config.snapshot import Snapshot
from sidegate.errors import ConfigError, ConfigIssue
from support.configs import MINIMAL

INBOUND = 'inbound: {address: "127.0.0.1:8080"}'


def with_limits(limits: str) -> str:
    return MINIMAL.replace(INBOUND, INBOUND[:-1] + ", limits: {" + limits + "}}")


def with_route_timeouts(timeouts: str) -> str:
    return MINIMAL.replace("    upstream: app", "    upstream: app\n    timeouts: {" + timeouts + "}")


def compiled(text: str) -> Snapshot:
    return compile_checked(check_text(text, "test.yaml", environ={}))


def only_issue(text: str) -> ConfigIssue:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "test.yaml", {})
    (issue,) = info.value.issues
    return issue


def test_both_default_to_60_seconds() -> None:
    snapshot = compiled(MINIMAL)
    assert snapshot.limits.send_timeout == 60.0
    assert snapshot.routes[0].timeouts.send == 60.0


def test_values_with_units_compile_to_seconds() -> None:
    assert compiled(with_limits("send_timeout: 1500ms")).limits.send_timeout == 1.5
    assert compiled(with_route_timeouts("send: 2m")).routes[0].timeouts.send == 120.0
    assert compiled(with_route_timeouts("send: 0")).routes[0].timeouts.send == 0.0  # 0 = no limit


@pytest.mark.parametrize(
    ("text", "path", "says"),
    [
        (with_limits("send_timeout: 0"), "listeners.inbound.limits.send_timeout", "must be > 0"),
        (with_limits("send_timeout: soon"), "listeners.inbound.limits.send_timeout", '"2s"'),
        (with_route_timeouts("send: -1"), "routes[0].timeouts.send", ">= 0, got -1"),
        (with_route_timeouts("send: 2 mins"), "routes[0].timeouts.send", '"1.5m"'),
    ],
)
def test_a_bad_value_names_the_field_and_the_fix(text: str, path: str, says: str) -> None:
    issue = only_issue(text)
    assert issue.path == path
    assert says in issue.message, issue.message
    assert issue.line is not None
