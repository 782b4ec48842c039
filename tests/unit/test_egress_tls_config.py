"""A destination's ``tls:`` block: what is compiled, the errors that name the field and the file,
and the runtime's contexts (:class:`~sidegate.egress.tls.TlsContexts`): which calls are
originated, to which port and name, rebuilt when a file rotates, kept across reloads."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from sidegate.config.check import check_text
from sidegate.config.compile import compile_checked
from sidegate.config.egress_spec import DestinationSpec, EgressSpec
from sidegate.config.egress_tls_spec import TlsSettings
from sidegate.config.load import load_config_text
from sidegate.egress.state import EgressState
from sidegate.egress.tls import TlsContexts
from sidegate.errors import ConfigError
from support.configs import UPSTREAM_AND_ROUTE
from support.tls import CertificateAuthority, Issued


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertificateAuthority, Issued]:
    base = tmp_path_factory.mktemp("certs")
    ca = CertificateAuthority.create(base / "ca")
    return ca, ca.issue(base / "client", "orders", client=True)


def destination_yaml(tls: str) -> str:
    return f"egress:\n  destinations:\n    - name: partner\n      host: api.partner.com\n      tls: {tls}\n"


def egress_of(extra: str) -> EgressSpec:
    spec = compile_checked(check_text(UPSTREAM_AND_ROUTE + extra, "test.yaml", {})).egress
    assert spec is not None
    return spec


def error_of(extra: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config_text(UPSTREAM_AND_ROUTE + extra, "test.yaml", {})
    return "\n".join(f"{issue.path}: {issue.message}" for issue in info.value.issues)


def test_no_tls_block_compiles_to_none() -> None:
    (partner,) = egress_of(destination_yaml("null")).destinations
    assert partner.tls is None


def test_every_tls_field_is_compiled(certs: tuple[CertificateAuthority, Issued]) -> None:
    ca, client = certs
    (partner,) = egress_of(
        destination_yaml(
            f'{{originate: true, port: 8443, ca_file: "{ca.cert}", server_name: API.Partner.COM., '
            f'client_cert_file: "{client.cert}", client_key_file: "{client.key}", min_version: "1.3"}}'
        )
    ).destinations
    assert partner.tls == TlsSettings(
        originate=True,
        port=8443,
        ca_file=str(ca.cert),
        server_name="api.partner.com",
        client_cert_file=str(client.cert),
        client_key_file=str(client.key),
        min_version="1.3",
    )


def test_defaults_verify_against_the_system_store_from_tls_1_2() -> None:
    (partner,) = egress_of(destination_yaml("{originate: true}")).destinations
    assert partner.tls == TlsSettings(originate=True)
    assert (partner.tls.port, partner.tls.ca_file, partner.tls.min_version) == (443, None, "1.2")


def test_a_client_certificate_needs_its_key(certs: tuple[CertificateAuthority, Issued]) -> None:
    _, client = certs
    error = error_of(destination_yaml(f'{{client_cert_file: "{client.cert}"}}'))
    assert "egress.destinations[0].tls" in error
    assert "client_cert_file is set but client_key_file is not" in error


def test_a_missing_ca_file_names_the_field_and_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    error = error_of(destination_yaml(f'{{ca_file: "{missing}"}}'))
    assert f"ca_file {missing}: no such file" in error


def test_a_ca_file_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("this is not a certificate\n")
    assert f"ca_file {junk}: holds no PEM block" in error_of(destination_yaml(f'{{ca_file: "{junk}"}}'))
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert f"ca_file {broken}: holds no usable CA certificate" in error_of(
        destination_yaml(f'{{ca_file: "{broken}"}}')
    )


def test_a_key_that_is_not_the_certificate_s_is_refused(
    certs: tuple[CertificateAuthority, Issued], tmp_path: Path
) -> None:
    ca, client = certs
    other = ca.issue(tmp_path / "other", "other", client=True)
    pair = f'{{client_cert_file: "{client.cert}", client_key_file: "{other.key}"}}'
    error = error_of(destination_yaml(pair))
    assert f"client_key_file {other.key}: is not the key of client_cert_file {client.cert}" in error


def test_a_key_file_holding_a_certificate_is_refused(certs: tuple[CertificateAuthority, Issued]) -> None:
    _, client = certs
    pair = f'{{client_cert_file: "{client.cert}", client_key_file: "{client.cert}"}}'
    error = error_of(destination_yaml(pair))
    assert f"client_key_file {client.cert}: holds no PEM private key" in error


def test_bad_server_name_and_version_are_refused() -> None:
    assert "invalid server_name 'api.partner.com:443'" in error_of(
        destination_yaml('{server_name: "api.partner.com:443"}')
    )
    assert "min_version" in error_of(destination_yaml('{min_version: "1.1"}'))
    assert "tls.insecure_skip_verify" in error_of(destination_yaml("{insecure_skip_verify: true}"))


def test_originate_on_a_destination_without_http_is_refused() -> None:
    extra = destination_yaml("{originate: true}").replace("      tls:", "      schemes: [https]\n      tls:")
    assert "tls.originate upgrades http:// requests, but schemes does not allow http" in error_of(extra)


# -- the runtime's contexts -----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def destination(tls: TlsSettings | None) -> DestinationSpec:
    return DestinationSpec(
        name="partner",
        host="api.partner.com",
        ports=(80, 443),
        schemes=frozenset({"http", "https"}),
        methods=None,
        path_prefixes=None,
        allow_private=(),
        origin=None,
        connect_timeout=1.0,
        response_timeout=1.0,
        idle_timeout=1.0,
        max_connections=1,
        tls=tls,
    )


def test_which_calls_are_originated_and_where_they_go(certs: tuple[CertificateAuthority, Issued]) -> None:
    ca, _ = certs
    contexts = TlsContexts()
    plain = destination(None)
    assert contexts.originate("http", "api.partner.com", 80, plain) is None  # plain stays plain
    https = contexts.originate("https", "api.partner.com", 443, plain)  # the system trust store
    assert https is not None and https.port == 443 and https.origin.server_name == "api.partner.com"
    upgraded = destination(TlsSettings(originate=True, port=8443, ca_file=str(ca.cert)))
    to_80 = contexts.originate("http", "api.partner.com", 80, upgraded)
    assert to_80 is not None and to_80.port == 8443  # the app's port 80 goes to tls.port
    to_other = contexts.originate("http", "api.partner.com", 9000, upgraded)
    assert to_other is not None and to_other.port == 9000  # another port is kept, spoken TLS to
    assert to_80.origin is to_other.origin  # one context, one name: one pool key
    named = destination(TlsSettings(originate=True, server_name="partner.internal"))
    by_ip = contexts.originate("http", "192.0.2.7", 80, named)
    assert by_ip is not None and by_ip.origin.server_name == "partner.internal"
    ip = contexts.originate("https", "192.0.2.7", 443, plain)
    assert ip is not None and ip.origin.server_name == "192.0.2.7"  # its IP SAN is verified
    assert not destination(TlsSettings(ca_file=str(ca.cert))).tls.originate  # type: ignore[union-attr]
    assert contexts.originate("http", "x", 80, destination(TlsSettings(ca_file=str(ca.cert)))) is None


def test_a_rotated_file_gives_a_new_context_within_a_second(tmp_path: Path) -> None:
    first = CertificateAuthority.create(tmp_path / "first")
    second = CertificateAuthority.create(tmp_path / "second")
    bundle = tmp_path / "ca.pem"
    shutil.copy(first.cert, bundle)
    clock = Clock()
    contexts = TlsContexts(clock)
    spec = destination(TlsSettings(ca_file=str(bundle)))
    before = contexts.originate("https", "api.partner.com", 443, spec)
    assert before is not None
    staged = tmp_path / "ca.new"
    shutil.copy(second.cert, staged)
    staged.replace(bundle)  # a new inode at the path, as a Secret volume rotates
    clock.now += 0.5
    same = contexts.originate("https", "api.partner.com", 443, spec)
    assert same is not None and same.origin is before.origin  # not looked at again yet
    clock.now += 0.6
    after = contexts.originate("https", "api.partner.com", 443, spec)
    assert after is not None and after.origin.context is not before.origin.context
    issuers = [cert["subject"] for cert in after.origin.context.get_ca_certs()]
    assert issuers == [((("commonName", "Sidegate test CA"),),)] and len(issuers) == 1


def test_a_rotation_that_breaks_a_file_keeps_the_last_good_context(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca")
    bundle = tmp_path / "ca.pem"
    shutil.copy(ca.cert, bundle)
    clock = Clock()
    contexts = TlsContexts(clock)
    spec = destination(TlsSettings(ca_file=str(bundle)))
    good = contexts.originate("https", "api.partner.com", 443, spec)
    bundle.write_text("half written\n")
    clock.now += 2
    kept = contexts.originate("https", "api.partner.com", 443, spec)
    assert good is not None and kept is not None and kept.origin is good.origin
    assert f"ca_file {bundle}: holds no PEM block" in caplog.text


def test_a_reload_keeps_contexts_of_unchanged_settings(certs: tuple[CertificateAuthority, Issued]) -> None:
    ca, _ = certs
    contexts = TlsContexts()
    kept_spec = destination(TlsSettings(ca_file=str(ca.cert)))
    gone_spec = destination(TlsSettings(ca_file=str(ca.cert), min_version="1.3"))
    kept = contexts.originate("https", "api.partner.com", 443, kept_spec)
    gone = contexts.originate("https", "api.partner.com", 443, gone_spec)
    contexts.keep_only([destination(TlsSettings(ca_file=str(ca.cert)))])  # equal settings, new object
    again = contexts.originate("https", "api.partner.com", 443, kept_spec)
    rebuilt = contexts.originate("https", "api.partner.com", 443, gone_spec)
    assert kept is not None and again is not None and again.origin is kept.origin
    assert gone is not None and rebuilt is not None and rebuilt.origin.context is not gone.origin.context


def test_a_plain_and_a_tls_pool_to_one_address_are_apart(certs: tuple[CertificateAuthority, Issued]) -> None:
    ca, _ = certs
    loop = asyncio.new_event_loop()
    try:
        state = EgressState(loop, EgressSpec("127.0.0.1", 0, (), (), 1.0, 1000))
        spec = destination(TlsSettings(originate=True, ca_file=str(ca.cert)))
        one = state.tls.originate("http", "api.partner.com", 80, spec)
        other_name = state.tls.originate("http", "www.partner.com", 80, spec)
        assert one is not None and other_name is not None
        plain = state.pool_for("127.0.0.1", 443)
        tls = state.pool_for("127.0.0.1", 443, one.origin)
        assert plain.tls is None and tls.tls is one.origin and tls is not plain
        again = state.tls.originate("http", "api.partner.com", 80, spec)
        assert again is not None and state.pool_for("127.0.0.1", 443, again.origin) is tls
        assert state.pool_for("127.0.0.1", 443, other_name.origin) is not tls  # another name verified
        state.sweeper.stop()
    finally:
        loop.close()
