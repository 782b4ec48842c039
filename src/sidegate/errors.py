"""One error vocabulary for the whole gateway.

Errors that reach a client carry an HTTP status and a short machine-readable ``kind`` so that the
JSON body, the access log and the metrics all say the same thing. ``retryable`` tells the proxy
whether the same request may be tried again on another connection.
"""

from __future__ import annotations

from dataclasses import dataclass


class SidegateError(Exception):
    """Base class of every error raised on purpose by Sidegate."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a configuration file: where, what was found, and how to fix it."""

    path: str  # dotted path, e.g. "routes[0].match.path_prefix"
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path or "(top level)"
        at = f" (line {self.line})" if self.line is not None else ""
        return f"{where}{at}: {self.message}"

    def located(self, source: str, kind: str = "") -> str:
        """``FILE:LINE: path: message`` (without ``LINE`` or ``path`` when unknown), the form
        editors and CI annotate; ``kind`` (``"warning"``) goes before the message."""
        where = f"{source}:{self.line}" if self.line is not None else source
        message = f"{kind}: {self.message}" if kind else self.message
        return f"{where}: {self.path}: {message}" if self.path else f"{where}: {message}"

    def fields(self, source: str) -> dict[str, object]:
        """The issue as structured log fields."""
        return {"file": source, "line": self.line, "path": self.path, "problem": self.message}


class ConfigError(SidegateError):
    """A configuration that cannot be used; ``issues`` lists every problem found, ``warnings``
    what would work but surprise (reported with them)."""

    def __init__(
        self, issues: list[ConfigIssue], source: str = "", warnings: list[ConfigIssue] | None = None
    ) -> None:
        self.issues = issues
        self.source = source
        self.warnings = warnings or []
        head = f"{source}: " if source else ""
        super().__init__(head + "; ".join(str(i) for i in issues))


@dataclass(frozen=True, slots=True)
class UpstreamFailure:
    """Why a request could not be completed by the upstream app.

    ``kind`` is stable and appears in the JSON error body and in logs:
    ``connect_refused``, ``connect_timeout``, ``connect_error``, ``response_timeout``,
    ``idle_timeout``, ``send_timeout``, ``reset``, ``protocol_error``, ``no_endpoint``.
    """

    kind: str
    status: int
    detail: str
    retryable: bool = False


def connect_refused(endpoint: str) -> UpstreamFailure:
    return UpstreamFailure("connect_refused", 503, f"connection refused by {endpoint}", True)


def connect_timeout(endpoint: str, seconds: float) -> UpstreamFailure:
    return UpstreamFailure("connect_timeout", 503, f"no connection to {endpoint} within {seconds:g}s", True)


def connect_error(endpoint: str, reason: str) -> UpstreamFailure:
    return UpstreamFailure("connect_error", 503, f"cannot connect to {endpoint}: {reason}", True)


def response_timeout(endpoint: str, seconds: float) -> UpstreamFailure:
    return UpstreamFailure("response_timeout", 504, f"{endpoint} sent no response within {seconds:g}s")


def idle_timeout(endpoint: str, seconds: float) -> UpstreamFailure:
    return UpstreamFailure("idle_timeout", 504, f"{endpoint} sent nothing for {seconds:g}s mid-response")


def send_timeout(endpoint: str, seconds: float) -> UpstreamFailure:
    return UpstreamFailure("send_timeout", 504, f"{endpoint} took no request bytes for {seconds:g}s")


def reset(endpoint: str, retryable: bool) -> UpstreamFailure:
    return UpstreamFailure(
        "reset", 502, f"{endpoint} closed the connection before a full response", retryable
    )


def protocol_error(endpoint: str, reason: str) -> UpstreamFailure:
    return UpstreamFailure("protocol_error", 502, f"{endpoint} sent an invalid response: {reason}")
