"""``${ENV}`` substitution in config values."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidegate.config.load import load_config, load_config_text
from sidegate.errors import ConfigError, ConfigIssue

TEMPLATE = """\
listeners:
  inbound: {address: "${HOST:-127.0.0.1}:${PORT}"}
workers: ${WORKERS:-1}
upstreams:
  app: {endpoints: ["${APP_ADDR:-127.0.0.1:3000}"]}
routes:
  - name: all
    match: {path_prefix: "/"}
    upstream: app
    headers:
      request:
        set: {Authorization: "Bearer ${TOKEN}", X-Literal: "$${NOT_A_VAR}"}
"""


def load(environ: dict[str, str], text: str = TEMPLATE) -> ConfigIssue | None:
    try:
        load_config_text(text, "env.yaml", environ)
    except ConfigError as exc:
        assert len(exc.issues) == 1, exc.issues
        return exc.issues[0]
    return None


def test_variables_and_defaults_are_substituted() -> None:
    config = load_config_text(TEMPLATE, environ={"PORT": "8081", "TOKEN": "s3cret", "WORKERS": "4"}).config
    assert config.listeners.inbound.address == "127.0.0.1:8081"
    assert config.workers == 4  # a substituted "4" validates as the number it spells
    assert config.upstreams["app"].endpoints == ["127.0.0.1:3000"]
    assert config.routes[0].headers.request.set == {
        "Authorization": "Bearer s3cret",
        "X-Literal": "${NOT_A_VAR}",  # "$${" is the escape for a literal "${"
    }


def test_default_applies_to_an_empty_variable_like_the_shell() -> None:
    env = {"PORT": "8081", "TOKEN": "t", "HOST": ""}
    assert load_config_text(TEMPLATE, environ=env).config.listeners.inbound.address == "127.0.0.1:8081"


def test_an_empty_variable_without_default_is_used_as_is() -> None:
    config = load_config_text(TEMPLATE, environ={"PORT": "8081", "TOKEN": ""}).config
    assert config.routes[0].headers.request.set["Authorization"] == "Bearer "


def test_missing_variable_names_the_variable_the_path_and_the_line() -> None:
    issue = load({"PORT": "8081"})
    assert issue is not None
    assert issue.path == "routes[0].headers.request.set.Authorization"
    assert issue.line == 12
    assert issue.message == (
        "environment variable TOKEN is not set; set it or give a default: ${TOKEN:-value}"
    )


def test_a_missing_variable_is_reported_once_not_again_as_a_bad_value() -> None:
    issue = load({"TOKEN": "t"})
    assert issue is not None
    assert issue.path == "listeners.inbound.address"
    assert "PORT is not set" in issue.message


def test_malformed_references() -> None:
    unclosed = load({"PORT": "1", "TOKEN": "t"}, TEMPLATE.replace("${WORKERS:-1}", '"${WORKERS"'))
    assert unclosed is not None and unclosed.path == "workers"
    assert "has no closing '}'" in unclosed.message
    assert "$${" in unclosed.message
    bad_name = load({"PORT": "1", "TOKEN": "t"}, TEMPLATE.replace("${WORKERS:-1}", '"${1WORKERS}"'))
    assert bad_name is not None and "is not ${NAME} or ${NAME:-default}" in bad_name.message


def test_process_environment_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sidegate.yaml"
    path.write_text(TEMPLATE)
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.setenv("TOKEN", "from-env")
    monkeypatch.delenv("HOST", raising=False)
    assert load_config(path).config.listeners.inbound.address == "127.0.0.1:9000"


def test_keys_and_non_strings_are_left_alone() -> None:
    text = TEMPLATE.replace("X-Literal", '"X-${NAME}"')
    issue = load({"PORT": "1", "TOKEN": "t"}, text)
    assert issue is not None  # "X-${NAME}" is not substituted, and is not a valid header name
    assert "invalid header name 'X-${NAME}'" in issue.message
