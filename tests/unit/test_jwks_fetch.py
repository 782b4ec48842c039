"""The JWKS fetch: proxies from the environment, redirects, and the answer's cache lifetime.

Every fetch goes over real sockets on 127.0.0.1: a JWKS server (plain or TLS, with a test CA the
client trusts through SSL_CERT_FILE) and a forward proxy that records what it was asked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable

import pytest

from sidegate.auth.fetch import lifetime
from sidegate.auth.jwks import JwksSource
from sidegate.auth.proxies import bypassed, parse_proxy, proxy_for
from sidegate.policy.cache_control import format_http_date
from support.jwks_http import Asked, JwksHttp, Proxy, TlsFiles
from support.jwt_tokens import jwks, make_ec

KEYS = json.dumps(jwks(make_ec("P-256", kid="a"))).encode()
ES256 = frozenset({"ES256"})


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return TlsFiles.make(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def trusted(tls: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> TlsFiles:
    """The test CA trusted by the client, as an operator would add a CA bundle."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))
    return tls


def _load(source: JwksSource, now: float = 0.0) -> None:
    fetch: Awaitable[None] | None = source.maybe_refresh(now)
    assert fetch is not None, "a fetch was due"
    asyncio.run(_wait(fetch))


async def _wait(fetch: Awaitable[None]) -> None:
    await fetch


def _source(url: str, env: dict[str, str], **options: float) -> JwksSource:
    return JwksSource(url=url, algorithms=ES256, environ=env, **options)


# --- proxies ------------------------------------------------------------------------------------------


def test_https_goes_through_the_proxy_with_connect(trusted: TlsFiles) -> None:
    with JwksHttp(trusted) as idp, Proxy() as proxy:
        idp.route("/jwks", KEYS)
        source = _source(idp.url("/jwks"), {"HTTPS_PROXY": proxy.url, "HTTP_PROXY": "http://127.0.0.1:9"})
        _load(source)
        keys = source.keys()  # (a method of our own, not dict.keys)
        assert [key.kid for key in keys] == ["a"]
        assert proxy.asked == [Asked("CONNECT", f"127.0.0.1:{idp.port}", None)]  # TLS inside: the path unseen
        assert idp.paths == ["/jwks"]


