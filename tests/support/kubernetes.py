"""Kubernetes manifests checked offline: a small kustomize renderer and the pinned schemas.

``kubectl kustomize`` is not on CI, so :func:`render` builds what the kustomizations in
``deploy/`` use, the way kustomize does: ``resources`` (files and directories), a
``configMapGenerator`` (a hash-suffixed name and every reference in pod specs renamed),
``images`` (name and tag), and ``patches`` that are JSON patches (RFC 6902, applied with the
``jsonpatch`` library). Anything else in a kustomization is an error here, so a new feature in
``deploy/`` cannot go unrendered, and so unvalidated.

:func:`validate` checks one object against the OpenAPI schemas of Kubernetes ``K8S_VERSION``
that ``kubernetes-validate`` bundles (strict: an unknown field is an error). No network.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import yaml

K8S_VERSION = "1.30"  # native sidecars and the preStop sleep action are on by default from 1.30
KNOWN_KEYS = {"apiVersion", "kind", "resources", "configMapGenerator", "images", "patches"}

Obj = dict[str, Any]


class ManifestError(AssertionError):
    """A manifest that Kubernetes would refuse, or a kustomization this renderer cannot build."""


def validate(obj: Obj, where: str = "") -> None:
    """Raise :class:`ManifestError` naming the field when ``obj`` breaks the pinned schema."""
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        raise ManifestError(f"{where}{obj.get('kind')}/{_name(obj)}: {path}: {exc.message}") from None
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise ManifestError(f"{where}{exc.message}") from None


def load_documents(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def render(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize DIRECTORY`` would print (for what deploy/ uses)."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - KNOWN_KEYS
    if unknown:
        raise ManifestError(f"{directory}: kustomization keys this renderer does not know: {sorted(unknown)}")
    objects: list[Obj] = []
    for resource in spec.get("resources", []):
        target = directory / resource
        objects += render(target) if target.is_dir() else load_documents(target)
    renames: dict[str, str] = {}
    for generator in spec.get("configMapGenerator", []):
        config_map = _config_map(directory, generator)
        renames[generator["name"]] = config_map["metadata"]["name"]
        objects.append(config_map)
    for obj in objects:
        for pod in pod_specs(obj):
            _rename_config_maps(pod, renames)
            _set_images(pod, spec.get("images", []))
    for patch in spec.get("patches", []):
        _apply_patch(directory, patch, objects)
    return objects


def pod_specs(obj: Obj) -> list[Obj]:
    """The pod specs in a workload object (none for other kinds)."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Pod":
        return [spec]
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    template = spec.get("template") if isinstance(spec, dict) else None
    return [template["spec"]] if isinstance(template, dict) and "spec" in template else []


def containers(pod: Obj) -> list[Obj]:
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _config_map(directory: Path, generator: Obj) -> Obj:
    data: dict[str, str] = {}
    for entry in generator.get("files", []):
        key, _, file = entry.rpartition("=") if "=" in entry else (Path(entry).name, "", entry)
        data[key] = (directory / file).read_text()
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{generator['name']}-{digest}"},
        "data": data,
    }


def _rename_config_maps(pod: Obj, renames: dict[str, str]) -> None:
    for volume in pod.get("volumes", []):
        ref = volume.get("configMap")
        if ref and ref.get("name") in renames:
            ref["name"] = renames[ref["name"]]
    for container in containers(pod):
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef")
            if ref and ref.get("name") in renames:
                ref["name"] = renames[ref["name"]]


def _set_images(pod: Obj, images: list[Obj]) -> None:
    for container in containers(pod):
        name, _, tag = container["image"].partition(":")
        for image in images:
            if image["name"] == name:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"


def _apply_patch(directory: Path, patch: Obj, objects: list[Obj]) -> None:
    operations = yaml.safe_load((directory / patch["path"]).read_text())
    if not isinstance(operations, list):
        raise ManifestError(
            f"{directory}: {patch['path']}: only JSON patches (a list of operations) are rendered"
        )
    target = patch["target"]
    matched = [
        i
        for i, obj in enumerate(objects)
        if obj["kind"] == target["kind"] and _name(obj) == target.get("name", _name(obj))
    ]
    if not matched:
        raise ManifestError(f"{directory}: patch {patch['path']} matches no object ({target})")
    for index in matched:
        objects[index] = jsonpatch.apply_patch(copy.deepcopy(objects[index]), operations)


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", "?"))
