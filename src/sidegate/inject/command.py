"""``sidegate inject [FILE|-]``: its options, and the one function the command line calls.

Output goes to stdout (or ``--output FILE``), messages to stderr: one line per refusal, in the
``FILE:doc N: kind/name: message`` form, then advice lines (``...: advice: ...``) and a summary.
Exit 0 when the stream was written, 1 when anything was refused (and nothing was written), 2 for
a usage error (argparse). Never a traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from sidegate.inject.options import (
    ADMIN_PORT,
    DEFAULT_CONFIG_MAP,
    DEFAULT_IMAGE,
    HEALTH_PORT,
    INBOUND_PORT,
    InjectError,
    InjectOptions,
    Sizing,
)

_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def add_parser(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """Add the ``inject`` subcommand to the ``sidegate`` parser's subcommands."""
    cmd = commands.add_parser(
        "inject",
        help="add the Sidegate sidecar to Kubernetes workloads",
        description="Read Kubernetes YAML (Deployment, StatefulSet, DaemonSet, Job, CronJob, Pod, "
        "List) and write it back with the Sidegate sidecar added; other documents pass unchanged.",
        formatter_class=formatter,
    )
    cmd.add_argument(
        "file", nargs="?", default="-", metavar="FILE", help="YAML to read; - for stdin (default)"
    )
    cmd.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    cmd.add_argument("--image", default=DEFAULT_IMAGE, help=f"Sidegate image (default: {DEFAULT_IMAGE})")
    cmd.add_argument(
        "--config-map",
        default=DEFAULT_CONFIG_MAP,
        metavar="NAME",
        help=f"ConfigMap holding sidegate.yaml (default: {DEFAULT_CONFIG_MAP})",
    )
    cmd.add_argument(
        "--config", metavar="FILE", help="the Sidegate config: sizes the cache volume and grace period"
    )
    cmd.add_argument(
        "--mode",
        choices=("native", "classic"),
        default="native",
        help="native sidecar (Kubernetes >= 1.29) or a plain container (default: native)",
    )
    cmd.add_argument("--port", type=int, default=INBOUND_PORT, help=f"inbound port (default: {INBOUND_PORT})")
    cmd.add_argument(
        "--health-port", type=int, default=HEALTH_PORT, help=f"health port (default: {HEALTH_PORT})"
    )
    cmd.add_argument(
        "--admin-port", type=int, default=ADMIN_PORT, help=f"loopback admin port (default: {ADMIN_PORT})"
    )
    cmd.add_argument("--app-port", type=int, help="the app's port on 127.0.0.1 (for advice)")
    cmd.add_argument("--cpu", default="100m", help="CPU request (default: 100m)")
    cmd.add_argument("--memory", default="128Mi", help="memory request (default: 128Mi)")
    cmd.add_argument("--cpu-limit", default="1", help="CPU limit (default: 1)")
    cmd.add_argument("--memory-limit", default="", help="memory limit (default: 256Mi + cache.max_size)")


