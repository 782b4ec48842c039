"""OAuth 2.0 client credentials (RFC 6749 section 4.4): the sidecar gets and keeps the app's token.

Theory of operation. :class:`TokenSource` holds at most one token. A request that finds it
valid gets it at once; the first request (or one after the token expired) waits for a fetch, and
every request that comes meanwhile waits for *that same* fetch (one POST, not one per request).
A fetch that succeeds schedules the next one ``refresh_before`` seconds before ``expires_in``
runs out, so while the credential is in use requests never wait again: the old token serves
until the new one is in. A failed fetch backs off (1 s, 2 s, 4 s ... at most 30 s) and is
logged with its reason; while backing off with no valid token, requests fail at once with that
reason instead of hammering the authorization server. A token nobody used since the last fetch
is not refreshed: the next use fetches again.

The reason of a failure never holds a secret: the client secret and the token are not part of
any message, and an ``error_description`` from the server is cut to 200 printable characters
with the client secret blanked out should the server echo it.

The POST goes through the project's own upstream client for ``http://`` token URLs
(:func:`sidegate.upstream.fetch.fetch`'s :class:`BackgroundFetch`, on an endpoint pool); for
``https://`` the ``ssl`` module over asyncio streams, read by the same strict response parser
(:class:`~sidegate.http.response_parser.ResponseParser`). No HTTP library on the serving path.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

from sidegate.config.egress_credential_spec import OAuth2Settings
from sidegate.config.snapshot import Endpoint
from sidegate.http.messages import Fetched
from sidegate.http.response_parser import ParsedResponse, ResponseParser, ResponseSink
from sidegate.server.timers import Sweeper
from sidegate.upstream.fetch import BackgroundFetch
from sidegate.upstream.pool import EndpointPool

log = logging.getLogger("sidegate.egress")

DEFAULT_LIFETIME = 300.0  # a response without expires_in (RFC 6749 only recommends it)
MAX_TOKEN_RESPONSE = 64 * 1024
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
_REASON_MAX = 200


class TokenError(Exception):
    """No token can be had now; ``str()`` is the reason, safe to log and to show the app."""


@dataclass(frozen=True, slots=True)
class Token:
    """An access token and the loop times it must be refreshed by and stops being valid at."""

    access_token: str
    refresh_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class TokenEndpoint:
    """Where token requests go, taken apart once from ``token_url``."""

    tls: bool
    host: str
    port: int
    authority: str  # the Host header
    target: str  # path and query

    @classmethod
    def from_url(cls, url: str) -> TokenEndpoint:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(tls, parts.hostname or "", parts.port or (443 if tls else 80), parts.netloc, target)


def token_request(spec: OAuth2Settings, endpoint: TokenEndpoint, client_secret: str) -> bytes:
    """The whole POST (head and form body) that asks for a token."""
    form = {"grant_type": "client_credentials"}
    if spec.scopes:
        form["scope"] = " ".join(spec.scopes)
    if spec.audience:
        form["audience"] = spec.audience
    extra = ""
    if spec.auth_method == "client_secret_post":
        form["client_id"] = spec.client_id
        form["client_secret"] = client_secret
    else:  # RFC 6749 section 2.3.1: each part form-encoded before the Basic encoding
        pair = f"{quote(spec.client_id, safe='')}:{quote(client_secret, safe='')}"
        extra = f"Authorization: Basic {base64.b64encode(pair.encode()).decode()}\r\n"
    body = urlencode(form).encode()
    head = (
        f"POST {endpoint.target} HTTP/1.1\r\nHost: {endpoint.authority}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nAccept: application/json\r\n"
        f"User-Agent: sidegate\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _shown(text: object, secret: str) -> str:
    """Server-provided text fit for a log line: printable, short, with no secret in it."""
    shown = "".join(ch if ch.isprintable() else "?" for ch in str(text))[:_REASON_MAX]
    return shown.replace(secret, "***") if secret else shown


def parse_token_response(status: int, body: bytes, now: float, refresh_before: float, secret: str) -> Token:
    """The token in a token endpoint's answer, or :class:`TokenError` with the server's reason."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise TokenError(f"the token endpoint answered {status} without a JSON object")
    if status != 200 or "error" in answer:
        reason = (
            f"the token endpoint refused ({status}): {_shown(answer.get('error', 'no error code'), secret)}"
        )
        if answer.get("error_description"):
            reason += f": {_shown(answer['error_description'], secret)}"
        raise TokenError(reason)
    access_token = answer.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise TokenError("the token endpoint answered 200 without an access_token")
    if not all(" " < ch < "\x7f" for ch in access_token):
        raise TokenError("the access_token holds characters a header cannot carry")
    token_type = answer.get("token_type", "")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenError(f"token_type {_shown(token_type, secret)!r} is not supported (only Bearer)")
    lifetime = answer.get("expires_in", DEFAULT_LIFETIME)
    if isinstance(lifetime, str) and lifetime.isdigit():
        lifetime = int(lifetime)  # some servers send it as a string
    if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
        raise TokenError(f"expires_in {_shown(lifetime, secret)} is not a positive number of seconds")
    # A token that lives less than refresh_before is refreshed halfway through its life.
    ahead = refresh_before if lifetime > refresh_before else lifetime / 2
    return Token(access_token, now + lifetime - ahead, now + lifetime)


