"""JWT verification: every algorithm, the classic attacks, time claims, the verified cache, key parsing.

Keys are made at test time and tokens signed with ``cryptography`` directly (tests/support/jwt_tokens.py),
independently of the code under test.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from sidegate.policy.jwt import SUPPORTED, Jwk, JwtError, UnknownKeyError, Verifier, parse_jwks, pem_key
from support.jwt_tokens import (
    SigningKey,
    b64url,
    encode,
    jwk,
    jwks,
    make_ec,
    make_ed25519,
    make_hs,
    make_rsa,
    public_pem,
    sign,
)

NOW = 1_700_000_000.0
ISS = "https://id.example"
CLAIMS: dict[str, Any] = {"sub": "alice", "iss": ISS, "aud": "api", "exp": NOW + 300, "iat": NOW}


@pytest.fixture(scope="module")
def rsa_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def all_keys(rsa_private: rsa.RSAPrivateKey) -> dict[str, SigningKey]:
    """One signing key per supported algorithm (the RS and PS keys share one RSA key, as providers do)."""
    keys = {alg: SigningKey(rsa_private, alg, f"rsa-{alg}") for alg in SUPPORTED if alg[:2] in ("RS", "PS")}
    keys |= {key.alg: key for key in (make_ec("P-256"), make_ec("P-384"), make_ec("P-521"))}
    keys["EdDSA"] = make_ed25519()
    keys |= {alg: make_hs(alg, kid=f"hs-{alg}") for alg in ("HS256", "HS384", "HS512")}
    assert set(keys) == SUPPORTED
    return keys


@pytest.fixture(scope="module")
def verifier(all_keys: dict[str, SigningKey]) -> Verifier:
    return Verifier(_keys(*all_keys.values()), issuer=ISS, audiences=("api",))


def _keys(*keys: SigningKey, algorithms: frozenset[str] | None = None) -> tuple[Jwk, ...]:
    return parse_jwks(json.dumps(jwks(*keys)).encode(), algorithms=algorithms)


def _refused(verifier: Verifier, token: str | bytes, reason: str, now: float = NOW) -> JwtError:
    with pytest.raises(JwtError) as info:
        verifier.verify(token.encode() if isinstance(token, str) else token, now)
    assert info.value.reason.startswith(reason), info.value.reason
    assert info.value.status == 401
    return info.value


# --- every algorithm verifies ----------------------------------------------------------------------


@pytest.mark.parametrize("alg", sorted(SUPPORTED))
def test_every_algorithm_verifies_through_jwks(
    alg: str, all_keys: dict[str, SigningKey], verifier: Verifier
) -> None:
    claims = verifier.verify(sign(CLAIMS, all_keys[alg]).encode(), NOW)
    assert claims == CLAIMS


@pytest.mark.parametrize("alg", sorted(SUPPORTED))
def test_every_algorithm_verifies_without_kid(alg: str, all_keys: dict[str, SigningKey]) -> None:
    key = all_keys[alg]
    configured = pem_key(key.private if alg.startswith("HS") else public_pem(key), alg)
    token = sign(CLAIMS, key, kid="")  # an empty kid is still a kid: matched against the kid-less key
    assert dict(Verifier([configured], issuer=None).verify(token.encode(), NOW)) == CLAIMS
    token = sign(CLAIMS, key.private, alg)  # a raw key: no kid in the header
    assert dict(Verifier([configured], issuer=None).verify(token.encode(), NOW)) == CLAIMS


def test_no_kid_tries_every_key_of_the_alg() -> None:
    first, second = make_ec("P-256", kid="a"), make_ec("P-256", kid="b")
    verifier = Verifier(_keys(first, second), issuer=None)
    token = sign({"n": 1}, second.private, "ES256")
    assert verifier.verify(token.encode(), NOW) == {"n": 1}


def test_claims_are_read_only(all_keys: dict[str, SigningKey], verifier: Verifier) -> None:
    claims = verifier.verify(sign(CLAIMS, all_keys["ES256"]).encode(), NOW)
    with pytest.raises(TypeError):
        claims["sub"] = "mallory"  # type: ignore[index]


# --- the classic attacks -----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(alg: str, verifier: Verifier) -> None:
    _refused(verifier, encode({"alg": alg, "kid": "rsa-RS256"}, CLAIMS), "algorithm none refused")
    _refused(verifier, encode({"alg": alg}, CLAIMS), "algorithm none refused")
    _refused(verifier, encode({"alg": alg}, CLAIMS) + "AAAA", "algorithm none refused")


def test_rsa_public_key_as_hmac_secret_is_refused(all_keys: dict[str, SigningKey]) -> None:
    rsa_key = all_keys["RS256"]
    verifier = Verifier(_keys(rsa_key), issuer=ISS)
    pem = public_pem(rsa_key)
    der = rsa_key.public().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    for secret in (pem, pem.strip(), der, json.dumps(jwk(rsa_key)).encode()):
        for alg in ("HS256", "HS384", "HS512"):
            _refused(
                verifier, sign(CLAIMS, secret, alg, kid="rsa-RS256"), "algorithm not allowed for this key"
            )
            _refused(verifier, sign(CLAIMS, secret, alg), "algorithm not allowed")
    # and the key set itself can never turn an RSA key into an HMAC secret
    with pytest.raises(ValueError, match="HS256 needs a shared secret"):
        Verifier([Jwk("rsa-RS256", "HS256", rsa_key.public())], issuer=None)
    with pytest.raises(ValueError, match="not a PEM key"):
        pem_key(pem, "HS256")
    with pytest.raises(ValueError, match="does not fit"):
        parse_jwks(json.dumps(jwk(rsa_key, alg="HS256")).encode())


def test_token_alg_must_equal_the_key_alg(all_keys: dict[str, SigningKey], verifier: Verifier) -> None:
    ps = SigningKey(all_keys["RS256"].private, "PS256")
    _refused(verifier, sign(CLAIMS, ps, kid="rsa-RS256"), "algorithm not allowed for this key")
    _refused(verifier, sign(CLAIMS, all_keys["ES384"], "ES384", kid="ec-P-256"), "algorithm not allowed")


def test_key_embedded_in_the_header_is_ignored(verifier: Verifier) -> None:
    attacker = make_ec("P-256", kid="attacker")
    extra = {"jwk": jwk(attacker), "jku": "https://evil.example/jwks", "x5u": "https://evil.example/c"}
    _refused(verifier, sign(CLAIMS, attacker, header_extra=extra), "unknown key")
    _refused(verifier, sign(CLAIMS, attacker, kid="ec-P-256", header_extra=extra), "invalid signature")
    token = sign(CLAIMS, attacker.private, "ES256", header_extra=extra)
    _refused(verifier, token, "invalid signature")


def test_unknown_kid(all_keys: dict[str, SigningKey], verifier: Verifier) -> None:
    error = _refused(verifier, sign(CLAIMS, all_keys["RS256"], kid="rotated-away"), "unknown key")
    assert isinstance(error, UnknownKeyError)


@pytest.mark.parametrize("alg", sorted(SUPPORTED))
def test_tampered_tokens_are_refused(alg: str, all_keys: dict[str, SigningKey], verifier: Verifier) -> None:
    token = sign(CLAIMS, all_keys[alg])
    head, body, sig = token.split(".")
    forged_body = b64url(json.dumps({**CLAIMS, "sub": "admin"}).encode())
    _refused(verifier, f"{head}.{forged_body}.{sig}", "invalid signature")
    forged_head = b64url(json.dumps({"alg": alg, "kid": all_keys[alg].kid, "typ": "at+jwt"}).encode())
    _refused(verifier, f"{forged_head}.{body}.{sig}", "invalid signature")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[len(raw) // 2] ^= 1
    _refused(verifier, f"{head}.{body}.{b64url(bytes(raw))}", "invalid signature")
    _refused(verifier, f"{head}.{body}.{b64url(bytes(raw[:-1]))}", "malformed signature")
    _refused(verifier, f"{head}.{body}.", "malformed signature")
    _refused(verifier, f"{head}.{body}", "malformed token: not three parts")
    _refused(verifier, token[:-1], "malformed")
    _refused(verifier, f"{token}.{sig}", "malformed token: not three parts")


def test_crit_header_is_refused(all_keys: dict[str, SigningKey], verifier: Verifier) -> None:
    token = sign(CLAIMS, all_keys["ES256"], header_extra={"crit": ["exp"], "exp": 1})
    _refused(verifier, token, "crit header not supported")
    _refused(verifier, sign(CLAIMS, all_keys["ES256"], header_extra={"crit": []}), "crit header")


def test_huge_token_is_refused_quickly(verifier: Verifier) -> None:
    huge = b"eyJhbGciOiJSUzI1NiJ9." + b"A" * (1 << 20) + b".AAAA"
    start = time.perf_counter()
    _refused(verifier, huge, "malformed token: too large")
    assert time.perf_counter() - start < 0.01
    limited = Verifier([], issuer=None, max_token_bytes=100)
    _refused(limited, b"a" * 101, "malformed token: too large")
    _refused(limited, b"a.b.c" + b"c" * 95, "malformed")


def test_bad_base64url_is_refused(all_keys: dict[str, SigningKey], verifier: Verifier) -> None:
    head, body, sig = sign(CLAIMS, all_keys["HS256"]).split(".")
    for bad in (
        f"{head}=.{body}.{sig}",
        f"{head}.{body}.{sig}=",
        f"{head}.{body}+.{sig}",
        f"{head}.b/dy.{sig}",
    ):
        _refused(verifier, bad, "malformed token: bad base64url")
    _refused(verifier, f"{head} .{body}.{sig}", "malformed token: bad base64url")
    _refused(verifier, f"{head}.{body}.{sig}\n", "malformed token: bad base64url")
    body_4n1 = body + "A" * ((1 - len(body)) % 4)  # no base64 text has a length of 4n + 1
    _refused(verifier, f"{head}.{body_4n1}.{sig}", "malformed token: bad base64url")
    # the same bytes spelled with non-zero unused bits are a different token, and refused
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(sig[-1])
    assert last % 4 == 0
    tweaked = sig[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last + 1]
    _refused(verifier, f"{head}.{body}.{tweaked}", "malformed token: bad base64url")
    _refused(verifier, "é.é.é".encode(), "malformed token: bad base64url")


def test_payload_and_header_must_be_json_objects(all_keys: dict[str, SigningKey], verifier: Verifier) -> None:
    key = all_keys["HS256"]
    _refused(verifier, sign(b'["sub", "alice"]', key), "malformed payload: not an object")
    _refused(verifier, sign(b'"alice"', key), "malformed payload: not an object")
    _refused(verifier, sign(b"{'sub': 1}", key), "malformed payload")
    _refused(verifier, sign(b"\xff\xfe{}", key), "malformed payload")
    _refused(verifier, sign(b"[" * 2000 + b"]" * 2000, key), "malformed payload")
    _refused(verifier, sign(b'{"exp": 1' + b"0" * 5000 + b"}", key), "malformed payload")
    _refused(verifier, sign(b'{"exp": NaN}', key), "malformed payload")
    _refused(verifier, encode(b'["HS256"]', CLAIMS, b"x" * 32), "malformed header: not an object")
    _refused(verifier, encode(b"", CLAIMS, b"x" * 32), "malformed header")
    _refused(verifier, encode(b"[" * 5000, CLAIMS, b"x" * 32), "malformed header")
    _refused(verifier, encode({"alg": 256}, CLAIMS, b"x" * 32), "malformed header: alg")
    _refused(verifier, encode({"typ": "JWT"}, CLAIMS, b"x" * 32), "malformed header: alg")
    _refused(
        verifier, encode({"alg": "HS256", "kid": ["hs-HS256"]}, CLAIMS, b"x" * 32), "malformed header: kid"
    )
    _refused(verifier, encode({"alg": "HS1"}, CLAIMS, b"x" * 32), "unsupported algorithm")


@pytest.mark.parametrize("value", ['"tomorrow"', "true", "null", "[1]", "1e999", "-1e999", "1" + "0" * 400])
def test_non_numeric_time_claims_are_refused(
    value: str, all_keys: dict[str, SigningKey], verifier: Verifier
) -> None:
    for name in ("exp", "nbf"):
        payload = f'{{"iss": "{ISS}", "aud": "api", "{name}": {value}}}'.encode()
        _refused(verifier, sign(payload, all_keys["ES256"]), f"invalid {name} claim")


# --- claims --------------------------------------------------------------------------------------------


def test_expiry_and_not_before_with_leeway(all_keys: dict[str, SigningKey]) -> None:
    key = all_keys["EdDSA"]
    verifier = Verifier(_keys(key), issuer=None, leeway=30.0, cache_size=0)

    def check(claims: dict[str, Any], now: float) -> None:
        verifier.verify(sign(claims, key).encode(), now)

    check({"exp": NOW - 29}, NOW)
    check({"nbf": NOW + 29}, NOW)
    check({"exp": NOW + 1, "nbf": NOW - 1}, NOW)
    check({}, NOW)  # neither is required
    _refused(verifier, sign({"exp": NOW - 30}, key), "token expired")
    _refused(verifier, sign({"exp": NOW - 31}, key), "token expired")
    _refused(verifier, sign({"nbf": NOW + 31}, key), "token not yet valid")
    strict = Verifier(_keys(key), issuer=None, leeway=0)
    _refused(strict, sign({"exp": NOW}, key), "token expired")
    _refused(strict, sign({"nbf": NOW + 1}, key), "token not yet valid")
    strict.verify(sign({"exp": NOW + 1, "nbf": NOW}, key).encode(), NOW)
    check({"exp": int(NOW) + 10, "nbf": int(NOW)}, NOW)  # integers, as most issuers send


def test_issuer(all_keys: dict[str, SigningKey]) -> None:
    key = all_keys["ES256"]
    verifier = Verifier(_keys(key), issuer=ISS)
    assert verifier.verify(sign({"iss": ISS}, key).encode(), NOW)["iss"] == ISS
    _refused(verifier, sign({"iss": ISS + "/"}, key), "wrong issuer")
    _refused(verifier, sign({"iss": [ISS]}, key), "wrong issuer")
    _refused(verifier, sign({"sub": "x"}, key), "wrong issuer")
    assert Verifier(_keys(key), issuer=None).verify(sign({"iss": "anyone"}, key).encode(), NOW)


def test_audience(all_keys: dict[str, SigningKey]) -> None:
    key = all_keys["ES256"]
    verifier = Verifier(_keys(key), issuer=None, audiences=("api", "admin"))
    for aud in ("api", ["other", "admin"], ["api"]):
        verifier.verify(sign({"aud": aud}, key).encode(), NOW)
    for bad in ("other", [], ["other"], None, 5, [["api"]], [{"api": 1}], {"api": 1}):
        _refused(verifier, sign({"aud": bad}, key), "wrong audience")
    _refused(verifier, sign({"sub": "x"}, key), "wrong audience")
    assert Verifier(_keys(key), issuer=None).verify(sign({"aud": "anything"}, key).encode(), NOW)


# --- the verified cache --------------------------------------------------------------------------------


def test_cached_token_is_still_checked_for_expiry(all_keys: dict[str, SigningKey]) -> None:
    key = all_keys["RS256"]
    verifier = Verifier(_keys(key), issuer=None, leeway=5)
    token = sign({"sub": "a", "exp": NOW + 10, "nbf": NOW - 10}, key).encode()
    first = verifier.verify(token, NOW)
    assert verifier.cached() == 1
    assert verifier.verify(token, NOW + 14) is first
    _refused(verifier, token, "token not yet valid", now=NOW - 16)
    _refused(verifier, token, "token expired", now=NOW + 15)
    assert verifier.cached() == 0  # an expired entry is dropped
    _refused(verifier, token, "token expired", now=NOW + 15)


def test_not_yet_valid_token_becomes_valid_from_the_cache(all_keys: dict[str, SigningKey]) -> None:
    key = all_keys["HS256"]
    verifier = Verifier(_keys(key), issuer=None, leeway=0)
    token = sign({"nbf": NOW + 60}, key).encode()
    _refused(verifier, token, "token not yet valid")
    assert verifier.cached() == 1
    assert verifier.verify(token, NOW + 60) == {"nbf": NOW + 60}


def test_cache_is_bounded_and_keeps_recently_used(all_keys: dict[str, SigningKey]) -> None:
    key = all_keys["HS256"]
    verifier = Verifier(_keys(key), issuer=None, cache_size=2)
    a, b, c = (sign({"n": n}, key).encode() for n in range(3))
    verifier.verify(a, NOW)
    verifier.verify(b, NOW)
    verifier.verify(a, NOW)  # a is now the most recently used
    verifier.verify(c, NOW)  # evicts b
    assert verifier.cached() == 2
    assert verifier.verify(a, NOW) == {"n": 0}
    assert Verifier(_keys(key), issuer=None, cache_size=0).verify(a, NOW) == {"n": 0}


def test_refused_tokens_are_not_cached(all_keys: dict[str, SigningKey], verifier: Verifier) -> None:
    before = verifier.cached()
    _refused(verifier, sign({**CLAIMS, "iss": "evil"}, all_keys["HS256"]), "wrong issuer")
    _refused(verifier, sign({**CLAIMS, "exp": NOW - 100}, all_keys["HS256"]), "token expired")
    assert verifier.cached() == before


# --- fuzz: malformed input of any shape is a JwtError, never another exception ----------------------


def test_fuzz_never_raises_anything_but_jwt_error(
    all_keys: dict[str, SigningKey], verifier: Verifier
) -> None:
    rng = random.Random(4)
    valid = [sign(CLAIMS, key).encode() for key in all_keys.values()]
    alphabet = b"ABCxyz019-_=+/.!~ \t{}\"'\x00\xff"
    sig_lengths = [32, 48, 64, 96, 132, 256]

    def random_bytes() -> bytes:
        return os.urandom(rng.randrange(0, 400))

    def random_parts() -> bytes:
        return b".".join(
            bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
            for _ in range(rng.randrange(1, 6))
        )

    def mutated() -> bytes:
        token = bytearray(rng.choice(valid))
        for _ in range(rng.randrange(1, 4)):
            token[rng.randrange(len(token))] = rng.randrange(256)
        return bytes(token)

    def random_signature() -> bytes:  # a well-formed header for a real key, random signature bytes
        alg, key = rng.choice(sorted(all_keys.items()))
        header = {"alg": alg, "kid": key.kid} if rng.random() < 0.8 else {"alg": alg}
        size = rng.choice(sig_lengths)
        sig = rng.choice([os.urandom(size), b"\xff" * size, b"\x00" * size])
        return encode(header, CLAIMS, sig).encode()

    def random_json() -> bytes:
        values: list[Any] = [None, True, 0, -1, 1.5, 10**30, "", "HS256", [], {}, [1, [2]], {"a": {}}]
        header = {rng.choice(["alg", "kid", "crit", "typ", "b64"]): rng.choice(values) for _ in range(3)}
        payload = {rng.choice(["exp", "nbf", "iss", "aud"]): rng.choice(values) for _ in range(3)}
        return encode(header, payload, os.urandom(rng.randrange(0, 300))).encode()

    makers: list[Callable[[], bytes]] = [random_bytes, random_parts, mutated, random_signature, random_json]
    outcomes: dict[str, int] = {}
    for i in range(5000):
        token = makers[i % len(makers)]()
        try:
            verifier.verify(token, NOW + rng.uniform(-1000, 1000))
        except JwtError as exc:
            outcomes[exc.reason] = outcomes.get(exc.reason, 0) + 1
        else:
            assert token in valid, token  # nothing but an untouched valid token may pass
    for huge in (b"A" * 10_000_000, b"." * 9000, b"A." * 5000, os.urandom(1 << 20)):
        _refused(verifier, huge, "malformed token: too large")
    assert len(outcomes) >= 8, outcomes  # the fuzz reached the signature, header and payload checks


# --- key parsing ---------------------------------------------------------------------------------------


def test_jwks_algorithm_comes_from_the_key_or_the_configuration() -> None:
    rsa_key, ec_key, ed_key, hs_key = make_rsa(kid="r"), make_ec("P-384", kid="e"), make_ed25519(), make_hs()
    doc = json.dumps(jwks(rsa_key, ec_key, ed_key, hs_key, with_alg=False)).encode()
    # without "alg", only keys whose type allows one algorithm are usable
    assert [(k.kid, k.alg) for k in parse_jwks(doc)] == [("e", "ES384"), ("ed-1", "EdDSA")]
    only = frozenset({"PS512", "HS256", "ES384"})
    usable = [(k.kid, k.alg) for k in parse_jwks(doc, algorithms=only)]
    assert usable == [("r", "PS512"), ("e", "ES384"), ("hs-1", "HS256")]
    assert [k.alg for k in parse_jwks(doc, algorithms=frozenset({"RS256", "PS256"}))] == []
    with_alg = json.dumps(jwks(rsa_key, ec_key, ed_key, hs_key)).encode()
    assert [k.alg for k in parse_jwks(with_alg)] == ["RS256", "ES384", "EdDSA", "HS256"]
    assert [k.alg for k in parse_jwks(with_alg, algorithms=frozenset({"ES384"}))] == ["ES384"]
    single = json.dumps(jwk(ec_key)).encode()
    assert [k.kid for k in parse_jwks(single)] == ["e"]
    with pytest.raises(ValueError, match="unsupported algorithms: none"):
        parse_jwks(doc, algorithms=frozenset({"none"}))


def test_jwks_skips_keys_that_are_not_for_signatures() -> None:
    key = make_ec("P-256", kid="ok")
    entries = [
        jwk(key),
        jwk(make_ec("P-256", kid="enc"), use="enc"),
        jwk(make_ec("P-256", kid="ops"), key_ops=["encrypt"]),
        jwk(make_rsa(kid="oaep"), alg="RSA-OAEP"),
        jwk(make_ec("P-256", kid="none"), alg="none"),
        {"kty": "OKP", "crv": "X25519", "x": b64url(os.urandom(32)), "kid": "x25519"},
        {"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA", "kid": "k1"},
        {"kty": "PQC", "kid": "future"},
    ]
    assert [k.kid for k in parse_jwks(json.dumps({"keys": entries}).encode())] == ["ok"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"kty": "RSA", "kid": "r1", "alg": "RS256", "n": "!!", "e": "AQAB"},
            "key 1 (kid 'r1'): \"n\" is not base64url",
        ),
        ({"kty": "RSA", "kid": "r1", "alg": "RS256", "e": "AQAB"}, "key 1 (kid 'r1'): \"n\" is missing"),
        (
            {"kty": "EC", "crv": "P-256", "x": b64url(b"\1" * 32), "y": b64url(b"\2" * 32)},
            "key 1: bad EC key: Invalid EC key. Point is not on the curve",  # (PyJWT's words)
        ),
        (
            {"kty": "EC", "crv": "P-256", "kid": "e", "x": b64url(b"\1" * 31), "y": "AA"},
            "key 1 (kid 'e'): P-256",
        ),
        ({"kty": "OKP", "crv": "Ed25519", "x": b64url(b"\1" * 31)}, 'key 1: Ed25519 "x" is 31 bytes'),
        ({"kty": "oct", "alg": "HS256", "k": b64url(b"short")}, "key 1: HS256 secret is 5 bytes"),
        ({"kty": "oct", "alg": "HS256"}, 'key 1: "k" is missing'),
        (
            {"kty": "EC", "crv": "P-256", "alg": "ES384", "x": "AA", "y": "AA"},
            'key 1: "alg" ES384 does not fit',
        ),
        ({"kty": "RSA", "kid": 7}, 'key 1: "kid" is not a string'),
        ({"kty": "RSA", "alg": ["RS256"]}, 'key 1: "alg" is not a string'),
        ({"kid": "x"}, "key 1 (kid 'x'): \"kty\" is missing"),
        ("RSA", "key 1: not a JSON object"),
    ],
)
def test_jwks_errors_name_the_key(entry: object, message: str) -> None:
    doc = json.dumps({"keys": [jwk(make_ed25519()), entry]}).encode()
    with pytest.raises(ValueError) as info:
        parse_jwks(doc)
    assert str(info.value).startswith(message), str(info.value)


def test_jwks_refuses_small_rsa_keys() -> None:
    small = make_rsa(kid="old", bits=1024)
    with pytest.raises(ValueError, match="key 0 \\(kid 'old'\\): RSA key is 1024 bits"):
        parse_jwks(json.dumps(jwks(small)).encode())
    with pytest.raises(ValueError, match="RSA key is 1024 bits"):
        pem_key(public_pem(small), "RS256")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "JWKS is not valid JSON"),
        (b"[" * 100_000, "JWKS is not valid JSON"),
        (b"[]", 'JWKS must be an object with a "keys" list'),
        (b'{"keys": {}}', 'JWKS "keys" must be a list'),
        (b'{"issuer": "x"}', "JWKS must be an object"),
    ],
)
def test_jwks_document_errors(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_jwks(data)


def test_pem_keys(all_keys: dict[str, SigningKey]) -> None:
    ec_key = all_keys["ES256"]
    assert pem_key(public_pem(ec_key), "ES256").alg == "ES256"
    assert pem_key(public_pem(all_keys["EdDSA"]), "EdDSA").kid is None
    for alg, wrong in (("ES384", "ES256"), ("RS256", "ES256"), ("EdDSA", "RS256"), ("ES256", "EdDSA")):
        with pytest.raises(ValueError, match=f"{alg} needs"):
            pem_key(public_pem(all_keys[wrong]), alg)
    private_pem = ec_key.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="not a PEM public key"):
        pem_key(private_pem, "ES256")
    with pytest.raises(ValueError, match="not a PEM public key"):
        pem_key(b"garbage", "RS256")
    with pytest.raises(ValueError, match="unsupported algorithm 'none'"):
        pem_key(b"x" * 64, "none")
    with pytest.raises(ValueError, match="HS512 secret is 32 bytes; at least 64"):
        pem_key(b"s" * 32, "HS512")
    assert pem_key(b"s" * 64, "HS512").key == b"s" * 64
    assert "s" * 64 not in repr(pem_key(b"s" * 64, "HS512"))  # a logged key shows no secret


def test_pem_certificate(all_keys: dict[str, SigningKey]) -> None:
    key = all_keys["ES256"]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365))
        .sign(key.private, hashes.SHA256())
    )
    configured = pem_key(cert.public_bytes(serialization.Encoding.PEM), "ES256")
    assert Verifier([configured], issuer=None).verify(sign({"a": 1}, key).encode(), NOW) == {"a": 1}


def test_pem_key_matches_tokens_with_any_kid(all_keys: dict[str, SigningKey]) -> None:
    key = all_keys["ES256"]
    verifier = Verifier([pem_key(public_pem(key), "ES256")], issuer=None)
    assert verifier.verify(sign({"a": 1}, key, kid="whatever-the-idp-sets").encode(), NOW) == {"a": 1}
    other = make_ec("P-256")
    error = _refused(verifier, sign({"a": 1}, other, kid="other"), "unknown key")
    assert isinstance(error, UnknownKeyError)
    _refused(verifier, sign({"a": 1}, other.private, "ES256"), "invalid signature")
    _refused(verifier, sign({"a": 1}, all_keys["ES384"], kid="x"), "unknown key")


def test_key_of_the_wrong_curve_is_refused_by_the_verifier() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(ValueError, match="ES256 needs an EC public key on curve secp256r1"):
        Verifier([Jwk("k", "ES256", p384)], issuer=None)
    with pytest.raises(ValueError, match="unsupported algorithm"):
        Verifier([Jwk("k", "none", b"")], issuer=None)


def test_error_reason_never_echoes_the_token(all_keys: dict[str, SigningKey], verifier: Verifier) -> None:
    marker = "SECRETMARKER"
    for token in (
        sign({"iss": marker}, all_keys["HS256"]),
        sign(CLAIMS, all_keys["HS256"], kid=marker),
        encode({"alg": marker}, CLAIMS),
        marker,
    ):
        error = _refused(verifier, token, "")
        assert marker not in error.reason and marker not in str(error)
