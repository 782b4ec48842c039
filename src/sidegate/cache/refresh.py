"""Background revalidation (``stale-while-revalidate``): what the cache asks of the upstream client.

A client that may be served a stale entry gets it at once; the cache then has the URL fetched
again, conditionally (with the entry's validators), and stores the answer. The cache opens no
connection of its own: the serving layer gives each route's cache filter a :class:`Refetch`
(``Cache.use_upstream``), which sends the request as the route's proxied requests go (the pool,
the route's rewrite and header edits, the client's forwarding headers, a new request id) and
never raises. Without one (a filter not served by a proxy) nothing is revalidated in the
background and the entry stays as it is. This module holds only that contract and the fields of
the revalidation, so the cache never imports the layer that sends it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

from sidegate.http.messages import Fetched, Headers, RequestHead
from sidegate.policy.cache_rules import conditional_headers

# The client's own conditionals and ranges: a revalidation asks for the whole stored response.
CONDITIONALS: Final = frozenset((b"if-none-match", b"if-modified-since", b"if-range", b"range"))


class Refetch(Protocol):
    """A route's way to send a request of the cache's own to its upstream."""

    def __call__(
        self,
        request: RequestHead,
        headers: Headers,
        *,
        identity: bytes,
        timeout: float,
        max_body: int,
        done: Callable[[Fetched | None], None],
    ) -> None:
        """GET ``request``'s URL in the background with ``headers`` as its end-to-end fields and
        ``identity`` (the consumer's identity header lines, or empty); ``done`` gets the whole
        response, or None when it failed or took over ``timeout`` seconds or ``max_body`` bytes."""


def revalidation_headers(client_headers: Headers, stored_headers: Headers) -> Headers:
    """The fields of a revalidation: the client's, without its conditionals and ranges, and the
    stored response's validators (If-None-Match, If-Modified-Since)."""
    kept = [(n, v) for n, v in client_headers if n.lower() not in CONDITIONALS]
    return kept + conditional_headers(stored_headers)