def test_tls_inside_the_tunnel_is_verified(
    tls: TlsFiles, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sidegate.auth.jwks")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # the test CA is not trusted now
    with JwksHttp(tls) as idp, Proxy() as proxy:
        idp.route("/jwks", KEYS)
        source = _source(idp.url("/jwks"), {"HTTPS_PROXY": proxy.url})
        _load(source)
        assert source.keys() == () and len(proxy.asked) == 1
        assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
        assert idp.paths == []


def test_http_goes_to_the_proxy_in_absolute_form_with_credentials() -> None:
    with JwksHttp() as idp, Proxy() as proxy:
        idp.route("/jwks?tenant=1", KEYS)
        env = {
            "http_proxy": f"http://svc%40corp:p%3Ass@127.0.0.1:{proxy.port}",
            "HTTP_PROXY": "http://127.0.0.1:9",
        }
        source = _source(idp.url("/jwks?tenant=1"), env)
        _load(source)
        assert len(source.keys()) == 1
        basic = "Basic " + base64.b64encode(b"svc@corp:p:ss").decode()
        assert proxy.asked == [Asked("GET", idp.url("/jwks?tenant=1"), basic)]  # lower-case name won


def test_no_proxy_goes_direct(trusted: TlsFiles) -> None:
    with JwksHttp(trusted) as idp, Proxy() as proxy:
        idp.route("/jwks", KEYS)
        for no_proxy in ("127.0.0.1", "example.com, 127.0.0.0/8", "*", f"localhost,127.0.0.1:{idp.port}"):
            source = _source(idp.url("/jwks"), {"HTTPS_PROXY": proxy.url, "NO_PROXY": no_proxy})
            _load(source)
            assert len(source.keys()) == 1, no_proxy
        assert proxy.asked == []
        source = _source(idp.url("/jwks"), {"HTTPS_PROXY": proxy.url, "NO_PROXY": "127.0.0.1:1,10.0.0.0/8"})
        _load(source)
        assert len(proxy.asked) == 1  # another port, another range: through the proxy


def test_a_proxy_that_refuses_or_is_unusable_is_a_logged_failure(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sidegate.auth.jwks")
    with Proxy(refuse=407) as proxy:
        source = _source("https://idp.example/jwks", {"HTTPS_PROXY": proxy.url})
        _load(source)
        assert source.keys() == ()
        assert f"proxy 127.0.0.1:{proxy.port} refused CONNECT: HTTP status 407" in caplog.text
    _load(_source("https://idp.example/jwks", {"https_proxy": "socks5://127.0.0.1:1080"}))
    assert "proxy must be an http:// URL" in caplog.text


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "direct"),
    [
        ("idp.example.com", 443, "example.com", True),
        ("example.com", 443, ".example.com", True),
        ("idp.example.com", 443, "*.example.com", True),
        ("IDP.Example.COM", 443, "example.com", True),
        ("badexample.com", 443, "example.com", False),
        ("idp.example.com", 443, "idp.example.com:443", True),
        ("idp.example.com", 8443, "idp.example.com:443", False),
        ("10.1.2.3", 443, "10.0.0.0/8", True),
        ("11.1.2.3", 443, "10.0.0.0/8", False),
        ("::1", 443, "::/0", True),
        ("127.0.0.1", 443, "::/0", False),  # an IPv4 address is in no IPv6 range
        ("fd00::1", 443, "fd00::/8", True),
        ("[fd00::1]", 443, "[fd00::1]:443", True),
        ("10.1.2.3", 443, "10.1.2.3", True),
        ("idp.example.com", 443, "", False),
        ("idp.example.com", 443, " , ,", False),
        ("idp.example.com", 443, "other.com, *", True),
        ("idp.example.com", 443, "10.0.0.0/8", False),  # a name is never resolved to decide
    ],
)
def test_no_proxy_rules(host: str, port: int, no_proxy: str, direct: bool) -> None:
    assert bypassed(host, port, no_proxy) is direct


def test_proxy_settings() -> None:
    assert proxy_for("https", "idp", 443, {"HTTPS_PROXY": "proxy.local:3128"}) == parse_proxy(
        "http://proxy.local:3128"
    )
    assert proxy_for("https", "idp", 443, {"https_proxy": "", "HTTPS_PROXY": "http://p:1"}) is None
    assert proxy_for("http", "idp", 80, {"HTTPS_PROXY": "http://p:1"}) is None
    assert proxy_for("http", "idp", 80, {"ALL_PROXY": "http://p:1"}) == parse_proxy("http://p:1")
    assert parse_proxy("http://proxy").port == 80
    with pytest.raises(ValueError, match="bad port"):
        parse_proxy("http://proxy:x")


# --- redirects ----------------------------------------------------------------------------------------


