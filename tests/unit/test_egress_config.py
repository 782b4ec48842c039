"""The ``egress:`` section and ``listeners.egress``: defaults, what is compiled, and errors that
name the field and the fix."""

from __future__ import annotations

import ipaddress

import pytest

from sidegate.config.check import check_text
from sidegate.config.compile import compile_checked
from sidegate.config.egress_spec import EgressSpec
from sidegate.config.load import load_config_text
from sidegate.errors import ConfigError
from support.configs import UPSTREAM_AND_ROUTE

BASE = UPSTREAM_AND_ROUTE


def egress_of(extra: str) -> EgressSpec | None:
    return compile_checked(check_text(BASE + extra, "test.yaml", {})).egress


def error_of(extra: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config_text(BASE + extra, "test.yaml", {})
    return "\n".join(f"{issue.path}: {issue.message}" for issue in info.value.issues)


def test_no_egress_section_means_no_listener() -> None:
    assert egress_of("") is None


def test_egress_section_turns_the_listener_on_at_the_default_address() -> None:
    spec = egress_of("egress:\n  destinations:\n    - {name: partner, host: api.partner.com}\n")
    assert spec is not None
    assert (spec.host, spec.port, spec.default_action) == ("127.0.0.1", 15001, "deny")
    (partner,) = spec.destinations
    assert partner.ports == (80, 443)
    assert partner.schemes == frozenset({"http", "https"})
    assert partner.methods is None and partner.path_prefixes is None
    assert (partner.connect_timeout, partner.response_timeout, partner.idle_timeout) == (5.0, 30.0, 300.0)
    assert partner.named_origin() == ("api.partner.com", 80)


def test_every_destination_field_is_compiled() -> None:
    spec = egress_of(
        """\
listeners:
  egress: {address: "127.0.0.1:16001"}
egress:
  dns: {servers: ["127.0.0.1:5353"], timeout: 500ms}
  destinations:
    - name: Partner
      host: "*.Partner.com"
      ports: [8443]
      schemes: [https]
      methods: [get, POST]
      path_prefixes: [/v1/]
      allow_private: [10.20.0.7]
      origin: "api.partner.com:8443"
      timeouts: {connect: 1s, response: 2s, idle: 3s}
      max_connections: 4
"""
    )
    assert spec is not None and spec.port == 16001
    assert spec.dns_servers == (("127.0.0.1", 5353),) and spec.dns_timeout == 0.5
    (d,) = spec.destinations
    assert (d.name, d.host, d.ports, d.schemes) == ("partner", "*.partner.com", (8443,), frozenset({"https"}))
    assert d.methods == frozenset({"GET", "POST"}) and d.path_prefixes == ("/v1/",)
    assert d.allow_private == (ipaddress.ip_network("10.20.0.7/32"),)
    assert d.named_origin() == ("api.partner.com", 8443)
    assert (d.connect_timeout, d.response_timeout, d.idle_timeout, d.max_connections) == (1.0, 2.0, 3.0, 4)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("egress: {destinations: []}", "egress.destinations is empty"),
        ("egress: {}", "egress.destinations is empty"),
        ('listeners:\n  egress: {address: "127.0.0.1:15001"}\n', "there is no egress section"),
        ("egress:\n  destinations: [{name: a, host: 'api.*.com'}]", "may only be the whole first label"),
        ("egress:\n  destinations: [{name: a, host: 'a*.example.com'}]", "a wildcard may only be"),
        ("egress:\n  destinations: [{name: a, host: '*.com'}]", "would match a whole top-level domain"),
        ("egress:\n  destinations: [{name: a, host: 'api.example.com:443'}]", "put the port in `ports`"),
        ("egress:\n  destinations: [{name: a, host: x, ports: [0]}]", "egress.destinations[0].ports[0]"),
        ("egress:\n  destinations: [{name: a, host: x, ports: []}]", "egress.destinations[0].ports"),
        ("egress:\n  destinations: [{name: a, host: x, schemes: [ftp]}]", "destinations[0].schemes[0]"),
        ("egress:\n  destinations: [{name: a, host: x, allow_private: [10.0.0.0/33]}]", "not a CIDR"),
        ("egress:\n  destinations: [{name: a, host: x, path_prefixes: [v1]}]", "must start with '/'"),
        ("egress:\n  destinations: [{name: a, host: x}, {name: a, host: y}]", "is used twice"),
        ("egress: {default_action: allow, destinations: [{name: a, host: x}]}", "egress.default_action"),
        (
            'listeners:\n  egress: {address: "0.0.0.0:15001"}\negress: {destinations: [{name: a, host: x}]}',
            "is not a loopback address",
        ),
        ("egress:\n  destinations: [{name: a, host: x, proxy: y}]", "destinations[0].proxy: unknown key"),
    ],
)
def test_bad_egress_config_names_the_field_and_the_fix(extra: str, expected: str) -> None:
    assert expected in error_of(extra)


def test_the_egress_listener_may_not_share_another_listeners_port() -> None:
    destinations = "egress:\n  destinations: [{name: a, host: x}]\n"
    listener = 'listeners:\n  admin: {address: "127.0.0.1:15001"}\n'
    message = error_of(listener + destinations)
    assert (
        "listeners.admin.address: '127.0.0.1:15001' is also listeners.egress.address (its default)" in message
    )
    assert (
        egress_of(
            'listeners:\n  admin: {address: "127.0.0.1:15001"}\n  egress: {address: "127.0.0.1:15002"}\n'
            + destinations
        )
        is not None
    )
