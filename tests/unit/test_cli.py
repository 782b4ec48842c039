"""The ``sidegate`` command line: validate, schema, version, usage errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sidegate import cli
from support.configs import MINIMAL

SIDEGATE = str(Path(sys.executable).parent / "sidegate")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sidegate.yaml"


def sidegate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SIDEGATE, *args], capture_output=True, text=True, timeout=30, check=False)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sidegate.yaml"
    path.write_text(text)
    return str(path)


def test_validate_minimal_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    result = sidegate("validate", "--config", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"OK: {path} (1 route, 1 upstream)\n"
    assert result.stderr == ""


def test_validate_the_example_config() -> None:
    result = sidegate("validate", "--config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"OK: {EXAMPLE} (")


def test_validate_reports_every_issue_with_file_line_path_and_fix(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("upstream: app", "upstream: ap").replace('"/"', '"api"'))
    result = sidegate("validate", "--config", path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}:8: routes[0].match.path_prefix: 'api' must start with '/' (e.g. '/api')",
        f"{path}:9: routes[0].upstream: unknown upstream 'ap'; known upstreams: app",
        f"{path}: 2 problems found",
    ]


def test_validate_unknown_filter_lists_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "    filters: {rate_limitt: {}}\n")
    result = sidegate("validate", "--config", path)
    assert result.returncode == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"{path}:10: routes[0].filters.rate_limitt: unknown filter 'rate_limitt'; known")
    assert "direct_response" in first


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the config is empty"),
        ("routes: [\n", "YAML syntax error"),
        ("- a\n", "the top level must be a mapping"),
    ],
)
def test_validate_broken_files_without_traceback(tmp_path: Path, text: str, expected: str) -> None:
    result = sidegate("validate", "--config", write(tmp_path, text))
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_missing_file(tmp_path: Path) -> None:
    result = sidegate("validate", "--config", str(tmp_path / "missing.yaml"))
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == f"{tmp_path / 'missing.yaml'}: file not found"


def test_validate_catches_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(path: str, *args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("sidegate.config.load.load_config", boom)
    assert cli.main(["validate", "--config", write(tmp_path, MINIMAL)]) == 1
    assert "cannot validate: RuntimeError: disk on fire" in capsys.readouterr().err


def test_validate_and_schema_do_not_import_the_runtime(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from sidegate import cli\n"
        f"cli.main(['validate', '--config', {write(tmp_path, MINIMAL)!r}])\n"
        "cli.main(['schema'])\n"
        "loaded = [m for m in ('asyncio', 'uvloop', 'httptools', 'sidegate.runtime') if m in sys.modules]\n"
        "sys.stderr.write(repr(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stderr == "[]"


def test_schema_is_json_schema_with_routes_and_filters() -> None:
    result = sidegate("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["type"] == "object"
    assert {"listeners", "upstreams", "routes", "workers", "drain_timeout"} <= set(schema["properties"])
    assert schema["properties"]["routes"]["description"]
    route = schema["$defs"]["Route"]
    assert route["additionalProperties"] is False
    filters = route["properties"]["filters"]
    assert "direct_response" in filters["properties"]
    assert filters["additionalProperties"] is False


def test_every_config_field_is_described() -> None:
    from sidegate.config.model import config_json_schema

    schema = config_json_schema()
    for name, definition in schema["$defs"].items():
        if not name.endswith("Config") and "properties" in definition:  # filter configs are theirs
            for field, spec in definition["properties"].items():
                assert spec.get("description"), f"{name}.{field} has no description"


def test_version() -> None:
    result = sidegate("version")
    assert (result.returncode, result.stdout) == (0, "sidegate 0.1.0, hot path compiled (mypyc)\n")


@pytest.mark.parametrize(
    "args", [[], ["frobnicate"], ["validate"], ["run"], ["run", "--config", "x", "--log-level", "loud"]]
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = sidegate(*args)
    assert result.returncode == 2
    assert "usage: sidegate" in result.stderr
