"""JWT on PyJWT: what moving key parsing and signature checks to the library could change.

The classic attacks are in test_jwt.py; here are the cases where PyJWT reads keys or tokens
differently from what we promise (it knows more algorithms, it would build private keys, it
accepts padding), and the proof that it really does the verifying, yet never on a cache hit.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa

from sidegate.policy.jwt import JwtError, Verifier, parse_jwks, pem_key
from support.jwt_tokens import (
    SigningKey,
    b64url,
    encode,
    jwk,
    jwks,
    make_ec,
    make_ed448,
    make_hs,
    make_rsa,
    public_pem,
    sign,
)

NOW = 1_700_000_000.0
CLAIMS = {"sub": "alice", "exp": NOW + 60}


def _verifier(*keys: SigningKey) -> Verifier:
    return Verifier(parse_jwks(json.dumps(jwks(*keys)).encode()), issuer=None)


def _refused(verifier: Verifier, token: str, reason: str) -> None:
    with pytest.raises(JwtError) as info:
        verifier.verify(token.encode(), NOW)
    assert info.value.reason.startswith(reason), info.value.reason


def test_ed448_keys_verify_from_jwks_and_pem() -> None:
    key = make_ed448()
    (parsed,) = parse_jwks(json.dumps(jwks(key, with_alg=False)).encode())
    assert (parsed.kid, parsed.alg) == ("ed448-1", "EdDSA")
    assert isinstance(parsed.key, ed448.Ed448PublicKey)
    token = sign(CLAIMS, key)
    assert _verifier(key).verify(token.encode(), NOW) == CLAIMS
    assert Verifier([pem_key(public_pem(key), "EdDSA")], issuer=None).verify(token.encode(), NOW) == CLAIMS
    head, _, sig = token.split(".")
    forged = f"{head}.{b64url(json.dumps({'sub': 'admin'}).encode())}.{sig}"
    _refused(_verifier(key), forged, "invalid signature")
    _refused(_verifier(key), token[:-4], "malformed")  # 114 bytes, not an Ed25519 signature's 64
    with pytest.raises(ValueError, match='Ed448 "x" is 32 bytes; 57 are required'):
        parse_jwks(json.dumps({"kty": "OKP", "crv": "Ed448", "x": b64url(b"\1" * 32)}).encode())


def _private_members(key: SigningKey) -> dict[str, Any]:
    """The private JWK of ``key``, as a provider that leaked it into its JWKS would publish it."""
    algorithm = jwt.get_algorithm_by_name(key.alg)
    private: dict[str, Any] = algorithm.to_jwk(key.private, as_dict=True)
    private.pop("key_ops", None)  # PyJWT marks it ["sign"]; a leaked key would not say so
    return {**private, "kid": key.kid, "alg": key.alg}


@pytest.mark.parametrize("key", [make_rsa(), make_ec("P-384")], ids=["RSA", "EC"])
def test_private_members_of_a_jwk_are_never_used(key: SigningKey) -> None:
    entry = _private_members(key)
    assert "d" in entry
    (parsed,) = parse_jwks(json.dumps({"keys": [entry]}).encode())
    assert isinstance(parsed.key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)  # never a private key
    assert Verifier([parsed], issuer=None).verify(sign(CLAIMS, key).encode(), NOW) == CLAIMS


def test_padded_members_and_verify_key_ops_load() -> None:
    key = make_rsa(kid="padded")
    entry = jwk(key, key_ops=["sign", "verify"])
    entry["n"] += "=" * (-len(entry["n"]) % 4)  # 256 bytes: 342 characters, and two "="
    assert entry["n"].endswith("==")
    verifier = Verifier(parse_jwks(json.dumps({"keys": [entry]}).encode()), issuer=None)
    assert verifier.verify(sign(CLAIMS, key).encode(), NOW) == CLAIMS


def test_an_hmac_secret_that_is_a_public_key_is_refused_at_load() -> None:
    public = make_rsa().public()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk_text = json.dumps(jwk(make_ec("P-256"))).encode()
    for secret in (der, jwk_text):
        entry = {"kty": "oct", "kid": "confused", "alg": "HS256", "k": b64url(secret)}
        with pytest.raises(ValueError, match="key 0 \\(kid 'confused'\\): HS256 key refused by PyJWT"):
            parse_jwks(json.dumps({"keys": [entry]}).encode())
        with pytest.raises(ValueError, match="HS256 key refused by PyJWT"):
            pem_key(secret, "HS256")


@pytest.mark.parametrize("alg", ["ES256K", "ES521", "HS1", "RSA-OAEP"])
def test_algorithms_only_the_library_knows_are_refused(alg: str) -> None:
    verifier = _verifier(make_ec("P-256", kid="k"))
    _refused(verifier, encode({"alg": alg, "kid": "k"}, CLAIMS, b"\0" * 64), "unsupported algorithm")
    entry = {**jwk(make_ec("P-256", kid="alias")), "alg": alg}  # a key labelled with it is skipped
    assert parse_jwks(json.dumps({"keys": [entry]}).encode()) == ()


def test_an_ec_key_must_be_on_the_curve_of_its_alg() -> None:
    p384 = make_ec("P-384", kid="p384")
    with pytest.raises(ValueError, match="key 0 \\(kid 'p384'\\): \"alg\" ES256 does not fit"):
        parse_jwks(json.dumps(jwks(SigningKey(p384.private, "ES256", "p384"))).encode())
    mislabelled = {**jwk(p384), "crv": "P-256", "alg": "ES256"}  # 48-byte coordinates named P-256
    with pytest.raises(ValueError, match='P-256 "x" is 48 bytes; 32 are required'):
        parse_jwks(json.dumps({"keys": [mislabelled]}).encode())
    with pytest.raises(ValueError, match="ES512 needs an EC public key on curve secp521r1"):
        pem_key(public_pem(p384), "ES512")


def _library_calls(action: Callable[[], object]) -> int:
    """How many Python functions of the PyJWT package ran during ``action``."""
    package = str(Path(jwt.__file__).parent)
    calls = 0

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls
        if event == "call" and frame.f_code.co_filename.startswith(package):
            calls += 1

    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize("make", [make_rsa, make_ec, make_hs], ids=["RS256", "ES256", "HS256"])
def test_the_library_verifies_and_a_cached_token_never_calls_it(make: Callable[..., SigningKey]) -> None:
    key, impostor = make(kid="k"), make(kid="k")
    verifier = _verifier(key)
    token = sign(CLAIMS, key).encode()
    assert _library_calls(lambda: verifier.verify(token, NOW)) > 0  # PyJWT checked the signature
    assert _library_calls(lambda: verifier.verify(token, NOW + 1)) == 0  # the verified cache answered
    _refused(verifier, sign(CLAIMS, impostor), "invalid signature")
