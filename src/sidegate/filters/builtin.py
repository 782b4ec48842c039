"""Imports every built-in filter module so that each registers itself."""

from sidegate.filters import cache, direct_response  # noqa: F401
