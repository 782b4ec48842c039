"""The three listeners in the config: the health listener's address (or ``off``), listeners that
would collide, and an admin listener off loopback, which needs ``listeners.admin.token_file``."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidegate.config.check import check_text
from sidegate.config.compile import compile_checked
from sidegate.config.load import load_config_text
from sidegate.config.snapshot import ListenerSpec
from sidegate.errors import ConfigError, ConfigIssue
from support.configs import UPSTREAM_AND_ROUTE


def config(listeners: str) -> str:
    """A valid file with ``listeners:`` set to ``listeners`` (YAML lines indented by two)."""
    return f"listeners:\n{listeners}" + UPSTREAM_AND_ROUTE


def issues_of(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "test.yaml", {})
    return info.value.issues


def only_issue(text: str) -> ConfigIssue:
    issues = issues_of(text)
    assert len(issues) == 1, issues
    return issues[0]


def snapshot_of(text: str) -> tuple[ListenerSpec, ListenerSpec, ListenerSpec | None, str | None]:
    snap = compile_checked(check_text(text, "test.yaml", {}))
    return snap.inbound, snap.admin, snap.health, snap.admin_token_file


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("s3cret-admin-token\n")
    return path


# --- the health listener -------------------------------------------------------------------------


def test_the_health_listener_is_on_every_address_port_9902_by_default() -> None:
    _, _, health, _ = snapshot_of(UPSTREAM_AND_ROUTE)
    assert health == ListenerSpec("0.0.0.0", 9902)


def test_the_health_listener_can_move_or_be_turned_off() -> None:
    _, _, moved, _ = snapshot_of(config('  health: {address: "127.0.0.1:19902"}\n'))
    assert moved == ListenerSpec("127.0.0.1", 19902)
    _, _, off, _ = snapshot_of(config("  health: {address: off}\n"))
    assert off is None


@pytest.mark.parametrize("address", ["", "9902", "nowhere:port", "[::1:9902"])
def test_a_bad_health_address_says_what_works_and_that_off_turns_it_off(address: str) -> None:
    issue = only_issue(config(f'  health: {{address: "{address}"}}\n'))
    assert issue.path == "listeners.health.address"
    assert "host:port" in issue.message or "IPv6" in issue.message, issue.message
    assert "`off`" in issue.message, issue.message


# --- listeners that would collide ----------------------------------------------------------------


def test_the_admin_listener_on_the_inbound_address_keeps_its_message() -> None:
    issue = only_issue(
        config('  inbound: {address: "127.0.0.1:8080"}\n  admin: {address: "127.0.0.1:8080"}\n')
    )
    assert issue.path == "listeners.admin.address"
    assert (
        issue.message
        == "'127.0.0.1:8080' is also listeners.inbound.address; give the admin listener its own port"
    )
    assert issue.line == 3


def test_inbound_on_the_default_health_port_names_the_default_and_the_fix() -> None:
    issue = only_issue(config('  inbound: {address: "0.0.0.0:9902"}\n'))
    assert issue.path == "listeners.inbound.address"
    assert "listeners.health.address (its default)" in issue.message, issue.message
    assert "listeners.health.address: off" in issue.message, issue.message


def test_a_wildcard_and_a_host_on_one_port_overlap() -> None:
    issue = only_issue(config('  admin: {address: "127.0.0.1:9902"}\n  health: {address: "0.0.0.0:9902"}\n'))
    assert issue.path == "listeners.health.address"
    assert "overlaps listeners.admin.address '127.0.0.1:9902'" in issue.message, issue.message


def test_listeners_on_different_ports_or_asking_for_any_port_do_not_collide() -> None:
    any_port = '{address: "127.0.0.1:0"}'
    snapshot_of(config(f"  inbound: {any_port}\n  admin: {any_port}\n  health: {any_port}\n"))
    snapshot_of(config('  inbound: {address: "0.0.0.0:9902"}\n  health: {address: off}\n'))
    snapshot_of(config('  inbound: {address: "127.0.0.1:8080"}\n  health: {address: "127.0.0.2:8080"}\n'))


# --- the admin listener off loopback needs a token -----------------------------------------------


@pytest.mark.parametrize("address", ["0.0.0.0:9901", "[::]:9901", "10.1.2.3:9901", "sidegate.example:9901"])
def test_admin_off_loopback_without_a_token_file_is_refused_naming_the_field_and_the_fix(
    address: str,
) -> None:
    issue = only_issue(config(f'  admin: {{address: "{address}"}}\n'))
    assert issue.path == "listeners.admin.token_file"
    assert issue.line == 2  # the admin listener's line: the key is not written
    assert "not loopback" in issue.message and address in issue.message, issue.message
    assert "set listeners.admin.token_file" in issue.message, issue.message
    assert "127.0.0.1" in issue.message, issue.message


@pytest.mark.parametrize("address", ["127.0.0.1:9901", "127.0.0.9:9901", "[::1]:9901", "localhost:9901"])
def test_admin_on_loopback_needs_no_token(address: str) -> None:
    _, admin, _, token = snapshot_of(config(f'  admin: {{address: "{address}"}}\n'))
    assert admin.port == 9901 and token is None


def test_admin_off_loopback_with_a_token_file_validates(token_file: Path) -> None:
    _, admin, _, token = snapshot_of(
        config(f'  admin: {{address: "0.0.0.0:9901", token_file: "{token_file}"}}\n')
    )
    assert admin == ListenerSpec("0.0.0.0", 9901)
    assert token == str(token_file)


def test_a_missing_token_file_is_an_error_at_validate_time(tmp_path: Path) -> None:
    missing = tmp_path / "secret" / "token"
    issue = only_issue(config(f'  admin: {{address: "0.0.0.0:9901", token_file: "{missing}"}}\n'))
    assert issue.path == "listeners.admin.token_file"
    assert f"{missing}: file not found" in issue.message, issue.message


def test_an_empty_token_file_or_a_directory_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text(" \n")
    issue = only_issue(config(f'  admin: {{token_file: "{empty}"}}\n'))
    assert "the file is empty" in issue.message, issue.message
    issue = only_issue(config(f'  admin: {{token_file: "{tmp_path}"}}\n'))
    assert "is a directory" in issue.message, issue.message


def test_every_listener_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = config(
        '  inbound: {address: "0.0.0.0:9902"}\n'
        '  admin: {address: "0.0.0.0:9901"}\n'
        '  health: {address: "127.0.0.1:9902"}\n'
    )
    paths = sorted(issue.path for issue in issues_of(text))
    assert paths == ["listeners.admin.token_file", "listeners.health.address"]
