"""The ``sidegate`` command line: ``run``, ``validate``, ``inject``, ``wait-ready``, ``iptables``,
``schema``, ``version``.

``validate`` and ``schema`` only import the config layer (pydantic, YAML, the filter registry):
the runtime, asyncio and uvloop are imported by ``run`` alone, inside the function. ``run`` in
turn never imports pydantic or YAML: it validates in a child process (``sidegate.config.isolated``),
while ``validate``, a one-shot command, validates in-process and then compiles the result as the
gateway would, so that a filter that cannot start is reported too. ``validate``
never shows a traceback: every outcome is one ``OK`` line, or one line per issue on stderr in the
``FILE:LINE: path: message`` form that editors and CI annotate; a warning (what works, but not as
one may think) is ``FILE:LINE: path: warning: message`` and does not fail the check. For a config
with ``profiles:`` it checks the base and each profile (:mod:`sidegate.config.profile_check`), or,
with ``--labels k=v,...`` or ``--labels-file``, exactly what a pod with those labels runs. ``run``
reports a config it cannot start with in the same form, or as JSON log records with
``--log-format json``. Exit codes: 0 success, 1 invalid config or failure, 2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from sidegate import __version__
from sidegate.errors import ConfigError, ConfigIssue

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sidegate`` console script; returns the process exit code."""
    args = _parser().parse_args(argv)
    command: str = args.command
    if command == "validate":
        return validate(args.config, args.labels, args.labels_file, args.grace_period)
    if command == "schema":
        return schema()
    if command == "inject":
        from sidegate.inject.command import inject

        return inject(args)
    if command == "wait-ready":
        from sidegate.inject.command import wait_ready

        return wait_ready(args)
    if command == "iptables":
        from sidegate.transparent.command import iptables

        return iptables(args)
    if command == "version":
        from sidegate.native import describe

        print(f"sidegate {__version__}, {describe()}")
        return 0
    return run(args.config, args.log_level, args.log_format)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidegate", description="Sidegate, a sidecar API gateway.", formatter_class=_Formatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_cmd = commands.add_parser(
        "run", help="run the gateway", description="Run the gateway.", formatter_class=_Formatter
    )
    run_cmd.add_argument("--config", required=True, metavar="FILE", help="YAML config file")
    run_cmd.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="log level (default: info)")
    run_cmd.add_argument(
        "--log-format",
        default="text",
        choices=LOG_FORMATS,
        help="operational log on stderr: text, or json (one object per line) (default: text)",
    )
    check = commands.add_parser(
        "validate",
        help="check a config file",
        description="Check a config file and report every problem.",
        formatter_class=_Formatter,
    )
    check.add_argument("--config", required=True, metavar="FILE", help="YAML config file")
    pod = check.add_mutually_exclusive_group()
    pod.add_argument(
        "--labels",
        metavar="K=V,...",
        help="check the config a pod with these labels runs (its profiles merged); "
        "default: the base and each profile on its own",
    )
    pod.add_argument(
        "--labels-file", metavar="FILE", help="like --labels, read from a downward API labels file"
    )
    check.add_argument(
        "--grace-period",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="the pod's terminationGracePeriodSeconds: warn when drain_delay + drain_timeout "
        "is longer (default: 30, Kubernetes' default)",
    )
    from sidegate.inject.command import add_parser, add_wait_parser

    add_parser(commands, _Formatter)
    add_wait_parser(commands, _Formatter)
    from sidegate.transparent.command import add_parser as add_iptables_parser

    add_iptables_parser(commands, _Formatter)
    for name, text in (("schema", "print the config JSON Schema"), ("version", "print the version")):
        commands.add_parser(name, help=text, description=text.capitalize() + ".", formatter_class=_Formatter)
    return parser


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, given the terminal width so that it does not import ``shutil``.

    ``sidegate run`` stays the gateway process: shutil would load bz2 and lzma into it, about
    400 KiB of RSS for its whole life, only to measure the terminal (argparse does so on every
    ``add_argument``).
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_terminal_width() - 2)


