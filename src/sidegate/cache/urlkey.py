"""The URL a cached response is stored under: ``http://host/path?query`` (see docs/cache-layout.md).

The host is the request's Host header lower-cased (with its port, if the client sent one); the
path and query are the request target as Sidegate forwards it. A route may leave some query
parameters out of the key or sort them, so that equivalent URLs share one entry.
"""

from __future__ import annotations


def request_url(
    host: bytes,
    path: bytes,
    query: bytes,
    sort_query: bool = False,
    ignore_query: frozenset[bytes] = frozenset(),
) -> bytes:
    """The effective request URL as bytes, the primary part of a cache key (``ignore_query``:
    parameter names left out)."""
    if query and (sort_query or ignore_query):
        query = normalize_query(query, sort_query, ignore_query)
    url = b"http://" + host.lower() + path
    return url + b"?" + query if query else url


def normalize_query(query: bytes, sort: bool, ignore: frozenset[bytes]) -> bytes:
    """``query`` without the ``ignore``d parameters, sorted by name (stable) when ``sort``."""
    params = [p for p in query.split(b"&") if p and p.partition(b"=")[0] not in ignore]
    if sort:
        params.sort(key=lambda p: p.partition(b"=")[0])
    return b"&".join(params)
