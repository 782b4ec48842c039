"""Credentials injected into the app's outbound requests, so the app never holds them.

A destination's ``credentials:`` (:class:`~sidegate.config.egress_credentials.CredentialSettings`)
becomes a :class:`Credential` through :func:`credential_for`, once per config. The egress proxy
asks it for ``await credential.header()`` on each request to that destination and sets that header
on the outbound request, replacing any header of the same name (compared case-insensitively) the
app sent (:func:`with_credential`): the app can neither see the secret nor override it.

Secret files are mounted Kubernetes Secret keys. Kubernetes rotates a Secret by swapping a
``..data`` symlink, so the path's target changes inode. A file is checked at most once a second
(:data:`CHECK_INTERVAL`), at the first use after that second: one ``stat`` of the path, read
again only when its device, inode, size or modification time changed. Measured on this machine, a
``stat`` through the two symlinks of a Secret volume costs 1.9 us against 0.04 us for reading the
clock: at 10,000 requests a second a ``stat`` per use would spend 2 % of a core on asking "did
it change?", while the kubelet itself takes up to a minute to publish a rotation. So a rotated
value is used within a second, with no restart and no reload.

A file that becomes missing, unreadable, empty or unfit for a header **fails closed**, as
Smokescreen and Envoy's SDS users expect: the request gets no stale secret, :meth:`header`
raises :class:`CredentialUnavailableError` with the reason and the caller must not send the
request (the egress listener's answer is a 503 with that reason as JSON), and the reason is
logged once per problem (again when the file is good again). No message here
holds a secret value: only file paths, credential names and what is wrong.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Callable
from typing import Protocol

from sidegate.config.egress_credential_spec import MAX_SECRET_FILE, CredentialSettings, secret_file_problem
from sidegate.egress.oauth import TokenError, TokenSource
from sidegate.http.messages import Headers

log = logging.getLogger("sidegate.egress")

CHECK_INTERVAL = 1.0  # seconds between two looks at a secret file (see the module docstring)


class CredentialUnavailableError(Exception):
    """The credential cannot give a header now; ``str()`` is why, fit for the app and the log."""


class Credential(Protocol):
    """What the egress proxy injects for one destination."""

    name: str  # what the audit log shows (never the value)

    async def header(self) -> tuple[bytes, bytes]:
        """The header name and value to set on the outbound request, or
        :class:`CredentialUnavailableError` (the request must then not be sent)."""
        ...

    def close(self) -> None:
        """The config no longer uses this credential: stop any background work."""
        ...

    def report(self) -> dict[str, object]:
        """Its state for the admin API and explain: name, kind, ``state`` (``unknown`` before
        the first use, ``ok`` or ``unavailable``), ``problem``, ``last_refresh`` (Unix time the
        value was last read or fetched) and ``expires_in`` (seconds, OAuth2 only); never the value."""
        ...


class SecretFile:
    """One secret file's value, re-read when the file changes (see the module docstring)."""

    def __init__(self, path: str, field: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.field = field  # the config key, for messages: "token_file"
        self._clock = clock
        self._next_check = 0.0
        self._stamp: tuple[int, int, int, int] | None = None
        self._value: bytes | None = None
        self._problem = ""
        self.loaded_at: float | None = None  # Unix time the value was last read (the admin API)

    @property
    def problem(self) -> str:
        """Why the last look found the file unusable ("" when it was fine, or not looked at yet)."""
        return self._problem

    @property
    def looked_at(self) -> bool:
        return self._next_check > 0.0

    def read(self) -> bytes:
        """The file's value, surrounding whitespace dropped; raises :class:`CredentialUnavailableError`."""
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + CHECK_INTERVAL
            self._check()
        if self._value is None:
            raise CredentialUnavailableError(self._problem)
        return self._value

    def _check(self) -> None:
        try:
            info = os.stat(self.path)
        except OSError:
            self._fail()
            return
        stamp = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if stamp != self._stamp or self._value is None:
            self._stamp = stamp
            self._load()

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                value = handle.read(MAX_SECRET_FILE + 1).strip()
        except OSError:
            self._fail()
            return
        if not value or len(value) > MAX_SECRET_FILE:
            self._fail()
        elif any((byte < 0x20 and byte != 0x09) or byte == 0x7F for byte in value):
            self._fail(f"{self.path}: holds a control character (a line break?); a header cannot carry it")
        else:
            if self._problem:
                log.info("%s %s is usable again", self.field, self.path, extra={"event": "egress_credential"})
            self._value, self._problem = value, ""
            self.loaded_at = time.time()

    def _fail(self, why: str | None = None) -> None:
        problem = f"{self.field} {why or secret_file_problem(self.path) or self.path + ': unreadable'}"
        if problem != self._problem:
            log.error(
                "%s; requests that need it are refused until it is fixed",
                problem,
                extra={"event": "egress_credential", "result": "unusable"},
            )
        self._value, self._problem, self._stamp = None, problem, None


class FileCredential:
    """A header made from secret files: bearer, API key or basic. The value is rebuilt only when
    a file's content changed."""

    def __init__(
        self,
        name: str,
        kind: str,
        header_name: bytes,
        files: tuple[SecretFile, ...],
        render: Callable[[tuple[bytes, ...]], bytes],
    ) -> None:
        self.name = name
        self.kind = kind
        self.header_name = header_name
        self._files = files
        self._render = render
        self._inputs: tuple[bytes, ...] = ()
        self._value = b""

    async def header(self) -> tuple[bytes, bytes]:
        try:
            inputs = tuple(secret.read() for secret in self._files)
        except CredentialUnavailableError as error:
            raise CredentialUnavailableError(f"credential {self.name}: {error}") from None
        if inputs != self._inputs:
            self._value = self._render(inputs)  # may raise CredentialUnavailableError (basic's ':')
            self._inputs = inputs
        return self.header_name, self._value

    def close(self) -> None:
        pass

    def report(self) -> dict[str, object]:
        problems = [secret.problem for secret in self._files if secret.problem]
        if problems:
            state = "unavailable"
        else:
            state = "ok" if all(secret.looked_at for secret in self._files) else "unknown"
        loaded = [secret.loaded_at for secret in self._files if secret.loaded_at is not None]
        return {
            "name": self.name,
            "kind": self.kind,
            "state": state,
            "problem": "; ".join(problems),
            "last_refresh": max(loaded) if len(loaded) == len(self._files) else None,
            "expires_in": None,  # a file's value holds until the file changes
        }


class OAuth2Credential:
    """``Authorization: Bearer <access token>`` from a client-credentials grant (:mod:`.oauth`)."""

    def __init__(self, name: str, source: TokenSource) -> None:
        self.name = name
        self.source = source
        self._token = ""
        self._value = b""

    async def header(self) -> tuple[bytes, bytes]:
        try:
            token = await self.source.token()
        except TokenError as error:
            raise CredentialUnavailableError(str(error)) from None
        if token != self._token:
            self._token, self._value = token, b"Bearer " + token.encode()
        return b"Authorization", self._value

    def close(self) -> None:
        self.source.close()

    def report(self) -> dict[str, object]:
        return {"name": self.name, "kind": "oauth2", **self.source.report()}


def with_credential(headers: Headers, name: bytes, value: bytes) -> Headers:
    """``headers`` with every header called ``name`` (in any case) dropped and ``name: value``
    added: whatever the app sent under that name never reaches the destination, and a second
    ``Authorization`` cannot ride along with the injected one."""
    lname = name.lower()
    kept = [(field, text) for field, text in headers if field.lower() != lname]
    kept.append((name, value))
    return kept


def _basic(name: str, inline_username: bytes | None) -> Callable[[tuple[bytes, ...]], bytes]:
    def render(inputs: tuple[bytes, ...]) -> bytes:
        username = inline_username if inline_username is not None else inputs[1]
        if b":" in username:
            raise CredentialUnavailableError(
                f"credential {name}: username_file holds a ':', which basic auth cannot carry (RFC 7617)"
            )
        return b"Basic " + base64.b64encode(username + b":" + inputs[0])

    return render


def _text_reader(secret: SecretFile) -> Callable[[], str]:
    def read() -> str:
        try:
            return secret.read().decode()
        except UnicodeDecodeError:
            raise CredentialUnavailableError(f"{secret.path}: is not UTF-8 text") from None

    return read


def credential_for(spec: CredentialSettings, *, clock: Callable[[], float] = time.monotonic) -> Credential:
    """The runtime credential of a validated ``credentials:`` block (``clock``: when to look at
    the secret files again; tests pass their own)."""
    name = spec.name
    if spec.bearer is not None:
        token = SecretFile(spec.bearer.token_file, "token_file", clock)
        return FileCredential(
            name, "bearer", b"Authorization", (token,), lambda inputs: b"Bearer " + inputs[0]
        )
    if spec.api_key is not None:
        key = SecretFile(spec.api_key.value_file, "value_file", clock)
        return FileCredential(name, "api_key", spec.api_key.header.encode(), (key,), lambda inputs: inputs[0])
    if spec.basic is not None:
        basic = spec.basic
        files = [SecretFile(basic.password_file, "password_file", clock)]
        if basic.username_file:
            files.append(SecretFile(basic.username_file, "username_file", clock))
        inline = basic.username.encode() if basic.username else None
        return FileCredential(name, "basic", b"Authorization", tuple(files), _basic(name, inline))
    if spec.oauth2 is not None:
        secret = SecretFile(spec.oauth2.client_secret_file, "client_secret_file", clock)
        return OAuth2Credential(name, TokenSource(spec.oauth2, _text_reader(secret), name=name))
    raise AssertionError("validated: exactly one kind")
