"""deploy/: every manifest, and what its kustomizations build, is one Kubernetes accepts, and
the pod it describes is the sidecar the issue asks for (probes, volumes, security, drain, ports).

Validated offline against the pinned Kubernetes schemas (``support.kubernetes``); the base's
sidecar is compared with what ``sidegate inject`` builds, so the two cannot drift apart.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from sidegate import __version__, cli
from sidegate.cache.env import map_size_for
from sidegate.config.load import load_config
from sidegate.inject import sidecar
from sidegate.inject.options import InjectOptions, Sizing
from support.kubernetes import ManifestError, containers, load_documents, pod_specs, render, validate

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"
CONFIG = BASE / "sidegate.yaml"
NOT_OBJECTS = {"kustomization.yaml", "sidecar-as-container.yaml", "sidegate.yaml"}  # kustomize inputs

Obj = dict[str, Any]


def _manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p.name not in NOT_OBJECTS)


def _by_kind(objects: list[Obj], kind: str) -> Obj:
    (found,) = [obj for obj in objects if obj["kind"] == kind]
    return found


def _sidegate(pod: Obj) -> Obj:
    (found,) = [c for c in containers(pod) if c["name"] == "sidegate"]
    return found


def _port(container: Obj, name_or_number: object) -> int:
    """A probe's or Service's port, resolved as the kubelet does (a name is a container port's)."""
    if isinstance(name_or_number, int):
        return name_or_number
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == name_or_number]
    return int(number)


def _base_sizing() -> Sizing:
    config = load_config(CONFIG).config
    return Sizing(cache_max_size=config.cache.max_size, drain_timeout=config.drain_timeout)


@pytest.fixture(scope="module")
def base() -> list[Obj]:
    return render(BASE)


@pytest.fixture(scope="module")
def classic() -> list[Obj]:
    return render(DEPLOY / "classic")


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_manifest_file_is_valid_kubernetes(path: Path) -> None:
    for doc in load_documents(path):
        for obj in doc.get("items", [doc]) if doc["kind"] == "List" else [doc]:
            validate(obj, f"{path.relative_to(ROOT)}: ")


@pytest.mark.parametrize("overlay", ["base", "classic"])
def test_what_each_kustomization_builds_is_valid_kubernetes(overlay: str) -> None:
    objects = render(DEPLOY / overlay)
    assert {obj["kind"] for obj in objects} == {"Deployment", "Service", "NetworkPolicy", "ConfigMap"}
    for obj in objects:
        validate(obj, f"deploy/{overlay}: ")


def test_validation_rejects_a_broken_manifest(base: list[Obj]) -> None:
    """The schema check is real: a misspelt field and a wrong type are both refused, by name."""
    misspelt = copy.deepcopy(_by_kind(base, "Deployment"))
    _sidegate(pod_specs(misspelt)[0])["restartPolicyy"] = "Always"
    with pytest.raises(ManifestError, match="restartPolicyy"):
        validate(misspelt)
    wrong_type = copy.deepcopy(_by_kind(base, "Deployment"))
    pod_specs(wrong_type)[0]["terminationGracePeriodSeconds"] = "thirty"
    with pytest.raises(ManifestError, match="terminationGracePeriodSeconds"):
        validate(wrong_type)


