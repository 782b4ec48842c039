"""Sidegate: a sidecar API gateway."""

__version__ = "0.1.0"
