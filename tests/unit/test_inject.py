"""``sidegate inject`` on YAML streams: what a user applying its output would notice.

Properties of the result, not a frozen text: the sidecar where the mode puts it, output that
Kubernetes accepts, twice equal to once, other documents byte for byte, comments kept, refusals
that name the document and the fix, and advice that points at Sidegate's ports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidegate.inject.options import InjectOptions, Sizing
from sidegate.inject.stream import Result, inject_text
from support.kubernetes import containers, pod_specs, validate

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"

Obj = dict[str, Any]

DEPLOYMENT = """\
# the web tier
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web   # keep this name
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: app
          image: "registry.example/web:1.2"   # pinned
          ports:
            - containerPort: 3000
"""
SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
    - port: 80
      targetPort: 3000    # the app's port
"""


WAIT_READY = ["sidegate", "wait-ready", "--url", "http://127.0.0.1:9902/ready"]


def inject(text: str, source: str = "in.yaml", **options: Any) -> Result:
    return inject_text(text, source, InjectOptions(**options))


def objects(text: str) -> list[Obj]:
    out: list[Obj] = []
    for doc in yaml.safe_load_all(text):
        if doc is not None:
            out += doc["items"] if doc["kind"] == "List" else [doc]
    return out


def sidegate_of(obj: Obj) -> tuple[str, int, Obj]:
    """Where the sidecar is in the workload's pod: the list, its index, the container."""
    pod = pod_specs(obj)[0]
    found = [
        (key, i, c)
        for key in ("initContainers", "containers")
        for i, c in enumerate(pod.get(key, []))
        if c["name"] == "sidegate"
    ]
    assert len(found) == 1, found
    return found[0]


def ok(result: Result) -> str:
    assert not result.errors, result.errors
    return result.text


@pytest.mark.parametrize("mode", ["native", "classic"])
@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_injected_is_valid_kubernetes(example: Path, mode: str) -> None:
    out = ok(inject(example.read_text(), str(example), mode=mode))
    workloads = [obj for obj in objects(out) if pod_specs(obj)]
    assert workloads
    for obj in objects(out):
        validate(obj, f"{example.name} ({mode}): ")
    for obj in workloads:
        key, index, gate = sidegate_of(obj)
        assert (key, index) == (("initContainers", 0) if mode == "native" else ("containers", 0))
        assert ("restartPolicy" in gate) == (mode == "native")
        hook = gate.get("lifecycle", {}).get("postStart", {}).get("exec", {}).get("command")
        assert hook == (None if mode == "native" else [*WAIT_READY, "--timeout", "120s"])
        assert gate["startupProbe"]["httpGet"] == {"path": "/ready", "port": "health"}


def test_injecting_twice_equals_injecting_once() -> None:
    for mode in ("native", "classic"):
        for text in [
            DEPLOYMENT + "---\n" + SERVICE,
            *(p.read_text() for p in sorted(EXAMPLES.glob("*.yaml"))),
        ]:
            once = ok(inject(text, mode=mode))
            twice = inject(once, mode=mode)
            assert ok(twice) == once
            assert twice.injected == 0 and twice.unchanged >= 1


def test_other_documents_and_fields_are_left_as_they_were() -> None:
    text = DEPLOYMENT + "---\n" + SERVICE
    out = ok(inject(text))
    assert out.endswith("---\n" + SERVICE)  # the Service, byte for byte
    assert out.startswith("# the web tier\napiVersion: apps/v1\nkind: Deployment\n")
    assert "  name: web   # keep this name\n" in out
    assert 'image: "registry.example/web:1.2"   # pinned' in out  # comment and quoting kept
    (deployment, service) = objects(out)
    original = objects(text)[0]
    assert deployment["metadata"] == original["metadata"]
    assert deployment["spec"]["selector"] == original["spec"]["selector"]
    (app,) = [c for c in pod_specs(deployment)[0]["containers"] if c["name"] == "app"]
    assert app == original["spec"]["template"]["spec"]["containers"][0]  # the app's container untouched
    assert service == objects(SERVICE)[0]


def test_indentation_of_the_document_is_kept() -> None:
    flush = DEPLOYMENT.replace("        - name: app", "      - name: app").replace("          ", "        ")
    flush = flush.replace("            - containerPort", "          - containerPort")
    out = ok(inject(flush))
    assert "      containers:\n      - name: app\n" in out
    assert "      initContainers:\n      - name: sidegate\n" in out


def test_a_stream_without_workloads_comes_back_unchanged() -> None:
    text = "# only a service\n" + SERVICE + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"
    result = inject(text)
    assert ok(result) == text
    assert result.injected == result.unchanged == 0


def test_an_update_keeps_what_the_user_added_to_the_sidecar() -> None:
    once = ok(inject(DEPLOYMENT, image="registry.example/sidegate:0.1.0"))
    tuned = once.replace(
        "            - name: CACHE_DIR\n",
        "            - name: EXTRA\n              value: kept\n            - name: CACHE_DIR\n",
    )
    again = objects(ok(inject(tuned, image="registry.example/sidegate:0.2.0")))[0]
    _, _, gate = sidegate_of(again)
    assert gate["image"] == "registry.example/sidegate:0.2.0"
    assert {"name": "EXTRA", "value": "kept"} in gate["env"]
    assert [e["name"] for e in gate["env"]].count("CACHE_DIR") == 1


