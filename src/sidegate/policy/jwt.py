"""JWT (RFC 7519) verification: compact JWS tokens checked against a fixed key set, with a verified cache.

Theory of operation: :class:`Verifier` is built once per key set (a new key set means a new Verifier) and
binds each :class:`~sidegate.policy.jwk.Jwk` to PyJWT's object for its one algorithm, with the key
prepared by the library once, at load (a key the library would refuse is refused then, not per token).
That object checks the signature, so the token's header never chooses the code that verifies it. A token
picks a key by ``kid``, or by its ``alg`` when it has no ``kid``, and the header's ``alg`` must equal
the key's: the token names the algorithm only to be refused when it differs, so ``alg: none``, an RSA
key used as an HMAC secret, or an embedded ``jwk``/``jku`` header change nothing. ``crit`` is refused
since no extension is understood. The payload is parsed only after the signature checks out.

What is policy stays here, because PyJWT's own token decoding is more lenient or its claim checks
differ from what we promise: every malformed input is a :class:`JwtError` (a 401), never another
exception; the size is checked before anything else, base64url is decoded strictly (no padding,
canonical), JSON errors (including nesting too deep and integers too long) are caught, each member is
type-checked before use, and the claims (exp/nbf with leeway, iss, aud) are checked by us.

A verified token is kept in a bounded LRU keyed by its exact bytes, with its claims and the times it is
valid between (``nbf - leeway`` and ``exp + leeway``), so a repeated token costs a dict look-up and
one chained comparison. Expiry is still checked on every hit, and an expired entry is dropped.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ed25519

from sidegate.errors import SidegateError
from sidegate.policy.jwk import (
    ALGORITHMS,
    SUPPORTED,
    Jwk,
    b64url_decode,
    check_key,
    parse_jwks,
    pem_key,
)

__all__ = ["SUPPORTED", "Jwk", "JwtError", "UnknownKeyError", "Verifier", "parse_jwks", "pem_key"]

_INF: Final = math.inf


class JwtError(SidegateError):
    """A token that is refused. ``reason`` is short, fixed text for ``WWW-Authenticate``'s
    ``error_description``: it never echoes any part of the token."""

    status: int = 401

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownKeyError(JwtError):
    """The token's ``kid`` matches no key: the key set may have rotated, worth a (rate-limited) refetch."""


