"""A destination's ``tls:`` block: TLS origination, checked by pydantic in the config checker.

    tls:
      originate: true                 # http:// requests to it go out over TLS too
      port: 443                       # ... to this port when the app asked for port 80
      ca_file: /etc/partner/ca.pem    # absent: the system trust store
      server_name: api.partner.com    # SNI and the name verified; absent: the host called
      client_cert_file: /var/run/secrets/partner/tls.crt   # mTLS: both or neither
      client_key_file: /var/run/secrets/partner/tls.key
      min_version: "1.2"              # or "1.3"

Every file is opened and the context built here, as the serving process will build it
(:func:`~sidegate.config.egress_tls_spec.build_context`), so a wrong path or a file that is not
PEM is an error naming the field and the file when the config is checked.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from sidegate.config.egress_tls_spec import TlsFileError, build_context, compile_tls

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _server_name(value: str) -> str:
    name = value.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(name.removeprefix("[").removesuffix("]")))
    except ValueError:
        pass
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"invalid server_name {value!r}: give the DNS name the destination's certificate "
            "names, e.g. api.partner.com (no port, no wildcard)"
        )
    return name


def _path(value: str) -> str:
    if not value.strip():
        raise ValueError("give the path of a PEM file, or leave the field out")
    return value


PemFile = Annotated[str, AfterValidator(_path)]


class EgressTls(BaseModel):
    """How the sidecar speaks TLS to a destination (see the module's docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    originate: bool = Field(
        default=False,
        description="plain http:// requests to this destination (absolute-form or by name) go out "
        "over TLS; https:// requests always do",
    )
    port: int = Field(
        default=443,
        ge=1,
        le=65535,
        description="where an originated request goes when the app asked for port 80 "
        "(another port the app asks for is kept, and spoken TLS to)",
    )
    ca_file: PemFile | None = Field(
        default=None,
        description="PEM CA bundle the destination's certificate must chain to "
        "(absent: the system trust store)",
    )
    server_name: Annotated[str, AfterValidator(_server_name)] | None = Field(
        default=None,
        description="the name sent as SNI and verified in the certificate (absent: the host called; "
        "an IP is verified against the certificate's IP addresses and sends no SNI)",
    )
    client_cert_file: PemFile | None = Field(
        default=None, description="PEM client certificate (chain) for mTLS; with client_key_file"
    )
    client_key_file: PemFile | None = Field(default=None, description="PEM private key of client_cert_file")
    min_version: Literal["1.2", "1.3"] = Field(
        default="1.2", description='lowest TLS version: "1.2" or "1.3"'
    )

    @model_validator(mode="after")
    def _files_make_a_context(self) -> EgressTls:
        if bool(self.client_cert_file) != bool(self.client_key_file):
            given, missing = (
                ("client_cert_file", "client_key_file")
                if self.client_cert_file
                else ("client_key_file", "client_cert_file")
            )
            raise ValueError(
                f"{given} is set but {missing} is not: a client certificate needs both (or neither)"
            )
        settings = compile_tls(self.model_dump())
        assert settings is not None
        try:
            build_context(settings)
        except TlsFileError as error:
            raise ValueError(str(error)) from None
        return self
