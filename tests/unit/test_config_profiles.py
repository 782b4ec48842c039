"""``profiles:``: which ones a pod's labels select, how a patch merges, and what a mistake shows."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from sidegate.config.check import normalise
from sidegate.config.load import LoadedConfig, load_config, load_config_text
from sidegate.errors import ConfigError, ConfigIssue

BASE = """\
pod: {labels_env: POD_LABELS}
upstreams:
  app: {endpoints: ["127.0.0.1:3000"]}
  old: {endpoints: ["127.0.0.1:3001"]}
routes:
  - name: api
    match: {path_prefix: "/api"}
    upstream: app
    headers: {response: {set: {X-Track: stable}}}
    filters:
      rate_limit: {requests: 10, per: 1s}
      cors: {origins: ["https://shop.example"]}
  - name: legacy
    match: {path_prefix: "/legacy"}
    upstream: old
  - name: all
    match: {path_prefix: "/"}
    upstream: app
consumers:
  - {name: alice, api_keys: [key-alice-0123456789]}
"""


def load(profiles: str, labels: str | None = "version=v2", base: str = BASE) -> LoadedConfig:
    text = base + "profiles:\n" + textwrap.indent(textwrap.dedent(profiles), "  ")
    environ = {} if labels is None else {"POD_LABELS": labels}
    return load_config_text(text, "test.yaml", environ)


def issues_of(profiles: str, labels: str | None = "version=v2") -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load(profiles, labels)
    return info.value.issues


def routes(loaded: LoadedConfig) -> list[str]:
    return [route.name for route in loaded.config.routes]


def filters_of(loaded: LoadedConfig, route: str) -> dict[str, Any]:
    config = normalise(loaded).config
    return next(r["filters"] for r in config["routes"] if r["name"] == route)


CANARY = """\
- name: canary
  match: {version: v2}
  patch:
    routes:
      - name: api
        filters:
          rate_limit: {requests: 3}
