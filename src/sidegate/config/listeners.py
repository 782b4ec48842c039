"""The ``listeners:`` section of the config: where the gateway listens (inbound, admin, health),
the inbound side's limits and forwarding headers, and the admin API's bearer token file.

Checks that need the whole section or the file system (listeners that would collide, an admin
listener off loopback without a token, a token file that cannot be read) are in
:mod:`sidegate.config.listener_checks`.

Checked by pydantic in the config checker only (like :mod:`sidegate.config.model`, which imports
it); the serving process gets :class:`~sidegate.config.snapshot.ListenerSpec`,
:class:`~sidegate.config.snapshot.InboundLimits` and :class:`~sidegate.config.snapshot.ForwardedSpec`
from the compiler.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from sidegate.config.egress import EgressListener
from sidegate.config.fields import Duration, KiB, ListenAddress, Size
from sidegate.units import parse_address

#: ``listeners.health.address: off`` runs no health listener.
OFF = "off"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InboundLimits(_Model):
    """Limits that protect the pod from slow or oversized requests."""

    head_size: Size = Field(default=32 * KiB, gt=0, description="largest request head (431/414 above it)")
    header_count: int = Field(default=100, ge=1, description="most request header lines (431 above it)")
    head_timeout: Duration = Field(
        default=10.0, gt=0, description="time allowed to receive a request head (408)"
    )
    body_idle: Duration = Field(
        default=30.0, gt=0, description="longest pause between request body reads (408)"
    )
    keepalive_idle: Duration = Field(
        default=60.0, gt=0, description="an idle client connection is closed after this"
    )
    buffer: Size = Field(
        default=64 * KiB, gt=0, description="per-connection buffer high-water mark (backpressure)"
    )
    chunk_line: Size = Field(
        default=4 * KiB,
        gt=0,
        description="longest chunk-size line of a chunked body, extensions included (400; 502 upstream)",
    )
    send_timeout: Duration = Field(
        default=60.0, gt=0, description="a client that accepts no response byte for this long is cut"
    )


def _trusted_network(value: str) -> str:
    """A trusted proxy's address or CIDR range, normalised (``10.0.0.7`` -> ``10.0.0.7/32``)."""
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IP address or CIDR range; give one such as 10.0.0.0/8, "
            "192.0.2.7 or 2001:db8::/32"
        ) from None


class Forwarded(_Model):
    """Which forwarding headers the gateway adds to requests it sends upstream, and which peers
    may say who the client is."""

    mode: Literal["x-forwarded", "forwarded", "off"] = Field(
        default="x-forwarded",
        description="forwarding headers to add: X-Forwarded-For/-Proto/-Host, RFC 7239 Forwarded, or none",
    )
    trust_incoming: bool = Field(
        default=True,
        description="keep forwarding headers a front proxy already set (false: replace them); with "
        "trusted or trusted_hops, only a trusted peer's",
    )
    via: str = Field(default="1.1 sidegate", description='Via header value added to requests ("" for none)')
    trusted: list[Annotated[str, AfterValidator(_trusted_network)]] = Field(
        default_factory=list,
        description="front proxies (addresses or CIDR ranges) whose X-Forwarded-For (mode forwarded: "
        "Forwarded) names the client; the client is the first untrusted address from the right",
    )
    trusted_hops: int = Field(
        default=0,
        ge=0,
        le=32,  # forwarding.MAX_ENTRIES: entries read from the right
        description="or: this many proxies in front, the direct peer the first; the client is the "
        "Nth address from the right of X-Forwarded-For (Envoy's xff_num_trusted_hops); 0: off",
    )

    @model_validator(mode="after")
    def _trust_is_coherent(self) -> Forwarded:
        if self.trusted and self.trusted_hops:
            raise ValueError("set trusted (proxy addresses) or trusted_hops (a count), not both")
        if (self.trusted or self.trusted_hops) and self.mode == "off":
            raise ValueError(
                "trusted and trusted_hops read the client from the header the mode names: set mode "
                "x-forwarded (X-Forwarded-For) or forwarded (Forwarded), or remove them"
            )
        if (self.trusted or self.trusted_hops) and not self.trust_incoming:
            raise ValueError(
                "trust_incoming: false replaces every incoming forwarding header, trusted proxies' "
                "too; remove it (with trusted proxies, only their headers are kept)"
            )
        return self


class InboundListener(_Model):
    """The listener that clients outside the pod connect to."""

    address: ListenAddress = Field(default="0.0.0.0:8080", description='where clients connect, "host:port"')
    limits: InboundLimits = Field(default_factory=InboundLimits, description="limits that protect the pod")
    forwarded: Forwarded = Field(default_factory=Forwarded, description="forwarding headers")
    underscore_headers: Literal["drop_managed", "drop", "reject", "allow"] = Field(
        default="drop_managed",
        description="request header names with '_' (CGI/WSGI read them as '-'): drop those that fold "
        "onto a header Sidegate sets or strips, drop all, reject all (400), or allow all",
    )


class AdminListener(_Model):
    """The admin listener: probes, metrics, config dump, reload, cache purge, explain, dashboard."""

    address: ListenAddress = Field(default="127.0.0.1:9901", description='admin API address, "host:port"')
    token_file: str | None = Field(
        default=None,
        min_length=1,
        description="a file holding the bearer token every admin request must send "
        "(`Authorization: Bearer <token>`), e.g. a mounted Secret; re-read when it changes. "
        "Required when the address is not loopback",
    )


def _health_address(value: str) -> str:
    if value == OFF:
        return value
    try:
        parse_address(value, allow_port_zero=True)
    except ValueError as error:
        raise ValueError(f"{error}; or `off` to run no health listener") from None
    return value


class HealthListener(_Model):
    """The read-only listener for the kubelet's probes and Prometheus: /live, /ready, /metrics."""

    address: Annotated[str, AfterValidator(_health_address)] = Field(
        default="0.0.0.0:9902",
        description='probe and metrics address, "host:port" (no token, nothing else served), or `off`',
    )


class Listeners(_Model):
    """Where the gateway listens."""

    inbound: InboundListener = Field(
        default_factory=InboundListener, description="the client-facing listener"
    )
    admin: AdminListener = Field(default_factory=AdminListener, description="probes, metrics and admin API")
    health: HealthListener = Field(
        default_factory=HealthListener,
        description="read-only probes and metrics for kubelet and Prometheus",
    )
    egress: EgressListener | None = Field(
        default=None,
        description="the app's outbound proxy (on when the egress section is present; default "
        "address 127.0.0.1:15001)",
    )
