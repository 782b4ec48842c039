"""One workload: find its pod spec, refuse what cannot work, add or update the sidecar, advise.

Like ``linkerd inject``, only the pod spec is patched (its containers, volumes, security context
and grace period) plus the pod template's annotations (Prometheus, kubectl's default container);
everything else of the document is left as it was. What cannot work is refused with the fix,
before anything changes: a pod on the node's network, an app port or port name that Sidegate
takes. What works but needs the user (the app's own ports, its probes, a Job in classic mode) is
advice, printed on stderr.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, MutableSequence
from dataclasses import dataclass, field
from typing import Any, Final

from sidegate.inject import sidecar
from sidegate.inject.merge import find_named, merge_into, merge_named
from sidegate.inject.options import (
    CONTAINER_NAME,
    KUBERNETES_DEFAULT_GRACE,
    RUN_AS,
    InjectError,
    InjectOptions,
)

# Where each kind keeps its pod spec; the pod template's metadata is the sibling of its "spec".
POD_SPEC_PATHS: Final[dict[str, tuple[str, ...]]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
JOB_KINDS: Final = frozenset({"Job", "CronJob"})
DEFAULT_CONTAINER: Final = "kubectl.kubernetes.io/default-container"


@dataclass
class Outcome:
    """What happened to one workload: whether it changed, and advice for its owner."""

    changed: bool = False
    advice: list[str] = field(default_factory=list)
    pod_labels: dict[str, str] = field(default_factory=dict)
    app_ports: dict[int | str, str] = field(default_factory=dict)  # port number or name -> container


def inject_workload(doc: MutableMapping[str, Any], options: InjectOptions) -> Outcome:
    """Add (or bring up to date) the sidecar in ``doc``, a workload of a kind in POD_SPEC_PATHS."""
    kind = str(doc.get("kind"))
    path = POD_SPEC_PATHS[kind]
    spec = _walk(doc, path)
    metadata = _walk(doc, (*path[:-1], "metadata"), create=True)
    containers = spec.get("containers")
    if not isinstance(containers, MutableSequence) or not containers:
        raise InjectError(f"no containers at {'.'.join(path)}.containers; nothing to put Sidegate beside")
    if spec.get("hostNetwork"):
        raise InjectError(
            "hostNetwork: true shares the node's network: Sidegate's ports would collide between pods "
            "and the app's 127.0.0.1 would be the node's; run it without hostNetwork"
        )
    outcome = Outcome(pod_labels=_labels(metadata))
    main = [c for c in containers if isinstance(c, MutableMapping) and c.get("name") != CONTAINER_NAME]
    if not main:
        raise InjectError("no app container beside Sidegate in containers; add the app's container first")
    _check_ports([c for c in _containers(spec) if c.get("name") != CONTAINER_NAME], options, outcome)
    outcome.changed |= _place_container(spec, options)
    volumes = spec.get("volumes")
    if isinstance(volumes, MutableSequence):
        outcome.changed |= merge_named(volumes, sidecar.volumes(options))
    else:
        spec["volumes"] = sidecar.volumes(options)
        outcome.changed = True
    outcome.changed |= _pod_security(spec)
    outcome.changed |= _annotations(metadata, options, outcome, str(main[0].get("name")))
    outcome.changed |= _grace(spec, options, outcome)
    _advise(kind, main, options, outcome)
    return outcome


def _walk(doc: MutableMapping[str, Any], path: tuple[str, ...], create: bool = False) -> Any:
    node: Any = doc
    for step, key in enumerate(path):
        child = node.get(key) if isinstance(node, MutableMapping) else None
        if child is None and create and isinstance(node, MutableMapping):
            child = node[key] = {}
        if not isinstance(child, MutableMapping):
            where = ".".join(path[: step + 1])
            raise InjectError(
                f"{where} is missing or not a mapping; a {doc.get('kind')} needs a pod template"
            )
        node = child
    return node


def _containers(spec: Mapping[str, Any]) -> list[MutableMapping[str, Any]]:
    found: list[MutableMapping[str, Any]] = []
    for key in ("initContainers", "containers"):
        items = spec.get(key)
        if isinstance(items, MutableSequence):
            found += [c for c in items if isinstance(c, MutableMapping)]
    return found


def _labels(metadata: Mapping[str, Any]) -> dict[str, str]:
    labels = metadata.get("labels")
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}


def _check_ports(apps: list[MutableMapping[str, Any]], options: InjectOptions, outcome: Outcome) -> None:
    """Refuse an app port that Sidegate takes (number or name); record the app's ports."""
    taken = options.sidecar_ports
    for app in apps:
        name = str(app.get("name"))
        ports = app.get("ports")
        for port in ports if isinstance(ports, list) else []:
            if not isinstance(port, Mapping):
                continue
            number, port_name = port.get("containerPort"), port.get("name")
            if isinstance(number, int) and number in taken:
                raise InjectError(
                    f"container {name} declares port {number}, Sidegate's {taken[number]} port in the same "
                    f"pod network; move the app to another port on 127.0.0.1, or choose another "
                    f"--port/--health-port for Sidegate"
                )
            if port_name in sidecar.PORT_NAMES:
                raise InjectError(
                    f"container {name} names its port {number} {port_name!r}, the name of Sidegate's "
                    f"port that Services and probes target; rename it (e.g. 'app-{port_name}')"
                )
            if isinstance(number, int):
                outcome.app_ports[number] = name
            if isinstance(port_name, str):
                outcome.app_ports[port_name] = name


