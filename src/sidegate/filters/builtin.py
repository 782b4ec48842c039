"""Imports every built-in filter module so that each registers itself."""

from sidegate.filters import access, api_key, cache, cors, direct_response, jwt, rate_limit  # noqa: F401
