"""The admin API: health probes, Prometheus metrics, config dump and reload."""

from sidegate.admin.app import (
    AdminApp,
    AdminBackend,
    AdminRequest,
    AdminResponse,
    Handler,
    default_routes,
    error_response,
)
from sidegate.admin.server import AdminLimits, start_admin_server

__all__ = [
    "AdminApp",
    "AdminBackend",
    "AdminLimits",
    "AdminRequest",
    "AdminResponse",
    "Handler",
    "default_routes",
    "error_response",
    "start_admin_server",
]