def _place_container(spec: MutableMapping[str, Any], options: InjectOptions) -> bool:
    """Put the container in ``initContainers`` (native) or ``containers`` (classic), first, or
    update it where it is; a container of the other mode moves."""
    home, other = (
        ("initContainers", "containers") if options.mode == "native" else ("containers", "initContainers")
    )
    wanted = sidecar.container(options)
    changed = False
    others = spec.get(other)
    index = find_named(others, CONTAINER_NAME)
    if index is not None and isinstance(others, MutableSequence):
        del others[index]
        if not others:
            del spec[other]
        changed = True
    items = spec.get(home)
    if not isinstance(items, MutableSequence):
        items = []
        _insert_before(spec, home, items, "containers")
    index = find_named(items, CONTAINER_NAME)
    if index is None:
        items.insert(0, wanted)
        return True
    current = items[index]
    if options.mode == "classic" and "restartPolicy" in current:
        del current["restartPolicy"]
        changed = True
    return merge_into(current, wanted) or changed


def _insert_before(node: MutableMapping[str, Any], key: str, value: object, before: str) -> None:
    """``node[key] = value``, placed before ``before`` where the map keeps an order (round-trip)."""
    insert = getattr(node, "insert", None)
    keys = list(node)
    if callable(insert) and before in keys:
        insert(keys.index(before), key, value)
    else:
        node[key] = value


def _pod_security(spec: MutableMapping[str, Any]) -> bool:
    """``fsGroup`` for the shared cache volume, only where the pod has none."""
    context = spec.get("securityContext")
    if not isinstance(context, MutableMapping):
        spec["securityContext"] = {"fsGroup": RUN_AS}
        return True
    if "fsGroup" not in context:
        context["fsGroup"] = RUN_AS
        return True
    return False


def _annotations(
    metadata: MutableMapping[str, Any], options: InjectOptions, outcome: Outcome, app: str
) -> bool:
    """Prometheus scrapes Sidegate; ``kubectl logs`` and ``exec`` default to the app (where the
    owner has not chosen), as a classic-mode Sidegate would otherwise be the first container."""
    current = metadata.get("annotations")
    if not isinstance(current, MutableMapping):
        metadata["annotations"] = current = {}
    before = current.get("prometheus.io/port")
    wanted = sidecar.pod_annotations(options)
    if before is not None and str(before) != wanted["prometheus.io/port"]:
        outcome.advice.append(
            f"prometheus.io/port was {before}: Prometheus now scrapes Sidegate's /metrics on "
            f"{options.health_port}; list the app's endpoint in observability.app_metrics to "
            "merge its metrics"
        )
    changed = merge_into(current, wanted)
    if DEFAULT_CONTAINER not in current:
        current[DEFAULT_CONTAINER] = app
        changed = True
    return changed


