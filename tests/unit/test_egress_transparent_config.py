"""``egress.transparent``, ``egress.connect_sni`` and a destination's ``connect_sni`` and
``schemes: [tcp]``: their defaults, what is compiled, and errors naming the field."""

from __future__ import annotations

import pytest

from sidegate.config.check import check_text
from sidegate.config.compile import compile_checked
from sidegate.config.egress_spec import EgressSpec
from sidegate.config.load import load_config_text
from sidegate.errors import ConfigError
from support.configs import UPSTREAM_AND_ROUTE

DESTINATION = "    - {name: partner, host: api.partner.com}\n"


def egress_of(extra: str) -> EgressSpec:
    spec = compile_checked(check_text(UPSTREAM_AND_ROUTE + extra, "test.yaml", {})).egress
    assert spec is not None
    return spec


def test_both_are_off_by_default() -> None:
    spec = egress_of("egress:\n  destinations:\n" + DESTINATION)
    assert (spec.transparent, spec.connect_sni) == (False, "off")
    assert spec.destinations[0].connect_sni is None  # the egress-wide setting decides
    assert "tcp" not in spec.destinations[0].schemes  # raw TCP only where a destination says so


def test_they_are_compiled() -> None:
    spec = egress_of(
        "egress:\n  transparent: true\n  connect_sni: match\n  destinations:\n"
        "    - {name: raw, host: 192.0.2.9, ports: [5432], schemes: [tcp], connect_sni: 'off'}\n"
    )
    assert (spec.transparent, spec.connect_sni) == (True, "match")
    (raw,) = spec.destinations
    assert raw.schemes == frozenset({"tcp"}) and raw.connect_sni == "off"


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ("egress:\n  connect_sni: strict\n  destinations:\n" + DESTINATION, "egress.connect_sni"),
        ("egress:\n  transparent: sometimes\n  destinations:\n" + DESTINATION, "egress.transparent"),
        (
            "egress:\n  destinations:\n    - {name: p, host: p.example, connect_sni: yes-please}\n",
            "egress.destinations[0].connect_sni",
        ),
        (
            "egress:\n  destinations:\n    - {name: p, host: p.example, schemes: [udp]}\n",
            "egress.destinations[0].schemes",
        ),
    ],
)
def test_bad_values_name_the_field(extra: str, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(UPSTREAM_AND_ROUTE + extra, "test.yaml", {})
    paths = [issue.path for issue in info.value.issues]
    assert any(p.startswith(path) for p in paths), paths
