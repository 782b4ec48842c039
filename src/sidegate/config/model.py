"""The configuration model: what a Sidegate YAML file may say, as pydantic v2 models.

The models check *shape and local values* (types, ranges, units, "exactly one of", regexes that
compile); cross-references between parts of the file (a route's upstream exists, route names are
unique, so are consumers' names and keys) are checked by :mod:`sidegate.config.load`, which sees
the whole file and reports every problem at once. Every model forbids unknown keys and every
field has a description, so the JSON Schema (:func:`config_json_schema`) documents the file.

A route's ``filters`` mapping is validated against the registry: each name is looked up with
:func:`sidegate.filters.registry.lookup` and its value validated with that filter's
``config_model`` (a frozen dataclass, through a ``pydantic.TypeAdapter``); errors keep the full
path (``routes[2].filters.direct_response.status``). The validated values are the filter config
instances, in the order written.

The model is only the front door, used by the config checker (:mod:`sidegate.config.check`, a
child process) and the CLI: it turns a valid file into plain JSON, which
:mod:`sidegate.config.compile` turns into the values of :mod:`sidegate.config.snapshot`. The
serving process never imports this module (nor pydantic).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, InitErrorDetails, PydanticCustomError

from sidegate.config.egress import Egress, check_egress
from sidegate.config.fields import (
    Duration,
    EditableHeaderName,
    EndpointAddress,
    HeaderValue,
    HostPattern,
    MatchHeaderName,
    Method,
    MiB,
    OrPlainString,
    PathValue,
    Regex,
    Size,
    scalar_to_str,
)
from sidegate.config.listeners import Listeners
from sidegate.config.observability import Observability
from sidegate.config.pod import Pod, Profile
from sidegate.config.redis import Redis
from sidegate.filters.base import FilterConfig
from sidegate.filters.registry import known_names, lookup


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- upstreams ---------------------------------------------------------------------------------


class Balancer(StrEnum):
    """How requests are spread over an upstream's endpoints."""

    ROUND_ROBIN = "round_robin"


class Pool(_Model):
    """Keep-alive connections kept open to an upstream's endpoints."""

    max_idle: int = Field(default=128, ge=0, description="idle keep-alive connections kept per endpoint")
    idle_timeout: Duration = Field(
        default=60.0, gt=0, description="an idle pooled connection is closed after this"
    )


_CHECK_PATH = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/%?]*")


class HealthCheck(_Model):
    """Active HTTP checks of each endpoint (``GET path``; any 2xx answer is a success).

    Defaults follow Kubernetes probes and Envoy's usual settings: every 5 s, 1 s to answer, 3
    failures in a row to turn unhealthy, 2 successes to turn healthy again (at start one success
    is enough, as in Envoy, so a pod is ready as soon as its app first answers).
    """

    path: str = Field(default="/", description='the path checked, e.g. "/healthz" (GET; 2xx is healthy)')
    interval: Duration = Field(default=5.0, gt=0, description="time between two checks of an endpoint")
    timeout: Duration = Field(default=1.0, gt=0, description="the most a check may take; longer is a failure")
    healthy_threshold: int = Field(
        default=2, ge=1, le=100, description="successes in a row that make an unhealthy endpoint healthy"
    )
    unhealthy_threshold: int = Field(
        default=3, ge=1, le=100, description="failures in a row that make a healthy endpoint unhealthy"
    )

    @field_validator("path")
    @classmethod
    def _request_target(cls, value: str) -> str:
        if not _CHECK_PATH.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a request path: start it with '/' and use URL characters only "
                "(percent-encode spaces and the rest), e.g. '/healthz'"
            )
        return value

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> HealthCheck:
        if self.timeout >= self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g}s) must be shorter than interval ({self.interval:g}s): "
                "a check must end before the next one starts; lower timeout or raise interval"
            )
        return self


class Upstream(_Model):
    """A named cluster of app endpoints."""

    endpoints: list[EndpointAddress] = Field(
        min_length=1, description='the app\'s addresses, "host:port" (e.g. "127.0.0.1:3000")'
    )
    balancer: Balancer = Field(
        default=Balancer.ROUND_ROBIN, description="how requests are spread over endpoints"
    )
    pool: Pool = Field(default_factory=Pool, description="keep-alive connection pool")
    health_check: HealthCheck | None = Field(
        default=None,
        description="active HTTP checks of each endpoint: /ready waits for a healthy one, "
        "the balancer skips unhealthy ones",
    )


