"""Applying ``profiles:`` to a parsed config: which ones the pod's labels select, and the merge.

Theory of operation. The config checker (:mod:`sidegate.config.load`) parses the file, substitutes
``${ENV}``, then calls :func:`apply_profiles`, which reads the pod's labels
(:mod:`sidegate.config.labels`), picks **every** profile whose ``match`` they satisfy, and merges
their patches onto the base **in the order written** (a later profile sees what an earlier one
did), before anything is validated: the merged result is checked as a whole, exactly like a plain
config. Why every match and not the first: profiles on different labels compose (``version: v2``
and ``zone: eu``), and the order is still the author's. ``/config_dump`` lists them.

The merge is a strategic merge in the manner of kustomize:

- a mapping merges key by key (so ``routes[].filters``, ``upstreams`` and ``cache`` do); a key
  whose patch value is ``null`` is deleted; ``$patch: replace`` in a mapping replaces it whole;
- ``routes`` and ``consumers`` are lists of named items: a patch item patches the base item of the
  same ``name``, a new name is added at the end (or before the item named by ``$before``), and
  ``{name: X, $patch: delete}`` removes X (``$patch: replace`` replaces it whole);
- any other list, and any scalar, is replaced.

Every value of the merged tree remembers where it was written, so an error in the merged config
names the line in the file where the bad value is (the profile's line when the profile set it)
and says which profile set it (:func:`annotate`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sidegate.config.labels import LabelsError, parse_downward_labels, parse_env_labels
from sidegate.config.pod import DEFAULT_LABELS_FILE
from sidegate.config.source import Document, Path, format_path, line_for
from sidegate.errors import ConfigIssue

DIRECTIVE = "$patch"
BEFORE = "$before"
NAMED_LISTS = frozenset({("routes",), ("consumers",)})


@dataclass(frozen=True)
class ProfileChoice:
    """What the labels chose: shown in ``/config_dump`` and by ``sidegate validate``."""

    in_force: tuple[str, ...] = ()
    labels: dict[str, str] | None = None  # None: not read (no profile, or no labels found)
    labels_from: str = ""  # "file /etc/podinfo/labels", "env POD_LABELS", "--labels"

    def plain(self) -> dict[str, Any]:
        in_force = list(self.in_force)
        return {"profiles_in_force": in_force, "labels": self.labels, "labels_from": self.labels_from}


@dataclass
class Applied:
    """The outcome of :func:`apply_profiles` (``doc.data`` and ``doc.lines`` are merged in place)."""

    choice: ProfileChoice = field(default_factory=ProfileChoice)
    skip: set[Path] = field(default_factory=set)  # ``skip`` moved to the merged paths
    notes: dict[str, str] = field(default_factory=dict)  # formatted path -> "set by profile 'x'"
    warnings: list[ConfigIssue] = field(default_factory=list)


def apply_profiles(
    doc: Document, environ: Mapping[str, str], skip: set[Path], labels: Mapping[str, str] | None = None
) -> Applied:
    """Merge the profiles the pod's labels select into ``doc``; ``labels`` overrides the source."""
    data = doc.data
    profiles = _candidates(doc)
    if not profiles:
        return Applied(skip=skip)
    applied = Applied()
    found, source = (dict(labels), "--labels") if labels is not None else _read_labels(doc, environ, applied)
    chosen = [(i, p) for i, p in profiles if found is not None and _matches(p["match"], found)]
    applied.choice = ProfileChoice(tuple(str(p["name"]) for _, p in chosen), found, source)
    if not chosen:
        applied.skip = skip
        return applied
    origins: dict[Path, Path] = {path: path for path in doc.lines}
    for index, profile in chosen:
        where: Path = ("profiles", index, "patch")
        if DIRECTIVE in profile["patch"]:
            _issue(
                doc, (*where, DIRECTIVE), "a profile patches the config; it cannot replace or delete it whole"
            )
        patch = {k: v for k, v in profile["patch"].items() if k not in ("profiles", "pod", DIRECTIVE)}
        merger = _Merger(doc, origins, str(profile["name"]))
        data = merger.merge(data, (), patch, where, ())
        origins = merger.new
    doc.data = data
    source_lines = doc.lines
    doc.lines = {path: source_lines[src] for path, src in origins.items() if src in source_lines}
    applied.skip = {path for path, src in origins.items() if src in skip}
    names = {index: str(profile["name"]) for index, profile in chosen}
    applied.notes = {
        format_path(path): f"set by profile {names[src[1]]!r}"
        for path, src in origins.items()
        if len(src) > 2 and src[0] == "profiles" and src[2] == "patch" and src[1] in names
    }
    return applied