def test_the_config_in_the_config_map_is_one_sidegate_accepts(
    base: list[Obj], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_map = _by_kind(base, "ConfigMap")
    assert config_map["data"]["sidegate.yaml"] == CONFIG.read_text()
    path = tmp_path / "sidegate.yaml"
    path.write_text(config_map["data"]["sidegate.yaml"])
    assert cli.main(["validate", "--config", str(path)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"OK: {path}")
    pod = pod_specs(_by_kind(base, "Deployment"))[0]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "sidegate-config"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]  # the generated, hashed name


def test_sidegate_is_a_native_sidecar_the_app_waits_for(base: list[Obj]) -> None:
    pod = pod_specs(_by_kind(base, "Deployment"))[0]
    gate = pod["initContainers"][0]
    assert gate["name"] == "sidegate"
    assert gate["restartPolicy"] == "Always"
    assert gate["image"] == f"localhost/sidegate:{__version__}"
    assert gate["args"] == ["run", "--config", "/etc/sidegate/sidegate.yaml"]
    assert gate["startupProbe"]["httpGet"]["path"] == "/ready"
    assert gate["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert gate["livenessProbe"]["httpGet"]["path"] == "/live"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert _port(gate, gate[probe]["httpGet"]["port"]) == 9902
    assert "sidegate" not in [c["name"] for c in pod["containers"]]


def test_the_pod_shares_a_memory_cache_sized_from_the_config(base: list[Obj]) -> None:
    pod = pod_specs(_by_kind(base, "Deployment"))[0]
    gate, app = _sidegate(pod), pod["containers"][0]
    (cache,) = [v for v in pod["volumes"] if v["name"] == "sidegate-cache"]
    max_size = load_config(CONFIG).config.cache.max_size
    assert cache["emptyDir"] == {"medium": "Memory", "sizeLimit": f"{map_size_for(max_size) // 2**20}Mi"}
    mounts = {m["name"]: m for m in gate["volumeMounts"]}
    assert mounts["sidegate-cache"]["mountPath"] == "/var/cache/sidegate"
    assert {"name": "CACHE_DIR", "value": "/var/cache/sidegate"} in gate["env"]
    assert [m["mountPath"] for m in app["volumeMounts"] if m["name"] == "sidegate-cache"] == [
        "/var/cache/sidegate"
    ]
    assert pod["securityContext"]["fsGroup"] == 65532


def test_pod_facts_reach_sidegate_through_the_downward_api(base: list[Obj]) -> None:
    pod = pod_specs(_by_kind(base, "Deployment"))[0]
    gate = _sidegate(pod)
    fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in gate["env"] if "valueFrom" in e}
    assert fields["POD_NAME"] == "metadata.name"
    assert fields["POD_NAMESPACE"] == "metadata.namespace"
    assert fields["POD_IP"] == "status.podIP"
    (podinfo,) = [v for v in pod["volumes"] if v["name"] == "sidegate-podinfo"]
    assert {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}} in podinfo["downwardAPI"]["items"]
    mounts = {m["mountPath"]: m for m in gate["volumeMounts"]}
    assert mounts["/etc/podinfo"]["name"] == "sidegate-podinfo"  # labels at /etc/podinfo/labels
    assert mounts["/etc/sidegate"]["name"] == "sidegate-config"
    assert all("subPath" not in m for m in gate["volumeMounts"])  # a subPath mount never reloads


def test_sidegate_runs_locked_down_with_resources(base: list[Obj]) -> None:
    pod = pod_specs(_by_kind(base, "Deployment"))[0]
    gate = _sidegate(pod)
    context = gate["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == context["runAsGroup"] == 65532
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert set(gate["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(gate["resources"]["requests"]) & set(gate["resources"]["limits"])
    writable = {m["mountPath"] for m in gate["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/var/cache/sidegate", "/tmp"}
    (tmp,) = [v for v in pod["volumes"] if v["name"] == "sidegate-tmp"]
    assert "emptyDir" in tmp


def test_grace_period_covers_the_drain(base: list[Obj]) -> None:
    pod = pod_specs(_by_kind(base, "Deployment"))[0]
    config = load_config(CONFIG).config
    drain_delay = float(getattr(config, "drain_delay", 5.0))
    assert pod["terminationGracePeriodSeconds"] >= drain_delay + config.drain_timeout
    assert pod["terminationGracePeriodSeconds"] == _base_sizing().grace_seconds


def test_traffic_reaches_the_app_only_through_sidegate(base: list[Obj]) -> None:
    deployment = _by_kind(base, "Deployment")
    pod = pod_specs(deployment)[0]
    gate, app = _sidegate(pod), pod["containers"][0]
    service = _by_kind(base, "Service")
    assert service["spec"]["selector"].items() <= pod_template_labels(deployment).items()
    assert [_port(gate, p["targetPort"]) for p in service["spec"]["ports"]] == [8080]
    assert any("-listen=127.0.0.1:" in arg for arg in app["args"])  # the app on loopback only
    assert "ports" not in app
    policy = _by_kind(base, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_template_labels(deployment).items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert "from" not in rule  # from anywhere, but only to these ports
    assert sorted(p["port"] for p in rule["ports"]) == [8080, 9902]


def test_prometheus_scrapes_the_health_port_and_kubectl_defaults_to_the_app(base: list[Obj]) -> None:
    annotations = _by_kind(base, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9902",
        "prometheus.io/path": "/metrics",
        "kubectl.kubernetes.io/default-container": "app",
    }
    assert annotations.items() >= sidecar.pod_annotations(InjectOptions()).items()


def test_the_base_sidecar_is_what_inject_adds(base: list[Obj]) -> None:
    pod = pod_specs(_by_kind(base, "Deployment"))[0]
    options = InjectOptions(sizing=_base_sizing())
    assert _sidegate(pod) == sidecar.container(options)
    sidecar_volumes = [v for v in pod["volumes"] if v["name"].startswith("sidegate-")]
    expected = sidecar.volumes(options)
    expected[0]["configMap"]["name"] = _by_kind(base, "ConfigMap")["metadata"]["name"]
    assert sidecar_volumes == expected


def test_classic_runs_sidegate_first_among_the_containers(classic: list[Obj]) -> None:
    pod = pod_specs(_by_kind(classic, "Deployment"))[0]
    assert "initContainers" not in pod
    assert [c["name"] for c in pod["containers"]] == ["sidegate", "app"]
    assert pod["containers"][0] == sidecar.container(InjectOptions(mode="classic", sizing=_base_sizing()))


def pod_template_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels
