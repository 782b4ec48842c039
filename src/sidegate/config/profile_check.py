"""``sidegate validate`` for a config with ``profiles:``: every config a pod may run is checked.

The gateway runs one config: the base with the profiles its pod's labels select. CI has no pod,
so by default ``validate`` checks the base (no profile), then each profile on top of it, with
the labels its ``match`` asks for (the first value of each list), as a pod so labelled would run
it (any other profile those labels select merged too). With ``--labels k=v,...`` or
``--labels-file`` it checks exactly what a pod with those labels runs, and says which profiles
are in force. Each check is the gateway's own: load (:mod:`sidegate.config.load`), then compile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sidegate.config import load
from sidegate.config.check import normalise
from sidegate.config.compile import compile_checked
from sidegate.config.labels import LabelsError, format_labels, parse_downward_labels, parse_env_labels
from sidegate.config.load import LoadedConfig
from sidegate.config.snapshot import Snapshot
from sidegate.errors import ConfigError, ConfigIssue


@dataclass(frozen=True)
class Checked:
    """A config that passed every check: the base's snapshot (or the pod's, with labels)."""

    snapshot: Snapshot
    warnings: list[ConfigIssue]
    summary: str  # which profiles were checked, or which are in force for the labels given
    loaded: LoadedConfig  # what the snapshot was compiled from (its lines, for later warnings)


def read_labels_option(labels: str | None, labels_file: str | None) -> dict[str, str] | None:
    """``--labels`` or ``--labels-file`` as labels (None: neither given); ConfigError if unreadable."""
    try:
        if labels is not None:
            return parse_env_labels(labels)
        if labels_file is None:
            return None
        with open(labels_file, "rb") as file:
            return parse_downward_labels(file.read().decode("utf-8", "replace"))
    except LabelsError as exc:
        where = "--labels" if labels is not None else f"--labels-file {labels_file}"
        raise ConfigError([ConfigIssue("", str(exc))], where) from None
    except OSError as exc:
        msg = f"cannot read the labels file: {exc.strerror or exc}"
        raise ConfigError([ConfigIssue("", msg)], str(labels_file)) from None


def check_profiles(path: str, labels: Mapping[str, str] | None) -> Checked:
    """Check ``path`` as a pod with ``labels`` runs it, or (None) the base and every profile."""
    if labels is not None:
        loaded, snapshot = _check(path, labels)
        in_force = ", ".join(loaded.profiles.in_force)
        chosen = f"profiles in force: {in_force}" if in_force else "no profile in force"
        summary = f"labels {format_labels(dict(labels))}: {chosen}" if loaded.config.profiles else ""
        return Checked(snapshot, list(loaded.warnings), summary, loaded)
    base, snapshot = _check(path, {})
    issues: list[ConfigIssue] = []
    warnings = list(base.warnings)
    checked = []
    for profile in base.config.profiles:
        wanted = {key: values[0] for key, values in profile.match.items()}
        try:
            loaded, _ = _check(path, wanted)
            warnings += [w for w in loaded.warnings if w not in warnings]
        except ConfigError as exc:
            issues += [issue for issue in exc.issues if issue not in issues]
            warnings += [w for w in exc.warnings if w not in warnings]
            index = _index(base, profile.name)
            shown = format_labels(wanted)
            msg = f"a pod labelled {shown} would run an invalid config: its problems are listed here"
            issues.append(ConfigIssue(f"profiles[{index}]", msg, base.line_of(("profiles", index))))
        checked.append(profile.name)
    if issues:
        raise ConfigError(issues, path, warnings)
    summary = f"profiles checked: {', '.join(checked)}" if checked else ""
    return Checked(snapshot, warnings, summary, base)


def _check(path: str, labels: Mapping[str, str]) -> tuple[LoadedConfig, Snapshot]:
    loaded = load.load_config(path, labels=labels)
    return loaded, compile_checked(normalise(loaded))


def _index(loaded: LoadedConfig, name: str) -> int:
    return next(i for i, profile in enumerate(loaded.config.profiles) if profile.name == name)
