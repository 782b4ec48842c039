"""The admin API's bearer token: read from a file, re-read when the file changes, checked in
constant time on every admin request.

``listeners.admin.token_file`` names the file, typically a key of a mounted Kubernetes Secret.
Kubernetes rotates a Secret by swapping a ``..data`` symlink, so the path's target changes inode:
each request costs one ``stat`` of the path, and the file is read again only when its device,
inode, size or modification time changed. No watcher task and no restart: the next request after a
rotation is checked against the new token.

The guard never serves a request unauthenticated when a token file is configured: a file that
is missing, unreadable or empty makes every request a 503 with the reason (logged once per
problem), not an open admin API. Without ``Authorization: Bearer <token>`` (or with a wrong
one) the answer is a 401 with ``WWW-Authenticate: Bearer`` (RFC 6750) and a JSON reason.

The dashboard in a browser cannot send a header: ``GET /login`` serves a form that posts the
token to ``POST /login``, which sets an ``HttpOnly``, ``SameSite=Strict`` cookie holding an HMAC of
the token (never the token itself; a rotation logs every browser out). The cookie is accepted for
``GET`` and ``HEAD`` only, so no page can make a browser reload the config or purge the cache.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

from sidegate.admin.app import AdminRequest, AdminResponse, Handler, error_response

log = logging.getLogger("sidegate.admin")

COOKIE = "sidegate_admin"
_REALM = 'Bearer realm="sidegate-admin"'
_SESSION_CONTEXT = b"sidegate admin dashboard session"
_LOGIN_PATH = "/login"
_MAX_TOKEN_FILE = 64 * 1024


class TokenFile:
    """The token in a file, cached until the file changes (see the module docstring).

    ``path_of`` answers the configured path on each call (None: no token required), so a reload
    that changes ``listeners.admin.token_file`` applies at the next request.
    """

    def __init__(self, path_of: Callable[[], str | None]) -> None:
        self._path_of = path_of
        self._stamp: tuple[str, int, int, int, int] | None = None
        self._token: bytes | None = None
        self._session: str = ""
        self._problem: str | None = None

    def required(self) -> bool:
        return self._path_of() is not None

    def current(self) -> tuple[bytes | None, str | None]:
        """``(token, None)``, or ``(None, reason)`` when the file cannot give one."""
        path = self._path_of()
        if path is None:
            return None, None
        try:
            info = os.stat(path)
        except OSError as error:
            return self._failed(path, f"cannot read it ({error.strerror or error})")
        stamp = (path, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if stamp != self._stamp:
            self._stamp = stamp
            self._load(path)
        if self._token is None:
            return None, self._problem
        return self._token, None

    def session(self) -> str:
        """The dashboard cookie's value for the current token ("" when there is none)."""
        return self._session if self._token is not None else ""

    def _load(self, path: str) -> None:
        try:
            with open(path, "rb") as handle:
                token = handle.read(_MAX_TOKEN_FILE).strip()
        except OSError as error:
            self._failed(path, f"cannot read it ({error.strerror or error})")
            return
        if not token:
            self._failed(path, "the file is empty")
            return
        if self._problem is not None:
            log.info("admin token file %s is readable again", path, extra={"event": "admin_token"})
        self._token, self._problem = token, None
        self._session = hmac.new(token, _SESSION_CONTEXT, hashlib.sha256).hexdigest()

    def _failed(self, path: str, why: str) -> tuple[None, str]:
        problem = f"the admin token file {path}: {why}; every admin request is refused until it holds a token"
        if problem != self._problem:
            log.error(problem, extra={"event": "admin_token", "result": "unusable"})
        self._token, self._problem, self._stamp = None, problem, None
        return None, problem


def token_guard(tokens: TokenFile) -> Callable[[AdminRequest], AdminResponse | None]:
    """The admin app's guard: None lets the request through, else the refusal to send."""

    def guard(request: AdminRequest) -> AdminResponse | None:
        if not tokens.required() or request.path == _LOGIN_PATH:
            return None
        token, problem = tokens.current()
        if token is None:
            return error_response(503, problem or "the admin token file cannot be read")
        credentials = [value for name, value in request.headers if name.lower() == b"authorization"]
        if credentials:
            scheme, _, given = credentials[0].partition(b" ")
            if len(credentials) > 1 or scheme.lower() != b"bearer":
                return _unauthorized("send one header `Authorization: Bearer <token>`")
            if hmac.compare_digest(given.strip(), token):
                return None
            return _unauthorized("the bearer token is not the admin token", invalid=True)
        if request.method in ("GET", "HEAD") and _has_session(request, tokens.session()):
            return None
        return _unauthorized(
            "the admin API needs `Authorization: Bearer <token>` (the token in "
            "listeners.admin.token_file); in a browser, sign in at /login"
        )

    return guard


def _unauthorized(reason: str, *, invalid: bool = False) -> AdminResponse:
    answer = error_response(401, reason)
    challenge = _REALM + (', error="invalid_token"' if invalid else "")
    return AdminResponse(401, answer.body, answer.content_type, (("WWW-Authenticate", challenge),))


def _has_session(request: AdminRequest, expected: str) -> bool:
    if not expected:
        return False
    for name, value in request.headers:
        if name.lower() != b"cookie":
            continue
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(value.decode("latin-1"))
        except CookieError:
            continue
        morsel = jar.get(COOKIE)
        if morsel is not None and hmac.compare_digest(morsel.value.encode(), expected.encode()):
            return True
    return False


_FORM_POLICY = "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
_FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sidegate admin: sign in</title></head>
<body><h1>Sidegate admin</h1><p>{message}</p>
<form method="post" action="login"><label>Admin token
<input type="password" name="token" autocomplete="current-password" autofocus required></label>
<button type="submit">Sign in</button></form></body></html>
"""


def login_routes(tokens: TokenFile) -> dict[tuple[str, str], Handler]:
    """``GET /login`` (the form) and ``POST /login`` (check the token, set the session cookie)."""

    def form(message: str, status: int = 200) -> AdminResponse:
        body = _FORM.format(message=message).encode()
        headers = (("Content-Security-Policy", _FORM_POLICY), ("Referrer-Policy", "no-referrer"))
        return AdminResponse(status, body, "text/html; charset=utf-8", headers)

    def show(_: AdminRequest) -> AdminResponse:
        if not tokens.required():
            return form("This admin API needs no token (no listeners.admin.token_file).")
        return form("The dashboard needs the admin token (listeners.admin.token_file).")

    def sign_in(request: AdminRequest) -> AdminResponse:
        token, problem = tokens.current()
        if problem is not None:
            return error_response(503, problem)
        if token is None:  # no token file: nothing to sign in to
            return AdminResponse(303, b"", "text/plain", (("Location", "./"),))
        given = parse_qs(request.body.decode("latin-1")).get("token", [""])[0].strip().encode()
        if hmac.compare_digest(given, token):
            cookie = f"{COOKIE}={tokens.session()}; Path=/; HttpOnly; SameSite=Strict"
            return AdminResponse(303, b"", "text/plain", (("Location", "./"), ("Set-Cookie", cookie)))
        return form("That is not the admin token; try again.", 401)

    return {("GET", _LOGIN_PATH): show, ("POST", _LOGIN_PATH): sign_in}
