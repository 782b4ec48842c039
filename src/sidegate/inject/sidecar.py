"""The sidecar itself, as plain Kubernetes values: the container, its volumes and annotations.

One function per piece, all pure: ``deploy/base`` holds exactly what they return for the default
options (a test compares them), so the manifests and ``sidegate inject`` cannot drift apart.

- **native** (Kubernetes >= 1.29): an ``initContainers`` entry with ``restartPolicy: Always``. Its
  ``startupProbe`` on ``/ready`` holds the app's containers back until Sidegate serves, and the
  kubelet stops it after them, so the app never runs without its gateway.
- **classic**: the first entry of ``containers``, with a ``postStart`` hook (``sidegate
  wait-ready``) that holds the app's container back until Sidegate is ready, since the kubelet
  starts containers in order, each after the previous one's hook. Nothing orders the stop; a
  Job's pod completes only when the app asks Sidegate to exit (``POST /shutdown`` on the loopback
  admin port).

The cache is an ``emptyDir`` in memory, shared with the app at ``CACHE_DIR``; its ``sizeLimit`` is
the LMDB map the store opens for ``cache.max_size`` (``sidegate.cache.env.map_size_for``), the most
the store file can ever hold, so the kubelet never evicts the pod for a cache within its bounds.
Pages in use are memory of the container that wrote them, Sidegate: its memory limit makes room.
"""

from __future__ import annotations

from typing import Any, Final

from ruamel.yaml.comments import CommentedSeq

from sidegate.cache.env import map_size_for
from sidegate.inject.options import (
    CACHE_DIR,
    CONFIG_DIR,
    CONTAINER_NAME,
    PODINFO_DIR,
    RUN_AS,
    InjectOptions,
    MiB,
)

CONFIG_VOLUME: Final = "sidegate-config"
CACHE_VOLUME: Final = "sidegate-cache"
PODINFO_VOLUME: Final = "sidegate-podinfo"
TMP_VOLUME: Final = "sidegate-tmp"
VOLUME_NAMES: Final = (CONFIG_VOLUME, CACHE_VOLUME, PODINFO_VOLUME, TMP_VOLUME)
PORT_NAMES: Final = ("http", "health")
PROCESS_MEMORY: Final = 256 * MiB  # the gateway and its config checker, without the cache pages
TMP_SIZE: Final = "16Mi"

Json = dict[str, Any]


def quantity(size: int) -> str:
    """A byte count as a Kubernetes quantity: ``Mi`` when whole mebibytes, else plain bytes."""
    return f"{size // MiB}Mi" if size % MiB == 0 else str(size)


def cache_volume_size(options: InjectOptions) -> int:
    """Bytes for the cache ``emptyDir``: the LMDB map opened for ``cache.max_size``."""
    return map_size_for(options.sizing.cache_max_size)


def memory_limit(options: InjectOptions) -> str:
    """``--memory-limit``, or the process's own need plus the cache's pages at their fullest."""
    if options.memory_limit:
        return options.memory_limit
    cache = -(-options.sizing.cache_max_size // MiB) * MiB
    return quantity(PROCESS_MEMORY + cache)


def container(options: InjectOptions) -> Json:
    """The Sidegate container, for ``initContainers`` (native) or ``containers`` (classic)."""
    out: Json = {"name": CONTAINER_NAME, "image": options.image}
    if options.mode == "native":
        out["restartPolicy"] = "Always"
    out["args"] = _flow(["run", "--config", f"{CONFIG_DIR}/sidegate.yaml"])
    out["ports"] = [
        {"name": "http", "containerPort": options.port, "protocol": "TCP"},
        {"name": "health", "containerPort": options.health_port, "protocol": "TCP"},
    ]
    out["env"] = [
        {"name": "CACHE_DIR", "value": CACHE_DIR},
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("POD_IP", "status.podIP"),
        _field_env("NODE_NAME", "spec.nodeName"),
        _field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ]
    if options.mode == "classic":  # hold the next container (the app) until Sidegate serves
        wait = ["sidegate", "wait-ready", "--url", f"http://127.0.0.1:{options.health_port}/ready"]
        out["lifecycle"] = {"postStart": {"exec": {"command": _flow([*wait, "--timeout", "120s"])}}}
    out["startupProbe"] = _probe("/ready", period=1, failures=60)
    out["readinessProbe"] = _probe("/ready", period=5, failures=2)
    out["livenessProbe"] = _probe("/live", period=10, failures=3)
    out["resources"] = {
        "requests": {"cpu": options.cpu_request, "memory": options.memory_request},
        "limits": {"cpu": options.cpu_limit, "memory": memory_limit(options)},
    }
    out["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": _flow(["ALL"])},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    out["volumeMounts"] = [
        {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": CACHE_VOLUME, "mountPath": CACHE_DIR},
        {"name": PODINFO_VOLUME, "mountPath": PODINFO_DIR, "readOnly": True},
        {"name": TMP_VOLUME, "mountPath": "/tmp"},
    ]
    return out


def _flow(items: list[str]) -> list[str]:
    """A short list written on one line (``[run, --config, ...]``), as a person would."""
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def _field_env(name: str, path: str) -> Json:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _probe(path: str, period: int, failures: int) -> Json:
    return {
        "httpGet": {"path": path, "port": "health"},
        "periodSeconds": period,
        "timeoutSeconds": 1,
        "failureThreshold": failures,
    }


def volumes(options: InjectOptions) -> list[Json]:
    """The pod volumes the container mounts: config (a directory mount, so it reloads), cache,
    pod labels (downward API, for ``profiles:``) and ``/tmp``."""
    return [
        {"name": CONFIG_VOLUME, "configMap": {"name": options.config_map}},
        {
            "name": CACHE_VOLUME,
            "emptyDir": {"medium": "Memory", "sizeLimit": quantity(cache_volume_size(options))},
        },
        {
            "name": PODINFO_VOLUME,
            "downwardAPI": {
                "items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                ]
            },
        },
        {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": TMP_SIZE}},
    ]


def pod_annotations(options: InjectOptions) -> dict[str, str]:
    """Prometheus scrape annotations on the pod: the health port serves ``/metrics``."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(options.health_port),
        "prometheus.io/path": "/metrics",
    }