class _Key:
    """A Jwk bound to PyJWT's algorithm object for its alg, with the key prepared by the library."""

    __slots__ = ("alg", "algorithm", "kid", "prepared", "sig_len")

    def __init__(self, jwk: Jwk) -> None:
        self.prepared = check_key(jwk.alg, jwk.key)
        self.kid = jwk.kid
        self.alg = jwk.alg
        self.algorithm = ALGORITHMS[jwk.alg]  # the key's algorithm: the header never picks one
        self.sig_len = _signature_length(jwk.alg, jwk.key)

    def check(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (of the right length) is this key's over ``message``."""
        return self.algorithm.verify(message, self.prepared, signature)


class Verifier:
    """Verifies tokens against one key set, an optional issuer and audiences, with a verified cache."""

    def __init__(
        self,
        keys: Iterable[Jwk],
        *,
        issuer: str | None,
        audiences: tuple[str, ...] = (),
        leeway: float = 30.0,
        max_token_bytes: int = 8192,
        cache_size: int = 10_000,
    ) -> None:
        """Raises ValueError if a key does not fit its algorithm (e.g. an RSA key marked HS256)."""
        compiled = [_Key(jwk) for jwk in keys]
        by_kid: dict[str, list[_Key]] = {}
        by_alg: dict[str, list[_Key]] = {}
        kidless: dict[str, list[_Key]] = {}
        for key in compiled:
            if key.kid is not None:
                by_kid.setdefault(key.kid, []).append(key)
            else:
                kidless.setdefault(key.alg, []).append(key)
            by_alg.setdefault(key.alg, []).append(key)
        self._by_kid = {kid: tuple(keys) for kid, keys in by_kid.items()}
        self._by_alg = {alg: tuple(keys) for alg, keys in by_alg.items()}
        self._kidless = {alg: tuple(keys) for alg, keys in kidless.items()}
        self._issuer = issuer
        self._audiences = frozenset(audiences)
        self._leeway = float(leeway)
        self._max_bytes = max_token_bytes
        self._cache_size = cache_size
        # token -> (claims, valid from, valid until), leeway included; most recently used last.
        self._cache: OrderedDict[bytes, tuple[Mapping[str, Any], float, float]] = OrderedDict()

    def verify(self, token: bytes, now: float) -> Mapping[str, Any]:
        """The token's claims (read-only), or raises JwtError saying why it is refused."""
        if len(token) > self._max_bytes:
            raise JwtError("malformed token: too large")
        entry = self._cache.get(token)
        if entry is not None:
            if entry[1] <= now < entry[2]:
                self._cache.move_to_end(token)
                return entry[0]
            if now >= entry[2]:
                del self._cache[token]
                raise JwtError("token expired")
            raise JwtError("token not yet valid")
        return self._verify_new(token, now)

    def cached(self) -> int:
        """How many verified tokens are cached (for metrics and tests)."""
        return len(self._cache)

    def validity(self, token: bytes) -> tuple[float, float] | None:
        """The times a cached token is valid between (leeway included), None when it is not cached.

        Lets a caller that remembers what it made of a token's claims check the token's expiry on
        its own, exactly as :meth:`verify` would on a cache hit."""
        entry = self._cache.get(token)
        return None if entry is None else (entry[1], entry[2])

    def _verify_new(self, token: bytes, now: float) -> Mapping[str, Any]:
        if not isinstance(token, bytes):
            raise JwtError("malformed token")
        signing_input, _, sig64 = token.rpartition(b".")
        head64, dot, body64 = signing_input.partition(b".")
        if not dot or b"." in body64:
            raise JwtError("malformed token: not three parts")
        try:
            header_raw = b64url_decode(head64)
            body_raw = b64url_decode(body64)
            signature = b64url_decode(sig64)
        except ValueError:
            raise JwtError("malformed token: bad base64url") from None
        alg, kid = self._read_header(header_raw)
        self._check_signature(alg, kid, signing_input, signature)
        claims = _json_object(body_raw, "malformed payload")
        valid_from, valid_until = self._check_claims(claims)
        if now >= valid_until:
            raise JwtError("token expired")
        view = MappingProxyType(claims)
        if self._cache_size > 0:
            if len(self._cache) >= self._cache_size:
                self._cache.popitem(last=False)
            self._cache[token] = (view, valid_from, valid_until)
        if now < valid_from:
            raise JwtError("token not yet valid")
        return view

    def _read_header(self, raw: bytes) -> tuple[str, str | None]:
        header = _json_object(raw, "malformed header")
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise JwtError("malformed header: alg")
        if alg not in SUPPORTED:
            raise JwtError("algorithm none refused" if alg.lower() == "none" else "unsupported algorithm")
        if "crit" in header:
            raise JwtError("crit header not supported")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise JwtError("malformed header: kid")
        return alg, kid

    def _check_signature(self, alg: str, kid: str | None, signing_input: bytes, signature: bytes) -> None:
        if kid is not None and kid in self._by_kid:
            candidates = self._by_kid[kid]
            if not any(key.alg == alg for key in candidates):
                raise JwtError("algorithm not allowed for this key")
        elif kid is not None:
            # An unknown kid may still be meant for a key configured without one (a PEM key).
            candidates = self._kidless.get(alg, ())
            if not candidates:
                raise UnknownKeyError("unknown key")
        else:
            candidates = self._by_alg.get(alg, ())
            if not candidates:
                raise JwtError("algorithm not allowed")
        right_length = False
        for key in candidates:
            if key.alg == alg and key.sig_len == len(signature):
                right_length = True
                if key.check(signing_input, signature):
                    return
        if not right_length:
            raise JwtError("malformed signature: wrong length")
        if kid is not None and kid not in self._by_kid:
            raise UnknownKeyError("unknown key")
        raise JwtError("invalid signature")

    def _check_claims(self, claims: dict[str, Any]) -> tuple[float, float]:
        if self._issuer is not None and claims.get("iss") != self._issuer:
            raise JwtError("wrong issuer")
        if self._audiences:
            aud = claims.get("aud")
            if isinstance(aud, str):
                ok = aud in self._audiences
            elif isinstance(aud, list):
                ok = any(isinstance(one, str) and one in self._audiences for one in aud)
            else:
                ok = False
            if not ok:
                raise JwtError("wrong audience")
        exp = _numeric_date(claims, "exp", _INF)
        nbf = _numeric_date(claims, "nbf", -_INF)
        return nbf - self._leeway, exp + self._leeway


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise JwtError(what) from None
    if not isinstance(value, dict):
        raise JwtError(what + ": not an object")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _numeric_date(claims: dict[str, Any], name: str, absent: float) -> float:
    if name not in claims:
        return absent
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JwtError(f"invalid {name} claim")
    try:
        number = float(value)
    except OverflowError:
        raise JwtError(f"invalid {name} claim") from None
    if not math.isfinite(number):
        raise JwtError(f"invalid {name} claim")
    return number


def _signature_length(alg: str, key: Any) -> int:
    """The length of every valid signature of ``alg`` with ``key`` (already type-checked): anything
    else is refused as malformed before the library is called."""
    family = alg[:2]
    if family == "HS":
        return int(alg[2:]) // 8
    if family == "Ed":
        return 64 if isinstance(key, ed25519.Ed25519PublicKey) else 114  # Ed448 (RFC 8032)
    if family == "ES":
        coordinate: int = (key.curve.key_size + 7) // 8  # 32, 48 or 66 (P-521)
        return 2 * coordinate  # r || s
    size: int = (key.key_size + 7) // 8
    return size
