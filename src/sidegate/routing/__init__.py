"""L1: the compiled route table (no asyncio, no pydantic). See :mod:`sidegate.routing.router`."""

from sidegate.routing.router import RouteMatch, Router, ValueTest, parse_query

__all__ = ["RouteMatch", "Router", "ValueTest", "parse_query"]
