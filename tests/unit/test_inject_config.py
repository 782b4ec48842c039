"""``sidegate inject --config``: the pod spec must agree with the Sidegate config it will run.

A listener the kubelet or the Service cannot reach (loopback, another port than declared) gives
a pod that never becomes ready, so it is refused with the fix; sizes come from the config.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from sidegate.inject.configured import ConfigFacts, check_config, read_config
from sidegate.inject.options import InjectError, InjectOptions
from support.configs import UPSTREAM_AND_ROUTE

BASE_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "base" / "sidegate.yaml"
CONFIG = (
    """\
listeners:
  inbound: {address: "INBOUND"}
  admin:   {address: "ADMIN"}
drain_timeout: 45s
cache: {max_size: 1GiB}
"""
    + UPSTREAM_AND_ROUTE
)


def facts(tmp_path: Path, inbound: str = "0.0.0.0:8080", admin: str = "127.0.0.1:9901") -> ConfigFacts:
    path = tmp_path / "sidegate.yaml"
    path.write_text(CONFIG.replace("INBOUND", inbound).replace("ADMIN", admin))
    return read_config(str(path))


def test_the_base_config_fits_the_default_sidecar() -> None:
    base = read_config(str(BASE_CONFIG))
    assert check_config(base, InjectOptions()) == []
    assert base.sizing.cache_max_size == 64 * 2**20


def test_sizes_and_addresses_come_from_the_config(tmp_path: Path) -> None:
    found = facts(tmp_path)
    assert found.sizing.cache_max_size == 2**30
    assert found.sizing.drain_timeout == 45.0
    assert found.sizing.grace_seconds == 55  # 5 s delay + 45 s drain + 5 s for the app
    assert found.inbound == ("0.0.0.0", 8080)
    assert found.endpoints == (("127.0.0.1", 3000),)


def test_a_loopback_inbound_listener_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InjectError) as caught:
        check_config(facts(tmp_path, inbound="127.0.0.1:8080"), InjectOptions())
    assert str(caught.value) == (
        f"{tmp_path / 'sidegate.yaml'}: listeners.inbound.address is 127.0.0.1:8080, loopback: the "
        "Service, the kubelet and Prometheus reach the pod IP; bind 0.0.0.0:8080"
    )


@pytest.mark.parametrize(
    ("inbound", "admin", "message"),
    [
        (
            "0.0.0.0:8081",
            "127.0.0.1:9901",
            "listeners.inbound.address is 0.0.0.0:8081 but the container declares 8080; give --port 8081",
        ),
        (
            "0.0.0.0:8080",
            "127.0.0.1:9911",
            "listeners.admin.address is 127.0.0.1:9911 but the container declares 9901; "
            "give --admin-port 9911",
        ),
        ("[::]:8081", "127.0.0.1:9901", "listeners.inbound.address is [::]:8081 but"),
    ],
)
def test_a_port_the_container_does_not_declare_is_refused(
    tmp_path: Path, inbound: str, admin: str, message: str
) -> None:
    with pytest.raises(InjectError) as caught:
        check_config(facts(tmp_path, inbound=inbound, admin=admin), InjectOptions())
    assert message in str(caught.value)
    fixed = InjectOptions(port=int(inbound.rsplit(":", 1)[1]), admin_port=int(admin.rsplit(":", 1)[1]))
    assert check_config(facts(tmp_path, inbound=inbound, admin=admin), fixed) == []


def test_a_loopback_health_listener_is_refused(tmp_path: Path) -> None:
    with_health = replace(facts(tmp_path), health=("127.0.0.1", 9902))
    with pytest.raises(InjectError, match=r"listeners\.health\.address is 127\.0\.0\.1:9902, loopback"):
        check_config(with_health, InjectOptions())
    assert check_config(replace(with_health, health=("0.0.0.0", 9902)), InjectOptions()) == []


def test_an_app_port_no_upstream_points_at_is_advice(tmp_path: Path) -> None:
    found = facts(tmp_path)
    assert check_config(found, InjectOptions(app_port=3000)) == []
    (advice,) = check_config(found, InjectOptions(app_port=5000))
    assert advice.endswith(
        "advice: no upstream endpoint is 127.0.0.1:5000, where --app-port says the app listens"
    )
