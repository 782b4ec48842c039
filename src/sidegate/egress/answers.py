"""What the egress listener answers itself: a status with a JSON ``error`` and ``reason``
(and the ``rule`` that decided, for a refusal by policy), so the app's developer can tell a
refusal by the pod's policy from the destination's own answer. The body names the call's
``request_id`` too (also in ``X-Request-Id``): the id of its audit line and of its explain record."""

from __future__ import annotations

import json
from http import HTTPStatus


class RefusedError(Exception):
    """The call is answered here: ``status`` with a JSON ``error`` and ``reason``."""

    def __init__(self, status: int, error: str, reason: str, rule: str = "") -> None:
        super().__init__(reason)
        self.status, self.error, self.reason, self.rule = status, error, reason, rule


def error_response(
    status: int, error: str, reason: str, request_id: str, *, rule: str = "", close: bool
) -> bytes:
    body = {"error": error, "reason": reason}
    if rule:
        body["rule"] = rule
    body["request_id"] = request_id  # what GET /explain/{request-id} on admin finds the call by
    data = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {phrase(status)}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nX-Request-Id: {request_id}\r\n"
    )
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + data


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