# --- routes ------------------------------------------------------------------------------------


def _exactly_one(model: BaseModel, names: tuple[str, ...]) -> None:
    given = [n for n in names if getattr(model, n) is not None]
    if len(given) != 1:
        found = f"found {', '.join(given)}" if given else "found none"
        raise ValueError(f"set exactly one of {', '.join(names)} ({found})")


def _plain_to_exact(value: object) -> object:
    value = scalar_to_str(value)
    return {"exact": value} if isinstance(value, str) else value


class ValueMatch(_Model):
    """How a header or query parameter value must look; a plain string means ``exact``."""

    exact: HeaderValue | None = Field(default=None, description="the value must equal this")
    regex: Regex | None = Field(
        default=None, description="the whole value must match this regular expression"
    )
    present: bool | None = Field(
        default=None, description="true: must be sent (any value); false: must be absent"
    )

    @model_validator(mode="after")
    def _one(self) -> ValueMatch:
        _exactly_one(self, ("exact", "regex", "present"))
        return self


ValueSpec = Annotated[ValueMatch, BeforeValidator(_plain_to_exact), OrPlainString()]


class Match(_Model):
    """Which requests take a route: one path condition, plus any of hosts, methods, headers, query."""

    path: PathValue | None = Field(default=None, description="the path must equal this")
    path_prefix: PathValue | None = Field(
        default=None,
        description='the path must start with this (plain string prefix: "/api" also matches "/apix")',
    )
    path_regex: Regex | None = Field(
        default=None, description="the whole path must match this regular expression"
    )
    hosts: list[HostPattern] | None = Field(
        default=None,
        min_length=1,
        description='Host names (port ignored): "api.example.com", or "*.example.com" for any subdomain',
    )
    methods: list[Method] | None = Field(
        default=None, min_length=1, description="HTTP methods (any case), e.g. [GET, HEAD]"
    )
    headers: dict[MatchHeaderName, ValueSpec] | None = Field(
        default=None, description="headers that must match (names case-insensitive)"
    )
    query: dict[str, ValueSpec] | None = Field(
        default=None, description="query parameters that must match (values percent-decoded)"
    )

    @model_validator(mode="after")
    def _one_path(self) -> Match:
        _exactly_one(self, ("path", "path_prefix", "path_regex"))
        return self


class Timeouts(_Model):
    """Upstream timeouts of a route."""

    connect: Duration = Field(default=2.0, description="to connect to the upstream (503); 0 = no limit")
    response: Duration = Field(
        default=15.0, description="until the response head arrives (504); 0 = no limit"
    )
    idle: Duration = Field(default=60.0, description="between response body bytes (504); 0 = no limit")
    send: Duration = Field(
        default=60.0, description="the app taking no request byte for this long (504); 0 = no limit"
    )


class RegexRewrite(_Model):
    """A regular expression substitution on the request path."""

    pattern: Regex = Field(description="regular expression searched in the path (first match replaced)")
    replacement: str = Field(description=r"replacement; \1 or \g<name> insert groups")

    @model_validator(mode="after")
    def _template(self) -> RegexRewrite:
        try:  # "(?:p)|" always matches b"", so expand() checks the group references
            probe = re.compile(b"(?:" + self.pattern.encode() + b")|").match(b"")
        except re.error:
            return self
        if probe is not None:
            try:
                probe.expand(self.replacement.encode())
            except (re.error, IndexError) as exc:
                raise ValueError(f"invalid replacement {self.replacement!r}: {exc}") from None
        return self


class Rewrite(_Model):
    """How the request path is rewritten before it goes upstream: exactly one of the three."""

    strip_prefix: PathValue | None = Field(
        default=None, description='remove this prefix from the path ("/api")'
    )
    path: PathValue | None = Field(default=None, description="replace the whole path with this")
    regex: RegexRewrite | None = Field(
        default=None, description="regular expression substitution on the path"
    )

    @model_validator(mode="after")
    def _one(self) -> Rewrite:
        _exactly_one(self, ("strip_prefix", "path", "regex"))
        return self


