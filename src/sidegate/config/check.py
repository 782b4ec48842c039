"""The config checker: validates a config and prints it as normalised JSON, for another process.

The serving process runs it as a separate process (:mod:`sidegate.config.isolated`), so that
YAML, pydantic and the config models are loaded here and never there::

    python -m sidegate.config.check PATH                          # or --source PATH
    python -m sidegate.config.check --text-stdin --source NAME    # the text on stdin; NAME in messages
    python -m sidegate.config.check --serve [--warm a,b]          # imports once, a child per check

``--serve`` is how the serving process uses it (:mod:`sidegate.config.forking`): the checker
does its imports (pydantic, YAML, and the filters named by ``--warm``, those of the config being
served, with their validators) once, then reads JSON requests on stdin, one a line,
``{"path": P}`` or ``{"text": T, "source": NAME}``, with ``"environ"`` (the environment for
``${ENV}``, replacing its own) and ``"cwd"`` (where a relative path starts), and answers each from
a forked child that exits after it.

It loads the config with :func:`~sidegate.config.load.load_config` (``${ENV}`` taken from its own
environment) and prints ONE JSON document on stdout, then exits 0, whatever the config::

    {"ok": true, "format": 1, "source": ..., "config": {...}, "lines": {"routes[0].filters.x": 12}}
    {"ok": false, "format": 1, "source": ..., "issues": [{"path": ..., "message": ..., "line": ...}]}

``config`` is the normalised config (:func:`normalise`): every default filled in, durations as
float seconds, sizes as int bytes, addresses as ``"host:port"`` strings, enums as their values,
unset optional values as ``null``, each route's ``filters`` as ``{name: config}`` in chain order.
``lines`` gives the line of each route's filter entry. The config is the merged one (the base
with the ``profiles:`` the pod's labels select); ``pod`` also says which profiles are in force
(``profiles_in_force``), the labels read (``labels``) and where from (``labels_from``).
Any failure, even an unexpected exception, is an issue (at path ``""`` when it has no better
place), never a traceback. Exit status 2 is for a usage error only (argparse's message on stderr).

:func:`check_file` and :func:`check_text` do the same in-process, for the CLI and tests.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from sidegate.config.compile import filter_path
from sidegate.config.forking import serve
from sidegate.config.isolated import FORMAT, Normalised
from sidegate.config.load import LoadedConfig, load_config, load_config_text
from sidegate.config.model import filter_adapter
from sidegate.errors import ConfigError, ConfigIssue
from sidegate.filters.registry import lookup


def normalise(loaded: LoadedConfig) -> Normalised:
    """A validated config as the plain JSON data that :mod:`sidegate.config.compile` takes."""
    config = loaded.config
    data = config.model_dump(mode="json", exclude={"routes": {"__all__": {"filters"}}})
    lines: dict[str, int] = {}
    for index, (route, plain) in enumerate(zip(config.routes, data["routes"], strict=True)):
        plain["filters"] = {
            name: filter_adapter(type(value)).dump_python(value, mode="json")
            for name, value in route.filters.items()
        }
        for name in route.filters:
            line = loaded.line_of(("routes", index, "filters", name))
            if line is not None:
                lines[filter_path(index, name)] = line
    data["pod"].update(loaded.profiles.plain())  # what the labels chose, for /config_dump
    return Normalised(data, loaded.source, lines, loaded.warnings)


def check_file(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Normalised:
    """Load, validate and normalise the file at ``path`` in this process; raise ConfigError."""
    return normalise(load_config(path, environ))


def check_text(text: str, source: str = "<string>", environ: Mapping[str, str] | None = None) -> Normalised:
    """Like :func:`check_file` for config text in memory."""
    return normalise(load_config_text(text, source, environ))


def answer(path: str | None = None, *, text: str | None = None, source: str = "<string>") -> str:
    """The checker's JSON answer for the file at ``path``, or for ``text``; never raises."""
    source = path if path is not None else source
    try:
        checked = check_file(path) if path is not None else check_text(text or "", source)
        document: dict[str, Any] = {
            "ok": True,
            "format": FORMAT,
            "source": checked.source,
            "config": checked.config,
            "lines": checked.lines,
            "warnings": _listed(checked.warnings),
        }
        return json.dumps(document, allow_nan=False)
    except ConfigError as exc:
        return _rejected(exc.source or source, exc.issues, exc.warnings)
    except Exception as exc:  # a filter's code may raise anything: still one JSON answer
        issue = ConfigIssue("", f"the config checker failed: {type(exc).__name__}: {exc}")
        return _rejected(source, [issue])


