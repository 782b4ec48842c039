"""Validating in a child process: same answers as in-process, clear failures, a lean gateway.

The serving process never imports pydantic or YAML: ``validate_file``/``validate_text`` ask
``python -m sidegate.config.check --serve`` (a checker server that forks a child per check) and
compile the plain JSON it prints. These tests start real processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pytest
from annotated_types import Ge, MinLen

from sidegate.config import check, isolated
from sidegate.config.check import check_file, check_text
from sidegate.config.compile import compile_checked, compile_snapshot
from sidegate.config.isolated import Normalised, validate_file, validate_text
from sidegate.config.load import load_config
from sidegate.config.model import filter_adapter
from sidegate.config.snapshot import Snapshot
from sidegate.errors import ConfigError, ConfigIssue
from sidegate.filters import registry
from sidegate.filters.base import Filter, FilterConfig
from sidegate.filters.direct_response import DirectResponse, DirectResponseConfig
from sidegate.http.messages import RequestHead

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sidegate.yaml"

RICH = """\
listeners:
  inbound:
    address: "[::1]:0"
    limits: {head_size: 16KiB, buffer: 1MiB, head_timeout: 1.5s}
    forwarded: {mode: forwarded, trust_incoming: false, via: ""}
  admin: {address: "127.0.0.1:${ADMIN_PORT}"}
workers: 2
drain_timeout: 3s
upstreams:
  app: {endpoints: ["127.0.0.1:3000", "[::1]:3001", "app.local:3002"], pool: {max_idle: 8}}
  other: {endpoints: ["10.0.0.1:80"], pool: {idle_timeout: 500ms}}
routes:
  - name: down
    match: {path: /down, hosts: ["*.Example.com"], methods: [get]}
    upstream: other
    filters:
      direct_response: {status: 503, body: down, headers: {Retry-After: "30"}}
  - name: api
    match:
      path_prefix: /api/
      headers: {X-Api-Key: {present: true}, X-Env: prod}
      query: {v: {regex: "[0-9]+"}}
    upstream: app
    rewrite: {regex: {pattern: '^/api/(\\w+)', replacement: '/\\1'}}
    timeouts: {connect: 1s, response: 0, idle: 2m}
    max_body: 0
    headers:
      request: {set: {Authorization: "Bearer ${TOKEN}"}, add: {X-Tag: 1}, remove: [X-Internal]}
      response: {remove: [Server]}
  - name: rest
    match: {path_regex: "/items/[0-9]+"}
    upstream: app
    rewrite: {strip_prefix: /items}
"""
ENV = {**os.environ, "ADMIN_PORT": "9911", "TOKEN": "hunter2"}  # the child needs PATH, PYTHONPATH...

BAD = """\
upstreams:
  app: {endpoints: ["127.0.0.1:3000"]}
routes:
  - name: r0
    match: {path: /0}
    upstream: ap
  - name: r1
    match: {path: "1"}
    upstream: app
    timeouts: {connect: soon}
  - name: down
    match: {path: /down}
    upstream: app
    filters:
      direct_response: {status: 42, colour: red}
    headers: {request: {set: {X-Token: "${MISSING}"}}}