class HeaderEdit(_Model):
    """Header changes on one message."""

    set: dict[EditableHeaderName, HeaderValue] = Field(
        default_factory=dict, description="replace any header of this name with this value"
    )
    add: dict[EditableHeaderName, HeaderValue] = Field(default_factory=dict, description="append a header")
    remove: list[EditableHeaderName] = Field(default_factory=list, description="drop headers of these names")


class Headers(_Model):
    """Header changes on the request to the upstream and on the response to the client."""

    request: HeaderEdit = Field(default_factory=HeaderEdit, description="edits on the way to the upstream")
    response: HeaderEdit = Field(default_factory=HeaderEdit, description="edits on the way to the client")


class _FiltersJsonSchema:
    """JSON Schema of ``filters``: one optional property per registered filter, with its schema."""

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        fields: dict[str, Any] = {}
        for name in known_names():
            cls = lookup(name)
            if cls is not None:
                doc = (cls.__doc__ or "").strip().splitlines()
                fields[name] = (
                    cls.config_model | None,
                    Field(default=None, description=doc[0] if doc else name),
                )
        model = create_model("Filters", __config__=ConfigDict(extra="forbid"), **fields)
        return handler(model.__pydantic_core_schema__)


def filter_adapter(config_model: type[FilterConfig]) -> TypeAdapter[FilterConfig]:
    """The validator (and serializer and schema) of a filter's config dataclass, made once."""
    adapter = _ADAPTERS.get(config_model)
    if adapter is None:
        adapter = _ADAPTERS[config_model] = TypeAdapter(config_model)
    return adapter


_ADAPTERS: dict[type[FilterConfig], TypeAdapter[FilterConfig]] = {}


# Pydantic names a dataclass's errors after its constructor; say them as for any other mapping.
_DATACLASS_ERRORS = {
    "unexpected_keyword_argument": "extra_forbidden",
    "missing_argument": "missing",
    "dataclass_type": "dict_type",
}


def _validate_filters(value: object) -> dict[str, FilterConfig]:
    """Look each filter up by name and validate its config; every error keeps its full path."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"filters must be a mapping of filter name to its config, got {value!r}")
    out: dict[str, FilterConfig] = {}
    errors: list[InitErrorDetails] = []
    for name, config in value.items():
        cls = lookup(str(name))
        if cls is None:
            known = ", ".join(known_names()) or "(none)"
            msg = f"unknown filter {name!r}; known filters: {known}"
            errors.append(
                {"type": PydanticCustomError("unknown_filter", msg), "loc": (name,), "input": config}
            )
            continue
        try:
            out[name] = filter_adapter(cls.config_model).validate_python({} if config is None else config)
        except ValidationError as exc:
            for err in exc.errors():
                kind = _DATACLASS_ERRORS.get(err["type"], err["type"])
                custom = PydanticCustomError(kind, err["msg"], err.get("ctx"))
                errors.append({"type": custom, "loc": (name, *err["loc"]), "input": err["input"]})
    if errors:
        raise ValidationError.from_exception_data("filters", errors)
    return out


class Route(_Model):
    """A route: which requests, which upstream, and what happens on the way."""

    name: str = Field(min_length=1, description="unique route name (logs, metrics, explain)")
    match: Match = Field(description="which requests take this route; the first matching route wins")
    upstream: str = Field(description="name of the upstream (in `upstreams`) that serves this route")
    timeouts: Timeouts = Field(default_factory=Timeouts, description="upstream timeouts")
    rewrite: Rewrite | None = Field(default=None, description="path rewrite before the request goes upstream")
    headers: Headers = Field(default_factory=Headers, description="request and response header edits")
    max_body: Size = Field(default=10 * MiB, description="largest request body (413 above it); 0 = no limit")
    filters: Annotated[dict[str, Any], BeforeValidator(_validate_filters), _FiltersJsonSchema()] = Field(
        default_factory=dict, description="filters to run on this route, in this order: name -> config"
    )


class CachePartition(_Model):
    """A partition of the shared cache (a tenant's key prefix) with its own size quota."""

    max_size: Size = Field(gt=0, description="most bytes this partition may hold; its LRU entries go first")


class Cache(_Model):
    """The shared response cache: an LMDB store in a directory shared with the app."""

    dir: str = Field(
        default="",
        description='store directory (an emptyDir volume shared with the app); "" = $CACHE_DIR, '
        "else /var/cache/sidegate",
    )
    max_size: Size = Field(
        default=256 * MiB, gt=0, description="most bytes stored; least recently used evicted"
    )
    max_entry_size: Size = Field(
        default=8 * MiB, gt=0, description="a larger response streams through uncached"
    )
    partitions: dict[str, CachePartition] = Field(
        default_factory=dict, description="per-tenant partitions and their quotas: name -> {max_size}"
    )

    @model_validator(mode="after")
    def _entry_fits(self) -> Cache:
        if self.max_entry_size > self.max_size:
            raise ValueError(
                f"max_entry_size ({self.max_entry_size}) is larger than max_size ({self.max_size}); "
                "lower max_entry_size or raise max_size"
            )
        return self


_API_KEY_HASH = re.compile(r"sha256:[0-9a-f]{64}")


def _api_key(value: str) -> str:
    if value.startswith("sha256:") and not _API_KEY_HASH.fullmatch(value):
        raise ValueError("a hashed key is 'sha256:' and 64 lower-case hex digits (printf %s KEY | sha256sum)")
    if len(value) < 16 and not value.startswith("sha256:"):
        raise ValueError("an API key shorter than 16 characters is too easy to guess; use a longer one")
    return value


class Consumer(_Model):
    """A caller of the API: its tenant, labels and credentials."""

    name: str = Field(
        min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@:\-]+$", description="unique name"
    )
    tenant: str = Field(
        default="", max_length=128, pattern=r"^[A-Za-z0-9_.@:\-]*$", description="the tenant it belongs to"
    )
    labels: dict[str, str] = Field(default_factory=dict, description="free labels (plan, team...)")
    api_keys: list[Annotated[str, AfterValidator(_api_key)]] = Field(
        default_factory=list,
        description='API keys: "sha256:<hex digest>" (preferred) or the key itself (use ${ENV})',
    )


