"""Per-version policy in a real gateway: a profile chosen by the pod's labels, switched by a relabel.

The labels file is written the way the kubelet writes a downward API volume (``..data`` symlink
swaps, :class:`~e2e.helpers.ConfigMapDir`), in the Go-quoted ``key="value"`` format. The base
config allows 3 requests a minute per client on ``/api``; the ``canary`` profile (``version: v2``)
allows 6 and marks every response ``X-Profile: canary``. Clients are told apart by a header, so a
count from before a relabel never blurs what the limit is after it.
"""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from e2e.helpers import ConfigMapDir, admin_json, metric, metrics, wait_until
from support.gateway import HOST, GatewayFactory, GatewayProcess

pytestmark = pytest.mark.timeout(60)

BASE_LIMIT, CANARY_LIMIT = 3, 6


def labels_text(version: str) -> str:
    return f'app="shop"\npod-template-hash="5d8f7c"\nversion="{version}"'


def start(
    gateway: GatewayFactory, tmp_path: Path, version: str | None, **top: Any
) -> tuple[GatewayProcess, ConfigMapDir]:
    """The gateway, with the labels file at ``version`` (None: no labels file yet)."""
    podinfo = ConfigMapDir(tmp_path / "podinfo", name="labels")
    podinfo.dir.mkdir()
    if version is not None:
        podinfo.write(labels_text(version))
    limit = {"requests": BASE_LIMIT, "per": "60s", "key": "header:X-Client"}
    routes: list[dict[str, Any]] = [
        {
            "name": "api",
            "match": {"path_prefix": "/api"},
            "upstream": "app",
            "filters": {"rate_limit": limit},
        },
        {"name": "all", "match": {"path_prefix": "/"}, "upstream": "app"},
    ]
    canary = {
        "name": "canary",
        "match": {"version": "v2"},
        "patch": {
            "routes": [
                {"name": "api", "filters": {"rate_limit": {"requests": CANARY_LIMIT}}},
                {"name": "all", "headers": {"response": {"set": {"X-Profile": "canary"}}}},
            ]
        },
    }
    gw = gateway(routes=routes, pod={"labels_file": str(podinfo.path)}, profiles=[canary], **top)
    return gw, podinfo


def get(gw: GatewayProcess, path: str, client: str = "") -> tuple[int, str | None]:
    conn = http.client.HTTPConnection(HOST, gw.port, timeout=5)
    try:
        conn.request("GET", path, headers={"X-Client": client} if client else {})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("X-Profile")
    finally:
        conn.close()


def allowed_before_429(gw: GatewayProcess, client: str) -> int:
    for sent in range(20):
        status, _ = get(gw, "/api/items", client)
        if status == 429:
            return sent
        assert status == 200, status
    raise AssertionError("no 429 after 20 requests")


def in_force(gw: GatewayProcess) -> list[str]:
    profiles: list[str] = admin_json(gw.admin_port, "/config_dump")["profiles"]["in_force"]
    return profiles


def test_the_labels_choose_the_profile_and_a_relabel_switches_it_live(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw, podinfo = start(gateway, tmp_path, "v1")
    dump = admin_json(gw.admin_port, "/config_dump")
    assert dump["profiles"] == {
        "in_force": [],
        "defined": ["canary"],
        "labels": {"app": "shop", "pod-template-hash": "5d8f7c", "version": "v1"},
        "labels_from": f"file {podinfo.path}",
    }
    assert allowed_before_429(gw, "a") == BASE_LIMIT
    assert get(gw, "/") == (200, None)

    # `kubectl label pod ... version=v2 --overwrite`: the kubelet swaps the volume's ..data.
    # Steady traffic meanwhile: not one request may fail, and the header switches mid-stream.
    stop, seen, failures, sent = threading.Event(), set(), [], [0]

    def steady() -> None:
        while not stop.is_set():
            try:
                status, profile = get(gw, "/steady")
                sent[0] += 1
                seen.add(profile)
                if status != 200:
                    failures.append(status)
            except OSError as exc:
                failures.append(repr(exc))

    sender = threading.Thread(target=steady)
    sender.start()
    try:
        wait_until(lambda: len(seen) > 0, 5, what="steady traffic")
        relabelled = time.monotonic()
        podinfo.write(labels_text("v2"))
        wait_until(lambda: in_force(gw) == ["canary"], 5, what="the canary profile after the relabel")
        wait_until(lambda: "canary" in seen, 5, what="a response of the canary profile")
        print(f"\nrelabel to canary served after {time.monotonic() - relabelled:.3f} s")
    finally:
        stop.set()
        sender.join(10)
    assert failures == [], f"{len(failures)} of {sent[0]} requests failed"
    assert seen == {None, "canary"}
    assert gw.proc.poll() is None  # reloaded, not restarted
    assert metric(metrics(gw.admin_port), "sidegate_config_reloads_total", result="ok") == 1
    assert allowed_before_429(gw, "b") == CANARY_LIMIT
    assert "profiles in force: canary" in gw.log()

    podinfo.write(labels_text("v3"))  # and back to the base when the labels no longer match
    wait_until(lambda: in_force(gw) == [], 5, what="the base config after a second relabel")
    assert get(gw, "/") == (200, None)
    assert allowed_before_429(gw, "c") == BASE_LIMIT


def test_a_pod_started_with_matching_labels_runs_the_profile_from_the_start(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw, _ = start(gateway, tmp_path, "v2")
    assert in_force(gw) == ["canary"]
    assert get(gw, "/") == (200, "canary")
    assert allowed_before_429(gw, "a") == CANARY_LIMIT


def test_malformed_labels_on_relabel_keep_the_running_profile(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw, podinfo = start(gateway, tmp_path, "v2")
    podinfo.write("version v1\n")
    wait_until(
        lambda: metric(metrics(gw.admin_port), "sidegate_config_reloads_total", result="failed") == 1,
        5,
        what="the rejected reload",
    )
    dump = admin_json(gw.admin_port, "/config_dump")
    assert "pod.labels_file" in dump["last_reload"]["error"]
    assert "line 1 is 'version v1', not key=\"value\"" in dump["last_reload"]["error"]
    assert dump["profiles"]["in_force"] == ["canary"]
    assert get(gw, "/") == (200, "canary")


def test_with_workers_the_supervisor_watches_the_labels_and_every_worker_switches(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw, podinfo = start(gateway, tmp_path, "v1", workers=2)
    assert get(gw, "/") == (200, None)
    podinfo.write(labels_text("v2"))
    wait_until(lambda: in_force(gw) == ["canary"], 5, what="the canary profile after the relabel")
    # Every request on a new connection, so the kernel spreads them over both workers.
    assert {get(gw, "/")[1] for _ in range(20)} == {"canary"}


def test_without_the_labels_file_the_base_runs_with_a_warning_until_it_appears(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw, podinfo = start(gateway, tmp_path, None)
    assert f"the labels file {podinfo.path} does not exist: no profile applies" in gw.log()
    assert admin_json(gw.admin_port, "/config_dump")["profiles"]["labels"] is None
    assert get(gw, "/") == (200, None)
    podinfo.write(labels_text("v2"))  # the volume is mounted late (or the path is fixed)
    wait_until(lambda: in_force(gw) == ["canary"], 5, what="the canary profile once the labels exist")
    assert get(gw, "/") == (200, "canary")
