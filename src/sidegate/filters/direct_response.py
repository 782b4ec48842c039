"""``direct_response``: answer from the gateway without calling the upstream.

For maintenance pages, stubs and fixed health answers::

    filters:
      direct_response: {status: 503, body: '{"error": "maintenance"}', content_type: application/json}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from annotated_types import Ge, Le

from sidegate.filters.base import Filter, FilterConfig, RequestContext
from sidegate.filters.registry import register
from sidegate.http.messages import LocalResponse, RequestHead


@dataclass(frozen=True, slots=True)
class DirectResponseConfig(FilterConfig):
    status: Annotated[int, Ge(200), Le(599)] = 200
    """HTTP status to answer with"""
    body: str = ""
    """response body (UTF-8)"""
    content_type: str = "text/plain; charset=utf-8"
    """Content-Type of the body"""
    headers: dict[str, str] = field(default_factory=dict)
    """extra response headers"""


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
