"""The run's bearer token for the authenticated scenarios (`--auth`): an RSA key made for this run, its
public JWKS file in the run's work dir, and one RS256 token signed with it.

The token carries `iss`, `aud` and `sub` matching bench/configs/auth*.yaml and an `exp` an hour ahead (or
further, when the run may last longer). wrk sends it as `Authorization: Bearer ...` on every request.
Sidegate's jwt filter remembers a token it has verified, so one token sent over and over measures the steady
state of a client that keeps its token: a look-up and the claim checks per request; the RSA signature is
verified once, on the preflight's first request.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# Must match `issuer` and `audiences` of the jwt filter in bench/configs/auth.yaml and auth-redis.yaml
# (the preflight's 200 with the token says they do).
ISSUER = "https://issuer.bench.sidegate.invalid/"
AUDIENCE = "bench-app"
SUBJECT = "bench-client"
KID = "bench-rs256"
LIFETIME = 3600  # seconds the token is valid, at least


@dataclass(frozen=True)
class Credentials:
    """The JWKS file Sidegate checks tokens against, and the token wrk sends."""

    jwks_file: Path
    token: str

    @property
    def header(self) -> tuple[str, str]:
        return ("Authorization", f"Bearer {self.token}")


def make_credentials(workdir: Path, lifetime: float = LIFETIME) -> Credentials:
    """A new 2048-bit RSA key, its JWKS written to `workdir/jwks.json`, one token valid for `lifetime` s."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_numbers()
    jwk = {"kty": "RSA", "kid": KID, "alg": "RS256", "use": "sig", "n": _uint(public.n), "e": _uint(public.e)}
    jwks_file = workdir / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [jwk]}, indent=1) + "\n")
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": KID}
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": SUBJECT,
        "iat": now,
        "exp": now + max(LIFETIME, int(lifetime)),
    }
    signing_input = f"{_json(header)}.{_json(claims)}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return Credentials(jwks_file, f"{signing_input}.{_b64(signature)}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _uint(n: int) -> str:
    """A JWK integer (RFC 7518 6.3.1): big-endian bytes, no leading zeros, base64url."""
    return _b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))
