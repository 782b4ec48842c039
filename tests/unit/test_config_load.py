"""Loading config files: what validates, and what a user sees for each mistake (path, line, fix)."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from sidegate.config.load import load_config, load_config_text
from sidegate.errors import ConfigError, ConfigIssue
from support.configs import MINIMAL


def issues_of(text: str, environ: dict[str, str] | None = None) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_config_text(textwrap.dedent(text), "test.yaml", environ or {})
    assert info.value.source == "test.yaml"
    return info.value.issues


def only_issue(text: str, environ: dict[str, str] | None = None) -> ConfigIssue:
    issues = issues_of(text, environ)
    assert len(issues) == 1, issues
    return issues[0]


def with_route(route: str, upstreams: str = 'app: {endpoints: ["127.0.0.1:3000"]}') -> str:
    """A full config whose only route is ``route`` (YAML for one list item, unindented)."""
    body = textwrap.indent(textwrap.dedent(route).strip(), "    ").replace("    ", "  - ", 1)
    return f"upstreams:\n  {upstreams}\nroutes:\n{body}\n"


# --- what validates ----------------------------------------------------------------------------


def test_minimal_file_validates(tmp_path: Path) -> None:
    path = tmp_path / "sidegate.yaml"
    path.write_text(MINIMAL)
    loaded = load_config(path)
    config = loaded.config
    assert loaded.source == str(path)
    assert loaded.text == MINIMAL
    assert config.listeners.inbound.address == "127.0.0.1:8080"
    assert config.listeners.admin.address == "127.0.0.1:9901"
    assert config.upstreams["app"].endpoints == ["127.0.0.1:3000"]
    assert config.routes[0].match.path_prefix == "/"
    assert loaded.line_of(("routes", 0, "match", "path_prefix")) == 8


def test_defaults_fill_in_what_is_not_written() -> None:
    config = load_config_text(with_route("name: r\nmatch: {path: /x}\nupstream: app"), environ={}).config
    assert config.listeners.inbound.address == "0.0.0.0:8080"
    assert config.listeners.admin.address == "127.0.0.1:9901"
    assert config.listeners.inbound.limits.head_size == 32 * 1024
    assert config.listeners.inbound.limits.head_timeout == 10.0
    assert config.listeners.inbound.forwarded.via == "1.1 sidegate"
    assert config.workers == 1
    assert config.drain_timeout == 20.0
    route = config.routes[0]
    assert (route.timeouts.connect, route.timeouts.response, route.timeouts.idle) == (2.0, 15.0, 60.0)
    assert route.max_body == 10 * 1024 * 1024


def test_units_methods_and_hosts_are_normalised() -> None:
    config = load_config_text(
        with_route(
            """
            name: r
            match: {path: /x, methods: [get, Post], hosts: [API.Example.com, "*.Example.org"]}
            upstream: app
            timeouts: {connect: 500ms, response: 1.5m, idle: 0}
            max_body: 64KiB
            """
        ),
        environ={},
    ).config
    route = config.routes[0]
    assert route.match.methods == ["GET", "POST"]
    assert route.match.hosts == ["api.example.com", "*.example.org"]
    assert (route.timeouts.connect, route.timeouts.response, route.timeouts.idle) == (0.5, 90.0, 0.0)
    assert route.max_body == 65536


def test_yaml_numbers_are_accepted_as_header_and_query_values() -> None:
    config = load_config_text(
        with_route(
            """
            name: r
            match: {path: /x, query: {page: 1}, headers: {x-debug: true}}
            upstream: app
            headers: {request: {set: {X-Version: 2}}}
            """
        ),
        environ={},
    ).config
    route = config.routes[0]
    assert route.match.query is not None and route.match.query["page"].exact == "1"
    assert route.match.headers is not None and route.match.headers["x-debug"].exact == "true"
    assert route.headers.request.set == {"X-Version": "2"}


def test_yaml_anchors_and_merge_keys_work() -> None:
    text = """\
    upstreams:
      app: {endpoints: ["127.0.0.1:3000"]}
    x-common: &common {upstream: app, timeouts: {response: 5s}}
    routes:
      - {<<: *common, name: a, match: {path: /a}}
      - {<<: *common, name: b, match: {path: /b}, upstream: app}
    """
    # "x-common" is not a config key, so it is reported; everything else is fine.
    issue = only_issue(text)
    assert issue.path == "x-common"
    assert "unknown key 'x-common'" in issue.message


# --- what each mistake looks like --------------------------------------------------------------


def test_unknown_upstream_lists_the_known_ones() -> None:
    issue = only_issue(MINIMAL.replace("upstream: app", "upstream: ap"))
    assert issue.path == "routes[0].upstream"
    assert issue.message == "unknown upstream 'ap'; known upstreams: app"
    assert issue.line == 9
    assert str(issue) == "routes[0].upstream (line 9): unknown upstream 'ap'; known upstreams: app"


def test_unknown_key_suggests_the_right_one() -> None:
    issue = only_issue(MINIMAL.replace("path_prefix", "path_prefx"))
    assert issue.path == "routes[0].match.path_prefx"
    assert "unknown key 'path_prefx'; did you mean 'path_prefix'?" in issue.message
    assert "allowed keys: path, path_prefix, path_regex" in issue.message
    assert issue.line == 8


def test_missing_required_key_points_at_its_parent() -> None:
    issue = only_issue(MINIMAL.replace("    upstream: app\n", ""))
    assert issue.path == "routes[0].upstream"
    assert "required key `upstream` is missing" in issue.message
    assert issue.line == 7


def test_path_must_start_with_a_slash() -> None:
    issue = only_issue(MINIMAL.replace('path_prefix: "/"', 'path_prefix: "api"'))
    assert issue.path == "routes[0].match.path_prefix"
    assert "'api' must start with '/'" in issue.message
    assert issue.line == 8


def test_exactly_one_path_match() -> None:
    issue = only_issue(MINIMAL.replace('path_prefix: "/"', 'path_prefix: "/", path: "/x"'))
    assert issue.path == "routes[0].match"
    assert "set exactly one of path, path_prefix, path_regex (found path, path_prefix)" in issue.message
    issue = only_issue(MINIMAL.replace('path_prefix: "/"', "methods: [GET]"))
    assert "(found none)" in issue.message


def test_bad_regex_is_a_config_error() -> None:
    issue = only_issue(MINIMAL.replace('path_prefix: "/"', 'path_regex: "/x["'))
    assert issue.path == "routes[0].match.path_regex"
    assert "invalid regular expression '/x['" in issue.message


def test_bad_duration_and_size_show_the_value_and_the_fix() -> None:
    text = with_route(
        "name: r\nmatch: {path: /}\nupstream: app\ntimeouts: {connect: 2 secs}\nmax_body: 10 megs"
    )
    by_path = {issue.path: issue for issue in issues_of(text)}
    assert "invalid duration '2 secs'" in by_path["routes[0].timeouts.connect"].message
    assert '"500ms"' in by_path["routes[0].timeouts.connect"].message
    assert "invalid size '10 megs'" in by_path["routes[0].max_body"].message
    assert '"10MiB"' in by_path["routes[0].max_body"].message
    assert by_path["routes[0].max_body"].line == 8


def test_bad_address() -> None:
    issue = only_issue(MINIMAL.replace("127.0.0.1:3000", "127.0.0.1"))
    assert issue.path == "upstreams.app.endpoints[0]"
    assert "host:port" in issue.message
    issue = only_issue(MINIMAL.replace("127.0.0.1:8080", "127.0.0.1:99999"))
    assert issue.path == "listeners.inbound.address"
    assert "out of range" in issue.message


def test_wrong_types_and_ranges() -> None:
    issues = issues_of(MINIMAL + "workers: 0\ndrain_timeout: soon\n")
    assert [(i.path, i.line) for i in issues] == [("workers", 10), ("drain_timeout", 11)]
    assert issues[0].message == "must be >= 1, got 0"
    issue = only_issue(MINIMAL.replace('match: {path_prefix: "/"}', 'match: "/"'))
    assert issue.path == "routes[0].match"
    assert issue.message == "expected a mapping (key: value), got '/'"


def test_enum_values_are_listed() -> None:
    issue = only_issue(MINIMAL.replace('{address: "127.0.0.1:8080"}', "{forwarded: {mode: xff}}"))
    assert issue.path == "listeners.inbound.forwarded.mode"
    assert "'x-forwarded', 'forwarded' or 'off'" in issue.message
    assert "got 'xff'" in issue.message


def test_empty_lists_are_refused() -> None:
    assert only_issue(MINIMAL.replace('["127.0.0.1:3000"]', "[]")).message == "must not be empty"
    text = "upstreams:\n  app: {endpoints: ['127.0.0.1:3000']}\nroutes: []\n"
    assert only_issue(text).path == "routes"


def test_duplicate_keys_are_an_error() -> None:
    issue = only_issue(MINIMAL + "upstreams:\n  other: {endpoints: ['127.0.0.1:4000']}\n")
    assert issue.path == "upstreams"
    assert issue.line == 10
    assert "duplicate key 'upstreams' (first at line 4)" in issue.message


def test_duplicate_route_names() -> None:
    text = MINIMAL + "  - name: all\n    match: {path: /x}\n    upstream: app\n"
    issue = only_issue(text)
    assert issue.path == "routes[1].name"
    assert issue.line == 10
    assert "duplicate route name 'all' (also routes[0], line 7)" in issue.message


def test_header_edits_are_checked() -> None:
    text = with_route(
        """
        name: r
        match: {path: /}
        upstream: app
        headers: {request: {set: {Content-Length: "1", "bad name": x}, add: {X-A: "a\\nb"}}}
        """
    )
    by_path = {issue.path: issue.message for issue in issues_of(text)}
    assert "controls message framing" in by_path["routes[0].headers.request.set.Content-Length"]
    assert "invalid header name 'bad name'" in by_path["routes[0].headers.request.set['bad name']"]
    assert "CR, LF or NUL" in by_path["routes[0].headers.request.add.X-A"]


def test_rewrite_needs_exactly_one_kind_and_valid_groups() -> None:
    base = "name: r\nmatch: {path: /}\nupstream: app\nrewrite: "
    issue = only_issue(with_route(base + "{strip_prefix: /a, path: /b}"))
    assert issue.path == "routes[0].rewrite"
    assert "set exactly one of strip_prefix, path, regex" in issue.message
    issue = only_issue(with_route(base + "{regex: {pattern: '^/(a)', replacement: '/\\2'}}"))
    assert issue.path == "routes[0].rewrite.regex"
    assert "invalid replacement" in issue.message


def test_host_patterns() -> None:
    issue = only_issue(
        MINIMAL.replace('path_prefix: "/"', 'path_prefix: "/", hosts: ["api.example.com:443"]')
    )
    assert issue.path == "routes[0].match.hosts[0]"
    assert "must not include a port" in issue.message
    issue = only_issue(MINIMAL.replace('path_prefix: "/"', 'path_prefix: "/", hosts: ["a.*.com"]'))
    assert "*.example.com" in issue.message


def test_value_match_needs_exactly_one_kind() -> None:
    issue = only_issue(MINIMAL.replace('path_prefix: "/"', 'path_prefix: "/", headers: {x-a: {}}'))
    assert issue.path == "routes[0].match.headers.x-a"
    assert "set exactly one of exact, regex, present" in issue.message


def test_every_problem_is_reported_at_once() -> None:
    text = """\
    listeners:
      inbound: {address: "nowhere"}
    upstreams:
      app: {endpoints: ["127.0.0.1:3000"], balancer: random}
    routes:
      - name: a
        match: {path: "x"}
        upstream: nope
      - name: a
        match: {path_regex: "("}
        upstream: app
        filters: {no_such_filter: {}}
    """
    issues = issues_of(text)
    assert [(i.line, i.path) for i in issues] == [
        (2, "listeners.inbound.address"),
        (4, "upstreams.app.balancer"),
        (7, "routes[0].match.path"),
        (8, "routes[0].upstream"),
        (9, "routes[1].name"),
        (10, "routes[1].match.path_regex"),
        (12, "routes[1].filters.no_such_filter"),
    ]


# --- filters -----------------------------------------------------------------------------------


def test_unknown_filter_lists_known_filters() -> None:
    issue = only_issue(MINIMAL + "    filters: {maintenance: {}}\n")
    assert issue.path == "routes[0].filters.maintenance"
    assert issue.message.startswith("unknown filter 'maintenance'; known filters: ")
    assert "direct_response" in issue.message
    assert issue.line == 10


def test_filter_config_errors_have_the_full_path() -> None:
    routes = "".join(
        f"  - name: r{i}\n    match: {{path: /{i}}}\n    upstream: app\n" for i in range(2)
    )  # two good routes before the bad one
    bad = "  - name: down\n    match: {path: /down}\n    upstream: app\n"
    bad += "    filters:\n      direct_response: {status: 42, colour: red}\n"
    text = "upstreams:\n  app: {endpoints: ['127.0.0.1:3000']}\nroutes:\n" + routes + bad
    issues = {issue.path: issue for issue in issues_of(text)}
    status = issues["routes[2].filters.direct_response.status"]
    assert status.message == "must be >= 200, got 42"
    assert status.line == 14
    assert "unknown key 'colour'" in issues["routes[2].filters.direct_response.colour"].message


def test_filter_with_no_config_uses_its_defaults() -> None:
    loaded = load_config_text(MINIMAL + "    filters:\n      direct_response:\n", environ={})
    config = loaded.config.routes[0].filters["direct_response"]
    assert type(config).__name__ == "DirectResponseConfig"
    assert dataclasses.asdict(config)["status"] == 200


# --- the file itself ---------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.issues == [ConfigIssue("", "file not found")]
    assert info.value.source == str(tmp_path / "nope.yaml")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(MINIMAL.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.issues == [ConfigIssue("", "the file is not valid UTF-8 text", 10)]


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n"])
def test_empty_file(text: str) -> None:
    issue = only_issue(text)
    assert "the config is empty" in issue.message


def test_yaml_syntax_error_has_its_line() -> None:
    issue = only_issue(MINIMAL.replace("  admin:   {address", "  admin:   {address: [\n"))
    assert issue.message.startswith("YAML syntax error")
    assert issue.line is not None and issue.line >= 3


@pytest.mark.parametrize(("text", "found"), [("- a\n- b\n", "list"), ("just text\n", "str")])
def test_top_level_must_be_a_mapping(text: str, found: str) -> None:
    issue = only_issue(text)
    assert issue.message.endswith(f"found {found}")


def test_unsafe_yaml_tags_are_refused() -> None:
    issue = only_issue("!!python/object/apply:os.system ['true']\n")
    assert "YAML" in issue.message
    assert issue.line == 1


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Host", "match on the Host header with `hosts`"),
        ("Content-Length", "consumed by the HTTP layer and cannot be matched"),
        ("connection", "consumed by the HTTP layer and cannot be matched"),
    ],
)
def test_headers_that_cannot_be_matched(header: str, message: str) -> None:
    issue = only_issue(MINIMAL.replace('path_prefix: "/"', f'path_prefix: "/", headers: {{{header}: x}}'))
    assert issue.path == f"routes[0].match.headers.{header}"
    assert message in issue.message


def test_yaml_1_1_booleans_stay_strings_but_boolean_fields_accept_them() -> None:
    text = MINIMAL.replace('{address: "127.0.0.1:8080"}', "{forwarded: {trust_incoming: no}}")
    config = load_config_text(text + "    headers: {request: {set: {X-Debug: on}}}\n", environ={}).config
    assert config.listeners.inbound.forwarded.trust_incoming is False
    assert config.routes[0].headers.request.set == {"X-Debug": "on"}
