"""The admin API: health probes, Prometheus metrics, config dump and reload."""

from sidegate.admin.server import (
    AdminApp,
    AdminBackend,
    AdminLimits,
    AdminRequest,
    AdminResponse,
    Handler,
    default_routes,
    error_response,
    start_admin_server,
)

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