def annotate(issues: list[ConfigIssue], notes: Mapping[str, str]) -> list[ConfigIssue]:
    """Each issue about a value a profile set, with `` (set by profile 'x')`` after its message."""
    if not notes:
        return issues
    out = []
    for issue in issues:
        note = _note_for(issue.path, notes)
        out.append(ConfigIssue(issue.path, f"{issue.message} ({note})", issue.line) if note else issue)
    return out


def _note_for(path: str, notes: Mapping[str, str]) -> str | None:
    while path:
        if path in notes:
            return notes[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[: max(cut, 0)]
    return None


def _candidates(doc: Document) -> list[tuple[int, dict[str, Any]]]:
    """The well-shaped profiles, with their index; the model reports the others. Also reports a
    name used twice (``/config_dump`` and the logs name profiles)."""
    raw = doc.data.get("profiles")
    if not isinstance(raw, list):
        return []
    out: list[tuple[int, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        if item["name"] in seen:
            msg = f"{item['name']!r} is also profiles[{seen[item['name']]}]; profile names are unique"
            _issue(doc, ("profiles", i, "name"), msg)
            continue
        seen[item["name"]] = i
        if isinstance(item.get("match"), dict) and isinstance(item.get("patch", {}), dict):
            out.append((i, {**item, "patch": item.get("patch") or {}}))
    return out


def _matches(match: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Every label listed is set, to the value given or to one of the values listed."""
    for key, wanted in match.items():
        values = wanted if isinstance(wanted, list) else [wanted]
        if labels.get(str(key)) not in [_text(value) for value in values]:
            return False
    return True


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _read_labels(
    doc: Document, environ: Mapping[str, str], applied: Applied
) -> tuple[dict[str, str] | None, str]:
    """The labels from ``pod.labels_env`` (when set) or ``pod.labels_file``; None, with a warning,
    when there are none to read: a pod without the labels mount runs its base config, as Istio's
    and Linkerd's proxies run without their pod-info files."""
    pod = doc.data.get("pod")
    pod = pod if isinstance(pod, dict) else {}
    env_name, path = pod.get("labels_env"), pod.get("labels_file", DEFAULT_LABELS_FILE)
    if isinstance(env_name, str) and env_name:
        text = environ.get(env_name)
        if text is None:
            msg = f"environment variable {env_name} is not set: no profile applies (set it to k=v,k2=v2)"
            _warn(doc, applied, ("pod", "labels_env"), msg)
            return None, f"env {env_name}"
        try:
            return parse_env_labels(text), f"env {env_name}"
        except LabelsError as exc:
            _issue(doc, ("pod", "labels_env"), f"the labels in {env_name} cannot be read: {exc}")
            return None, f"env {env_name}"
    if not isinstance(path, str) or not path:
        return None, ""  # the model reports it
    try:
        with open(path, "rb") as file:
            text = file.read().decode("utf-8", "replace")
    except FileNotFoundError:
        msg = (
            f"the labels file {path} does not exist: no profile applies (mount the downward API "
            "`labels` there, or set pod.labels_env)"
        )
        _warn(doc, applied, ("pod", "labels_file"), msg)
        return None, f"file {path}"
    except OSError as exc:
        _issue(doc, ("pod", "labels_file"), f"cannot read the labels file {path}: {exc.strerror or exc}")
        return None, f"file {path}"
    try:
        return parse_downward_labels(text), f"file {path}"
    except LabelsError as exc:
        _issue(doc, ("pod", "labels_file"), f"the labels file {path} cannot be read: {exc}")
        return None, f"file {path}"


def _issue(doc: Document, path: Path, message: str) -> None:
    doc.issues.append(ConfigIssue(format_path(path), message, line_for(doc.lines, path)))


def _warn(doc: Document, applied: Applied, path: Path, message: str) -> None:
    applied.warnings.append(ConfigIssue(format_path(path), message, line_for(doc.lines, path)))


@dataclass(frozen=True, slots=True)
class _Step:
    """One item of a merged named list: its name, and its index in the base and in the patch."""

    name: str | None
    base: int | None
    patch: int | None


def _name_of(item: Any) -> str | None:
    name = item.get("name") if isinstance(item, dict) else None
    return name if isinstance(name, str) else None


class _Merger:
    """One profile's patch merged onto the tree so far, recording where each value came from.

    ``old`` maps each path of the tree so far to the path in the file it was written at;
    ``new`` is the same for the merged tree.
    """

    def __init__(self, doc: Document, old: dict[Path, Path], profile: str) -> None:
        self.doc = doc
        self.old = old
        self.new: dict[Path, Path] = {}
        self.profile = profile

    def merge(self, base: Any, base_at: Path, patch: Any, patch_src: Path, at: Path) -> Any:
        """``patch`` (written at ``patch_src``) onto ``base`` (now at ``base_at``), placed at ``at``."""
        if isinstance(patch, dict) and isinstance(base, dict) and patch.get(DIRECTIVE) != "replace":
            return self._mapping(base, base_at, patch, patch_src, at)
        if isinstance(patch, list) and isinstance(base, list) and at in NAMED_LISTS:
            return self._named(base, base_at, patch, patch_src, at)
        return self._take(patch, patch_src, at)

    def _mapping(
        self, base: dict[Any, Any], base_at: Path, patch: dict[Any, Any], src: Path, at: Path
    ) -> dict[Any, Any]:
        self._directive(patch, src, allowed=("replace",))
        self._keep(base_at, at)
        out: dict[Any, Any] = {}
        for key, value in base.items():
            if key not in patch:
                out[key] = self._base(value, (*base_at, key), (*at, key))
            elif patch[key] is not None:
                out[key] = self.merge(value, (*base_at, key), patch[key], (*src, key), (*at, key))
        for key, value in patch.items():
            if key not in base and key not in (DIRECTIVE, BEFORE) and value is not None:
                out[key] = self._take(value, (*src, key), (*at, key))
        return out

    def _named(self, base: list[Any], base_at: Path, patch: list[Any], src: Path, at: Path) -> list[Any]:
        """Items merge by ``name``: first a plan of where each item of the result comes from
        (the base, the patch, or both merged), then the items, so that origins get final places."""
        plan: list[_Step] = [_Step(_name_of(item), i, None) for i, item in enumerate(base)]
        for j, item in enumerate(patch):
            where = (*src, j)
            name = _name_of(item)
            if name is None:
                msg = f"an item of `{at[-1]}` in a profile patch needs a `name`: it patches the item so named"
                _issue(self.doc, where, msg)
                continue
            directive = self._directive(item, where, allowed=("delete", "replace"))
            index = next((k for k, step in enumerate(plan) if step.name == name), None)
            if index is None and directive == "delete":
                msg = f"profile {self.profile!r} deletes {at[-1]} {name!r}, which is not in the config"
                _issue(self.doc, (*where, DIRECTIVE), msg)
            elif index is None:
                plan.insert(self._position(plan, item, (*where, BEFORE)), _Step(name, None, j))
            elif directive == "delete":
                del plan[index]
            elif BEFORE in item:
                msg = f"`$before` places a new item; {at[-1]} {name!r} is in the config already"
                _issue(self.doc, (*where, BEFORE), msg)
            else:
                plan[index] = _Step(name, None if directive == "replace" else plan[index].base, j)
        self._keep(base_at, at)
        out = []
        for place, step in enumerate(plan):
            here = (*at, place)
            if step.patch is None:
                assert step.base is not None
                out.append(self._base(base[step.base], (*base_at, step.base), here))
            elif step.base is None:
                out.append(self._take(patch[step.patch], (*src, step.patch), here))
            else:
                old = (*base_at, step.base)
                out.append(self.merge(base[step.base], old, patch[step.patch], (*src, step.patch), here))
        return out

    def _position(self, plan: list[_Step], item: dict[str, Any], where: Path) -> int:
        """Where a new named item goes: before the one ``$before`` names, else at the end."""
        before = item.get(BEFORE)
        if before is None:
            return len(plan)
        index = next((k for k, step in enumerate(plan) if step.name == before), None)
        if index is None:
            known = ", ".join(step.name for step in plan if step.name) or "(none)"
            _issue(self.doc, where, f"`$before: {before}` names no item; known: {known}")
            return len(plan)
        return index

    def _directive(self, value: dict[Any, Any], where: Path, allowed: tuple[str, ...]) -> str | None:
        directive = value.get(DIRECTIVE)
        if directive is None or directive in allowed:
            return directive
        msg = f"`$patch: {directive}` is not a directive here; use one of: {', '.join(allowed)}"
        _issue(self.doc, (*where, DIRECTIVE), msg)
        return None

    def _keep(self, base_at: Path, at: Path) -> None:
        if base_at in self.old:
            self.new[at] = self.old[base_at]

    def _base(self, value: Any, base_at: Path, at: Path) -> Any:
        """A value kept from the tree so far: its origins move to ``at``."""
        self._keep(base_at, at)
        if isinstance(value, dict):
            for key, item in value.items():
                self._base(item, (*base_at, key), (*at, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self._base(item, (*base_at, i), (*at, i))
        return value

    def _take(self, value: Any, src: Path, at: Path) -> Any:
        """A value of the patch, placed at ``at``: without its directives and null keys."""
        self.new[at] = src
        if isinstance(value, dict):
            self._directive(value, src, allowed=("replace",))
            return {
                key: self._take(item, (*src, key), (*at, key))
                for key, item in value.items()
                if key not in (DIRECTIVE, BEFORE) and item is not None
            }
        if isinstance(value, list):
            return [self._take(item, (*src, i), (*at, i)) for i, item in enumerate(value)]
        return value
