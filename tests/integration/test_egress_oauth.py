"""OAuth2 client credentials against a real token endpoint on loopback (plain HTTP and HTTPS).

The endpoint is a small asyncio HTTP server in the test: it records every token request (form,
Authorization) and answers what the test scripts. What a user notices: the right header reaches
the destination, one token serves many requests, it is refreshed before it expires with no
request waiting, many concurrent first requests cause one token request, an error JSON gives the
server's reason, an endpoint that is down gives a clear reason and is not hammered, a wrong CA
fails, and no secret or token is ever in a log line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import uvloop

from sidegate.config.egress_credential_spec import compile_credentials
from sidegate.config.egress_credentials import CredentialsSpec
from sidegate.egress.credentials import Credential, CredentialUnavailableError, credential_for
from support.tls import CertificateAuthority

pytestmark = pytest.mark.timeout(60)

CLIENT_SECRET = "client-secret-never-logged"
TOKEN = "access-token-never-logged"


@dataclass
class TokenServer:
    """A token endpoint: ``answer(n)`` gives the n-th response's status and JSON body."""

    answer: Callable[[int], tuple[int, dict[str, Any]]]
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                headers = {
                    k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append({"line": lines[0], "headers": headers, "form": parse_qs(body.decode())})
                await asyncio.sleep(self.delay)
                status, answer = self.answer(len(self.requests))
                payload = json.dumps(answer).encode()
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def numbered_tokens(expires_in: float = 3600) -> Callable[[int], tuple[int, dict[str, Any]]]:
    return lambda n: (200, {"access_token": f"{TOKEN}-{n}", "token_type": "Bearer", "expires_in": expires_in})


def oauth_credential(tmp_path: Path, port: int, scheme: str = "http", **extra: Any) -> Credential:
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(CLIENT_SECRET + "\n")
    block = {
        "token_url": f"{scheme}://127.0.0.1:{port}/oauth/token",
        "client_id": "orders",
        "client_secret_file": str(secret_file),
        "scopes": ["orders.read", "orders.write"],
        **extra,
    }
    checked = CredentialsSpec.model_validate({"name": "partner-oauth", "oauth2": block})
    return credential_for(compile_credentials(checked.model_dump()))


def run(main: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def assert_no_secret_logged(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        text = record.getMessage()
        assert CLIENT_SECRET not in text and TOKEN not in text, text


def test_the_token_reaches_the_header_and_is_cached(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        server = TokenServer(numbered_tokens())
        await server.start()
        credential = oauth_credential(tmp_path, server.port, audience="https://api.partner.com")
        try:
            assert await credential.header() == (b"Authorization", f"Bearer {TOKEN}-1".encode())
            for _ in range(5):
                assert await credential.header() == (b"Authorization", f"Bearer {TOKEN}-1".encode())
            shown = credential.report()
            assert (shown["state"], shown["problem"], shown["fetches"]) == ("ok", "", 1)
            assert 3590 < float(str(shown["expires_in"])) <= 3600
            assert time.time() - 60 < float(str(shown["last_refresh"])) <= time.time()
            assert TOKEN not in repr(shown)
        finally:
            credential.close()
            await server.stop()
        assert len(server.requests) == 1
        sent = server.requests[0]
        assert sent["line"] == "POST /oauth/token HTTP/1.1"
        assert sent["headers"]["content-type"] == "application/x-www-form-urlencoded"
        basic = base64.b64decode(sent["headers"]["authorization"].removeprefix("Basic ")).decode()
        assert basic == f"orders:{CLIENT_SECRET}"
        assert sent["form"] == {
            "grant_type": ["client_credentials"],
            "scope": ["orders.read orders.write"],
            "audience": ["https://api.partner.com"],
        }

    run(main)
    assert_no_secret_logged(caplog)


def test_client_secret_post_puts_the_client_in_the_form(tmp_path: Path) -> None:
    async def main() -> None:
        server = TokenServer(numbered_tokens())
        await server.start()
        credential = oauth_credential(tmp_path, server.port, auth_method="client_secret_post")
        try:
            await credential.header()
        finally:
            credential.close()
            await server.stop()
        sent = server.requests[0]
        assert "authorization" not in sent["headers"]
        assert sent["form"]["client_id"] == ["orders"] and sent["form"]["client_secret"] == [CLIENT_SECRET]

    run(main)


def test_refreshed_before_expiry_with_no_request_waiting(tmp_path: Path) -> None:
    async def main() -> None:
        server = TokenServer(numbered_tokens(expires_in=2), delay=0.3)  # a slow endpoint
        await server.start()
        credential = oauth_credential(tmp_path, server.port, refresh_before="1s")
        loop = asyncio.get_running_loop()
        try:
            assert (await credential.header())[1] == f"Bearer {TOKEN}-1".encode()
            seen = set()
            slowest = 0.0
            deadline = loop.time() + 3.0  # past the first token's expiry
            while loop.time() < deadline:
                started = loop.time()
                seen.add((await credential.header())[1])
                slowest = max(slowest, loop.time() - started)
                await asyncio.sleep(0.05)
        finally:
            credential.close()
            await server.stop()
        assert f"Bearer {TOKEN}-2".encode() in seen  # a new token, fetched in the background
        assert slowest < 0.1  # while the endpoint takes 0.3 s: no request waited for it

    run(main)


def test_concurrent_first_requests_share_one_fetch(tmp_path: Path) -> None:
    async def main() -> None:
        server = TokenServer(numbered_tokens(), delay=0.2)
        await server.start()
        credential = oauth_credential(tmp_path, server.port)
        try:
            headers = await asyncio.gather(*(credential.header() for _ in range(20)))
        finally:
            credential.close()
            await server.stop()
        assert {value for _, value in headers} == {f"Bearer {TOKEN}-1".encode()}
        assert len(server.requests) == 1

    run(main)


def test_an_error_json_gives_the_servers_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    def refuse(n: int) -> tuple[int, dict[str, Any]]:
        # A careless server echoing the secret: it must not reach the reason.
        return 401, {"error": "invalid_client", "error_description": f"bad secret {CLIENT_SECRET}"}

    async def main() -> None:
        server = TokenServer(refuse)
        await server.start()
        credential = oauth_credential(tmp_path, server.port)
        try:
            with pytest.raises(CredentialUnavailableError) as refused:
                await credential.header()
            assert str(refused.value) == (
                "oauth2 credential partner-oauth: the token endpoint refused (401): "
                "invalid_client: bad secret ***"
            )
            with pytest.raises(CredentialUnavailableError):  # backing off: asked again, no new POST
                await credential.header()
            assert len(server.requests) == 1
            shown = credential.report()
            assert (shown["kind"], shown["state"], shown["fetches"]) == ("oauth2", "unavailable", 1)
            assert shown["last_refresh"] is None  # no token was ever received
            assert "invalid_client" in str(shown["problem"])
        finally:
            credential.close()
            await server.stop()

    run(main)
    assert any("invalid_client" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert_no_secret_logged(caplog)


def test_an_endpoint_that_is_down_gives_a_reason_and_recovers(tmp_path: Path) -> None:
    async def main() -> None:
        server = TokenServer(numbered_tokens())
        await server.start()
        port = server.port
        await server.stop()  # nothing listens on the port now
        credential = oauth_credential(tmp_path, port, timeout="1s")
        try:
            with pytest.raises(CredentialUnavailableError, match=f"token request to http://127.0.0.1:{port}"):
                await credential.header()
            revived = TokenServer(numbered_tokens())
            revived.server = await asyncio.start_server(revived._serve, "127.0.0.1", port)
            await asyncio.sleep(1.1)  # the first back-off
            assert (await credential.header())[1] == f"Bearer {TOKEN}-1".encode()
            await revived.stop()
        finally:
            credential.close()

    run(main)


def test_a_rotated_client_secret_is_used_at_the_next_fetch(tmp_path: Path) -> None:
    async def main() -> None:
        server = TokenServer(numbered_tokens(expires_in=1), delay=0.0)
        await server.start()
        credential = oauth_credential(
            tmp_path, server.port, refresh_before=0, auth_method="client_secret_post"
        )
        try:
            await credential.header()
            (tmp_path / "client-secret").write_text("rotated-secret")
            await asyncio.sleep(1.2)
            await credential.header()
        finally:
            credential.close()
            await server.stop()
        assert [r["form"]["client_secret"] for r in server.requests][:2] == [
            [CLIENT_SECRET],
            ["rotated-secret"],
        ]

    run(main)


def test_https_token_endpoint_verified_against_the_configured_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca", "Token CA")
    stranger = CertificateAuthority.create(tmp_path / "stranger", "Other CA")
    issued = ca.issue(tmp_path / "server", "auth", ips=("127.0.0.1",))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert, issued.key)

    async def main() -> None:
        server = TokenServer(numbered_tokens())
        await server.start(tls=context)
        good = oauth_credential(tmp_path, server.port, "https", ca_file=str(ca.cert))
        wrong = oauth_credential(tmp_path, server.port, "https", ca_file=str(stranger.cert))
        try:
            assert await good.header() == (b"Authorization", f"Bearer {TOKEN}-1".encode())
            with pytest.raises(
                CredentialUnavailableError, match=r"TLS to https://127\.0\.0\.1.*CERTIFICATE_VERIFY_FAILED"
            ):
                await wrong.header()
        finally:
            good.close()
            wrong.close()
            await server.stop()
        assert len(server.requests) == 1  # the wrong CA sent nothing

    run(main)


def test_a_failed_refresh_keeps_the_held_token_until_a_retry_succeeds(tmp_path: Path) -> None:
    def flaky(n: int) -> tuple[int, dict[str, Any]]:
        if n == 2:
            return 503, {"error": "temporarily_unavailable"}
        return numbered_tokens(expires_in=3)(n)

    async def main() -> None:
        server = TokenServer(flaky)
        await server.start()
        credential = oauth_credential(tmp_path, server.port, refresh_before="2s")
        loop = asyncio.get_running_loop()
        try:
            seen = []
            deadline = loop.time() + 2.6  # refresh due at 1 s fails, the retry 1 s later succeeds
            while loop.time() < deadline:
                seen.append((await credential.header())[1].decode())
                await asyncio.sleep(0.05)
        finally:
            credential.close()
            await server.stop()
        assert len(server.requests) == 3
        assert seen[0] == f"Bearer {TOKEN}-1" and seen[-1] == f"Bearer {TOKEN}-3"
        assert f"Bearer {TOKEN}-2" not in seen  # no request was refused meanwhile: all got a token

    run(main)


def test_a_slow_token_endpoint_times_out_with_a_reason(tmp_path: Path) -> None:
    async def main() -> None:
        server = TokenServer(numbered_tokens(), delay=5.0)
        await server.start()
        credential = oauth_credential(tmp_path, server.port, timeout="500ms")
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with pytest.raises(CredentialUnavailableError, match=r"no complete response within 0\.5s"):
                await credential.header()
        finally:
            credential.close()
            await server.stop()
        assert loop.time() - started < 2.0

    run(main)


def test_an_unused_or_closed_credential_stops_refreshing(tmp_path: Path) -> None:
    async def main() -> None:
        server = TokenServer(numbered_tokens(expires_in=1))
        await server.start()
        unused = oauth_credential(tmp_path, server.port, refresh_before="500ms")
        closed = oauth_credential(tmp_path, server.port, refresh_before="500ms")
        try:
            await unused.header()
            await closed.header()
            await closed.header()  # used since the fetch: would be refreshed, but is closed
            closed.close()
            await asyncio.sleep(1.5)
            assert len(server.requests) == 2  # one fetch each, no refresh
            await unused.header()  # the next use fetches again
            assert len(server.requests) == 3
        finally:
            unused.close()
            await server.stop()

    run(main)
