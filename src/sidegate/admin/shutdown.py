"""``POST /shutdown``: the app asks Sidegate to drain and exit (Linkerd's name for it).

For Jobs and CronJobs in classic mode (Sidegate an ordinary second container): the pod ends only
when every container has exited, so the app, its work done, calls this and Sidegate finishes what
is in flight and exits 0. No ``drain_delay`` first: nothing routes new traffic to a Job.

Only a peer on loopback (the pod itself) may ask, even when the admin listener is bound wider:
anything else is a 403 that says why.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from sidegate.admin.app import AdminRequest, AdminResponse, Handler, error_response


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (``::ffff:127.0.0.1``)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def shutdown_routes(stop_now: Callable[[], None]) -> dict[tuple[str, str], Handler]:
    """The ``POST /shutdown`` route; ``stop_now`` starts the drain (skipping ``drain_delay``)."""

    def shutdown(request: AdminRequest) -> AdminResponse:
        if not is_loopback(request.peer):
            return error_response(
                403,
                f"POST /shutdown is accepted from loopback only (the pod itself), not from "
                f"{request.peer or 'an unknown address'}",
            )
        stop_now()
        return AdminResponse.json(202, {"status": "draining", "reason": "shutdown asked by a local client"})

    return {("POST", "/shutdown"): shutdown}