"""


def write(tmp_path: Path, text: str, name: str = "sidegate.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def request(path: bytes, host: bytes = b"a.example.com", method: bytes = b"GET") -> RequestHead:
    head = RequestHead()
    head.method, head.path, head.host = method, path, host
    head.headers = [(b"X-Api-Key", b"k"), (b"X-Env", b"prod")]
    head.query = b"v=12"
    return head


def assert_same_effect(child: Snapshot, here: Snapshot) -> None:
    """Two snapshots route, limit and forward alike (filters compared by type and config)."""
    assert child.upstreams == here.upstreams
    assert (child.inbound, child.admin, child.limits, child.forwarded) == (
        here.inbound,
        here.admin,
        here.limits,
        here.forwarded,
    )
    assert (child.workers, child.drain_timeout, child.source) == (
        here.workers,
        here.drain_timeout,
        here.source,
    )
    assert child.dump == here.dump
    assert len(child.routes) == len(here.routes)
    for a, b in zip(child.routes, here.routes, strict=True):
        assert (a.name, a.upstream, a.timeouts, a.rewrite, a.max_body) == (
            b.name,
            b.upstream,
            b.timeouts,
            b.rewrite,
            b.max_body,
        )
        assert (a.request_headers, a.response_headers) == (b.request_headers, b.response_headers)
        assert [(type(f), f.config) for f in a.filters] == [(type(f), f.config) for f in b.filters]
        for hook in ("on_request", "on_response", "on_log"):
            assert [type(f) for f in getattr(a, hook)] == [type(f) for f in getattr(b, hook)]


# --- same answers as in-process ------------------------------------------------------------------


def test_a_bad_file_gets_the_same_issues_as_in_process(tmp_path: Path) -> None:
    path = write(tmp_path, BAD)
    environ = {name: value for name, value in os.environ.items() if name != "MISSING"}
    with pytest.raises(ConfigError) as here:
        load_config(path, environ)
    with pytest.raises(ConfigError) as child:
        validate_file(path, environ=environ)
    assert child.value.source == here.value.source == path
    assert child.value.issues == here.value.issues
    issues = {issue.path: issue for issue in child.value.issues}
    status = issues["routes[2].filters.direct_response.status"]
    assert (status.message, status.line) == ("must be >= 200, got 42", 15)
    assert "unknown key 'colour'" in issues["routes[2].filters.direct_response.colour"].message
    assert issues["routes[0].upstream"].line == 6
    assert (
        "environment variable MISSING is not set" in issues["routes[2].headers.request.set.X-Token"].message
    )
    assert str(child.value) == str(here.value)


@pytest.mark.parametrize("text", ["", "routes: [\n", "- a\n", "upstreams: {}\nroutes: []\n"])
def test_broken_texts_get_the_same_issues_as_in_process(text: str) -> None:
    with pytest.raises(ConfigError) as here:
        check_text(text, "t.yaml", environ={})
    with pytest.raises(ConfigError) as child:
        validate_text(text, "t.yaml")
    assert (child.value.source, child.value.issues) == (here.value.source, here.value.issues)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        validate_file(tmp_path / "nope.yaml")
    assert info.value.issues == [ConfigIssue("", "file not found")]


def test_a_good_file_compiles_to_the_same_snapshot_as_in_process(tmp_path: Path) -> None:
    path = write(tmp_path, RICH)
    checked = validate_file(path, environ=ENV)
    assert checked == check_file(path, environ=ENV)  # the JSON round trip loses nothing
    child, here = compile_checked(checked), compile_checked(check_file(path, environ=ENV))
    assert_same_effect(child, here)
    # and the values themselves, as the data plane needs them
    assert child.limits.head_size == 16384 and child.limits.head_timeout == 1.5
    assert child.admin.port == 9911 and child.inbound.host == "::1"
    assert child.upstreams["other"].idle_timeout == 0.5
    assert child.routes[1].timeouts.idle == 120.0
    assert child.routes[1].max_body == sys.maxsize
    assert "hunter2" not in json.dumps(child.dump)
    assert child.router.match(request(b"/down")) is child.routes[0]
    assert child.router.match(request(b"/api/users")) is child.routes[1]
    assert child.router.match(request(b"/items/7")) is child.routes[2]
    down = child.routes[0].on_request[0]
    answer = down.on_request(request(b"/down"), None)  # type: ignore[arg-type]
    assert answer is not None and answer.status == 503 and answer.headers == ((b"Retry-After", b"30"),)


def test_the_example_config_compiles_alike(tmp_path: Path) -> None:
    assert_same_effect(compile_checked(validate_file(EXAMPLE)), compile_checked(check_file(EXAMPLE)))


def test_environment_variables_come_from_the_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_PORT", "9123")
    monkeypatch.setenv("TOKEN", "t")
    snapshot = compile_checked(validate_text(RICH, "env.yaml"))
    assert snapshot.admin.port == 9123
    assert snapshot.source == "env.yaml"


def test_a_filter_that_fails_to_start_here_is_reported_at_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken(DirectResponse):
        def __init__(self, config: DirectResponseConfig) -> None:
            raise RuntimeError("no key file")

    checked = validate_file(write(tmp_path, RICH), environ=ENV)
    assert checked.lines == {"routes[0].filters.direct_response": 17}
    monkeypatch.setitem(registry._REGISTRY, "direct_response", Broken)
    with pytest.raises(ConfigError) as info:
        compile_checked(checked)
    assert info.value.issues == [
        ConfigIssue("routes[0].filters.direct_response", "cannot set up filter: no key file", 17)
    ]


def test_data_of_another_shape_is_a_config_error_not_a_crash() -> None:
    with pytest.raises(ConfigError) as info:
        compile_snapshot({"routes": []}, "x.yaml")
    (issue,) = info.value.issues
    assert issue.path == "" and "unexpected shape (KeyError" in issue.message


# --- when the checker misbehaves -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            "import sys; sys.stderr.write('Traceback ...\\nMemoryError: out of memory\\n'); sys.exit(3)",
            "the config checker failed (exit status 3): MemoryError: out of memory",
        ),
        (
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
            "the config checker was killed by SIGKILL",
        ),
        ("print('Hello, world')", "the config checker printed 'Hello, world' instead of its JSON answer"),
        ("pass", "the config checker printed nothing instead of its JSON answer"),
        ("print('[1, 2]')", "the config checker answered in format None, not 1"),
        ('print(\'{"ok": true, "format": 1}\')', "the config checker's answer has no config"),
        ('print(\'{"ok": false, "format": 1}\')', "the config checker rejected the config"),
    ],
)
def test_a_misbehaving_checker_is_a_clear_config_error(
    monkeypatch: pytest.MonkeyPatch, code: str, expected: str
) -> None:
    monkeypatch.setattr(isolated, "CHECKER", (sys.executable, "-c", code))
    with pytest.raises(ConfigError) as info:
        validate_file("some.yaml")
    (issue,) = info.value.issues
    assert issue.path == "" and issue.message.startswith(expected), issue.message
    assert info.value.source == "some.yaml"


def test_a_checker_that_hangs_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolated, "CHECKER", (sys.executable, "-c", "import time; time.sleep(60)"))
    with pytest.raises(ConfigError) as info:
        validate_text("routes: []", "t.yaml", timeout=0.5)
    assert info.value.issues == [ConfigIssue("", "the config checker did not answer within 0.5s")]


def test_a_checker_that_cannot_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(isolated, "CHECKER", (str(tmp_path / "no-python"),))
    with pytest.raises(ConfigError) as info:
        validate_file("x.yaml")
    assert info.value.issues[0].message.startswith("cannot start the config checker")


# --- the checker server: imports once, a child per check ------------------------------------------


def processes(*, parent: int | None = None, group: int | None = None, marker: bytes = b"") -> list[int]:
    """Live processes with this parent or process group (and ``marker`` in their command line)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z" or marker not in cmdline:
            continue
        if (parent is None or int(fields[1]) == parent) and (group is None or int(fields[2]) == group):
            found.append(int(entry))
    return found


