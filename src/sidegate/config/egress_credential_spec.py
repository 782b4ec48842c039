"""A destination's compiled ``credentials:``: plain frozen values the serving process runs on.

The pydantic model (:mod:`sidegate.config.egress_credentials`) is the checker's; the serving
process gets these, made from the checked config by :func:`compile_credentials`, so it never
imports pydantic. The field names are the model's, so a credential reads the same either way.
The secret-file check lives here too: the model runs it at load, the credential at each re-read,
and both say the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_SECRET_FILE = 64 * 1024  # a token or key; more is a wrong path (a directory's archive, a log)


def secret_file_problem(path: str) -> str | None:
    """Why the secret file at ``path`` cannot be used, or None when it holds a value.

    The message names the path and the fix, never any of the file's content."""
    try:
        with open(path, "rb") as handle:
            text = handle.read(MAX_SECRET_FILE + 1)
    except FileNotFoundError:
        return f"{path}: file not found; mount the Secret holding it there, or fix the path"
    except IsADirectoryError:
        return f"{path}: is a directory; name the file inside it (the Secret's key, e.g. {path}/token)"
    except OSError as error:
        return f"{path}: cannot read it ({error.strerror or error}); make it readable by the sidegate user"
    if len(text) > MAX_SECRET_FILE:
        return f"{path}: larger than {MAX_SECRET_FILE} bytes; it does not look like a secret value"
    if not text.strip():
        return f"{path}: the file is empty; put the secret value in it"
    return None


@dataclass(frozen=True, slots=True)
class BearerSettings:
    token_file: str


@dataclass(frozen=True, slots=True)
class ApiKeySettings:
    header: str
    value_file: str


@dataclass(frozen=True, slots=True)
class BasicSettings:
    username: str
    username_file: str
    password_file: str


@dataclass(frozen=True, slots=True)
class OAuth2Settings:
    token_url: str
    client_id: str
    client_secret_file: str
    scopes: tuple[str, ...]
    audience: str
    auth_method: str  # "client_secret_basic" or "client_secret_post"
    refresh_before: float
    timeout: float
    ca_file: str


@dataclass(frozen=True, slots=True)
class CredentialSettings:
    """One credential: its name (what the audit log shows) and exactly one kind."""

    name: str
    bearer: BearerSettings | None = None
    api_key: ApiKeySettings | None = None
    basic: BasicSettings | None = None
    oauth2: OAuth2Settings | None = None


def compile_credentials(block: Mapping[str, Any]) -> CredentialSettings:
    """A checked ``credentials:`` block (the normalised config's mapping) as frozen values."""
    bearer, api_key, basic, oauth2 = (block.get(kind) for kind in ("bearer", "api_key", "basic", "oauth2"))
    return CredentialSettings(
        name=block["name"],
        bearer=BearerSettings(bearer["token_file"]) if bearer else None,
        api_key=ApiKeySettings(api_key["header"], api_key["value_file"]) if api_key else None,
        basic=BasicSettings(basic["username"], basic["username_file"], basic["password_file"])
        if basic
        else None,
        oauth2=(
            OAuth2Settings(
                token_url=oauth2["token_url"],
                client_id=oauth2["client_id"],
                client_secret_file=oauth2["client_secret_file"],
                scopes=tuple(oauth2["scopes"]),
                audience=oauth2["audience"],
                auth_method=oauth2["auth_method"],
                refresh_before=float(oauth2["refresh_before"]),
                timeout=float(oauth2["timeout"]),
                ca_file=oauth2["ca_file"],
            )
            if oauth2
            else None
        ),
    )
