"""Redis over TLS (``rediss://``): a real TLS-only redis-server, certificates made for each test.

The server listens with TLS only (``--port 0 --tls-port N``), so every decision that succeeds went
over TLS. The cases a user meets: the CA configured (the limit behaves as over plain Redis), the
wrong CA, a certificate for another name, the system trust store, a Redis that requires a client
certificate (given, missing, from a CA it does not trust), and a URL that does not match the port.
Each failure must say what went wrong in words that point at the setting to fix.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvloop

from sidegate.config.snapshot import RedisTls
from sidegate.policy.gcra import Decision
from sidegate.ratelimit.redis import RedisLimiter, RedisUnavailable
from support.cache import fetch
from support.gateway import GatewayFactory
from support.redis import RedisServer
from support.redis import RedisTls as ServerTls
from support.tls import CertificateAuthority, Issued

pytestmark = pytest.mark.timeout(90)

PATIENT = 2.0


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority  # signs Redis' certificate and the good client certificate
    stranger: CertificateAuthority  # a CA nobody here trusts
    server: Issued  # for 127.0.0.1 and localhost
    client: Issued
    stranger_client: Issued


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = CertificateAuthority.create(tmp_path / "ca", "Redis CA")
    stranger = CertificateAuthority.create(tmp_path / "stranger", "Some other CA")
    return Pki(
        ca=ca,
        stranger=stranger,
        server=ca.issue(tmp_path / "server", "redis", dns=("localhost",), ips=("127.0.0.1",)),
        client=ca.issue(tmp_path / "client", "sidegate", client=True),
        stranger_client=stranger.issue(tmp_path / "stranger-client", "sidegate", client=True),
    )


def start_redis(workdir: Path, pki: Pki, *, server: Issued | None = None, mtls: bool = False) -> RedisServer:
    cert = server or pki.server
    tls = ServerTls(cert.cert, cert.key, pki.ca.cert, mtls, pki.client.cert, pki.client.key)
    workdir.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(workdir, tls=tls)
    redis.start()
    return redis


@pytest.fixture
def tls_redis(tmp_path: Path, pki: Pki) -> Iterator[RedisServer]:
    redis = start_redis(tmp_path / "redis", pki)
    yield redis
    redis.stop()


@pytest.fixture
def mtls_redis(tmp_path: Path, pki: Pki) -> Iterator[RedisServer]:
    redis = start_redis(tmp_path / "redis-mtls", pki, mtls=True)
    yield redis
    redis.stop()


LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


def decide(
    url: str,
    tls: RedisTls | None,
    n: int = 1,
    *,
    timeout: float = PATIENT,
    connect_timeout: float = PATIENT,
    loop: str = "uvloop",
) -> list[Decision]:
    """``n`` decisions for one key (3 per minute) through a fresh limiter, on uvloop as Sidegate runs
    unless ``loop`` says asyncio (whose TLS transport is another implementation)."""

    async def main() -> list[Decision]:
        limiter = RedisLimiter(url, timeout=timeout, connect_timeout=connect_timeout, tls=tls)
        try:
            return [await limiter.gcra(b"rl:tls", 3, 60.0, 3) for _ in range(n)]
        finally:
            await limiter.close()

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(main())


def refusal(url: str, tls: RedisTls | None, loop: str = "uvloop") -> str:
    """Why a decision failed (the test fails if it did not)."""
    with pytest.raises(RedisUnavailable) as failed:
        # The first connect ends (and says why) within the decision's wait.
        decide(url, tls, timeout=1.5, connect_timeout=0.5, loop=loop)
    return str(failed.value)


# -- the client ------------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_with_the_ca_configured_a_limit_holds_as_over_plain_redis(
    tls_redis: RedisServer, pki: Pki, loop: str
) -> None:
    assert tls_redis.url.startswith("rediss://127.0.0.1:")
    decisions = decide(tls_redis.url, RedisTls(ca_file=str(pki.ca.cert)), 4, loop=loop)
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert 19 < decisions[-1].retry_after <= 20
    assert tls_redis.command("EXISTS", "rl:tls") == 1  # the count is in the TLS-only server


def test_a_wrong_ca_fails_naming_tls_verification_and_the_key_to_fix(
    tls_redis: RedisServer, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sidegate.ratelimit"):
        why = refusal(tls_redis.url, RedisTls(ca_file=str(pki.stranger.cert)))
    assert "TLS certificate verification failed" in why
    assert "redis.tls.ca_file is not the CA that signed" in why
    logged = [r.getMessage() for r in caplog.records]
    assert any(
        "cannot connect to rediss://127.0.0.1" in m and "TLS certificate verification" in m for m in logged
    )
    assert tls_redis.command("EXISTS", "rl:tls") == 0


def test_without_a_ca_file_the_system_trust_store_decides(
    tls_redis: RedisServer, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    why = refusal(tls_redis.url, None)  # rediss:// and no tls keys: our test CA is not a public one
    assert "TLS certificate verification failed" in why and "set redis.tls.ca_file" in why
    # OpenSSL's default trust store honours SSL_CERT_FILE: with our CA there, the system store trusts it.
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca.cert))
    assert decide(tls_redis.url, None)[0].allowed


def test_the_certificate_must_be_for_the_host_or_the_server_name(
    tmp_path: Path, pki: Pki, tls_redis: RedisServer
) -> None:
    ca = str(pki.ca.cert)
    # Reached as "localhost" (a name in its certificate), the same server is fine.
    assert decide(tls_redis.url.replace("127.0.0.1", "localhost"), RedisTls(ca_file=ca))[0].allowed
    named = pki.ca.issue(tmp_path / "named", "redis", dns=("redis.internal",))  # no IP in it
    redis = start_redis(tmp_path / "redis-named", pki, server=named)
    try:
        why = refusal(redis.url, RedisTls(ca_file=ca))
        assert "TLS certificate verification failed" in why and "mismatch" in why
        assert "redis.tls.server_name" in why
        assert decide(redis.url, RedisTls(ca_file=ca, server_name="redis.internal"))[0].allowed
        why = refusal(redis.url, RedisTls(ca_file=ca, server_name="other.internal"))
        assert "mismatch" in why and "other.internal" in why
    finally:
        redis.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_client_certificate_required_and_given_works(mtls_redis: RedisServer, pki: Pki, loop: str) -> None:
    tls = RedisTls(ca_file=str(pki.ca.cert), cert_file=str(pki.client.cert), key_file=str(pki.client.key))
    assert [d.allowed for d in decide(mtls_redis.url, tls, 4, loop=loop)] == [True, True, True, False]


@pytest.mark.parametrize("loop", LOOPS)
def test_a_client_certificate_required_and_missing_fails_saying_so(
    mtls_redis: RedisServer, pki: Pki, loop: str
) -> None:
    # uvloop reads Redis' TLS alert ("certificate required"); asyncio's transport sees a reset.
    why = refusal(mtls_redis.url, RedisTls(ca_file=str(pki.ca.cert)), loop)
    assert "client certificate" in why and "redis.tls.cert_file" in why
    assert mtls_redis.command("DBSIZE") == 0


def test_a_client_certificate_redis_does_not_trust_fails_saying_so(mtls_redis: RedisServer, pki: Pki) -> None:
    stranger = pki.stranger_client
    tls = RedisTls(ca_file=str(pki.ca.cert), cert_file=str(stranger.cert), key_file=str(stranger.key))
    why = refusal(mtls_redis.url, tls)
    assert "Redis refused the client certificate in redis.tls.cert_file" in why and "unknown ca" in why


def test_a_client_certificate_renewed_on_disk_is_used_at_the_next_reconnect(
    tmp_path: Path, mtls_redis: RedisServer, pki: Pki
) -> None:
    mounted = Issued(tmp_path / "mounted.crt", tmp_path / "mounted.key")  # where the secret is mounted
    mounted.cert.write_bytes(pki.stranger_client.cert.read_bytes())  # a certificate Redis does not trust
    mounted.key.write_bytes(pki.stranger_client.key.read_bytes())
    tls = RedisTls(ca_file=str(pki.ca.cert), cert_file=str(mounted.cert), key_file=str(mounted.key))

    async def main() -> tuple[str, float]:
        limiter = RedisLimiter(mtls_redis.url, timeout=1.5, connect_timeout=0.5, tls=tls)
        try:
            with pytest.raises(RedisUnavailable) as refused:
                await limiter.gcra(b"rl:renewed", 3, 60.0, 3)
            # The secret is renewed: the same files now hold a certificate of Redis' CA.
            mounted.cert.write_bytes(pki.client.cert.read_bytes())
            mounted.key.write_bytes(pki.client.key.read_bytes())
            started = loop_time()
            while not limiter.healthy():
                assert loop_time() - started < 8, "the limiter did not reconnect with the new certificate"
                await asyncio.sleep(0.05)
            assert (await limiter.gcra(b"rl:renewed", 3, 60.0, 3)).allowed
            return str(refused.value), loop_time() - started
        finally:
            await limiter.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        why, _ = runner.run(main())
    assert "refused the client certificate" in why
    assert mtls_redis.command("EXISTS", "rl:renewed") == 1


def loop_time() -> float:
    return asyncio.get_running_loop().time()


def test_a_url_that_does_not_match_the_port_says_which_to_use(
    tls_redis: RedisServer, redis_server: RedisServer, pki: Pki
) -> None:
    plain_to_tls = refusal(tls_redis.url.replace("rediss://", "redis://"), None)
    assert "use a rediss:// URL" in plain_to_tls
    tls_to_plain = refusal(
        redis_server.url.replace("redis://", "rediss://"), RedisTls(ca_file=str(pki.ca.cert))
    )
    assert "TLS" in tls_to_plain and "redis://" in tls_to_plain


def test_tls_settings_need_a_rediss_url() -> None:
    with pytest.raises(ValueError, match="rediss://"):
        RedisLimiter(
            "redis://127.0.0.1:6379",
            timeout=0.05,
            connect_timeout=0.5,
            tls=RedisTls(ca_file="/etc/ssl/certs/ca-certificates.crt"),
        )


# -- through Sidegate ------------------------------------------------------------------------------


def redis_route(on_failure: str) -> list[dict[str, object]]:
    limit = {"requests": 4, "per": "1m", "key": "route", "store": "redis", "on_redis_failure": on_failure}
    return [
        {"name": "global", "match": {"path_prefix": "/"}, "upstream": "app", "filters": {"rate_limit": limit}}
    ]


def test_pods_share_a_limit_through_redis_over_tls(
    gateway: GatewayFactory, mtls_redis: RedisServer, pki: Pki
) -> None:
    tls = {"ca_file": str(pki.ca.cert), "cert_file": str(pki.client.cert), "key_file": str(pki.client.key)}
    redis = {"url": mtls_redis.url, "timeout": "1s", "tls": tls}
    pods = [gateway(routes=redis_route("closed"), redis=redis) for _ in range(2)]
    got = [fetch(pods[i % 2], "/g").status for i in range(7)]
    assert got == [200] * 4 + [429] * 3


def test_a_tls_failure_falls_back_as_configured_and_is_logged_with_its_reason(
    gateway: GatewayFactory, tls_redis: RedisServer, pki: Pki
) -> None:
    redis = {"url": tls_redis.url, "timeout": "200ms", "tls": {"ca_file": str(pki.stranger.cert)}}
    gw = gateway(routes=redis_route("closed"), redis=redis)
    assert [fetch(gw, "/g").status for _ in range(3)] == [503] * 3
    assert "TLS certificate verification failed" in gw.log()
    assert gw.metric("sidegate_policy_decisions_total", http_route="global", result="redis_closed") == 3