def servers() -> list[int]:
    return processes(parent=os.getpid(), marker=b"--serve")


def test_checks_are_answered_by_one_server_that_stays(tmp_path: Path) -> None:
    path = write(tmp_path, RICH)
    validate_file(path, environ=ENV)
    (server,) = servers()
    for _ in range(3):
        assert compile_checked(validate_file(path, environ=ENV)).admin.port == 9911
    assert servers() == [server]


def test_a_server_that_died_is_replaced(tmp_path: Path) -> None:
    path = write(tmp_path, RICH)
    validate_file(path, environ=ENV)
    (server,) = servers()
    os.kill(server, signal.SIGKILL)
    assert compile_checked(validate_file(path, environ=ENV)).admin.port == 9911
    assert servers() and servers() != [server]


# A server whose checks die (or hang) on a config that says so, and answer as usual otherwise.
BRITTLE = """
import os, sys, time
from sidegate.config.check import _request
from sidegate.config.forking import serve
sys.stdout = sys.stderr

def handle(line):
    if b"crash-me" in line:
        os.kill(os.getpid(), 9)
    if b"hang-me" in line:
        time.sleep(60)
    return _request(line)

serve(handle, lambda names: None)
"""


def test_a_check_that_kills_its_process_leaves_the_server_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolated, "CHECKER", (sys.executable, "-c", BRITTLE))
    good = RICH.replace("${ADMIN_PORT}", "1").replace("${TOKEN}", "t")
    assert compile_checked(validate_text(good, "a.yaml")).admin.port == 1
    (server,) = processes(parent=os.getpid(), marker=b"crash-me")
    with pytest.raises(ConfigError) as info:
        validate_text(good + "# crash-me\n", "b.yaml")
    assert info.value.issues == [ConfigIssue("", "the config checker was killed by SIGKILL")]
    assert compile_checked(validate_text(good, "c.yaml")).admin.port == 1
    assert processes(parent=os.getpid(), marker=b"crash-me") == [server]


