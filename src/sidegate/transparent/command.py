"""``sidegate iptables``: print (default), apply (``--apply``) or remove (``--clean``) the nat
rules of transparent mode (:mod:`sidegate.transparent.rules`).

Ports default to the config's listeners when ``--config`` is given (egress, inbound, and the
health and admin ports, which are never redirected), else to the documented defaults. Applying
runs ``iptables-restore --noflush`` (``ip6tables-restore`` with ``--ipv6``) on input computed
from ``iptables-save -t nat``: the end state is the same however often it runs. Exit 0 done,
1 when iptables failed (its message on stderr), 2 for a bad flag (the message names it).
"""

from __future__ import annotations

import argparse
import ipaddress
import shutil
import subprocess
import sys
from typing import Any

from sidegate.transparent.rules import DEFAULT_PROXY_UID, Network, RedirectPlan, removal_input, restore_input

EGRESS_PORT, INBOUND_PORT, HEALTH_PORT, ADMIN_PORT = 15001, 8080, 9902, 9901


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return int(text)


def _ports(text: str) -> list[int]:
    return [_port(part.strip()) for part in text.split(",") if part.strip()]


def _inbound_ports(text: str) -> list[int] | str:
    return "*" if text.strip() == "*" else _ports(text)


def _ids(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        if not part.strip().isdigit():
            raise argparse.ArgumentTypeError(f"{part!r} is not a numeric user or group id")
        out.append(int(part))
    return out


def _cidrs(text: str) -> list[Network]:
    out = []
    for part in text.split(","):
        try:
            out.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a CIDR range such as 10.0.0.0/8") from None
    return out


def add_parser(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """Add the ``iptables`` subcommand to the ``sidegate`` parser's subcommands."""
    cmd = commands.add_parser(
        "iptables",
        help="print or apply the transparent-mode nat rules (an init container runs this)",
        description="Print the iptables nat rules that redirect the app's outbound TCP to the egress "
        "listener (and optionally inbound TCP to the inbound listener); --apply installs them, "
        "--clean removes Sidegate's chains. UDP is never redirected.",
        formatter_class=formatter,
    )
    action = cmd.add_mutually_exclusive_group()
    action.add_argument("--apply", action="store_true", help="install the rules (iptables-restore)")
    action.add_argument("--clean", "--remove", action="store_true", help="remove Sidegate's chains only")
    cmd.add_argument("--config", metavar="FILE", help="take the listener ports from this config")
    cmd.add_argument(
        "--egress-port", type=_port, help=f"redirect target (default: the config's, else {EGRESS_PORT})"
    )
    cmd.add_argument(
        "--inbound-port",
        type=_port,
        help=f"inbound redirect target (default: the config's, else {INBOUND_PORT})",
    )
    cmd.add_argument(
        "--proxy-uid",
        type=_ids,
        default=[DEFAULT_PROXY_UID],
        metavar="UID[,UID]",
        help=f"the sidecar's user, never redirected (default: {DEFAULT_PROXY_UID})",
    )
    cmd.add_argument(
        "--proxy-gid", type=_ids, metavar="GID[,GID]", help="the sidecar's group (default: the UIDs)"
    )
    cmd.add_argument(
        "--exclude-cidr",
        type=_cidrs,
        action="append",
        default=[],
        metavar="CIDR[,CIDR]",
        help="outbound destinations not redirected",
    )
    cmd.add_argument(
        "--include-cidr",
        type=_cidrs,
        action="append",
        default=[],
        metavar="CIDR[,CIDR]",
        help="redirect only these destinations (default: all)",
    )
    cmd.add_argument(
        "--exclude-port",
        type=_ports,
        action="append",
        default=[],
        metavar="PORT[,PORT]",
        help="outbound destination ports not redirected (TCP 53 always is, unless --redirect-dns)",
    )
    cmd.add_argument("--redirect-dns", action="store_true", help="redirect TCP port 53 too (UDP never is)")
    cmd.add_argument(
        "--inbound-ports",
        type=_inbound_ports,
        default=[],
        metavar="PORT[,PORT]|*",
        help="inbound ports redirected to the inbound listener (default: none)",
    )
    cmd.add_argument(
        "--exclude-inbound-port",
        type=_ports,
        action="append",
        default=[],
        metavar="PORT[,PORT]",
        help="inbound ports never redirected (the health and admin ports always are)",
    )
    cmd.add_argument("--ipv6", action="store_true", help="the ip6tables rules too (default: IPv4 only)")


class UsageError(ValueError):
    """A flag that makes no sense with the others; the text names it."""


def plan_from(args: argparse.Namespace) -> RedirectPlan:
    """The plan the flags describe, checked; :class:`UsageError` naming the flag if not."""
    ports = _config_ports(args.config) if args.config else {}
    never = {ports.get("health", HEALTH_PORT), ports.get("admin", ADMIN_PORT)}
    inbound: list[int] | str = args.inbound_ports
    excluded = [p for group in args.exclude_inbound_port for p in group]
    if isinstance(inbound, list):
        for port in inbound:
            if port in never:
                listed = ", ".join(map(str, sorted(never)))
                raise UsageError(
                    f"--inbound-ports {port}: the health and admin ports ({listed}) "
                    "are never redirected (kubelet probes must reach the health listener)"
                )
            if port in excluded:
                raise UsageError(f"--inbound-ports {port} is also in --exclude-inbound-port: choose one")
    include = tuple(n for group in args.include_cidr for n in group)
    exclude = tuple(n for group in args.exclude_cidr for n in group)
    for network in include:
        if any(network == other for other in exclude):
            raise UsageError(f"--include-cidr {network} is also in --exclude-cidr: choose one")
    if not args.ipv6 and any(n.version == 6 for n in (*include, *exclude)):
        raise UsageError(
            "--include-cidr/--exclude-cidr name an IPv6 range: add --ipv6 for the ip6tables rules"
        )
    egress = args.egress_port or ports.get("egress", EGRESS_PORT)
    inbound_port = args.inbound_port or ports.get("inbound", INBOUND_PORT)
    return RedirectPlan(
        egress_port=egress,
        inbound_port=inbound_port,
        proxy_uids=tuple(args.proxy_uid),
        proxy_gids=tuple(args.proxy_gid if args.proxy_gid is not None else args.proxy_uid),
        exclude_cidrs=exclude,
        include_cidrs=include,
        exclude_ports=tuple(p for group in args.exclude_port for p in group),
        redirect_dns=args.redirect_dns,
        inbound_ports=tuple(inbound) if isinstance(inbound, list) else (),
        inbound_all=inbound == "*",
        exclude_inbound_ports=tuple(dict.fromkeys([*sorted(never), inbound_port, *excluded]))
        if inbound == "*"
        else tuple(dict.fromkeys([*sorted(never), *excluded])),
    )


def _config_ports(path: str) -> dict[str, int]:
    """The listener ports of a config file (``off`` listeners left out)."""
    from sidegate.config.load import load_config

    listeners = load_config(path).config.listeners
    out = {}
    addresses = {"inbound": listeners.inbound.address, "admin": listeners.admin.address}
    addresses["health"] = listeners.health.address
    if listeners.egress is not None:
        addresses["egress"] = listeners.egress.address
    for name, address in addresses.items():
        port = address.rpartition(":")[2]
        if port.isdigit():
            out[name] = int(port)
    return out


def iptables(args: argparse.Namespace) -> int:
    """The ``sidegate iptables`` command."""
    from sidegate.errors import ConfigError

    try:
        plan = plan_from(args)
    except UsageError as error:
        print(f"sidegate iptables: {error}", file=sys.stderr)
        return 2
    except ConfigError as error:
        for issue in error.issues:
            print(issue.located(error.source or args.config), file=sys.stderr)
        return 1
    versions = (4, 6) if args.ipv6 else (4,)
    if not args.apply and not args.clean:
        for version in versions:
            print(restore_input(plan, version), end="")
        if not args.ipv6:
            print("# IPv4 only: the app's IPv6 TCP is not redirected (add --ipv6 for ip6tables rules)")
        return 0
    for version in versions:
        tool = "iptables" if version == 4 else "ip6tables"
        try:
            saved = _run([f"{tool}-save", "-t", "nat"], "").splitlines()
            text = restore_input(plan, version, existing=saved) if args.apply else removal_input(saved)
            if text is not None:
                _run([f"{tool}-restore", "--noflush", "--wait"], text)
        except RuntimeError as error:
            print(f"sidegate iptables: {error}", file=sys.stderr)
            return 1
        done = "applied" if args.apply else "removed" if text is not None else "nothing to remove"
        print(f"sidegate iptables: {tool} nat rules {done}", file=sys.stderr)
    return 0


def _run(command: list[str], stdin: str) -> str:
    if shutil.which(command[0]) is None:
        raise RuntimeError(f"{command[0]} is not installed (Debian: apt-get install iptables)")
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip() or done.returncode}")
    return done.stdout
