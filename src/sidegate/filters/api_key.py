"""``api_key``: callers identify themselves with a key; Sidegate knows the consumer it belongs to.

    consumers:
      - {name: billing, tenant: acme, api_keys: ["sha256:5e88...", "${BILLING_KEY}"]}
    routes:
      - ...
        filters:
          api_key: {header: x-api-key}               # or {query: api_key}, {keys_file: /secrets/keys}

Keys are kept only as SHA-256 digests: a presented key is hashed and looked up, and the digest
found is compared with ``hmac.compare_digest``, so neither the look-up nor the comparison leaks
the key through timing. ``keys_file`` is a mounted secret of ``CONSUMER KEY`` lines (the key may
be ``sha256:<hex>``; ``#`` starts a comment), re-read within a second of a change. A request
without a key gets 401 with ``WWW-Authenticate``; a key of a consumer the route does not admit,
403. The key is removed before the request goes to the app unless ``hide_credentials`` is false.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from typing import Final

from sidegate.config.snapshot import IdentitySpec
from sidegate.filters.base import Filter, FilterConfig, FilterServices, RequestContext
from sidegate.filters.counters import POLICY
from sidegate.filters.identity import OTHER, Caller, by_name, caller, credential, deny, mark
from sidegate.filters.registry import register
from sidegate.http.messages import LocalResponse, RequestHead

_RECHECK: Final = 1.0  # seconds between looks at keys_file


@dataclass(frozen=True, slots=True)
class ApiKeyConfig(FilterConfig):
    header: str = "x-api-key"
    """request header that carries the key ("" = none)"""
    query: str = ""
    """query parameter that carries the key ("" = none)"""
    keys_file: str = ""
    """a mounted secret file of `CONSUMER KEY` lines, added to the consumers' api_keys"""
    consumers: tuple[str, ...] = ()
    """consumers admitted on this route (empty: every consumer with a valid key)"""
    hide_credentials: bool = True
    """remove the key from the request before it reaches the app"""


@register
class ApiKey(Filter):
    name = "api_key"
    answer_flags = {401: "auth_failed", 403: "auth_forbidden"}
    config_model = ApiKeyConfig
    names_caller = True
    header_fields = ("header",)

    def __init__(self, config: ApiKeyConfig) -> None:
        super().__init__(config)
        if not config.header and not config.query:
            raise ValueError("give header: NAME or query: NAME (where the key is sent)")
        self.cfg = config
        self.header = config.header.lower().encode()
        self.query = config.query.encode()
        self.admitted = frozenset(config.consumers)
        self.route = ""
        self.callers: dict[str, Caller] = {}
        self.by_digest: dict[bytes, tuple[bytes, Caller]] = {}  # digest -> (digest, its consumer)
        self.known: frozenset[str] = frozenset()
        self._identity = IdentitySpec()
        self._configured: dict[bytes, tuple[bytes, Caller]] = {}
        self._file_mtime = -1.0
        self._next_check = 0.0
        self.challenge = b'ApiKey realm="sidegate", ' + (
            b'header="' + config.header.encode() + b'"' if config.header else b'query="' + self.query + b'"'
        )

    def bind(self, services: FilterServices) -> None:
        self.route = services.route
        self.callers = by_name(services.consumers, services.identity)
        self.known = frozenset(self.callers)
        unknown = self.admitted - self.known
        if unknown:
            raise ValueError(f"consumers {sorted(unknown)} are not in the top-level consumers list")
        self._configured = {
            d: (d, self.callers[c.name]) for c in services.consumers for d in c.api_key_hashes
        }
        self._identity = services.identity
        self.by_digest = dict(self._configured)
        if self.cfg.keys_file:
            self._load_file()

    def on_request(self, request: RequestHead, ctx: RequestContext) -> LocalResponse | None:
        if self.cfg.keys_file:
            self._maybe_reload()
        key = credential(request, self.header, self.query)
        if key is None:
            POLICY.decisions[(self.route, self.name, "missing")] += 1
            return deny(401, "unauthorized", "an API key is required", self.challenge)
        digest = hashlib.sha256(key).digest()
        entry = self.by_digest.get(digest)
        if entry is None or not hmac.compare_digest(digest, entry[0]):
            POLICY.decisions[(self.route, self.name, "invalid")] += 1
            return deny(
                401, "unauthorized", "the API key is not valid", self.challenge + b', error="invalid_key"'
            )
        found = entry[1]
        if self.admitted and found.consumer not in self.admitted:
            POLICY.decisions[(self.route, self.name, "forbidden")] += 1
            return deny(403, "forbidden", f"consumer {found.consumer} may not use this route")
        mark(ctx, found)
        POLICY.decisions[(self.route, self.name, "ok")] += 1
        label = found.consumer if found.consumer in self.known else OTHER
        POLICY.consumers[(self.route, found.tenant if label != OTHER else OTHER, label)] += 1
        if self.cfg.hide_credentials and self.header:
            request.headers = [(n, v) for n, v in request.headers if n.lower() != self.header]
        return None

    # -- keys_file -----------------------------------------------------------------------------

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + _RECHECK
        try:
            mtime = os.stat(self.cfg.keys_file).st_mtime
        except OSError:
            return  # a secret being swapped: keep the keys we have
        if mtime != self._file_mtime:
            try:
                self._load_file()
            except ValueError:
                return

    def _load_file(self) -> None:
        path = self.cfg.keys_file
        try:
            mtime = os.stat(path).st_mtime
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"keys_file {path}: {exc}") from None
        table = dict(self._configured)
        for number, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            consumer, _, key = text.partition(" ")
            key = key.strip()
            if not key:
                raise ValueError(f"keys_file {path}:{number}: expected `CONSUMER KEY`")
            who = self.callers.get(consumer) or caller(consumer, "", self._identity)
            if key.startswith("sha256:"):
                try:
                    digest = bytes.fromhex(key.removeprefix("sha256:"))
                except ValueError:
                    raise ValueError(f"keys_file {path}:{number}: sha256: needs 64 hex digits") from None
            else:
                digest = hashlib.sha256(key.encode()).digest()
            table[digest] = (digest, who)
        self.by_digest = table
        self._file_mtime = mtime
