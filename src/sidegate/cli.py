"""The ``sidegate`` command line: ``run``, ``validate``, ``schema``, ``version``.

``validate`` and ``schema`` only import the config layer (pydantic, YAML, the filter registry):
the runtime, asyncio and uvloop are imported by ``run`` alone, inside the function. ``run`` in
turn never imports pydantic or YAML: it validates in a child process (``sidegate.config.isolated``),
while ``validate``, a one-shot command, validates in-process and then compiles the result as the
gateway would, so that a filter that cannot start is reported too. ``validate``
never shows a traceback: every outcome is one ``OK`` line, or one line per issue on stderr in the
``FILE:LINE: path: message`` form that editors and CI annotate. Exit codes: 0 success, 1 invalid
config or failure, 2 usage error (argparse).
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sidegate`` console script; returns the process exit code."""
    args = _parser().parse_args(argv)
    command: str = args.command
    if command == "validate":
        return validate(args.config)
    if command == "schema":
        return schema()
    if command == "version":
        from sidegate.native import describe

        print(f"sidegate {__version__}, {describe()}")
        return 0
    return run(args.config, args.log_level)


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
    check = commands.add_parser(
        "validate",
        help="check a config file",
        description="Check a config file and report every problem.",
        formatter_class=_Formatter,
    )
    check.add_argument("--config", required=True, metavar="FILE", help="YAML config file")
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


def validate(path: str) -> int:
    """Load and compile ``path``; print ``OK: ...`` (exit 0) or every issue on stderr (exit 1)."""
    try:
        from sidegate.config.check import normalise
        from sidegate.config.compile import compile_checked
        from sidegate.config.load import load_config

        snapshot = compile_checked(normalise(load_config(path)))
    except ConfigError as exc:
        for issue in exc.issues:
            print(format_issue(exc.source or path, issue), file=sys.stderr)
        print(f"{path}: {_count(len(exc.issues), 'problem')} found", file=sys.stderr)
        return 1
    except Exception as exc:  # never a traceback: say what broke and where
        print(f"{path}: cannot validate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    routes, upstreams = len(snapshot.routes), len(snapshot.upstreams)
    print(f"OK: {path} ({_count(routes, 'route')}, {_count(upstreams, 'upstream')})")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def format_issue(source: str, issue: ConfigIssue) -> str:
    """``FILE:LINE: path: message`` (without ``LINE`` or ``path`` when unknown)."""
    where = f"{source}:{issue.line}" if issue.line is not None else source
    return f"{where}: {issue.path}: {issue.message}" if issue.path else f"{where}: {issue.message}"


def schema() -> int:
    """Print the JSON Schema of the config file, filters included."""
    from sidegate.config.model import config_json_schema

    print(json.dumps(config_json_schema(), indent=2))
    return 0


def run(config_path: str, log_level: str) -> int:
    """Run the gateway until it is stopped (the runtime is imported only here)."""
    try:
        # runtime.py is the lead's composition root; the ignore is for before it exists.
        from sidegate import runtime  # type: ignore[attr-defined,unused-ignore]
    except ModuleNotFoundError as exc:
        if exc.name not in ("sidegate.runtime", "uvloop", "httptools"):
            raise
        print(f"sidegate run: the runtime is not available ({exc})", file=sys.stderr)
        return 1
    try:
        code: int = runtime.run(config_path, log_level)
        return code
    except ConfigError as exc:
        for issue in exc.issues:
            print(format_issue(exc.source or config_path, issue), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