def test_a_check_that_hangs_is_stopped_with_its_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolated, "CHECKER", (sys.executable, "-c", BRITTLE))
    good = RICH.replace("${ADMIN_PORT}", "1").replace("${TOKEN}", "t")
    validate_text(good, "a.yaml")
    (server,) = processes(parent=os.getpid(), marker=b"crash-me")
    with pytest.raises(ConfigError) as info:
        validate_text(good + "# hang-me\n", "b.yaml", timeout=1.0)
    assert info.value.issues == [ConfigIssue("", "the config checker did not answer within 1s")]
    assert processes(group=server) == [], "the hanging check outlived the timeout"
    assert compile_checked(validate_text(good, "c.yaml")).admin.port == 1


def test_the_server_sees_the_environment_and_directory_of_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, RICH, "relative.yaml")
    validate_text(RICH, "first.yaml", environ=ENV)  # the server is started now, with this environment
    assert servers()
    monkeypatch.setenv("ADMIN_PORT", "9124")
    monkeypatch.setenv("TOKEN", "t")
    monkeypatch.chdir(tmp_path)
    assert compile_checked(validate_file("relative.yaml")).admin.port == 9124


def test_the_server_goes_away_with_its_parent(tmp_path: Path) -> None:
    """At a clean exit it is stopped; when the parent is killed, its stdin closes and it exits."""
    path = write(tmp_path, RICH)
    code = f"""
import os, sys
from sidegate.config.isolated import validate_file, _SERVER
validate_file({path!r})
print(_SERVER._process.pid, flush=True)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), 9)
"""
    for how in ("exit", "kill"):
        done = subprocess.run(
            [sys.executable, "-c", code, how],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        pid = int(done.stdout.split()[0])
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{pid}").exists(), f"the server outlived its parent ({how})"


# --- the checker itself ------------------------------------------------------------------------------


def run_check(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidegate.config.check", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_checker_prints_one_json_document_and_exits_0(tmp_path: Path) -> None:
    result = run_check(write(tmp_path, "upstreams: {}\n"))
    assert result.returncode == 0 and result.stderr == ""
    answer = json.loads(result.stdout)
    assert answer["ok"] is False and answer["format"] == 1
    assert {"path": "upstreams", "message": "must not be empty", "line": 1} in answer["issues"]


def test_the_checker_reads_text_from_stdin() -> None:
    text = textwrap.dedent(RICH).replace("${ADMIN_PORT}", "1").replace("${TOKEN}", "x")
    answer = json.loads(run_check("--text-stdin", "--source", "in.yaml", stdin=text).stdout)
    assert answer["ok"] is True and answer["source"] == "in.yaml"
    config = answer["config"]
    assert config["listeners"]["inbound"]["limits"]["head_size"] == 16384  # sizes in bytes
    assert config["upstreams"]["other"]["pool"]["idle_timeout"] == 0.5  # durations in seconds
    assert config["routes"][0]["filters"] == {
        "direct_response": {
            "status": 503,
            "body": "down",
            "content_type": "text/plain; charset=utf-8",  # defaults filled in
            "headers": {"Retry-After": "30"},
        }
    }


@pytest.mark.parametrize("args", [[], ["--text-stdin"], ["a.yaml", "--source", "b.yaml"]])
def test_checker_usage_errors_exit_2(args: list[str]) -> None:
    result = run_check(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert "usage:" in result.stderr


def test_an_unexpected_error_in_the_checker_is_an_issue_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(path: str, environ: object = None) -> None:
        print("noise from a filter module")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(check, "load_config", boom)
    assert check.main(["x.yaml"]) == 0
    out = capsys.readouterr()
    answer = json.loads(out.out)  # the noise went to stderr
    assert answer == {
        "ok": False,
        "format": 1,
        "source": "x.yaml",
        "issues": [
            {"path": "", "message": "the config checker failed: RuntimeError: disk on fire", "line": None}
        ],
    }
    assert "noise from a filter module" in out.err


# --- filter configs cross the process boundary as JSON --------------------------------------------


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Window:
    """A nested config."""

    size: Annotated[int, Ge(1)] = 10
    """how many"""
    per: float = 1.0
    """seconds"""


@dataclass(frozen=True)
class RichConfig(FilterConfig):
    names: Annotated[tuple[str, ...], MinLen(1)] = ("a",)
    colour: Colour = Colour.RED
    window: Window = field(default_factory=Window)
    windows: tuple[Window, ...] = ()
    by_name: dict[str, Window] = field(default_factory=dict)
    fallback: Window | None = None
    tags: frozenset[str] = frozenset()
    pair: tuple[int, str] = (0, "")


def test_a_nested_filter_config_is_rebuilt_from_its_json() -> None:
    adapter = filter_adapter(RichConfig)
    data = {
        "names": ["x", "y"],
        "colour": "blue",
        "window": {"size": 5, "per": 2},
        "windows": [{"size": 2}],
        "by_name": {"w": {"per": 0.5}},
        "fallback": {"size": 3},
        "tags": ["t"],
        "pair": [1, "one"],
    }
    validated = adapter.validate_python(data)
    plain = json.loads(json.dumps(adapter.dump_python(validated, mode="json")))
    rebuilt = RichConfig.from_plain(plain)
    assert rebuilt == validated
    assert isinstance(rebuilt.window, Window) and isinstance(rebuilt.windows, tuple)
    assert rebuilt.colour is Colour.BLUE and rebuilt.pair == (1, "one")
    assert isinstance(rebuilt.window.per, float)
    assert RichConfig.from_plain({}) == RichConfig()
    assert dataclasses.asdict(rebuilt)["by_name"] == {"w": {"size": 10, "per": 0.5}}


def test_a_filter_config_must_be_a_frozen_dataclass_of_its_own() -> None:
    class NotDeclared(FilterConfig):
        extra: int = 1

    class Sloppy(Filter):
        name = "sloppy"
        config_model = NotDeclared

    with pytest.raises(TypeError, match="must be declared @dataclass"):
        registry.register(Sloppy)
    assert registry.lookup("sloppy") is None


def test_the_checker_answer_pickles_for_the_workers() -> None:
    import pickle

    checked = Normalised({"a": [1, {"b": None}]}, "x.yaml", {"routes[0].filters.f": 3})
    assert pickle.loads(pickle.dumps(checked)) == checked


# --- the serving process stays lean ------------------------------------------------------------------


def test_the_serving_path_never_imports_pydantic_or_yaml(tmp_path: Path) -> None:
    """Import what the gateway imports, validate and compile a file: no pydantic, no YAML."""
    path = write(tmp_path, RICH)
    code = f"""
import sys
import sidegate.runtime, sidegate.request.proxy, sidegate.supervisor, sidegate.cli
import sidegate.config.compile, sidegate.config.isolated, sidegate.filters.registry, sidegate.filters.builtin
from sidegate.config.compile import compile_checked
from sidegate.config.isolated import validate_file
from sidegate.filters.registry import known_names

assert "direct_response" in known_names()
snapshot = compile_checked(validate_file({path!r}))
assert snapshot.routes[0].filters
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "pydantic_core", "yaml", "_yaml"))
print(repr(heavy))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
