"""The ``egress:`` section and ``listeners.egress``: which outbound calls the app may make.

The app's outbound traffic goes through the egress listener (``HTTP_PROXY``, or a named
destination called as ``http://127.0.0.1:15001/`` with ``Host: <name>``); every request is
checked against ``egress.destinations`` and, failing all of them, ``default_action`` decides.
Only ``deny`` exists as a default today: an allow-all egress is an open proxy, and an explicit
destination ``host: "*"`` says the same thing where a reviewer will see it.

Checked by pydantic in the config checker only; the serving process gets
:class:`~sidegate.config.egress_spec.EgressSpec` from the compiler.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from sidegate.config.egress_credentials import CredentialsSpec
from sidegate.config.egress_tls import EgressTls
from sidegate.config.fields import Duration, EndpointAddress, ListenAddress, Method

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")


Scheme = Literal["http", "https", "tcp"]


#: The CONNECT SNI check: "match" closes a tunnel whose first bytes are not a TLS ClientHello
#: naming the CONNECT host; "off" (the default, Smokescreen's behaviour) carries any bytes.
ConnectSni = Literal["off", "match"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _destination_host(value: str) -> str:
    """An exact host name, an IP literal, ``*.suffix`` (any name under it) or ``*`` (any)."""
    host = value.strip().lower().rstrip(".")
    if host == "*":
        return host
    try:
        return str(ipaddress.ip_address(host.removeprefix("[").removesuffix("]")))
    except ValueError:
        pass
    name = host[2:] if host.startswith("*.") else host
    if "*" in name:
        raise ValueError(
            f"host {value!r}: a wildcard may only be the whole first label ('*.example.com'); "
            "'api.*.com' or 'a*.example.com' are not supported"
        )
    if ":" in name or "/" in name:
        raise ValueError(f"host {value!r} must be a bare host name: put the port in `ports`")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"invalid host {value!r}: use 'api.example.com' or '*.example.com'")
    if host.startswith("*.") and len(labels) < 2:
        raise ValueError(f"host {value!r} would match a whole top-level domain; name a domain under it")
    return host


def _private_network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(
            f"{value!r} is not a CIDR range; give one such as 10.0.0.0/8, 127.0.0.1/32 or fd00::/8"
        ) from None


def _path_prefix(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"path prefix {value!r} must start with '/'")
    return value


def _destination_name(value: str) -> str:
    name = value.lower()
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"destination name {value!r}: use lower-case letters, digits, '-' and '.' "
            "(the app sends it as the Host of a named request)"
        )
    return name


class EgressTimeouts(_Model):
    """How long an outbound call may take, per destination."""

    connect: Duration = Field(default=5.0, gt=0, description="time to open the connection")
    response: Duration = Field(
        default=30.0,
        gt=0,
        description="time from the whole request sent to the response head (504 after); "
        "a streamed body is then bounded by `idle`, not by this",
    )
    idle: Duration = Field(
        default=300.0,
        gt=0,
        description="no byte from the destination for this long mid-response, or no byte either way "
        "in a CONNECT tunnel, closes the call",
    )


class Destination(_Model):
    """One allowed outbound destination."""

    name: Annotated[str, AfterValidator(_destination_name)] = Field(
        description="the rule's name (in 403s, the audit log and metrics); also the Host an app "
        "without proxy support sends to http://127.0.0.1:15001 to call this destination"
    )
    host: Annotated[str, AfterValidator(_destination_host)] = Field(
        description="'api.example.com', '*.example.com' (names under it, not itself), an IP, or '*'"
    )
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=lambda: [80, 443], min_length=1, description="allowed destination ports"
    )
    schemes: list[Scheme] = Field(
        default_factory=lambda: list[Scheme](["http", "https"]),
        min_length=1,
        description="http: absolute-form and named requests; https: CONNECT tunnels (and TLS origination); "
        "tcp: transparent mode's raw TCP (neither TLS nor HTTP), never in the default",
    )
    methods: list[Method] | None = Field(
        default=None, min_length=1, description="allowed methods (absent: any); not checked for CONNECT"
    )
    path_prefixes: list[Annotated[str, AfterValidator(_path_prefix)]] | None = Field(
        default=None, min_length=1, description="allowed path prefixes (absent: any); not checked for CONNECT"
    )
    allow_private: list[Annotated[str, AfterValidator(_private_network)]] = Field(
        default_factory=list,
        description="private, loopback or link-local ranges this destination may resolve to "
        "(denied by default: SSRF), e.g. [10.20.0.0/16]",
    )
    origin: EndpointAddress | None = Field(
        default=None,
        description='for named requests to a wildcard or "*" host: the "host:port" to call '
        "(an exact host needs none: it is the host itself on the first allowed port)",
    )
    timeouts: EgressTimeouts = Field(default_factory=EgressTimeouts, description="per-destination timeouts")
    max_connections: int = Field(
        default=256, ge=1, description="most concurrent outbound connections to this destination (503 above)"
    )
    connect_sni: ConnectSni | None = Field(
        default=None, description="this destination's CONNECT SNI check (absent: egress.connect_sni)"
    )
    credentials: CredentialsSpec | None = Field(
        default=None,
        description="a credential Sidegate adds to every request to this destination (the app's header "
        "of that name is replaced); not for CONNECT tunnels, whose bytes Sidegate cannot read",
    )
    tls: EgressTls | None = Field(
        default=None,
        description="TLS origination: how https:// requests (and, with originate, http:// ones) "
        "are verified and sent over TLS by the sidecar",
    )

    @model_validator(mode="after")
    def _originate_needs_http(self) -> Destination:
        if self.tls is not None and self.tls.originate and "http" not in self.schemes:
            raise ValueError(
                "tls.originate upgrades http:// requests, but schemes does not allow http: "
                "add http to schemes, or drop originate (https:// requests are originated anyway)"
            )
        return self


class EgressDns(_Model):
    """Where destination names are resolved."""

    servers: list[EndpointAddress] = Field(
        default_factory=list,
        description='DNS servers as "host:port" (absent: the system resolver, /etc/resolv.conf)',
    )
    timeout: Duration = Field(default=2.0, gt=0, description="a lookup not answered in this time fails (502)")


class Egress(_Model):
    """What the app may call through the egress listener."""

    default_action: Literal["deny"] = Field(
        default="deny", description="what happens to a call no destination allows (only deny)"
    )
    destinations: list[Destination] = Field(
        default_factory=list, description="allowed destinations, tried in order; the first match decides"
    )
    dns: EgressDns = Field(default_factory=EgressDns, description="name resolution for destinations")
    max_body: int = Field(
        default=16 * 1024 * 1024,
        ge=0,
        description="largest request body of a call, in bytes (413 above; 0: no limit); "
        "responses stream through unbounded",
    )

    # -- transparent mode and the CONNECT SNI check (sidegate.egress.transparent) ----------------
    transparent: bool = Field(
        default=False,
        description="the egress listener also takes connections redirected to it by `sidegate iptables` "
        "(read back with SO_ORIGINAL_DST; decided on the Host or TLS SNI and the original port)",
    )
    connect_sni: ConnectSni = Field(
        default="off",
        description="match: a CONNECT tunnel must start with a TLS ClientHello whose SNI is the CONNECT "
        "host, else it is closed; off: any bytes (a destination's connect_sni overrides this)",
    )

    @model_validator(mode="after")
    def _names_are_unique(self) -> Egress:
        seen: set[str] = set()
        for index, destination in enumerate(self.destinations):
            if destination.name in seen:
                raise ValueError(
                    f"destinations[{index}].name {destination.name!r} is used twice; names identify "
                    "rules in 403s and the audit log, so give each its own"
                )
            seen.add(destination.name)
        return self


def _loopback_address(value: str) -> str:
    host = value.rpartition(":")[0].removeprefix("[").removesuffix("]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"{value!r} is not a loopback address: an egress listener reachable from outside the pod "
            "is an open proxy into everything the pod may call; bind it to 127.0.0.1 or [::1] "
            "(the app shares the pod's network namespace)"
        )
    return value


class EgressListener(_Model):
    """The listener the app's outbound calls go to (on when the ``egress:`` section is present)."""

    address: Annotated[ListenAddress, AfterValidator(_loopback_address)] = Field(
        default="127.0.0.1:15001", description='where the app sends outbound calls, "host:port" on loopback'
    )


def check_egress(listener: EgressListener | None, egress: Egress | None) -> None:
    """The two sections together: ``egress:`` turns the listener on (at ``listeners.egress``, or
    its default address); a listener without destinations would only ever say 403."""
    if listener is not None and egress is None:
        raise ValueError(
            "listeners.egress is set but there is no egress section: add `egress: {destinations: "
            "[...]}` naming what the app may call, or remove listeners.egress"
        )
    if egress is not None and not egress.destinations:
        raise ValueError(
            "egress.destinations is empty: with default_action deny every outbound call would be "
            "refused; add a destination (name, host, ports) or remove the egress section"
        )