"""


# --- which profiles apply ----------------------------------------------------------------------


def test_a_matching_profile_changes_one_routes_limit_and_nothing_else() -> None:
    loaded = load(CANARY)
    assert loaded.profiles.in_force == ("canary",)
    assert loaded.profiles.labels == {"version": "v2"}
    assert routes(loaded) == ["api", "legacy", "all"]
    api = filters_of(loaded, "api")
    assert api["rate_limit"]["requests"] == 3  # patched...
    assert api["rate_limit"]["per"] == "1s"  # ...key by key: the rest of the limit is the base's
    assert api["cors"]["origins"] == ["https://shop.example"]  # a sibling filter untouched
    assert list(api) == ["rate_limit", "cors"]  # the chain keeps its order
    assert loaded.config.routes[0].headers.response.set == {"X-Track": "stable"}


def test_labels_that_do_not_match_run_the_base() -> None:
    loaded = load(CANARY, labels="version=v1")
    assert loaded.profiles.in_force == ()
    assert filters_of(loaded, "api")["rate_limit"]["requests"] == 10


def test_every_listed_label_must_match_and_a_list_accepts_any_of_its_values() -> None:
    profile = """\
    - name: eu-canary
      match: {version: [v2, v3], zone: eu}
      patch: {routes: [{name: api, filters: {rate_limit: {requests: 3}}}]}
    """
    assert load(profile, "version=v3,zone=eu").profiles.in_force == ("eu-canary",)
    assert load(profile, "version=v2,zone=eu,extra=1").profiles.in_force == ("eu-canary",)
    assert load(profile, "version=v2").profiles.in_force == ()  # zone missing
    assert load(profile, "version=v4,zone=eu").profiles.in_force == ()


def test_several_matching_profiles_apply_in_the_order_written() -> None:
    profiles = """\
    - name: canary
      match: {version: v2}
      patch: {routes: [{name: api, filters: {rate_limit: {requests: 3}}}]}
    - name: eu
      match: {zone: eu}
      patch: {routes: [{name: api, filters: {rate_limit: {requests: 7, per: 2s}}}]}
    """
    loaded = load(profiles, "version=v2,zone=eu")
    assert loaded.profiles.in_force == ("canary", "eu")
    limit = filters_of(loaded, "api")["rate_limit"]
    assert (limit["requests"], limit["per"]) == (7, "2s")  # the later one wins where both speak


def test_yaml_numbers_in_match_compare_as_label_text() -> None:
    profile = "- {name: two, match: {major: 2}, patch: {cache: {max_size: 200MiB}}}\n"
    assert load(profile, "major=2").profiles.in_force == ("two",)


# --- how a patch merges ------------------------------------------------------------------------


def test_a_new_route_goes_at_the_end_or_before_the_route_named() -> None:
    new = "{name: beta, match: {path_prefix: /beta}, upstream: app%s}"
    at_end = load(f"- {{name: c, match: {{version: v2}}, patch: {{routes: [{new % ''}]}}}}\n")
    assert routes(at_end) == ["api", "legacy", "all", "beta"]
    before = load(f"- {{name: c, match: {{version: v2}}, patch: {{routes: [{new % ', $before: all'}]}}}}\n")
    assert routes(before) == ["api", "legacy", "beta", "all"]  # reachable before the catch-all


def test_patch_delete_removes_a_named_item_and_null_removes_a_key() -> None:
    profile = """\
    - name: c
      match: {version: v2}
      patch:
        routes:
          - {name: legacy, $patch: delete}
          - name: api
            filters: {cors: null}
            headers: null
        upstreams: {old: null}
    """
    loaded = load(profile)
    assert routes(loaded) == ["api", "all"]
    assert list(filters_of(loaded, "api")) == ["rate_limit"]
    assert loaded.config.routes[0].headers.response.set == {}  # back to the default
    assert sorted(loaded.config.upstreams) == ["app"]


def test_patch_replace_replaces_a_route_whole() -> None:
    profile = """\
    - name: c
      match: {version: v2}
      patch:
        routes:
          - {name: api, $patch: replace, match: {path_prefix: /v2}, upstream: app}
    """
    loaded = load(profile)
    assert routes(loaded) == ["api", "legacy", "all"]
    assert filters_of(loaded, "api") == {}  # nothing of the base's route is left
    assert loaded.config.routes[0].match.path_prefix == "/v2"


def test_consumers_merge_by_name_and_other_lists_are_replaced() -> None:
    profile = """\
    - name: c
      match: {version: v2}
      patch:
        consumers: [{name: bob, api_keys: [key-bob-0123456789]}]
        upstreams: {app: {endpoints: ["127.0.0.1:4000"]}}
    """
    loaded = load(profile)
    assert [c.name for c in loaded.config.consumers] == ["alice", "bob"]
    assert [str(e) for e in normalise(loaded).config["upstreams"]["app"]["endpoints"]] == ["127.0.0.1:4000"]


# --- mistakes: the merged config is validated as a whole, errors point at the profile ----------


def test_a_bad_value_from_a_profile_is_reported_at_the_profiles_line() -> None:
    issues = issues_of(
        """\
        - name: canary
          match: {version: v2}
          patch:
            routes:
              - name: api
                filters:
                  rate_limit: {requests: 0}
        """
    )
    assert len(issues) == 1, issues
    issue = issues[0]
    assert issue.path == "routes[0].filters.rate_limit.requests"  # where it lands in the merged config
    assert issue.line == BASE.count("\n") + 8  # the profile's line, not the base's
    assert issue.message.endswith("(set by profile 'canary')")


def test_an_error_names_the_profile_that_set_the_value_when_several_apply() -> None:
    profiles = """\
    - name: canary
      match: {version: v2}
      patch: {routes: [{name: all, upstream: nowhere}]}
    - name: eu
      match: {zone: eu}
      patch: {routes: [{name: legacy, $patch: delete}]}
    """
    with pytest.raises(ConfigError) as info:
        load(profiles, "version=v2,zone=eu")
    [issue] = info.value.issues
    assert issue.path == "routes[1].upstream"  # "all" moved up when "eu" deleted "legacy"
    assert issue.message.endswith("(set by profile 'canary')")
    assert issue.line == BASE.count("\n") + 4


def test_the_merged_config_is_checked_across_the_file() -> None:
    issues = issues_of("- {name: c, match: {version: v2}, patch: {upstreams: {app: null}}}\n")
    assert {issue.path for issue in issues} == {"routes[0].upstream", "routes[2].upstream"}
    assert all("unknown upstream 'app'" in issue.message for issue in issues)


def test_a_profile_that_does_not_match_is_not_in_the_running_config() -> None:
    # A broken profile for another version does not stop this pod: `sidegate validate` checks it.
    bad = "- {name: c, match: {version: v2}, patch: {routes: [{name: api, upstream: nope}]}}\n"
    assert load(bad, "version=v1").profiles.in_force == ()


@pytest.mark.parametrize(
    ("profiles", "path", "message"),
    [
        (
            "- {name: c, match: {version: v2}, patch: {pod: {labels_env: X}}}\n",
            "profiles[0].patch",
            "cannot patch `pod`",
        ),
        ("- {name: c, match: {}, patch: {}}\n", "profiles[0].match", "must not be empty"),
        ("- {name: c, patch: {}}\n", "profiles[0].match", "required key `match` is missing"),
        (
            "- {name: c, match: {version: v2}, patch: {routes: [{upstream: app}]}}\n",
            "profiles[0].patch.routes[0]",
            "needs a `name`",
        ),
        (
            "- {name: c, match: {version: v2}, patch: {routes: [{name: gone, $patch: delete}]}}\n",
            "profiles[0].patch.routes[0]['$patch']",
            "deletes routes 'gone', which is not in the config",
        ),
        (
            "- {name: c, match: {version: v2}, patch: {routes: [{name: x, $before: nowhere}]}}\n",
            "profiles[0].patch.routes[0]['$before']",
            "`$before: nowhere` names no item; known: api, legacy, all",
        ),
        (
            "- {name: c, match: {version: v2}, patch: {cache: {$patch: merge}}}\n",
            "profiles[0].patch.cache['$patch']",
            "is not a directive here; use one of: replace",
        ),
        (
            "- {name: c, match: {version: v2}, patch: {$patch: replace, routes: []}}\n",
            "profiles[0].patch['$patch']",
            "cannot replace or delete it whole",
        ),
        (
            "- {name: c, match: {version: 'v2 beta'}}\n",
            "profiles[0].match.version",
            "'v2 beta' can never be a label's value",
        ),
        (
            "- {name: c, match: {'app version': v2}}\n",
            "profiles[0].match['app version']",
            "'app version' is not a Kubernetes label key",
        ),
        (
            "- {name: c, match: {version: v2}}\n- {name: c, match: {version: v3}}\n",
            "profiles[1].name",
            "'c' is also profiles[0]; profile names are unique",
        ),
    ],
)
def test_mistakes_in_profiles_name_the_key_and_the_fix(profiles: str, path: str, message: str) -> None:
    found = {(issue.path, issue.message) for issue in issues_of(profiles)}
    assert any(p == path and message in m for p, m in found), found


# --- the labels source -------------------------------------------------------------------------


def test_labels_come_from_the_downward_api_file(tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.write_text('app="shop"\nversion="v2"')
    base = BASE.replace("pod: {labels_env: POD_LABELS}", f"pod: {{labels_file: {labels}}}")
    loaded = load(CANARY, labels=None, base=base)
    assert loaded.profiles.in_force == ("canary",)
    assert loaded.profiles.labels == {"app": "shop", "version": "v2"}
    assert loaded.profiles.labels_from == f"file {labels}"


def test_a_missing_labels_file_is_a_warning_and_the_base_runs(tmp_path: Path) -> None:
    missing = tmp_path / "podinfo" / "labels"
    base = BASE.replace("pod: {labels_env: POD_LABELS}", f"pod: {{labels_file: {missing}}}")
    loaded = load(CANARY, labels=None, base=base)
    assert loaded.profiles.in_force == ()
    [warning] = loaded.warnings
    assert warning.path == "pod.labels_file"
    assert f"the labels file {missing} does not exist: no profile applies" in warning.message


def test_an_unset_labels_variable_is_a_warning_and_the_base_runs() -> None:
    loaded = load(CANARY, labels=None)
    assert loaded.profiles.in_force == ()
    assert [w.path for w in loaded.warnings] == ["pod.labels_env"]


def test_malformed_labels_are_an_error_naming_the_source(tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.write_text("version v2\n")
    base = BASE.replace("pod: {labels_env: POD_LABELS}", f"pod: {{labels_file: {labels}}}")
    with pytest.raises(ConfigError) as info:
        load(CANARY, labels=None, base=base)
    [issue] = info.value.issues
    assert issue.path == "pod.labels_file"
    assert "line 1 is 'version v2', not key=\"value\"" in issue.message
    assert issue.line == 1


def test_without_profiles_no_labels_are_read(tmp_path: Path) -> None:
    path = tmp_path / "sidegate.yaml"
    path.write_text(BASE.replace("pod: {labels_env: POD_LABELS}", "pod: {labels_file: /nonexistent/labels}"))
    loaded = load_config(path, {})
    assert loaded.warnings == ()
    assert normalise(loaded).config["pod"]["labels"] is None


def test_labels_given_override_the_source_as_validate_labels_does() -> None:
    text = BASE + "profiles:\n" + textwrap.indent(CANARY, "  ")
    loaded = load_config_text(text, "test.yaml", {}, labels={"version": "v2"})
    assert loaded.profiles.in_force == ("canary",)
    assert loaded.profiles.labels_from == "--labels"


def test_the_normalised_config_says_what_is_in_force() -> None:
    pod = normalise(load(CANARY)).config["pod"]
    assert pod["profiles_in_force"] == ["canary"]
    assert pod["labels"] == {"version": "v2"}
    assert pod["labels_from"] == "env POD_LABELS"
