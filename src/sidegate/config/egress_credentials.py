"""A destination's ``credentials:``: the secret the sidecar adds to the app's outbound request.

    credentials:
      name: partner-api            # what the audit log shows (never the secret)
      bearer: {token_file: /var/run/secrets/partner/token}
    # or one of
      api_key: {header: X-Api-Key, value_file: /var/run/secrets/partner/key}
      basic: {username: svc-orders, password_file: /var/run/secrets/partner/password}
      oauth2:
        token_url: https://auth.partner.com/oauth/token
        client_id: orders
        client_secret_file: /var/run/secrets/partner/client-secret
        scopes: [orders.read]
        auth_method: client_secret_basic     # or client_secret_post
        refresh_before: 60s

Exactly one kind. The secrets live in files (the keys of a mounted Kubernetes Secret), never in
the config itself, so the ConfigMap holds no secret and a rotation needs no reload: the runtime
(:mod:`sidegate.egress.credentials`) re-reads a file when it changes. Each file must exist, be
readable and hold something when the config is checked, so a wrong path is an error naming the
field at load rather than a 502 at the first request. The whole ``credentials`` key is hidden in
``/config_dump`` (:mod:`sidegate.config.redact` hides any key whose name contains ``credential``).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from sidegate.config.egress_credential_spec import secret_file_problem
from sidegate.config.fields import Duration, EditableHeaderName

_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 section 3.3
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _secret_file(value: str) -> str:
    if not value:
        raise ValueError("give the path of the file holding the secret (a key of a mounted Secret)")
    problem = secret_file_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _no_host(value: str) -> str:
    if value.lower() == "host":
        raise ValueError("the Host header names the destination and cannot carry a credential")
    return value


def _token_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid token_url {value!r}: use https://auth.example.com/oauth/token") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"token_url {value!r} must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("token_url must not hold user:password; use client_id and client_secret_file")
    if parts.fragment:
        raise ValueError(f"token_url {value!r} must not have a #fragment")
    del port
    return value


def _scope(value: str) -> str:
    if not _SCOPE_TOKEN.fullmatch(value):
        raise ValueError(
            f"invalid scope {value!r}: one scope per list item, no spaces, quotes or backslashes"
        )
    return value


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"invalid name {value!r}: letters, digits, '.', '_' and '-', at most 63")
    return value


SecretFile = Annotated[str, AfterValidator(_secret_file)]
CredentialHeader = Annotated[EditableHeaderName, AfterValidator(_no_host)]


class BearerSpec(_Model):
    """``Authorization: Bearer <token>`` (RFC 6750), the token read from a file."""

    token_file: SecretFile = Field(
        description="file holding the bearer token (surrounding whitespace dropped)"
    )


class ApiKeySpec(_Model):
    """An API key in a header of the destination's choosing (``X-Api-Key: <key>``)."""

    header: CredentialHeader = Field(description="the header that carries the key, e.g. X-Api-Key")
    value_file: SecretFile = Field(description="file holding the key (surrounding whitespace dropped)")


class BasicSpec(_Model):
    """``Authorization: Basic base64(user:password)`` (RFC 7617); the username inline or in a file."""

    username: str = Field(default="", description="the user name (or username_file); must not contain ':'")
    username_file: str = Field(default="", description="file holding the user name, instead of username")
    password_file: SecretFile = Field(description="file holding the password")

    @model_validator(mode="after")
    def _one_username(self) -> BasicSpec:
        if bool(self.username) == bool(self.username_file):
            raise ValueError("give exactly one of username and username_file")
        if ":" in self.username:
            raise ValueError("username must not contain ':' (RFC 7617); the password goes in password_file")
        if self.username_file:
            problem = secret_file_problem(self.username_file)
            if problem is not None:
                raise ValueError(f"username_file {problem}")
        return self


class OAuth2Spec(_Model):
    """An OAuth 2.0 client-credentials grant (RFC 6749 section 4.4): the sidecar gets the token."""

    token_url: Annotated[str, AfterValidator(_token_url)] = Field(
        description="the authorization server's token endpoint (http:// or https://)"
    )
    client_id: str = Field(min_length=1, description="the client's identifier at the authorization server")
    client_secret_file: SecretFile = Field(description="file holding the client secret")
    scopes: tuple[Annotated[str, AfterValidator(_scope)], ...] = Field(
        default=(),
        description="scopes to ask for (sent space-separated as `scope`; none = the server's default)",
    )
    audience: str = Field(
        default="", description='the `audience` form parameter some servers need ("" = none)'
    )
    auth_method: Literal["client_secret_basic", "client_secret_post"] = Field(
        default="client_secret_basic",
        description="client_secret_basic: HTTP Basic to the token endpoint; client_secret_post: in the form",
    )
    refresh_before: Duration = Field(
        default=60.0, ge=0, description="get a new token this long before the current one expires"
    )
    timeout: Duration = Field(
        default=10.0, gt=0, description="most a token request may take, connect included"
    )
    ca_file: str = Field(
        default="", description='PEM CA certificates for an https token_url ("" = the system trust store)'
    )

    @model_validator(mode="after")
    def _usable(self) -> OAuth2Spec:
        if self.ca_file and not self.token_url.startswith("https://"):
            raise ValueError("ca_file is set but token_url is not https://; remove ca_file or use https")
        if self.ca_file:
            problem = secret_file_problem(self.ca_file)
            if problem is not None:
                raise ValueError(f"ca_file {problem}")
        return self


class CredentialsSpec(_Model):
    """What the sidecar adds to a destination's requests; a header of that name from the app is
    replaced, so the app never holds (or overrides) the secret."""

    name: Annotated[str, AfterValidator(_name)] = Field(
        description="what the audit log and metrics show for this credential (never its value)"
    )
    bearer: BearerSpec | None = Field(default=None, description="a bearer token from a file")
    api_key: ApiKeySpec | None = Field(default=None, description="an API key header from a file")
    basic: BasicSpec | None = Field(
        default=None, description="HTTP Basic from a username and a password file"
    )
    oauth2: OAuth2Spec | None = Field(default=None, description="an OAuth2 client-credentials grant")

    @model_validator(mode="after")
    def _exactly_one(self) -> CredentialsSpec:
        given = [kind for kind in ("bearer", "api_key", "basic", "oauth2") if getattr(self, kind) is not None]
        if len(given) != 1:
            shown = ", ".join(given) if given else "none"
            raise ValueError(f"give exactly one of bearer, api_key, basic and oauth2 (given: {shown})")
        return self

    @property
    def kind(self) -> str:
        """The one kind given: ``bearer``, ``api_key``, ``basic`` or ``oauth2``."""
        for kind in ("bearer", "api_key", "basic", "oauth2"):
            if getattr(self, kind) is not None:
                return kind
        raise AssertionError("validated: exactly one kind")