class Identity(_Model):
    """How the app learns who called: request headers Sidegate sets (client copies always removed)."""

    consumer_header: str = Field(default="X-Consumer", description='the consumer\'s name ("" = not sent)')
    tenant_header: str = Field(default="X-Tenant", description='the consumer\'s tenant ("" = not sent)')


class SidegateConfig(_Model):
    """A whole Sidegate configuration file."""

    listeners: Listeners = Field(default_factory=Listeners, description="inbound and admin listeners")
    workers: int = Field(
        default=1, ge=1, le=1024, description="worker processes sharing the listening sockets"
    )
    drain_delay: Duration = Field(
        default=5.0,
        ge=0,
        description="on SIGTERM, how long to keep serving (with /ready at 503 and Connection: close) "
        "before the drain starts, while Kubernetes removes the pod from its Services",
    )
    drain_timeout: Duration = Field(
        default=20.0, description="on shutdown, how long in-flight requests may finish"
    )
    upstreams: dict[str, Upstream] = Field(min_length=1, description="named clusters of app endpoints")
    routes: list[Route] = Field(min_length=1, description="routes, tried in order; the first match wins")
    cache: Cache = Field(default_factory=Cache, description="the shared response cache (routes opt in)")
    consumers: list[Consumer] = Field(default_factory=list, description="who may call, and their credentials")
    identity: Identity = Field(default_factory=Identity, description="headers that tell the app who called")
    redis: Redis = Field(default_factory=Redis, description="Redis for rate limits shared across pods")
    observability: Observability = Field(
        default_factory=Observability, description="access log, tracing, explain, app metrics"
    )
    pod: Pod = Field(default_factory=Pod, description="where the pod's labels are read, for profiles")
    profiles: list[Profile] = Field(
        default_factory=list,
        description="overlays applied on top of this config when the pod's labels match, in order",
    )
    egress: Egress | None = Field(
        default=None, description="what the app may call through the egress listener (absent: no listener)"
    )

    @model_validator(mode="after")
    def _egress_is_coherent(self) -> SidegateConfig:
        check_egress(self.listeners.egress, self.egress)
        return self


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of a config file, including every registered filter's config."""
    schema = SidegateConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Sidegate configuration"
    return schema
