"""A stream of Kubernetes YAML documents in, the same stream with the sidecar added out.

The text is cut into its documents where the YAML parser says they end, and each document is
loaded on its own with ruamel.yaml in round-trip mode. A document that is not changed is written
back as the very text it was read from, byte for byte; a changed one is dumped by ruamel.yaml,
which keeps its comments, key order and quoting, in the indentation the document used. Workloads
(``POD_SPEC_PATHS``) get the sidecar, ``List`` documents have their items injected, a
Service that selects an injected workload and targets an app port gets advice, and every other
document passes through. A JSON document (``kubectl get -o json``) is written back as JSON.
Any refusal fails the whole stream: nothing is written, so a pipe into ``kubectl apply`` never
applies half of it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, MutableMapping, MutableSequence
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import DocumentEndEvent
from ruamel.yaml.util import load_yaml_guess_indent

from sidegate.inject.options import InjectError, InjectOptions
from sidegate.inject.workload import POD_SPEC_PATHS, Outcome, inject_workload


@dataclass
class Result:
    """The stream written back, or the refusals; advice and counts either way."""

    text: str = ""
    errors: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    injected: int = 0
    unchanged: int = 0


@dataclass
class _Workload:
    where: str
    outcome: Outcome


def inject_text(text: str, source: str, options: InjectOptions) -> Result:
    """Inject every workload in ``text`` (read from ``source``, for messages)."""
    result = Result()
    try:
        chunks = _documents(text)
    except YAMLError as exc:
        result.errors.append(f"{source}: {_yaml_error(exc)}")
        return result
    out: list[str] = []
    workloads: list[_Workload] = []
    services: list[tuple[str, Mapping[str, Any]]] = []
    for number, chunk in enumerate(chunks, start=1):
        prefix = f"{source}:doc {number}"
        try:
            out.append(
                _inject_chunk(chunk, prefix, options, result=result, workloads=workloads, services=services)
            )
        except YAMLError as exc:
            result.errors.append(f"{prefix}: {_yaml_error(exc)}")
    if result.errors:
        return result
    for where, service in services:
        result.advice += _service_advice(where, service, workloads, options)
    result.text = "".join(out)
    return result


def _documents(text: str) -> list[str]:
    """The stream's documents as text; each begins with its own ``---`` line, if it had one."""
    ends = [event.end_mark.index for event in YAML().parse(text) if isinstance(event, DocumentEndEvent)]
    starts = [0, *ends]
    chunks = [text[start:end] for start, end in zip(starts, ends, strict=False)]
    if ends:  # what follows the last document (a final newline, trailing comments)
        chunks[-1] += text[ends[-1] :]
    return chunks or [text]


def _inject_chunk(
    chunk: str,
    prefix: str,
    options: InjectOptions,
    *,
    result: Result,
    workloads: list[_Workload],
    services: list[tuple[str, Mapping[str, Any]]],
) -> str:
    marker, body = _split_marker(chunk)
    yaml = _round_trip(body)
    doc = yaml.load(body)
    if not isinstance(doc, MutableMapping):
        return chunk
    items = doc.get("items")
    if str(doc.get("kind", "")).endswith("List") and isinstance(items, MutableSequence):
        targets = [item for item in items if isinstance(item, MutableMapping)]
    else:
        targets = [doc]
    changed = False
    for target in targets:
        where = f"{prefix}: {_name(target)}"
        kind = target.get("kind")
        if not isinstance(kind, str):  # not a Kubernetes object: passed through as it is
            continue
        if kind == "Service":
            services.append((where, target))
            continue
        if kind not in POD_SPEC_PATHS:
            if _looks_like_workload(target):
                result.errors.append(
                    f"{where}: kind {kind} is not one sidegate inject knows ({', '.join(POD_SPEC_PATHS)}); "
                    "add the sidecar to its pod template by hand (deploy/base/deployment.yaml shows it)"
                )
            continue
        try:
            outcome = inject_workload(target, options)
        except InjectError as exc:
            result.errors.append(f"{where}: {exc}")
            continue
        changed |= outcome.changed
        if outcome.changed:
            result.injected += 1
        else:
            result.unchanged += 1
        result.advice += [f"{where}: advice: {line}" for line in outcome.advice]
        workloads.append(_Workload(where, outcome))
    if not changed:
        return chunk
    if body.lstrip().startswith("{"):  # JSON in (kubectl get -o json), JSON out
        return marker + json.dumps(doc, indent=2) + "\n"
    stream = io.StringIO()
    yaml.dump(doc, stream)
    return marker + stream.getvalue()


def _split_marker(chunk: str) -> tuple[str, str]:
    """The ``---`` line that opens a document (with what precedes it), and the rest."""
    lines = chunk.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.startswith("---"):
            return "".join(lines[: index + 1]), "".join(lines[index + 1 :])
        if line.strip() and not line.lstrip().startswith("#") and not line.startswith("%"):
            break
    return "", chunk


def _round_trip(body: str) -> YAML:
    """A round-trip loader and dumper set to the indentation ``body`` already uses."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long line that was one line
    try:
        _, sequence, offset = load_yaml_guess_indent(body)
    except YAMLError:
        sequence, offset = None, None
    sequence = sequence or 2
    offset = offset or 0
    yaml.indent(mapping=max(2, sequence - offset), sequence=sequence, offset=offset)
    return yaml


def _name(doc: Mapping[str, Any]) -> str:
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return f"{str(doc.get('kind', '?')).lower()}/{name or '?'}"


def _looks_like_workload(doc: Mapping[str, Any]) -> bool:
    spec = doc.get("spec")
    template = spec.get("template") if isinstance(spec, Mapping) else None
    pod = template.get("spec") if isinstance(template, Mapping) else None
    return isinstance(pod, Mapping) and "containers" in pod


def _service_advice(
    where: str, service: Mapping[str, Any], workloads: list[_Workload], options: InjectOptions
) -> list[str]:
    """Advice for a Service that selects an injected workload but targets one of the app's ports."""
    spec = service.get("spec")
    if not isinstance(spec, Mapping):
        return []
    selector = spec.get("selector")
    if not isinstance(selector, Mapping) or not selector:
        return []
    wanted = {str(k): str(v) for k, v in selector.items()}
    selected = [w for w in workloads if wanted.items() <= w.outcome.pod_labels.items()]
    advice = []
    ports = spec.get("ports")
    for port in ports if isinstance(ports, list) else []:
        if not isinstance(port, Mapping):
            continue
        target = port.get("targetPort", port.get("port"))
        if not isinstance(target, int | str):
            continue
        for workload in selected:
            if target in workload.outcome.app_ports:
                advice.append(
                    f"{where}: advice: port {port.get('port')} targets {target}, container "
                    f"{workload.outcome.app_ports[target]} of {workload.where.rsplit(': ', 1)[-1]}, past the "
                    f"gateway: set targetPort: http (Sidegate's {options.port})"
                )
                break
    return advice


def _yaml_error(exc: YAMLError) -> str:
    if isinstance(exc, MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"line {mark.line + 1}: YAML syntax error: {exc.problem}"
    return f"YAML syntax error: {exc}"
