"""The ``redis:`` section of the config: the Redis that holds rate limits shared by every pod.

    redis:
      url: rediss://redis.internal:6380/0     # rediss:// = TLS; redis:// = plain
      password: ${REDIS_PASSWORD}
      tls:                                    # only with rediss://
        ca_file: /etc/redis-ca/ca.crt         # default: the system trust store
        cert_file: /etc/redis-client/tls.crt  # a client certificate, when Redis requires one
        key_file: /etc/redis-client/tls.key
        server_name: redis.internal           # default: the URL's host

Checked by pydantic in the config checker only (like :mod:`sidegate.config.model`, which imports
it); the files are read there once, so a missing or unreadable file, a file that is not PEM, or a
key that does not belong to its certificate is an error naming the key at load, not a failed
connect later. The serving process gets :class:`~sidegate.config.snapshot.RedisSpec`.
"""

from __future__ import annotations

import os
import ssl
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from sidegate.config.fields import Duration


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _readable_file(value: str) -> str:
    if value and not os.path.isfile(value):
        raise ValueError(f"{value!r} is not a file (give the path of a PEM file, readable by Sidegate)")
    if value and not os.access(value, os.R_OK):
        raise ValueError(f"{value!r} cannot be read by Sidegate (check its permissions)")
    return value


PemFile = Annotated[str, AfterValidator(_readable_file)]


class RedisTls(_Model):
    """TLS to Redis, for a ``rediss://`` URL: whom to trust, and a client certificate if Redis asks."""

    ca_file: PemFile = Field(
        default="",
        description='PEM CA certificates that sign Redis\' certificate ("" = the system trust store)',
    )
    cert_file: PemFile = Field(
        default="",
        description='PEM client certificate (and chain), for a Redis that requires one ("" = none)',
    )
    key_file: PemFile = Field(default="", description='PEM key of cert_file ("" = the key is in cert_file)')
    server_name: str = Field(
        default="", description="the name Redis' certificate must be for, and SNI (\"\" = the URL's host)"
    )

    @model_validator(mode="after")
    def _usable(self) -> RedisTls:
        if self.key_file and not self.cert_file:
            raise ValueError("key_file is set without cert_file; give the client certificate as cert_file")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.ca_file:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                problem = f"ca_file {self.ca_file!r} holds no PEM certificate ({_reason(exc)})"
                raise ValueError(problem) from None
        if self.cert_file:
            try:
                context.load_cert_chain(self.cert_file, self.key_file or None)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"{self._chain_problem(exc)} ({_reason(exc)})") from None
        return self

    def _chain_problem(self, exc: OSError | ssl.SSLError) -> str:
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            return f"key_file {self.key_file!r} is not the key of cert_file {self.cert_file!r}"
        if self.key_file:
            return f"cert_file {self.cert_file!r} or key_file {self.key_file!r} is not PEM"
        return f"cert_file {self.cert_file!r} holds no PEM certificate and key (or give key_file)"


def _reason(exc: OSError | ssl.SSLError) -> str:
    return str(getattr(exc, "reason", None) or exc.strerror or exc)


class Redis(_Model):
    """The Redis that holds rate limits shared by every pod."""

    url: str = Field(
        default="",
        pattern=r"^(rediss?://[^\s]+)?$",
        description='redis://host:port/db, or rediss:// for TLS ("" = no Redis)',
    )
    password: str = Field(default="", description="AUTH password (use ${ENV})")
    timeout: Duration = Field(default=0.05, gt=0, description="most a decision may wait for Redis")
    connect_timeout: Duration = Field(
        default=0.5, gt=0, description="to connect to Redis (TLS handshake and login included)"
    )
    tls: RedisTls = Field(default_factory=RedisTls, description="TLS settings for a rediss:// URL")

    @model_validator(mode="after")
    def _tls_needs_rediss(self) -> Redis:
        if self.tls != RedisTls() and not self.url.startswith("rediss://"):
            shown = self.url.split("://", 1)[-1].rsplit("@", 1)[-1] or "host:port"
            raise ValueError(
                f"tls is set but the url is not rediss://; for TLS write url: rediss://{shown}, "
                "else remove the tls keys"
            )
        return self
