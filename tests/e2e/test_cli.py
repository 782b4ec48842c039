"""The ``sidegate`` command as a user runs it: exit codes, message shapes, no tracebacks.

Every test runs the installed console script in a subprocess with a bounded timeout.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import pytest

from support.configs import minimal
from support.gateway import SIDEGATE

MINIMAL = minimal("127.0.0.1:INBOUND", "127.0.0.1:ADMIN")
UNSET = "SIDEGATE_E2E_SURELY_UNSET_VARIABLE"
# One issue line: FILE:LINE: dotted.path: message
ISSUE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<path>[\w.\[\]-]+): (?P<message>.+)$")


def sidegate(
    *args: str, timeout: float = 30.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != UNSET}
    environ.update(env or {})
    return subprocess.run(
        [SIDEGATE, *args], capture_output=True, text=True, timeout=timeout, check=False, env=environ
    )


def minimal(inbound: int = 8080, admin: int = 9901, health: str | None = None) -> str:
    """The minimal config; ``health`` adds ``listeners.health.address`` (one line more)."""
    text = MINIMAL.replace("INBOUND", str(inbound)).replace("ADMIN", str(admin))
    if health is None:
        return text
    admin_line = next(line for line in text.splitlines(keepends=True) if line.startswith("  admin:"))
    return text.replace(admin_line, admin_line + f'  health:  {{address: "{health}"}}\n')


def write(tmp_path: Path, text: str, name: str = "sidegate.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert 'File "' not in output, output


# --- validate ----------------------------------------------------------------------------------


def test_validate_a_good_file_exits_0(tmp_path: Path) -> None:
    path = write(tmp_path, minimal())
    result = sidegate("validate", "--config", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"OK: {path}")
    assert result.stderr == ""


# (name, config text, expected line, expected dotted path, words the message must contain)
BROKEN = [
    (
        "unknown-upstream",
        minimal().replace("upstream: app", "upstream: nope"),
        9,
        "routes[0].upstream",
        ["unknown upstream 'nope'", "app"],
    ),
    (
        "unknown-filter",
        minimal() + "    filters: {rate_limitt: {}}\n",
        10,
        "routes[0].filters.rate_limitt",
        ["unknown filter 'rate_limitt'", "direct_response"],
    ),
    (
        "bad-duration",
        minimal() + "    timeouts: {connect: 2 fortnights}\n",
        10,
        "routes[0].timeouts.connect",
        ["2 fortnights"],
    ),
    (
        "unset-env-var",
        minimal().replace("127.0.0.1:3000", "${" + UNSET + "}"),
        5,
        "upstreams.app.endpoints[0]",
        [UNSET, "not set"],
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "dotted", "words"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN]
)
def test_validate_reports_file_line_path_message(
    tmp_path: Path, text: str, line: int, dotted: str, words: list[str]
) -> None:
    path = write(tmp_path, text)
    result = sidegate("validate", "--config", path)
    assert result.returncode == 1, result
    assert result.stdout == ""
    no_traceback(result)
    lines = result.stderr.splitlines()
    match = ISSUE.match(lines[0])
    assert match is not None, f"not FILE:LINE: path: message: {lines[0]!r}"
    assert (match["file"], int(match["line"]), match["path"]) == (path, line, dotted)
    for word in words:
        assert word in match["message"], lines[0]
    assert lines[-1] == f"{path}: 1 problem found"


def test_validate_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nowhere.yaml")
    result = sidegate("validate", "--config", path)
    assert result.returncode == 1
    no_traceback(result)
    assert result.stderr.splitlines()[0] == f"{path}: file not found"


def test_validate_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, minimal().replace('path_prefix: "/"}', 'path_prefix: "/"'))
    result = sidegate("validate", "--config", path)
    assert result.returncode == 1
    no_traceback(result)
    first = result.stderr.splitlines()[0]
    match = re.match(rf"^{re.escape(path)}:(\d+): YAML syntax error", first)
    assert match is not None, first
    assert 8 <= int(match[1]) <= 10, first  # at or just after the unclosed flow mapping


def test_validate_reports_every_problem_at_once(tmp_path: Path) -> None:
    text = minimal().replace("upstream: app", "upstream: nope") + "    timeouts: {connect: soon}\n"
    path = write(tmp_path, text)
    result = sidegate("validate", "--config", path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    matches = [ISSUE.match(line) for line in lines[:-1]]
    assert [m["path"] if m else line for m, line in zip(matches, lines, strict=False)] == [
        "routes[0].upstream",
        "routes[0].timeouts.connect",
    ]
    assert lines[-1] == f"{path}: 2 problems found"


def test_validate_rejects_inbound_and_admin_on_the_same_address(tmp_path: Path) -> None:
    """Such a file can never run (the second bind fails), so validate must not say OK."""
    path = write(tmp_path, minimal(8080, 8080))
    result = sidegate("validate", "--config", path)
    assert result.returncode == 1, result.stdout
    no_traceback(result)
    assert "listeners" in result.stderr and "8080" in result.stderr, result.stderr


def test_validate_refuses_an_admin_listener_off_loopback_without_a_token(tmp_path: Path) -> None:
    """`POST /reload`, cache purge and `/config_dump` must not be open to the network."""
    text = minimal().replace('admin:   {address: "127.0.0.1:9901"}', 'admin:   {address: "0.0.0.0:9901"}')
    path = write(tmp_path, text)
    for command in ("validate", "run"):
        result = sidegate(command, "--config", path, timeout=20)
        assert result.returncode == 1, (command, result.stdout)
        no_traceback(result)
        ((line, dotted, message),) = issues_of(result.stderr)
        assert (line, dotted) == (3, "listeners.admin.token_file"), result.stderr
        assert "set listeners.admin.token_file" in message and "127.0.0.1" in message, message
    token = tmp_path / "admin-token"
    text = text.replace('"0.0.0.0:9901"}', f'"0.0.0.0:9901", token_file: "{token}"}}')
    result = sidegate("validate", "--config", write(tmp_path, text))
    assert result.returncode == 1 and f"{token}: file not found" in result.stderr, result.stderr
    token.write_text("a-long-enough-admin-token\n")
    result = sidegate("validate", "--config", write(tmp_path, text))
    assert result.returncode == 0, result.stderr


def test_env_var_set_makes_the_same_file_valid(tmp_path: Path) -> None:
    path = write(tmp_path, minimal().replace("127.0.0.1:3000", "${" + UNSET + "}"))
    result = sidegate("validate", "--config", path, env={UNSET: "127.0.0.1:3000"})
    assert result.returncode == 0, result.stderr


# --- schema, version ---------------------------------------------------------------------------


def test_schema_prints_a_json_schema_with_routes() -> None:
    result = sidegate("schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["type"] == "object"
    assert "$schema" in schema or "$defs" in schema
    assert {"listeners", "upstreams", "routes"} <= set(schema["properties"])
    assert "direct_response" in result.stdout


def test_version_matches_the_installed_package() -> None:
    result = sidegate("version")
    assert result.returncode == 0
    assert result.stdout == f"sidegate {dist_version('sidegate')}, hot path compiled (mypyc)\n"


# --- run ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        (
            "unknown-upstream",
            minimal().replace("upstream: app", "upstream: nope"),
            ["routes[0].upstream", "nope"],
        ),
        ("yaml-syntax", "routes: [\n  - {name: a\n", ["YAML syntax error", "2"]),
        ("missing-file", None, ["not found"]),
    ],
    ids=["unknown-upstream", "yaml-syntax", "missing-file"],
)
def test_run_with_an_invalid_config_exits_1_with_a_clear_message(
    tmp_path: Path, name: str, text: str | None, words: list[str]
) -> None:
    path = str(tmp_path / f"{name}.yaml") if text is None else write(tmp_path, text, f"{name}.yaml")
    started = time.monotonic()
    result = sidegate("run", "--config", path, timeout=20)
    assert result.returncode == 1, result
    assert time.monotonic() - started < 10
    no_traceback(result)
    assert path in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def _held_socket(reuse_port: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def _run_expecting_exit(path: str, timeout: float) -> tuple[int | None, str]:
    """``sidegate run``; returns (exit code or None if still running after ``timeout``, output)."""
    out = Path(path).with_suffix(".log")
    with open(out, "wb") as log:
        proc = subprocess.Popen([SIDEGATE, "run", "--config", path], stdout=log, stderr=subprocess.STDOUT)
    try:
        code: int | None = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        code = None
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return code, out.read_text(errors="replace")


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("listener", ["inbound", "admin", "health"])
def test_run_on_a_port_in_use_exits_1_naming_the_address(
    tmp_path: Path, free_port: Callable[[], int], listener: str, workers: int
) -> None:
    held = _held_socket()
    try:
        port = held.getsockname()[1]
        ports = {"inbound": free_port(), "admin": free_port(), "health": free_port(), listener: port}
        health = f"127.0.0.1:{ports['health']}"
        text = minimal(ports["inbound"], ports["admin"], health) + f"workers: {workers}\n"
        code, output = _run_expecting_exit(write(tmp_path, text), timeout=10)
    finally:
        held.close()
    assert code == 1, f"sidegate run on a busy {listener} port: exit {code} (None: still running)\n{output}"
    assert "Traceback" not in output, output
    assert "in use" in output.lower(), output
    assert str(port) in output, f"the message does not say which address is busy:\n{output}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("first_workers", "second_workers"), [(1, 1), (2, 2), (2, 1)])
def test_a_second_gateway_on_the_same_inbound_port_is_refused(
    tmp_path: Path,
    gateway: Callable[..., Any],
    free_port: Callable[[], int],
    first_workers: int,
    second_workers: int,
) -> None:
    """Two gateways on one address would silently split the traffic between two configs."""
    first = gateway(workers=first_workers)
    port = first.port
    text = minimal(port, free_port(), "127.0.0.1:0") + f"workers: {second_workers}\n"
    path = write(tmp_path, text, "second.yaml")
    code, output = _run_expecting_exit(path, timeout=5)
    assert code == 1, f"a second sidegate started on busy port {port} (exit {code}):\n{output}"
    assert str(port) in output
    assert "Traceback" not in output, output


def test_run_stops_cleanly_on_sigint(tmp_path: Path, free_port: Callable[[], int]) -> None:
    admin = free_port()
    path = write(tmp_path, minimal(free_port(), admin, "127.0.0.1:0"))
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([SIDEGATE, "run", "--config", path], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", admin), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    output = log_path.read_text(errors="replace")
    assert code == 0, output
    assert "Traceback" not in output, output


# --- every problem at once, and what cannot work -------------------------------------------------

# The issue's example: one route whose jwt has no keys, whose rate_limit.key is unknown and whose
# cache.default_ttl is negative. Each stage used to stop the next: only one was reported.
THREE_MISTAKES = minimal() + (
    "    filters:\n"
    "      jwt: {issuer: 'https://login.example.com/'}\n"
    "      rate_limit: {requests: 10, per: 1s, key: bogus}\n"
    "      cache: {default_ttl: -5}\n"
)


def issues_of(stderr: str) -> list[tuple[int, str, str]]:
    """(line, path, message) of each ``FILE:LINE: path: message`` line."""
    found = []
    for text in stderr.splitlines():
        match = ISSUE.match(text)
        if match is not None:
            found.append((int(match["line"]), match["path"], match["message"]))
    return found


def test_validate_reports_the_three_mistakes_of_one_route_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, THREE_MISTAKES)
    result = sidegate("validate", "--config", path)
    assert result.returncode == 1, result
    no_traceback(result)
    found = issues_of(result.stderr)
    assert [(line, dotted) for line, dotted, _ in found] == [
        (11, "routes[0].filters.jwt"),
        (12, "routes[0].filters.rate_limit.key"),
        (13, "routes[0].filters.cache.default_ttl"),
    ], result.stderr
    assert "jwks_file or jwks_url" in found[0][2]
    assert "'bogus'" in found[1][2] and "tenant" in found[1][2]
    assert "-5" in found[2][2]
    assert result.stderr.splitlines()[-1] == f"{path}: 3 problems found"


@pytest.mark.parametrize(
    ("identity", "key", "fix"),
    [
        ("", "header:x-tenant", "key: tenant"),
        ("", "header:X-Consumer", "key: consumer"),
        ("identity: {tenant_header: X-Org}\n", "header:x-org", "key: tenant"),
        ("", "header:x-forwarded-for", "key: ip"),
    ],
    ids=["tenant-header", "consumer-header", "renamed-tenant-header", "forwarded-for"],
)
def test_validate_refuses_a_rate_limit_keyed_on_a_header_sidegate_removes(
    tmp_path: Path, identity: str, key: str, fix: str
) -> None:
    """Every request would count under one empty key: every tenant in one bucket."""
    text = identity + minimal() + f"    filters:\n      rate_limit: {{requests: 10, key: '{key}'}}\n"
    path = write(tmp_path, text)
    result = sidegate("validate", "--config", path)
    assert result.returncode == 1, result
    ((line, dotted, message),) = issues_of(result.stderr)
    assert (line, dotted) == (11 + bool(identity), "routes[0].filters.rate_limit.key")
    assert key.removeprefix("header:") in message and fix in message, message


def test_a_header_that_is_not_sidegates_identity_header_may_be_a_key(tmp_path: Path) -> None:
    text = "identity: {tenant_header: X-Org}\n" + minimal()
    text += "    filters:\n      rate_limit: {requests: 10, key: 'header:x-tenant'}\n"
    result = sidegate("validate", "--config", write(tmp_path, text))
    assert result.returncode == 0, result.stderr


def test_validate_prints_warnings_and_still_exits_0(tmp_path: Path) -> None:
    text = minimal() + "    filters:\n      rate_limit: {requests: 10, key: consumer}\n"
    path = write(tmp_path, text)
    result = sidegate("validate", "--config", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"OK: {path} (1 route, 1 upstream; 1 warning)\n"
    ((line, dotted, message),) = issues_of(result.stderr)
    assert (line, dotted) == (11, "routes[0].filters.rate_limit.key")
    assert message.startswith("warning: no filter before this one names the caller"), message


def test_run_prints_a_bad_config_as_validate_does(tmp_path: Path) -> None:
    path = write(tmp_path, THREE_MISTAKES)
    validated = sidegate("validate", "--config", path)
    result = sidegate("run", "--config", path, timeout=20)
    assert result.returncode == 1, result
    no_traceback(result)
    assert result.stderr.splitlines()[:-1] == validated.stderr.splitlines()[:-1]
    assert result.stderr.splitlines()[-1] == f"sidegate: cannot start: 3 problems found in {path}"


def test_run_with_json_logs_reports_a_bad_config_as_json_lines(tmp_path: Path) -> None:
    path = write(tmp_path, THREE_MISTAKES)
    result = sidegate("run", "--config", path, "--log-format", "json", timeout=20)
    assert result.returncode == 1, result
    no_traceback(result)
    records = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    assert [(r["line"], r["path"]) for r in records if r.get("event") == "config_error"] == [
        (11, "routes[0].filters.jwt"),
        (12, "routes[0].filters.rate_limit.key"),
        (13, "routes[0].filters.cache.default_ttl"),
    ]
    last = records[-1]
    assert (last["level"], last["event"], last["result"]) == ("error", "start", "invalid_config")
    assert [issue["line"] for issue in last["issues"]] == [11, 12, 13]
    for record in records:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"]), record
