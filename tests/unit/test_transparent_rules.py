"""``sidegate iptables``: the exact nat rules printed for given flags, and bad flags refused
with a message naming the flag (the rules themselves run for real in
tests/integration/test_egress_transparent_netns.py)."""

from __future__ import annotations

import pytest

from sidegate.cli import main
from sidegate.transparent.rules import RedirectPlan, removal_input, restore_input


def printed(capsys: pytest.CaptureFixture[str], *flags: str) -> list[str]:
    assert main(["iptables", *flags]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]


def test_the_default_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert printed(capsys) == [
        "*nat",
        ":SIDEGATE_OUTPUT - [0:0]",
        ":SIDEGATE_REDIRECT - [0:0]",
        "-A SIDEGATE_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A SIDEGATE_OUTPUT -m owner --uid-owner 65532 -j RETURN",
        "-A SIDEGATE_OUTPUT -m owner --gid-owner 65532 -j RETURN",
        "-A SIDEGATE_OUTPUT -o lo -j RETURN",
        "-A SIDEGATE_OUTPUT -d 127.0.0.0/8 -j RETURN",
        "-A SIDEGATE_OUTPUT -p tcp --dport 53 -j RETURN",
        "-A SIDEGATE_OUTPUT -j SIDEGATE_REDIRECT",
        "-A OUTPUT -p tcp -j SIDEGATE_OUTPUT",
        "COMMIT",
    ]
    assert main(["iptables"]) == 0
    assert "IPv4 only" in capsys.readouterr().out


def test_exclusions_inclusions_and_inbound(capsys: pytest.CaptureFixture[str]) -> None:
    rules = printed(
        capsys,
        "--proxy-uid", "1337", "--proxy-gid", "1338", "--egress-port", "15006",
        "--exclude-cidr", "10.0.0.0/8", "--include-cidr", "192.0.2.0/24,198.51.100.0/24",
        "--exclude-port", "22,5432", "--redirect-dns", "--inbound-ports", "8080,8443",
        "--exclude-inbound-port", "15020",
    )  # fmt: skip
    assert rules == [
        "*nat",
        ":SIDEGATE_OUTPUT - [0:0]",
        ":SIDEGATE_REDIRECT - [0:0]",
        ":SIDEGATE_INBOUND - [0:0]",
        ":SIDEGATE_IN_REDIRECT - [0:0]",
        "-A SIDEGATE_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A SIDEGATE_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A SIDEGATE_OUTPUT -m owner --gid-owner 1338 -j RETURN",
        "-A SIDEGATE_OUTPUT -o lo -j RETURN",
        "-A SIDEGATE_OUTPUT -d 127.0.0.0/8 -j RETURN",
        "-A SIDEGATE_OUTPUT -p tcp --dport 22 -j RETURN",  # no port 53: --redirect-dns
        "-A SIDEGATE_OUTPUT -p tcp --dport 5432 -j RETURN",
        "-A SIDEGATE_OUTPUT -d 10.0.0.0/8 -j RETURN",
        "-A SIDEGATE_OUTPUT -d 192.0.2.0/24 -j SIDEGATE_REDIRECT",
        "-A SIDEGATE_OUTPUT -d 198.51.100.0/24 -j SIDEGATE_REDIRECT",
        "-A SIDEGATE_IN_REDIRECT -p tcp -j REDIRECT --to-ports 8080",
        "-A SIDEGATE_INBOUND -p tcp --dport 9901 -j RETURN",
        "-A SIDEGATE_INBOUND -p tcp --dport 9902 -j RETURN",
        "-A SIDEGATE_INBOUND -p tcp --dport 15020 -j RETURN",
        "-A SIDEGATE_INBOUND -p tcp --dport 8080 -j SIDEGATE_IN_REDIRECT",
        "-A SIDEGATE_INBOUND -p tcp --dport 8443 -j SIDEGATE_IN_REDIRECT",
        "-A OUTPUT -p tcp -j SIDEGATE_OUTPUT",
        "-A PREROUTING -p tcp -j SIDEGATE_INBOUND",
        "COMMIT",
    ]