def test_redirects_are_followed_up_to_five(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sidegate.auth.jwks")
    with JwksHttp() as idp, JwksHttp() as other:
        other.route("/keys", KEYS)
        idp.redirect("/r1", "/r2", 301)
        idp.redirect("/r2", "r3", 302)  # relative to /r2
        idp.redirect("/r3", "/r4", 303)
        idp.redirect("/r4", "/r5", 307)
        idp.redirect("/r5", other.url("/keys"), 308)  # another server
        source = _source(idp.url("/r1"), {})
        _load(source)
        assert len(source.keys()) == 1
        assert idp.paths == ["/r1", "/r2", "/r3", "/r4", "/r5"] and other.paths == ["/keys"]

        idp.redirect("/r0", "/r1")  # six redirects
        source = _source(idp.url("/r0"), {})
        _load(source)
        assert source.keys() == ()
        assert "failed: more than 5 redirects; keeping 0 keys" in caplog.text
        assert other.paths == ["/keys"]

        idp.answers["/r5"].fields = []
        _load(_source(idp.url("/r5"), {}))
        assert "failed: HTTP status 308 without a Location" in caplog.text


def test_a_redirect_from_https_to_http_is_refused(
    trusted: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sidegate.auth.jwks")
    with JwksHttp(trusted) as idp, JwksHttp() as plain:
        plain.route("/jwks", KEYS)
        idp.redirect("/jwks", plain.url("/jwks"))
        source = _source(idp.url("/jwks"), {})
        _load(source)
        assert source.keys() == () and plain.paths == []
        assert "redirect from https to http refused" in caplog.text


def test_redirects_through_the_proxy_ask_again_for_each_host(trusted: TlsFiles) -> None:
    with JwksHttp(trusted) as idp, JwksHttp(trusted) as cdn, Proxy() as proxy:
        cdn.route("/keys", KEYS)
        idp.redirect("/jwks", f"https://localhost:{cdn.port}/keys")
        source = _source(idp.url("/jwks"), {"HTTPS_PROXY": proxy.url, "NO_PROXY": "localhost"})
        _load(source)
        assert len(source.keys()) == 1
        assert proxy.asked == [Asked("CONNECT", f"127.0.0.1:{idp.port}", None)]  # localhost went direct


# --- the cache lifetime -------------------------------------------------------------------------------


def test_max_age_decides_the_next_fetch() -> None:
    with JwksHttp() as idp:
        idp.route("/jwks", KEYS, ("Cache-Control", "public, max-age=120"))
        source = _source(idp.url("/jwks"), {}, refresh=300, refresh_min=60, refresh_max=3600)
        _load(source, now=1000.0)
        assert source.maybe_refresh(1119.9) is None  # respected: no fetch before it is over
        _load(source, now=1120.0)
        assert idp.fetches("/jwks") == 2

        idp.route("/jwks", KEYS, ("Cache-Control", "max-age=5"))  # raised to refresh_min
        _load(source, now=2000.0)
        assert source.maybe_refresh(2059.0) is None
        _load(source, now=2060.0)
        idp.route("/jwks", KEYS, ("Cache-Control", "max-age=86400"))  # cut to refresh_max
        _load(source, now=3000.0)
        assert source.maybe_refresh(6599.0) is None
        idp.route("/jwks", KEYS)  # nothing said: refresh
        _load(source, now=6600.0)
        assert source.maybe_refresh(6899.0) is None
        _load(source, now=6900.0)
        assert idp.fetches("/jwks") == 7


def test_lifetime_of_an_answer() -> None:
    now = 1_700_000_000.0
    date = ("date", format_http_date(now).decode())

    def life(*fields: tuple[str, str]) -> float | None:
        return lifetime([(n.encode(), v.encode()) for n, v in fields], now, now)

    assert life() is None
    assert life(("content-type", "application/json")) is None
    assert life(("cache-control", "max-age=600")) == 600
    assert life(("cache-control", "max-age=600, s-maxage=10")) == 600  # s-maxage is for shared caches
    assert life(("cache-control", "max-age=600"), ("age", "100")) == 500
    assert life(("cache-control", "max-age=60"), ("age", "100")) == 0
    assert life(("cache-control", "no-cache, max-age=600")) == 0
    assert life(("cache-control", "no-store")) == 0
    assert life(("cache-control", "max-age=soon")) == 0  # invalid: already stale
    assert life(date, ("expires", format_http_date(now + 900).decode())) == 900
    assert life(("expires", format_http_date(now + 900).decode())) == 900  # Date taken as arrival
    assert life(date, ("expires", "0")) == 0
    assert (
        life(("cache-control", "max-age=30"), date, ("expires", format_http_date(now + 900).decode())) == 30
    )


def test_refresh_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="refresh_min \\(100\\) must be at most refresh_max \\(10\\)"):
        JwksSource(url="https://idp/jwks", algorithms=None, refresh_min=100, refresh_max=10)
    source = JwksSource(url="https://idp/jwks", algorithms=None, refresh=5, refresh_min=60, refresh_max=600)
    assert [source.next_refresh(x) for x in (None, 0.0, 61.5, 10_000.0)] == [5, 60, 61.5, 600]
