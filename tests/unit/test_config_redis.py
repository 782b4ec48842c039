"""The ``redis:`` section: ``rediss://`` and its ``tls`` keys, what compiles and what a mistake says."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from sidegate.config.check import check_text
from sidegate.config.compile import compile_checked
from sidegate.config.load import load_config_text
from sidegate.config.snapshot import RedisSpec, RedisTls
from sidegate.errors import ConfigError, ConfigIssue
from support.configs import MINIMAL
from support.tls import CertificateAuthority, Issued

Pem = tuple[CertificateAuthority, Issued, Issued]  # a CA, a client certificate it signed, another one


def redis_section(redis: dict[str, object]) -> str:
    return MINIMAL + "redis: " + json.dumps(redis) + "\n"


def compiled(redis: dict[str, object]) -> RedisSpec:
    return compile_checked(check_text(redis_section(redis), "test.yaml", environ={})).redis


def only_issue(redis: dict[str, object]) -> ConfigIssue:
    with pytest.raises(ConfigError) as info:
        load_config_text(textwrap.dedent(redis_section(redis)), "test.yaml", {})
    (issue,) = info.value.issues
    return issue


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Pem:
    base = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.create(base / "ca")
    return ca, ca.issue(base / "client", "sidegate", client=True), ca.issue(base / "other", "x", client=True)


def test_a_plain_url_has_no_tls_and_rediss_has_it_with_its_defaults(
    pem: Pem,
) -> None:
    assert compiled({"url": "redis://127.0.0.1:6379"}).tls is None
    assert compiled({"url": "rediss://redis.internal:6380/2"}).tls == RedisTls()  # the system trust store
    ca, client, _ = pem
    tls = {"ca_file": str(ca.cert), "cert_file": str(client.cert), "key_file": str(client.key)}
    spec = compiled({"url": "rediss://10.0.0.7:6380", "tls": {**tls, "server_name": "redis.internal"}})
    assert spec.tls == RedisTls(str(ca.cert), str(client.cert), str(client.key), "redis.internal")


def test_tls_keys_with_a_plain_url_say_to_use_rediss(pem: Pem) -> None:
    issue = only_issue({"url": "redis://:pw@redis.internal:6380/1", "tls": {"ca_file": str(pem[0].cert)}})
    assert issue.path == "redis"
    assert "url: rediss://redis.internal:6380/1" in issue.message and "remove the tls keys" in issue.message
    assert "pw" not in issue.message


def test_a_missing_file_is_an_error_naming_the_key(tmp_path: Path) -> None:
    issue = only_issue({"url": "rediss://r:6380", "tls": {"ca_file": str(tmp_path / "nope.pem")}})
    assert (
        issue.path == "redis.tls.ca_file" and "nope.pem" in issue.message and "is not a file" in issue.message
    )
    issue = only_issue({"url": "rediss://r:6380", "tls": {"cert_file": str(tmp_path)}})
    assert issue.path == "redis.tls.cert_file"


def test_files_that_are_not_usable_say_which_and_why(tmp_path: Path, pem: Pem) -> None:
    _, client, other = pem
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    issue = only_issue({"url": "rediss://r:6380", "tls": {"ca_file": str(junk)}})
    assert issue.path == "redis.tls" and "ca_file" in issue.message and "no PEM certificate" in issue.message
    mismatched = {"cert_file": str(client.cert), "key_file": str(other.key)}
    issue = only_issue({"url": "rediss://r:6380", "tls": mismatched})
    assert "is not the key of cert_file" in issue.message
    issue = only_issue({"url": "rediss://r:6380", "tls": {"cert_file": str(client.cert)}})  # no key anywhere
    assert "key_file" in issue.message
    issue = only_issue({"url": "rediss://r:6380", "tls": {"key_file": str(client.key)}})
    assert "without cert_file" in issue.message


def test_a_url_of_another_scheme_is_refused() -> None:
    issue = only_issue({"url": "unix:///run/redis.sock"})
    assert issue.path == "redis.url"