def test_switching_mode_moves_the_sidecar() -> None:
    native = ok(inject(DEPLOYMENT))
    classic = objects(ok(inject(native, mode="classic")))[0]
    pod = pod_specs(classic)[0]
    assert "initContainers" not in pod
    assert [c["name"] for c in pod["containers"]] == ["sidegate", "app"]
    assert "restartPolicy" not in pod["containers"][0]
    back = objects(ok(inject(ok(inject(native, mode="classic")))))[0]
    assert sidegate_of(back)[:2] == ("initContainers", 0)


def test_options_reach_the_sidecar() -> None:
    out = objects(
        ok(
            inject(
                DEPLOYMENT,
                image="registry.example/sidegate:9",
                config_map="web-gateway",
                port=18080,
                health_port=19902,
                cpu_request="250m",
                memory_request="200Mi",
                memory_limit="1Gi",
            )
        )
    )[0]
    pod = pod_specs(out)[0]
    _, _, gate = sidegate_of(out)
    assert gate["image"] == "registry.example/sidegate:9"
    assert {p["name"]: p["containerPort"] for p in gate["ports"]} == {"http": 18080, "health": 19902}
    assert gate["resources"] == {
        "requests": {"cpu": "250m", "memory": "200Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    (config,) = [v for v in pod["volumes"] if v["name"] == "sidegate-config"]
    assert config["configMap"]["name"] == "web-gateway"
    assert out["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "19902"


def test_config_sizes_the_cache_and_the_grace_period() -> None:
    sizing = Sizing(cache_max_size=1024 * 2**20, drain_delay=10.0, drain_timeout=60.0)
    result = inject(DEPLOYMENT, sizing=sizing)
    out = objects(ok(result))[0]
    pod = pod_specs(out)[0]
    (cache,) = [v for v in pod["volumes"] if v["name"] == "sidegate-cache"]
    assert cache["emptyDir"] == {"medium": "Memory", "sizeLimit": "2048Mi"}  # the LMDB map: 2 x max_size
    assert sidegate_of(out)[2]["resources"]["limits"]["memory"] == "1280Mi"  # 256Mi + the cache
    assert pod["terminationGracePeriodSeconds"] == 75  # 10 s + 60 s, and 5 s for the app to stop
    assert any("terminationGracePeriodSeconds raised from 30 to 75" in line for line in result.advice)


def test_a_long_enough_grace_period_is_left_alone() -> None:
    text = DEPLOYMENT.replace(
        "      containers:", "      terminationGracePeriodSeconds: 120\n      containers:"
    )
    out = objects(ok(inject(text)))[0]
    assert pod_specs(out)[0]["terminationGracePeriodSeconds"] == 120


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("      containers:", "      hostNetwork: true\n      containers:"),
            "hostNetwork: true shares the node's network",
        ),
        (("containerPort: 3000", "containerPort: 8080"), "declares port 8080, Sidegate's inbound port"),
        (("containerPort: 3000", "containerPort: 9902"), "declares port 9902, Sidegate's health port"),
        (
            ("containerPort: 3000", "containerPort: 9901"),
            "declares port 9901, Sidegate's admin (loopback) port",
        ),
        (
            ("containerPort: 3000", "containerPort: 3000\n              name: http"),
            "rename it (e.g. 'app-http')",
        ),
        (("kind: Deployment", "kind: Rollout"), "kind Rollout is not one sidegate inject knows"),
    ],
    ids=["hostNetwork", "inbound-port", "health-port", "admin-port", "port-name", "unknown-kind"],
)
def test_what_cannot_work_is_refused_and_nothing_is_written(edit: tuple[str, str], message: str) -> None:
    text = SERVICE + "---\n" + DEPLOYMENT.replace(*edit)
    result = inject(text, "app.yaml")
    assert result.text == ""
    (error,) = result.errors
    assert error.startswith(f"app.yaml:doc 2: {'rollout' if 'Rollout' in message else 'deployment'}/web: ")
    assert message in error


def test_a_yaml_syntax_error_names_the_line() -> None:
    result = inject(DEPLOYMENT + "---\nkind: [\n", "bad.yaml")
    assert result.text == ""
    (error,) = result.errors
    assert error.startswith("bad.yaml: line ") and "YAML syntax error" in error


def test_a_workload_without_containers_is_refused() -> None:
    text = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec: {template: {spec: {}}}"
    (error,) = inject(text).errors
    assert error.startswith("in.yaml:doc 1: job/j: no containers at spec.template.spec.containers")


def test_a_service_aimed_at_the_app_gets_advice() -> None:
    result = inject(DEPLOYMENT + "---\n" + SERVICE)
    advice = [line for line in result.advice if line.startswith("in.yaml:doc 2: service/web: advice:")]
    assert len(advice) == 1
    assert "targets 3000, container app of deployment/web" in advice[0]
    assert "set targetPort: http (Sidegate's 8080)" in advice[0]
    aimed_right = inject(DEPLOYMENT + "---\n" + SERVICE.replace("targetPort: 3000", "targetPort: http"))
    assert not [line for line in aimed_right.advice if "service/web" in line]