def _rejected(source: str, issues: Sequence[ConfigIssue], warnings: Sequence[ConfigIssue] = ()) -> str:
    document: dict[str, Any] = {"ok": False, "format": FORMAT, "source": source, "issues": _listed(issues)}
    if warnings:
        document["warnings"] = _listed(warnings)
    return json.dumps(document)


def _listed(issues: Sequence[ConfigIssue]) -> list[dict[str, Any]]:
    return [{"path": i.path, "message": i.message, "line": i.line} for i in issues]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sidegate.config.check",
        description="Validate a Sidegate config and print it as normalised JSON (one document).",
    )
    parser.add_argument("path", nargs="?", help="the config file")
    parser.add_argument("--source", help="the config file; with --text-stdin, the name shown in messages")
    parser.add_argument("--text-stdin", action="store_true", help="read the config text from stdin")
    parser.add_argument(
        "--serve", action="store_true", help="import once, then answer JSON requests on stdin, one per line"
    )
    parser.add_argument(
        "--warm", default="", metavar="NAMES", help="with --serve: filters to import first (a,b)"
    )
    return parser


def _warm_up(names: Sequence[str]) -> None:
    """Import the filters a check is likely to need (and their validators), ahead of the request."""
    for name in names:
        cls = lookup(name)
        if cls is not None:
            filter_adapter(cls.config_model)


def _request(raw: bytes) -> str | None:
    """The answer to one ``--serve`` request (None for no request at all)."""
    if not raw.strip():
        return None
    source = "<string>"
    try:
        request = json.loads(raw)
        source = str(request.get("source") or request.get("path") or source)
        os.environ.clear()
        os.environ.update(request["environ"])
        os.chdir(request["cwd"])
        if request.get("path") is not None:
            return answer(str(request["path"]))
        return answer(text=str(request["text"]).removeprefix("\ufeff"), source=source)
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        issue = ConfigIssue("", f"the config checker got a bad request: {type(exc).__name__}: {exc}")
        return _rejected(source, [issue])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0, or 2 for a usage error)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.serve and (args.text_stdin or args.path is not None or args.source is not None):
        parser.error("--serve takes no other argument than --warm")
    if args.serve:
        _serve([name for name in args.warm.split(",") if name])
    if args.text_stdin and (args.source is None or args.path is not None):
        parser.error("--text-stdin takes --source NAME and no PATH")
    if not args.text_stdin and (args.path is None) == (args.source is None):
        parser.error("give the config file, as PATH or as --source PATH")
    stdout = sys.stdout
    sys.stdout = sys.stderr  # whatever a filter module prints must not spoil the JSON answer
    try:
        if args.text_stdin:
            try:
                text = sys.stdin.buffer.read().decode("utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                issue = ConfigIssue("", f"cannot read the config text from stdin: {exc}")
                document = _rejected(args.source, [issue])
            else:
                document = answer(text=text, source=args.source)
        else:
            document = answer(args.path if args.path is not None else args.source)
    finally:
        sys.stdout = stdout
    stdout.write(document + "\n")
    stdout.flush()
    return 0


def _serve(warm: Sequence[str]) -> NoReturn:
    """``--serve``: warm up, then a forked child per request (:mod:`sidegate.config.forking`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the gateway, which stops us
    sys.stdout = sys.stderr  # replies go to fd 1 directly; anything printed, to stderr
    _warm_up(warm)
    serve(_request, _warm_up)


if __name__ == "__main__":
    sys.exit(main())
