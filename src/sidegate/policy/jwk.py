"""Verification keys for JWT: JSON Web Keys (RFC 7517/7518) and PEM keys, each bound to ONE algorithm.

Theory of operation: a key is turned into a :class:`Jwk` once, when the key set is loaded, and from then
on it carries the only algorithm a token may use with it. The algorithm is settled here, from the key's
own ``alg`` member or from its type and the configured ``algorithms``, never later from a token: an RSA
public key can never become an HMAC secret, which is what makes algorithm confusion impossible.

Which keys are used is our policy; the key material is built by PyJWT (``jwt.PyJWK``, on
``cryptography``), given the algorithm we chose and only the key's public members (a JWKS that leaks
a private ``d`` still yields a public key). Keys that are not for us are skipped quietly, so a
provider's JWKS that also lists encryption keys or key types we do not verify still loads: ``use``
other than ``sig``, ``key_ops`` without ``verify``, an ``alg`` outside :data:`SUPPORTED` or outside
``algorithms``, an unknown ``kty`` or curve, and a key whose type fits several allowed algorithms (an
RSA key without ``alg`` when RS256 and PS256 are both allowed). A key that claims to be usable but is
broken (a member missing or not base64url, a point off its curve, an RSA modulus under 2048 bits, an
HMAC secret shorter than its hash, an ``alg`` that does not fit its ``kty``) is an error that names the
key, so an operator sees it at load time rather than as 401s.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWK, PyJWTError
from jwt.algorithms import Algorithm, get_default_algorithms

SUPPORTED: Final = frozenset(
    {
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
        "HS256", "HS384", "HS512",
    }
)  # fmt: skip
_RSA_ALGS: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_HS_ALGS: Final = frozenset({"HS256", "HS384", "HS512"})
# RFC 7518 3.2: an HMAC key at least as long as the hash output; 3.3/3.5: RSA keys of 2048 bits or more.
HS_MIN_SECRET: Final = {"HS256": 32, "HS384": 48, "HS512": 64}
MIN_RSA_BITS: Final = 2048
# JWK curve name -> (its only JWS algorithm, the cryptography curve name, bytes per coordinate)
EC_CURVES: Final = {
    "P-256": ("ES256", "secp256r1", 32),
    "P-384": ("ES384", "secp384r1", 48),
    "P-521": ("ES512", "secp521r1", 66),
}
# RFC 8037 curves for EdDSA -> bytes of the public key "x"
OKP_CURVES: Final = {"Ed25519": 32, "Ed448": 57}
# PyJWT's algorithm objects, only those we support (never "none", nor its aliases such as ES521).
ALGORITHMS: Final[dict[str, Algorithm]] = {
    name: algorithm for name, algorithm in get_default_algorithms().items() if name in SUPPORTED
}
_CURVE_OF_ALG: Final = {alg: curve for alg, curve, _ in EC_CURVES.values()}
# The members PyJWT is given: a key's public part and nothing else.
_PUBLIC: Final = {"RSA": ("n", "e"), "EC": ("x", "y"), "OKP": ("x",), "oct": ("k",)}

_B64URL: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TO_STD: Final = bytes.maketrans(b"-_", b"+/")


@dataclass(frozen=True)
class Jwk:
    """A verification key and the one algorithm it may be used with.

    ``key`` is a ``cryptography`` public key (RSA, EC, Ed25519, Ed448) or, for HS*, the secret
    ``bytes`` (kept out of ``repr`` so a logged key never shows a secret).
    """

    kid: str | None
    alg: str
    key: Any = field(repr=False)


def b64url_decode(data: bytes) -> bytes:
    """Decode unpadded base64url strictly (RFC 7515 2): no padding, no stray characters, canonical.

    Canonical means the unused low bits of the last character are zero, so one value has one spelling
    and a token cannot be varied without invalidating it. Raises ValueError.
    """
    if data.translate(None, _B64URL) or len(data) % 4 == 1:
        raise ValueError("not base64url")
    std = data.translate(_TO_STD) + b"=" * (-len(data) % 4)
    raw = binascii.a2b_base64(std)
    if binascii.b2a_base64(raw, newline=False) != std:
        raise ValueError("not canonical base64url")
    return raw


def check_key(alg: str, key: Any) -> Any:
    """``key`` as PyJWT's ``alg`` verifies with it; ValueError unless it is of the type (and size,
    curve) that ``alg`` needs and the library takes it."""
    if alg not in SUPPORTED:
        raise ValueError(f"unsupported algorithm {alg!r} (supported: {', '.join(sorted(SUPPORTED))})")
    if alg in _HS_ALGS:
        if not isinstance(key, bytes):
            raise ValueError(f"{alg} needs a shared secret (bytes), not a {type(key).__name__}")
        if len(key) < HS_MIN_SECRET[alg]:
            raise ValueError(f"{alg} secret is {len(key)} bytes; at least {HS_MIN_SECRET[alg]} are required")
    elif alg in _RSA_ALGS:
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError(f"{alg} needs an RSA public key, not a {type(key).__name__}")
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key is {key.key_size} bits; at least {MIN_RSA_BITS} are required")
    elif alg == "EdDSA":
        if not isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            raise ValueError(f"EdDSA needs an Ed25519 or Ed448 public key, not a {type(key).__name__}")
    elif not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != _CURVE_OF_ALG[alg]:
        raise ValueError(f"{alg} needs an EC public key on curve {_CURVE_OF_ALG[alg]}")
    try:  # the library refuses e.g. an HMAC secret that is a PEM, DER or JWK-shaped public key
        return ALGORITHMS[alg].prepare_key(key)
    except (PyJWTError, ValueError, TypeError) as exc:
        raise ValueError(f"{alg} key refused by PyJWT: {exc}") from None


def parse_jwks(data: bytes, *, algorithms: frozenset[str] | None = None) -> tuple[Jwk, ...]:
    """The usable verification keys of a JWKS document (``{"keys": [...]}``) or of a single JWK.

    A key's algorithm is its ``alg`` member when present (skipped unless in :data:`SUPPORTED` and in
    ``algorithms`` when given), otherwise the one algorithm of ``algorithms`` (all of SUPPORTED when None)
    that fits its type: an EC or OKP key always has exactly one, an RSA or oct key only when a single
    RS/PS or HS algorithm is allowed. Raises ValueError, naming the key (index and kid), for bad JSON or
    bad key material.
    """
    if algorithms is not None and not algorithms <= SUPPORTED:
        raise ValueError(f"unsupported algorithms: {', '.join(sorted(algorithms - SUPPORTED))}")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"JWKS is not valid JSON: {exc}") from None
    if isinstance(doc, dict) and "keys" in doc:
        entries = doc["keys"]
        if not isinstance(entries, list):
            raise ValueError('JWKS "keys" must be a list')
    elif isinstance(doc, dict) and "kty" in doc:
        entries = [doc]
    else:
        raise ValueError('JWKS must be an object with a "keys" list, or a single JWK')
    allowed = SUPPORTED if algorithms is None else algorithms
    keys: list[Jwk] = []
    for index, entry in enumerate(entries):
        try:
            jwk = _parse_one(entry, allowed)
        except ValueError as exc:
            raise ValueError(f"{_describe(index, entry)}: {exc}") from None
        if jwk is not None:
            keys.append(jwk)
    return tuple(keys)


def pem_key(data: bytes, alg: str) -> Jwk:
    """A key for configs without JWKS: a PEM public key or certificate, or for HS* the secret bytes.

    Raises ValueError when the key does not fit ``alg``; an HS secret that looks like a PEM key is refused
    outright, since using a public key as an HMAC secret is the algorithm confusion attack.
    """
    if alg not in SUPPORTED:
        raise ValueError(f"unsupported algorithm {alg!r} (supported: {', '.join(sorted(SUPPORTED))})")
    key: Any
    if alg in _HS_ALGS:
        if b"-----BEGIN" in data:
            raise ValueError(f"{alg} takes a shared secret, not a PEM key (a public key is no secret)")
        key = bytes(data)
    else:
        try:
            if b"-----BEGIN CERTIFICATE-----" in data:
                key = x509.load_pem_x509_certificate(data).public_key()
            else:
                key = load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ValueError(f"not a PEM public key or certificate: {exc}") from None
    check_key(alg, key)
    return Jwk(None, alg, key)


def _describe(index: int, entry: object) -> str:
    kid = entry.get("kid") if isinstance(entry, dict) else None
    if isinstance(kid, str):
        return f"key {index} (kid {kid[:64]!r})"
    return f"key {index}"


def _parse_one(entry: object, allowed: frozenset[str]) -> Jwk | None:
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    kty = entry.get("kty")
    if not isinstance(kty, str):
        raise ValueError('"kty" is missing or not a string')
    kid = entry.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ValueError('"kid" is not a string')
    use = entry.get("use")
    ops = entry.get("key_ops")
    if (use is not None and use != "sig") or (isinstance(ops, list) and "verify" not in ops):
        return None  # an encryption key, or one not meant for verifying
    crv = entry.get("crv")
    fits = _algorithms_for(kty, crv)
    if not fits:
        return None  # a key type or curve we do not verify with (e.g. X25519, secp256k1)
    alg = entry.get("alg")
    if alg is not None:
        if not isinstance(alg, str):
            raise ValueError('"alg" is not a string')
        if alg not in SUPPORTED or alg not in allowed:
            return None
        if alg not in fits:
            raise ValueError(f'"alg" {alg} does not fit a {kty} key')
    else:
        usable = fits & allowed
        if len(usable) != 1:
            return None  # ambiguous or not allowed: never guess an algorithm
        (alg,) = usable
    key = _key_material(kty, crv, entry, alg)
    check_key(alg, key)
    return Jwk(kid, alg, key)


def _algorithms_for(kty: str, crv: object) -> frozenset[str]:
    if kty == "RSA":
        return _RSA_ALGS
    if kty == "oct":
        return _HS_ALGS
    if kty == "EC" and isinstance(crv, str) and crv in EC_CURVES:
        return frozenset({EC_CURVES[crv][0]})
    if kty == "OKP" and isinstance(crv, str) and crv in OKP_CURVES:
        return frozenset({"EdDSA"})
    return frozenset()


def _key_material(kty: str, crv: Any, entry: dict[str, Any], alg: str) -> Any:
    """The key PyJWT builds from the public members (each checked first, so an error names it)."""
    public: dict[str, Any] = {"kty": kty}
    if crv is not None:
        public["crv"] = crv
    for name in _PUBLIC[kty]:
        raw = _member(entry, name)
        size = EC_CURVES[crv][2] if kty == "EC" else OKP_CURVES[crv] if kty == "OKP" else len(raw)
        if len(raw) != size:
            raise ValueError(f'{crv} "{name}" is {len(raw)} bytes; {size} are required')
        public[name] = entry[name].rstrip("=")
    try:
        return PyJWK(public, algorithm=alg).key
    except (PyJWTError, ValueError, TypeError, KeyError) as exc:
        reason = str(exc).removeprefix("Unable to construct key from JWK: ")
        raise ValueError(f"bad {kty} key: {reason}") from None


def _member(entry: dict[str, Any], name: str) -> bytes:
    value = entry.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f'"{name}" is missing or not a string')
    try:
        # Padding is not allowed by RFC 7518, but some publishers add it; it carries no ambiguity here.
        return b64url_decode(value.rstrip("=").encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise ValueError(f'"{name}" is not base64url') from None