def test_the_app_probes_and_port_get_advice() -> None:
    text = DEPLOYMENT.replace(
        "          ports:", "          readinessProbe: {httpGet: {path: /h, port: 3000}}\n          ports:"
    )
    advice = inject(text, app_port=3000).advice
    assert any("readinessProbe on port 3000 goes to the pod IP" in line for line in advice)
    assert any("have the app listen on 127.0.0.1:3000 only" in line for line in advice)
    assert any("preStop: {sleep: {seconds: 5}}" in line for line in advice)  # native: the app stops first


def test_jobs_in_classic_mode_are_told_about_shutdown() -> None:
    text = (EXAMPLES / "jobs.yaml").read_text()
    classic = inject(text, mode="classic").advice
    assert sum("curl -X POST http://127.0.0.1:9901/shutdown" in line for line in classic) == 2  # Job, CronJob
    native = inject(text, mode="native").advice
    assert not any("/shutdown" in line for line in native)


def test_list_items_are_injected() -> None:
    out = ok(inject((EXAMPLES / "pod.yaml").read_text()))
    pod, deployment = objects(out)
    assert sidegate_of(pod)[:2] == ("initContainers", 0)
    assert deployment["kind"] == "Deployment" and sidegate_of(deployment)[:2] == ("initContainers", 0)
    assert [c["name"] for c in containers(pod_specs(pod)[0])] == ["sidegate", "shell"]


def test_kubectl_defaults_to_the_app_unless_the_owner_chose() -> None:
    for mode in ("native", "classic"):
        out = objects(ok(inject(DEPLOYMENT, mode=mode)))[0]
        assert (
            out["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"]
            == "app"
        )
    chosen = DEPLOYMENT.replace(
        "      labels: {app: web}\n",
        "      labels: {app: web}\n      annotations: {kubectl.kubernetes.io/default-container: other}\n",
    )
    out = objects(ok(inject(chosen)))[0]
    assert (
        out["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"]
        == "other"
    )


def test_json_comes_back_as_json() -> None:
    text = json.dumps(objects(DEPLOYMENT)[0]) + "\n"
    once = ok(inject(text))
    injected = json.loads(once)
    assert sidegate_of(injected)[:2] == ("initContainers", 0)
    validate(injected)
    assert ok(inject(once)) == once


def test_a_pod_of_sidegate_alone_is_refused() -> None:
    text = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: sidegate, image: x}]\n"
    )
    (error,) = inject(text, mode="classic").errors
    assert error.startswith("in.yaml:doc 1: pod/p: no app container beside Sidegate in containers; add ")


@pytest.mark.parametrize(
    ("edit", "injected"),
    [
        (("containerPort: 3000", "containerPort: [3000]"), True),
        (("          ports:\n            - containerPort: 3000\n", "          ports: true\n"), True),
        (("kind: Deployment", "kind: {a: 1}"), False),
        (("      labels: {app: web}\n", "      labels: [app]\n"), True),
    ],
    ids=["port-as-list", "ports-as-bool", "kind-as-map", "labels-as-list"],
)
def test_odd_shapes_give_an_answer_not_a_traceback(edit: tuple[str, str], injected: bool) -> None:
    """Found by mutating every field of the examples: each odd value is injected around or passed."""
    odd_service = SERVICE.replace("targetPort: 3000", "targetPort: {a: 1}")
    result = inject(DEPLOYMENT.replace(*edit) + "---\n" + odd_service)
    assert not result.errors
    assert result.injected == int(injected)


def test_classic_holds_the_app_until_sidegate_is_ready_on_its_health_port() -> None:
    out = objects(ok(inject(DEPLOYMENT, mode="classic", health_port=19902)))[0]
    _, index, gate = sidegate_of(out)
    assert index == 0  # the kubelet starts containers in order, each after the previous postStart
    command = gate["lifecycle"]["postStart"]["exec"]["command"]
    assert command[:4] == ["sidegate", "wait-ready", "--url", "http://127.0.0.1:19902/ready"]
    back = objects(ok(inject(ok(inject(DEPLOYMENT, mode="classic")), mode="native")))[0]
    assert (
        "lifecycle" not in sidegate_of(back)[2]
    )  # a native sidecar needs no hook: its startupProbe holds the app


def test_the_defaults_assumed_without_a_config_are_the_model_s() -> None:
    """Without --config, inject sizes the pod for a default config: the model's defaults."""
    from sidegate.config.model import Cache, SidegateConfig
    from sidegate.inject import options

    fields = SidegateConfig.model_fields
    assert fields["drain_delay"].default == options.DEFAULT_DRAIN_DELAY
    assert fields["drain_timeout"].default == options.DEFAULT_DRAIN_TIMEOUT
    assert Cache.model_fields["max_size"].default == options.DEFAULT_CACHE_MAX_SIZE
