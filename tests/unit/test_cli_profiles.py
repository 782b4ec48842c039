"""``sidegate validate`` on a config with ``profiles:``: every config a pod may run, or one pod's."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidegate import cli
from support.configs import MINIMAL

PROFILES = """\
  - name: canary
    match: {version: [v2, v3]}
    patch:
      routes:
        - name: all
          headers: {response: {set: {X-Profile: canary}}}
  - name: eu
    match: {zone: eu}
    patch:
      cache: {max_size: 100MiB}
"""
BROKEN = """\
  - name: canary
    match: {version: v2}
    patch:
      routes:
        - name: all
          upstream: nowhere
"""


def write(tmp_path: Path, profiles: str) -> str:
    path = tmp_path / "sidegate.yaml"
    path.write_text(MINIMAL + "profiles:\n" + profiles)
    return str(path)


def validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["validate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_by_default_the_base_and_each_profile_are_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, PROFILES)
    assert validate(capsys, "--config", path) == (
        0,
        f"OK: {path} (1 route, 1 upstream; profiles checked: canary, eu)\n",
        "",  # no labels are read, so no warning about a labels file CI does not have
    )


def test_a_broken_profile_fails_ci_even_though_no_pod_here_runs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, BROKEN)
    code, out, err = validate(capsys, "--config", path)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"{path}:11: profiles[0]: a pod labelled version=v2 would run an invalid config: "
        "its problems are listed here",
        f"{path}:16: routes[0].upstream: unknown upstream 'nowhere'; known upstreams: app "
        "(set by profile 'canary')",
        f"{path}: 2 problems found",
    ]


def test_labels_check_what_that_pod_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, PROFILES)
    assert validate(capsys, "--config", path, "--labels", "version=v3,zone=eu") == (
        0,
        f"OK: {path} (1 route, 1 upstream; labels version=v3,zone=eu: profiles in force: canary, eu)\n",
        "",
    )
    out = validate(capsys, "--config", path, "--labels", "version=v1")[1]
    assert out == f"OK: {path} (1 route, 1 upstream; labels version=v1: no profile in force)\n"


def test_labels_that_select_no_broken_profile_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, BROKEN)
    assert validate(capsys, "--config", path, "--labels", "version=v1")[0] == 0
    assert validate(capsys, "--config", path, "--labels", "version=v2")[0] == 1


def test_a_downward_api_labels_file_checks_this_pod(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, PROFILES)
    labels = tmp_path / "labels"
    labels.write_text('app="shop"\nversion="v2"')
    code, out, _ = validate(capsys, "--config", path, "--labels-file", str(labels))
    assert (code, out) == (
        0,
        f"OK: {path} (1 route, 1 upstream; labels app=shop,version=v2: profiles in force: canary)\n",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--labels", "version"], "--labels: 'version' is not key=value (write key=value,key2=value2)"),
        (
            ["--labels-file", "/nonexistent/labels"],
            "/nonexistent/labels: cannot read the labels file: No such file",
        ),
    ],
)
def test_unreadable_labels_are_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = validate(capsys, "--config", write(tmp_path, PROFILES), *args)
    assert code == 1
    assert err.startswith(message)
    assert "Traceback" not in err


def test_labels_and_a_labels_file_are_one_or_the_other(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["validate", "--config", write(tmp_path, PROFILES), "--labels", "a=b", "--labels-file", "x"])
    assert info.value.code == 2


def test_a_config_without_profiles_says_nothing_about_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(MINIMAL)
    assert (
        validate(capsys, "--config", str(path), "--labels", "version=v2")[1]
        == f"OK: {path} (1 route, 1 upstream)\n"
    )


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "profiles.yaml"


@pytest.mark.parametrize(
    ("labels", "summary"),
    [
        ([], "2 routes, 1 upstream; profiles checked: canary, drain-legacy"),
        (["--labels", "version=v2"], "3 routes, 1 upstream; labels version=v2: profiles in force: canary"),
        (
            ["--labels", "version=v2,track=legacy"],
            "2 routes, 1 upstream; labels version=v2,track=legacy: profiles in force: canary, drain-legacy",
        ),
    ],
)
def test_the_readmes_commands_on_the_example(
    capsys: pytest.CaptureFixture[str], labels: list[str], summary: str
) -> None:
    code = cli.main(["validate", "--config", str(EXAMPLE), *labels])
    assert (code, capsys.readouterr().out) == (0, f"OK: {EXAMPLE} ({summary})\n")