def add_wait_parser(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """Add ``wait-ready``, the postStart hook of a classic-mode sidecar."""
    cmd = commands.add_parser(
        "wait-ready",
        help="wait until Sidegate is ready (a classic-mode postStart hook)",
        description="Poll Sidegate's /ready on loopback until it answers 200; exit 1 after --timeout.",
        formatter_class=formatter,
    )
    cmd.add_argument("--url", default=f"http://127.0.0.1:{HEALTH_PORT}/ready", help="what to poll")
    cmd.add_argument(
        "--timeout", type=_duration, default=120.0, help="give up after this long (default: 120s)"
    )


def _duration(text: str) -> float:
    from sidegate.units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def wait_ready(args: argparse.Namespace) -> int:
    """Run ``sidegate wait-ready`` with parsed ``args``; the process exit code."""
    from sidegate.inject.wait_ready import wait_ready as poll

    url: str = args.url
    if not url.startswith("http://"):
        print(f"sidegate wait-ready: --url {url!r}: give an http:// URL on loopback", file=sys.stderr)
        return 1
    return poll(url, args.timeout)


def inject(args: argparse.Namespace) -> int:
    """Run ``sidegate inject`` with parsed ``args``; the process exit code."""
    try:
        options, config_advice = _options(args)
        text, source = _read(args.file)
    except InjectError as exc:
        for line in str(exc).splitlines():
            print(f"sidegate inject: {line}", file=sys.stderr)
        return 1
    from sidegate.inject.stream import inject_text

    try:
        result = inject_text(text, source, options)
    except Exception as exc:  # never a traceback: say what broke and where
        print(f"sidegate inject: cannot inject {source}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for line in result.errors:
        print(line, file=sys.stderr)
    if result.errors:
        print(
            f"sidegate inject: nothing written: {len(result.errors)} problem(s) in {source}", file=sys.stderr
        )
        return 1
    try:
        _write(args.output, result.text)
    except OSError as exc:
        print(f"sidegate inject: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for line in config_advice + result.advice:
        print(line, file=sys.stderr)
    print(
        f"sidegate inject: {result.injected} workload(s) injected, {result.unchanged} already up to date "
        f"({options.mode} mode); point Services at targetPort http ({options.port}), probes at "
        f"{options.health_port}",
        file=sys.stderr,
    )
    return 0


def _options(args: argparse.Namespace) -> tuple[InjectOptions, list[str]]:
    """The options, and advice about the config they were read from."""
    from sidegate.inject.configured import check_config, read_config

    ports = {"--port": args.port, "--health-port": args.health_port, "--admin-port": args.admin_port}
    if args.app_port is not None:
        ports["--app-port"] = args.app_port
    for flag, port in ports.items():
        if not 1 <= port <= 65535:
            raise InjectError(f"{flag} {port}: a port is 1 to 65535")
    if len(set(ports.values())) < len(ports):
        shown = ", ".join(f"{flag} {port}" for flag, port in ports.items())
        raise InjectError(f"two ports are the same ({shown}); each needs its own")
    for flag, value in (("--cpu", args.cpu), ("--memory", args.memory), ("--cpu-limit", args.cpu_limit)):
        _quantity(flag, value)
    if args.memory_limit:
        _quantity("--memory-limit", args.memory_limit)
    if not _DNS_NAME.fullmatch(args.config_map):
        raise InjectError(
            f"--config-map {args.config_map!r}: a ConfigMap name is lower-case letters, digits, '-' and '.'"
        )
    if not args.image.strip() or any(ch.isspace() for ch in args.image):
        raise InjectError(f"--image {args.image!r}: give an image reference such as registry/sidegate:0.1.0")
    facts = read_config(args.config) if args.config else None
    options = InjectOptions(
        image=args.image,
        config_map=args.config_map,
        port=args.port,
        health_port=args.health_port,
        admin_port=args.admin_port,
        app_port=args.app_port,
        mode=args.mode,
        cpu_request=args.cpu,
        memory_request=args.memory,
        cpu_limit=args.cpu_limit,
        memory_limit=args.memory_limit,
        sizing=facts.sizing if facts else Sizing(),
    )
    return options, check_config(facts, options) if facts else []


def _quantity(flag: str, value: str) -> None:
    if not _QUANTITY.fullmatch(value):
        raise InjectError(f"{flag} {value!r}: not a Kubernetes quantity; write e.g. 100m, 0.5, 128Mi, 1Gi")


def _read(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return handle.read(), path
    except FileNotFoundError:
        raise InjectError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InjectError(
            f"{path}: is a directory; give a YAML file (kustomize build DIR | sidegate inject)"
        ) from None
    except UnicodeDecodeError:
        raise InjectError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise InjectError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _write(path: str | None, text: str) -> None:
    if path is None or path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