class TokenSource:
    """The client-credentials grant of one destination (see the module docstring).

    ``client_secret`` reads the secret when a token is fetched (so a rotated file is used at the
    next fetch); it raises with a reason naming the file, never its content.
    """

    def __init__(self, spec: OAuth2Settings, client_secret: Callable[[], str], *, name: str) -> None:
        self.spec = spec
        self.name = name
        self.endpoint = TokenEndpoint.from_url(spec.token_url)
        self._client_secret = client_secret
        self._token: Token | None = None
        self._fetching: asyncio.Task[Token] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._used = False  # since the last fetch
        self._failures = 0
        self._retry_at = 0.0
        self.problem = ""  # the last failure's reason ("" after a success)
        self.fetches = 0  # token requests sent, for the admin API and tests
        self.fetched_at: float | None = None  # Unix time of the last token received
        self._pool: EndpointPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the one the fetches run on
        self._closed = False

    async def token(self) -> str:
        """A valid access token; waits only when none is held. Raises :class:`TokenError`."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        held = self._token
        if held is not None and now < held.expires_at:
            self._used = True
            if now >= held.refresh_at and now >= self._retry_at:
                self._fetch_in_background()
            return held.access_token
        if now < self._retry_at and self.problem:
            raise TokenError(self.problem)
        task = self._fetching or self._start_fetch(loop)
        return (await asyncio.shield(task)).access_token  # a request gone does not cancel the fetch

    def report(self) -> dict[str, object]:
        """``state`` (``unknown`` before the first fetch, ``ok`` while a token is valid, else
        ``unavailable``), ``problem``, the seconds the token has left, ``fetches`` and
        ``last_refresh`` (Unix time of the last token received)."""
        held, loop = self._token, self._loop
        left = held.expires_at - loop.time() if held is not None and loop is not None else 0.0
        if held is not None and left > 0:
            state = "ok"
        else:
            state = "unavailable" if self.problem or held is not None else "unknown"
        return {
            "state": state,
            "problem": self.problem,
            "expires_in": round(max(left, 0.0), 3),
            "fetches": self.fetches,
            "last_refresh": self.fetched_at,
        }

    def close(self) -> None:
        """The config dropped this credential: stop refreshing, close the token connection."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._fetching is not None:
            self._fetching.cancel()
        if self._pool is not None:
            self._pool.retire()

    # -- fetching ------------------------------------------------------------------------------

    def _start_fetch(self, loop: asyncio.AbstractEventLoop) -> asyncio.Task[Token]:
        self._loop = loop
        task = loop.create_task(self._fetch())
        self._fetching = task
        task.add_done_callback(self._fetched)
        return task

    def _fetch_in_background(self) -> None:
        if self._fetching is None and not self._closed:
            self._start_fetch(asyncio.get_running_loop())

    def _fetched(self, task: asyncio.Task[Token]) -> None:
        self._fetching = None
        if not task.cancelled():
            task.exception()  # retrieved here: a background refresh has no other reader

    async def _fetch(self) -> Token:
        loop = asyncio.get_running_loop()
        self.fetches += 1
        secret = ""
        try:
            try:
                secret = self._client_secret()
            except Exception as exc:  # the reader's message names the file, never its content
                raise TokenError(str(exc)) from None
            request = token_request(self.spec, self.endpoint, secret)
            status, body = await self._post(loop, request)
            token = parse_token_response(status, body, loop.time(), self.spec.refresh_before, secret)
        except TokenError as error:
            self._failed(loop, str(error))
            raise TokenError(self.problem) from None
        if self.problem:
            log.info("oauth2 credential %s: token fetched again", self.name, extra={"event": "egress_oauth"})
        self._token, self.problem, self._failures, self._retry_at = token, "", 0, 0.0
        self.fetched_at = time.time()
        self._used = False
        self._schedule(loop, token.refresh_at - loop.time())
        return token

    def _failed(self, loop: asyncio.AbstractEventLoop, reason: str) -> None:
        self._failures += 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self._failures - 1))
        self._retry_at = loop.time() + delay
        self.problem = f"oauth2 credential {self.name}: {reason}"
        log.warning(
            "%s; next attempt in %gs",
            self.problem,
            delay,
            extra={"event": "egress_oauth", "result": "failed"},
        )
        held = self._token
        if held is not None and loop.time() < held.expires_at:
            self._schedule(loop, delay)  # the held token still serves: try again before it runs out

    def _schedule(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self._closed:
            self._timer = loop.call_later(max(0.0, delay), self._refresh_due)

    def _refresh_due(self) -> None:
        self._timer = None
        if self._used or self.problem:
            self._fetch_in_background()

    # -- the POST ------------------------------------------------------------------------------

    async def _post(self, loop: asyncio.AbstractEventLoop, request: bytes) -> tuple[int, bytes]:
        timeout = self.spec.timeout
        if self.endpoint.tls:
            try:
                return await asyncio.wait_for(self._post_tls(request), timeout)
            except TimeoutError:
                raise TokenError(f"no answer from {self._where()} within {timeout:g}s") from None
        if self._pool is None:
            endpoint = Endpoint(self.endpoint.host, self.endpoint.port)
            self._pool = EndpointPool(loop, endpoint, Sweeper(loop), max_idle=1)
        answer: asyncio.Future[Fetched | None] = loop.create_future()

        def done(result: Fetched | None) -> None:
            if not answer.done():  # a request cancelled meanwhile cancelled the future
                answer.set_result(result)

        fetch = BackgroundFetch(
            self._pool,
            request,
            connect_timeout=timeout,
            timeout=timeout,
            max_body=MAX_TOKEN_RESPONSE,
            clock=loop.time,
            done=done,
            purpose="oauth2 token request",
            log_failures=False,
        )
        fetch.start()
        result = await answer
        if result is None:
            raise TokenError(f"token request to {self._where()} failed: {fetch.problem}")
        return result[0], result[2]

    async def _post_tls(self, request: bytes) -> tuple[int, bytes]:
        context = ssl.create_default_context(cafile=self.spec.ca_file or None)
        host, port = self.endpoint.host, self.endpoint.port
        try:
            reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
        except ssl.SSLError as exc:
            raise TokenError(f"TLS to {self._where()} failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise TokenError(f"cannot connect to {self._where()}: {exc.strerror or exc}") from None
        sink = _BufferedResponse()
        parser = ResponseParser(sink)
        parser.expect(False)
        try:
            writer.write(request)
            while not sink.ended:
                data = await reader.read(65536)
                if not data:
                    if not parser.eof():
                        raise TokenError(f"{self._where()} closed before the response was complete")
                    break
                parser.feed(data)
                if sink.size > MAX_TOKEN_RESPONSE:
                    raise TokenError(f"{self._where()} answered more than {MAX_TOKEN_RESPONSE} bytes")
        except TokenError:
            raise
        except (OSError, ssl.SSLError) as exc:
            raise TokenError(f"token request to {self._where()} failed: {exc}") from None
        except Exception as exc:  # the parser's ProtocolError: a malformed response
            raise TokenError(f"{self._where()} sent an invalid response ({exc})") from None
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        return sink.status, b"".join(sink.body)

    def _where(self) -> str:
        scheme = "https" if self.endpoint.tls else "http"
        return f"{scheme}://{self.endpoint.authority}{self.endpoint.target.split('?')[0]}"


class _BufferedResponse(ResponseSink):
    """Collects one response for :meth:`TokenSource._post_tls`."""

    def __init__(self) -> None:
        self.status = 0
        self.body: list[bytes] = []
        self.size = 0
        self.ended = False

    def on_informational(self, head: ParsedResponse) -> None:
        pass

    def on_response_head(self, head: ParsedResponse) -> None:
        self.status = head.status

    def on_response_body(self, data: bytes) -> None:
        self.size += len(data)
        self.body.append(data)

    def on_response_end(self) -> None:
        self.ended = True
