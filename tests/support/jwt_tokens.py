"""Keys made at test time and JWTs signed with them, using ``cryptography`` directly.

Independent of ``sidegate.policy.jwt`` on purpose: tokens signed here are what an identity provider
would send, so a test checks the verifier against the standard, not against itself.

    key = make_ec("P-256", kid="ec-1")
    token = sign({"sub": "alice", "exp": now + 60}, key)        # alg and kid come from the key
    Path("jwks.json").write_text(json.dumps(jwks(key)))         # public keys only
    forged = sign(claims, public_pem(rsa_key), "HS256")          # any raw key and any alg, for attacks

``sign`` takes a :class:`SigningKey` (its alg and kid are the defaults) or a raw private key / HMAC secret
with an explicit alg; ``alg="none"`` makes an unsigned token. ``encode`` assembles arbitrary segments for
malformed-token tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

_CURVES: dict[str, tuple[ec.EllipticCurve, str, int]] = {
    "P-256": (ec.SECP256R1(), "ES256", 32),
    "P-384": (ec.SECP384R1(), "ES384", 48),
    "P-521": (ec.SECP521R1(), "ES512", 66),
}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}


@dataclass(frozen=True)
class SigningKey:
    """A private key (or HMAC secret) with the kid and alg its tokens and its JWK carry."""

    private: Any = field(repr=False)  # RSA, EC, Ed25519 or Ed448 private key, or bytes
    alg: str
    kid: str | None = None

    def public(self) -> Any:
        """The public key, or the secret bytes for HS*."""
        return self.private if isinstance(self.private, bytes) else self.private.public_key()


def make_rsa(kid: str | None = "rsa-1", alg: str = "RS256", bits: int = 2048) -> SigningKey:
    return SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=bits), alg, kid)


def make_ec(curve: str = "P-256", kid: str | None = None) -> SigningKey:
    crv, alg, _ = _CURVES[curve]
    return SigningKey(ec.generate_private_key(crv), alg, kid if kid is not None else f"ec-{curve}")


def make_ed25519(kid: str | None = "ed-1") -> SigningKey:
    return SigningKey(ed25519.Ed25519PrivateKey.generate(), "EdDSA", kid)


def make_ed448(kid: str | None = "ed448-1") -> SigningKey:
    return SigningKey(ed448.Ed448PrivateKey.generate(), "EdDSA", kid)


def make_hs(alg: str = "HS256", kid: str | None = "hs-1", size: int | None = None) -> SigningKey:
    return SigningKey(os.urandom(size if size is not None else int(alg[2:]) // 8), alg, kid)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def encode(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes, signature: bytes = b"") -> str:
    """A compact token from any header, payload (objects become JSON) and raw signature bytes."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return f"{b64url(h)}.{b64url(p)}.{b64url(signature)}"


def sign(
    claims: dict[str, Any] | bytes,
    key: SigningKey | Any,
    alg: str | None = None,
    kid: str | None = None,
    header_extra: dict[str, Any] | None = None,
) -> str:
    """A compact JWS of ``claims`` (a dict, or raw payload bytes) signed with ``key`` using ``alg``.

    With a SigningKey, ``alg`` and ``kid`` default to the key's. ``header_extra`` is merged into the
    header last, so it can override anything (even ``alg``) after the signature algorithm was chosen.
    """
    private = key.private if isinstance(key, SigningKey) else key
    if isinstance(key, SigningKey):
        alg = alg or key.alg
        kid = kid if kid is not None else key.kid
    if alg is None:
        raise ValueError("alg is required with a raw key")
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    header.update(header_extra or {})
    payload = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(payload)}"
    return f"{signing_input}.{b64url(raw_signature(signing_input.encode(), private, alg))}"


def raw_signature(message: bytes, private: Any, alg: str) -> bytes:
    """The JWS signature bytes (RFC 7518) of ``message``; ES* in the JOSE r || s form."""
    if alg == "none":
        return b""
    if alg.startswith("HS"):
        return hmac.digest(private, message, getattr(hashlib, "sha" + alg[2:]))
    if alg == "EdDSA":
        signature: bytes = private.sign(message)
        return signature
    hash_algorithm = _HASHES[alg[2:]]()
    if alg.startswith("ES"):
        der = private.sign(message, ec.ECDSA(hash_algorithm))
        r, s = decode_dss_signature(der)
        size = (private.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg.startswith("PS"):
        pad: padding.AsymmetricPadding = padding.PSS(
            mgf=padding.MGF1(hash_algorithm), salt_length=hash_algorithm.digest_size
        )
    else:
        pad = padding.PKCS1v15()
    signature = private.sign(message, pad, hash_algorithm)
    return signature


def jwk(key: SigningKey, *, with_alg: bool = True, **extra: Any) -> dict[str, Any]:
    """The public JWK of ``key`` (for HS*, the ``oct`` key with its secret), plus ``extra`` members."""
    out: dict[str, Any]
    public = key.public()
    if isinstance(public, bytes):
        out = {"kty": "oct", "k": b64url(public)}
    elif isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        out = {"kty": "RSA", "n": b64url(_int_bytes(numbers.n)), "e": b64url(_int_bytes(numbers.e))}
    elif isinstance(public, ec.EllipticCurvePublicKey):
        crv = next(name for name, (curve, _, _) in _CURVES.items() if curve.name == public.curve.name)
        size = _CURVES[crv][2]
        point = public.public_numbers()
        out = {
            "kty": "EC",
            "crv": crv,
            "x": b64url(point.x.to_bytes(size, "big")),
            "y": b64url(point.y.to_bytes(size, "big")),
        }
    else:
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        crv = "Ed448" if isinstance(public, ed448.Ed448PublicKey) else "Ed25519"
        out = {"kty": "OKP", "crv": crv, "x": b64url(raw)}
    if key.kid is not None:
        out["kid"] = key.kid
    if with_alg:
        out["alg"] = key.alg
    out["use"] = "sig"
    out.update(extra)
    return out


def jwks(*keys: SigningKey, with_alg: bool = True) -> dict[str, Any]:
    """A JWKS document (``{"keys": [...]}``) with the public JWK of each key."""
    return {"keys": [jwk(key, with_alg=with_alg) for key in keys]}


def public_pem(key: SigningKey) -> bytes:
    """The SubjectPublicKeyInfo PEM of an asymmetric key (what a config without JWKS would hold)."""
    pem: bytes = key.public().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")