def _terminal_width() -> int:
    """What ``shutil.get_terminal_size().columns`` says: $COLUMNS, the terminal, or 80."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    stdout = sys.__stdout__
    if stdout is None:
        return 80
    try:
        return os.get_terminal_size(stdout.fileno()).columns or 80
    except (ValueError, OSError):
        return 80


def _seconds(text: str) -> float:
    """A ``--grace-period`` value: seconds, a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def validate(
    path: str, labels: str | None = None, labels_file: str | None = None, grace_period: float = 30.0
) -> int:
    """Load and compile ``path``; print ``OK: ...`` (exit 0) or every issue on stderr (exit 1).

    With ``labels`` (``k=v,...``) or ``labels_file`` (the downward API format), check the config
    a pod with those labels runs; without, the base config and then each profile on top of it,
    with labels its ``match`` asks for (a profile is a config a pod may run: CI checks them all).
    ``grace_period`` is the pod's ``terminationGracePeriodSeconds``: a stop that takes longer
    is a warning (:func:`sidegate.config.grace.grace_warning`).
    """
    try:
        from sidegate.config.grace import grace_warning
        from sidegate.config.profile_check import check_profiles, read_labels_option

        pod_labels = read_labels_option(labels, labels_file)
        checked = check_profiles(path, pod_labels)
        lines = checked.loaded.lines
        line = lines.get(("drain_delay",)) or lines.get(("drain_timeout",))
        grace = grace_warning(checked.snapshot, grace_period, line=line)
        if grace is not None:
            checked.warnings.append(grace)
    except ConfigError as exc:
        _print_issues(exc.source or path, exc.issues, exc.warnings)
        print(f"{path}: {_count(len(exc.issues), 'problem')} found", file=sys.stderr)
        return 1
    except Exception as exc:  # never a traceback: say what broke and where
        print(f"{path}: cannot validate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    _print_issues(path, [], checked.warnings)
    routes, upstreams = len(checked.snapshot.routes), len(checked.snapshot.upstreams)
    warned = f"; {_count(len(checked.warnings), 'warning')}" if checked.warnings else ""
    summary = f"; {checked.summary}" if checked.summary else ""
    print(f"OK: {path} ({_count(routes, 'route')}, {_count(upstreams, 'upstream')}{warned}{summary})")
    return 0


def _print_issues(source: str, issues: Sequence[ConfigIssue], warnings: Sequence[ConfigIssue]) -> None:
    """Errors and warnings on stderr, in the order of their lines."""
    both = [(issue, "") for issue in issues] + [(issue, "warning") for issue in warnings]
    for issue, kind in sorted(both, key=lambda pair: pair[0].line or 0):
        print(issue.located(source, kind), file=sys.stderr)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def format_issue(source: str, issue: ConfigIssue) -> str:
    """``FILE:LINE: path: message`` (without ``LINE`` or ``path`` when unknown)."""
    return issue.located(source)


def schema() -> int:
    """Print the JSON Schema of the config file, filters included."""
    from sidegate.config.model import config_json_schema

    print(json.dumps(config_json_schema(), indent=2))
    return 0


def run(config_path: str, log_level: str, log_format: str = "text") -> int:
    """Run the gateway until it is stopped (the runtime is imported only here)."""
    try:
        from sidegate import runtime
    except ModuleNotFoundError as exc:  # a broken install: say which part is missing
        if exc.name not in ("sidegate.runtime", "uvloop", "httptools"):
            raise
        print(f"sidegate run: the runtime is not available ({exc})", file=sys.stderr)
        return 1
    try:
        code: int = runtime.run(config_path, log_level, log_format)
        return code
    except ConfigError as exc:
        _cannot_start(exc, config_path, log_format)
        return 1
    except KeyboardInterrupt:
        return 130


def _cannot_start(error: ConfigError, config_path: str, log_format: str) -> None:
    """A config the gateway cannot start with: each issue as ``validate`` shows it, or as one
    JSON log record (``--log-format json``), then one line that says so."""
    source = error.source or config_path
    summary = f"sidegate: cannot start: {_count(len(error.issues), 'problem')} found in {source}"
    if log_format != "json":
        _print_issues(source, error.issues, error.warnings)
        print(summary, file=sys.stderr)
        return
    import logging

    log = logging.getLogger("sidegate.config")
    for issue in error.issues:
        log.error(issue.located(source), extra={"event": "config_error", **issue.fields(source)})
    for issue in error.warnings:
        log.warning(issue.located(source), extra={"event": "config_warning", **issue.fields(source)})
    issues = [issue.fields(source) for issue in error.issues]
    log.error(summary, extra={"event": "start", "result": "invalid_config", "issues": issues})


if __name__ == "__main__":
    sys.exit(main())