def test_every_inbound_port_but_the_health_and_admin_ports(capsys: pytest.CaptureFixture[str]) -> None:
    rules = printed(capsys, "--inbound-ports", "*")
    inbound = [r for r in rules if r.startswith("-A SIDEGATE_INBOUND")]
    assert inbound == [
        "-A SIDEGATE_INBOUND -p tcp --dport 9901 -j RETURN",
        "-A SIDEGATE_INBOUND -p tcp --dport 9902 -j RETURN",
        "-A SIDEGATE_INBOUND -p tcp --dport 8080 -j RETURN",
        "-A SIDEGATE_INBOUND -p tcp -j SIDEGATE_IN_REDIRECT",
    ]


def test_ipv6_rules_on_request(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["iptables", "--ipv6", "--exclude-cidr", "10.0.0.0/8,fd00::/8"]) == 0
    out = capsys.readouterr().out
    v4, _, v6 = out.partition("IPv6")
    assert "-A SIDEGATE_OUTPUT -d 10.0.0.0/8 -j RETURN" in v4 and "fd00::/8" not in v4
    assert "-A SIDEGATE_OUTPUT -d ::1/128 -j RETURN" in v6 and "-d fd00::/8 -j RETURN" in v6
    assert "10.0.0.0/8" not in v6


def test_the_config_gives_the_ports(capsys: pytest.CaptureFixture[str], tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "sidegate.yaml"
    path.write_text(
        "listeners:\n  inbound: {address: '0.0.0.0:8000'}\n  admin: {address: '127.0.0.1:9000'}\n"
        "  health: {address: '0.0.0.0:9100'}\n  egress: {address: '127.0.0.1:15333'}\n"
        "upstreams: {app: {endpoints: ['127.0.0.1:3000']}}\n"
        "routes: [{name: all, match: {path_prefix: /}, upstream: app}]\n"
        "egress: {destinations: [{name: x, host: x.example}]}\n"
    )
    rules = printed(capsys, "--config", str(path), "--inbound-ports", "*")
    assert "-A SIDEGATE_REDIRECT -p tcp -j REDIRECT --to-ports 15333" in rules
    assert "-A SIDEGATE_IN_REDIRECT -p tcp -j REDIRECT --to-ports 8000" in rules
    assert "-A SIDEGATE_INBOUND -p tcp --dport 9000 -j RETURN" in rules
    assert "-A SIDEGATE_INBOUND -p tcp --dport 9100 -j RETURN" in rules


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--inbound-ports", "9902"], "--inbound-ports 9902: the health and admin ports"),
        (["--inbound-ports", "80", "--exclude-inbound-port", "80"], "also in --exclude-inbound-port"),
        (["--include-cidr", "10.0.0.0/8", "--exclude-cidr", "10.0.0.0/8"], "--include-cidr 10.0.0.0/8"),
        (["--exclude-cidr", "fd00::/8"], "add --ipv6"),
        (["--exclude-port", "70000"], "argument --exclude-port: '70000' is not a port"),
        (["--exclude-cidr", "10.0.0/33"], "argument --exclude-cidr"),
        (["--proxy-uid", "root"], "argument --proxy-uid"),
        (["--apply", "--clean"], "not allowed with argument"),
    ],
)
def test_bad_flags_are_named(flags: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(["iptables", *flags])
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    assert code == 2
    assert message in capsys.readouterr().err


def test_applying_over_an_older_plan_replaces_it() -> None:
    saved = [
        ":SIDEGATE_OUTPUT - [0:0]",
        ":SIDEGATE_INBOUND - [0:0]",
        "-A PREROUTING -p tcp -j SIDEGATE_INBOUND",
        "-A OUTPUT -p tcp -j SIDEGATE_OUTPUT",
        "-A OUTPUT -p tcp -j OTHER_MESH",  # someone else's: left alone
    ]
    text = restore_input(RedirectPlan(), 4, existing=saved).splitlines()
    assert "-D PREROUTING -p tcp -j SIDEGATE_INBOUND" in text and "-X SIDEGATE_INBOUND" in text
    assert "-D OUTPUT -p tcp -j SIDEGATE_OUTPUT" in text and "-A OUTPUT -p tcp -j SIDEGATE_OUTPUT" in text
    assert not any("OTHER_MESH" in line for line in text)
    assert removal_input(["-A OUTPUT -p tcp -j OTHER_MESH"]) is None