def _grace(spec: MutableMapping[str, Any], options: InjectOptions, outcome: Outcome) -> bool:
    """Raise ``terminationGracePeriodSeconds`` to what the app's stop and Sidegate's drain take."""
    needed = options.sizing.grace_seconds
    current = spec.get("terminationGracePeriodSeconds")
    have = current if isinstance(current, int) else KUBERNETES_DEFAULT_GRACE
    if have >= needed:
        return False
    sizing = options.sizing
    outcome.advice.append(
        f"terminationGracePeriodSeconds raised from {have} to {needed}: drain_delay {sizing.drain_delay:g}s "
        f"+ drain_timeout {sizing.drain_timeout:g}s, and time for the app to stop"
    )
    spec["terminationGracePeriodSeconds"] = needed
    return True


def _advise(
    kind: str, apps: list[MutableMapping[str, Any]], options: InjectOptions, outcome: Outcome
) -> None:
    """What the owner should change in the app's containers (``apps``), which inject leaves alone."""
    port = options.app_port
    listen = f"127.0.0.1:{port}" if port else "127.0.0.1"
    for app in apps:
        name = app.get("name")
        declared = app.get("ports")
        ports = (
            [p.get("containerPort") for p in declared if isinstance(p, Mapping)]
            if isinstance(declared, list)
            else []
        )
        if ports:
            shown = ", ".join(str(p) for p in ports)
            outcome.advice.append(
                f"container {name} declares port {shown}: have the app listen on {listen} only (the "
                f"upstream endpoint in the Sidegate config), and admit only ports {options.port} and "
                f"{options.health_port} with a NetworkPolicy (deploy/base/networkpolicy.yaml)"
            )
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            target = _probe_port(app.get(probe))
            if target is not None:
                outcome.advice.append(
                    f"container {name}: {probe} on port {target} goes to the pod IP, where an app on "
                    f"127.0.0.1 does not answer; probe Sidegate's /ready on {options.health_port} (it "
                    f"follows the app with upstreams.NAME.health_check) or use an exec probe"
                )
        if options.mode == "native" and kind not in JOB_KINDS and not _has_pre_stop(app):
            outcome.advice.append(
                f"container {name} gets SIGTERM before Sidegate and while endpoints are still being "
                "removed: let it serve a few seconds more, e.g. "
                "lifecycle: {preStop: {sleep: {seconds: 5}}} (Kubernetes >= 1.30)"
            )
    if options.mode == "classic":
        outcome.advice.append(
            "classic mode: the app starts once Sidegate is ready (its postStart hook, sidegate "
            "wait-ready), but both get SIGTERM at once: keep the app serving a few seconds (a preStop "
            "sleep); native mode (Kubernetes >= 1.29) orders the stop too"
        )
        if kind in JOB_KINDS:
            outcome.advice.append(
                f"a {kind} in classic mode completes only when every container exits: when its work is done "
                f"the app must call `curl -X POST http://127.0.0.1:{options.admin_port}/shutdown` "
                "(Sidegate drains and exits 0), or use --mode native"
            )


def _probe_port(probe: object) -> object:
    if not isinstance(probe, Mapping):
        return None
    for handler in ("httpGet", "tcpSocket", "grpc"):
        action = probe.get(handler)
        if isinstance(action, Mapping) and "port" in action:
            return action["port"]
    return None


def _has_pre_stop(app: Mapping[str, Any]) -> bool:
    lifecycle = app.get("lifecycle")
    return isinstance(lifecycle, Mapping) and "preStop" in lifecycle
