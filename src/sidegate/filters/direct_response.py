"""``direct_response``: answer from the gateway without calling the upstream.

For maintenance pages, stubs and fixed health answers::

    filters:
      direct_response: {status: 503, body: '{"error": "maintenance"}', content_type: application/json}
"""

from __future__ import annotations

from pydantic import Field

from sidegate.filters.base import Filter, FilterConfig, RequestContext
from sidegate.filters.registry import register
from sidegate.http.messages import LocalResponse, RequestHead


class DirectResponseConfig(FilterConfig):
    status: int = Field(200, ge=200, le=599, description="HTTP status to answer with")
    body: str = Field("", description="response body (UTF-8)")
    content_type: str = Field("text/plain; charset=utf-8", description="Content-Type of the body")
    headers: dict[str, str] = Field(default_factory=dict, description="extra response headers")


@register
class DirectResponse(Filter):
    name = "direct_response"
    config_model = DirectResponseConfig

    def __init__(self, config: DirectResponseConfig) -> None:
        super().__init__(config)
        self.response = LocalResponse(
            status=config.status,
            body=config.body.encode(),
            headers=tuple((k.encode(), v.encode()) for k, v in config.headers.items()),
            content_type=config.content_type.encode(),
        )

    def on_request(self, request: RequestHead, ctx: RequestContext) -> LocalResponse | None:
        return self.response
