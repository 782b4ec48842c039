"""``sidegate inject`` as a user runs it, and the README's Kubernetes commands run as written.

The console script in a subprocess: stdin to stdout, files, exit codes, messages without a
traceback, no runtime imported; then every shell line of README "Running in Kubernetes" that
can run offline is run from a copy of ``deploy/``, and its output validated.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.gateway import SIDEGATE
from support.kubernetes import pod_specs, validate

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "deploy" / "examples" / "web.yaml"
NEEDS_A_CLUSTER = ("kubectl ", "curl ")


def sidegate(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SIDEGATE, *args], input=stdin, capture_output=True, text=True, timeout=30, check=False
    )


def test_stdin_to_stdout() -> None:
    result = sidegate("inject", "-", stdin=WEB.read_text())
    assert result.returncode == 0, result.stderr
    deployment, service = (doc for doc in yaml.safe_load_all(result.stdout))
    validate(deployment)
    assert pod_specs(deployment)[0]["initContainers"][0]["name"] == "sidegate"
    assert service == next(d for d in yaml.safe_load_all(WEB.read_text()) if d["kind"] == "Service")
    assert result.stderr.splitlines()[-1].startswith(
        "sidegate inject: 1 workload(s) injected, 0 already up to date"
    )
    assert "<stdin>:doc 1: deployment/web: advice: " in result.stderr


def test_output_file_and_a_second_run(tmp_path: Path) -> None:
    out = tmp_path / "out.yaml"
    assert sidegate("inject", str(WEB), "-o", str(out), "--mode", "classic").returncode == 0
    assert pod_specs(next(yaml.safe_load_all(out.read_text())))[0]["containers"][0]["name"] == "sidegate"
    again = sidegate("inject", str(out), "--mode", "classic")
    assert again.returncode == 0
    assert again.stdout == out.read_text()
    assert "0 workload(s) injected, 1 already up to date" in again.stderr


def test_a_refusal_writes_nothing_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(WEB.read_text().replace("      containers:", "      hostNetwork: true\n      containers:"))
    result = sidegate("inject", str(bad))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{bad}:doc 1: deployment/web: hostNetwork: true shares the node's network: Sidegate's ports would "
        "collide between pods and the app's 127.0.0.1 would be the node's; run it without hostNetwork",
        f"sidegate inject: nothing written: 1 problem(s) in {bad}",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.yaml"], "sidegate inject: missing.yaml: file not found"),
        ([str(ROOT / "deploy")], "is a directory"),
        (["--port", "0", str(WEB)], "--port 0: a port is 1 to 65535"),
        (["--port", "9902", str(WEB)], "two ports are the same"),
        (["--cpu", "lots", str(WEB)], "--cpu 'lots': not a Kubernetes quantity"),
        (["--config-map", "My_Map", str(WEB)], "--config-map 'My_Map': a ConfigMap name is lower-case"),
        (["--config", "nope.yaml", str(WEB)], "nope.yaml: file not found"),
    ],
    ids=["missing", "directory", "port-range", "same-ports", "quantity", "config-map", "config"],
)
def test_bad_input_is_a_message_not_a_traceback(args: list[str], message: str) -> None:
    result = sidegate("inject", *args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_an_invalid_sidegate_config_is_reported_as_validate_does(tmp_path: Path) -> None:
    config = tmp_path / "sidegate.yaml"
    config.write_text("upstreams: {app: {endpoints: ['127.0.0.1:1']}}\nroutes: []\n")
    result = sidegate("inject", "--config", str(config), str(WEB))
    assert result.returncode == 1
    assert f"{config}:2: routes:" in result.stderr
    assert f"fix the config first (sidegate validate --config {config})" in result.stderr


def test_a_usage_error_exits_2() -> None:
    result = sidegate("inject", "--mode", "sidecar", str(WEB))
    assert result.returncode == 2
    assert "invalid choice: 'sidecar'" in result.stderr


def test_inject_does_not_import_the_runtime() -> None:
    code = (
        "import sys\n"
        "from sidegate import cli\n"
        f"cli.main(['inject', {str(WEB)!r}, '-o', '/dev/null'])\n"
        "loaded = [m for m in ('asyncio', 'uvloop', 'httptools', 'sidegate.runtime') if m in sys.modules]\n"
        "sys.stderr.write('LOADED' + repr(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stderr.endswith("LOADED[]")


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Running in Kubernetes\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_the_readme_kubernetes_commands_run_as_written(tmp_path: Path) -> None:
    commands = _readme_commands()
    offline = [c for c in commands if not c.startswith(NEEDS_A_CLUSTER)]
    assert len(commands) - len(offline) <= 6, "keep the cluster-only lines few"
    assert len(offline) >= 4
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    env = {**os.environ, "PATH": f"{Path(SIDEGATE).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in offline:
        assert command.split()[0] in ("sidegate", "cat"), f"a README command this test cannot run: {command}"
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr
        for doc in yaml.safe_load_all(result.stdout) if "inject" in command and ">" not in command else []:
            validate(doc, f"{command}: ")
    for doc in yaml.safe_load_all((tmp_path / "web.yaml").read_text()):  # what the README applies
        validate(doc, "web.yaml: ")
