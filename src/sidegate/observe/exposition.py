"""The escaping and number format of the Prometheus text and OpenMetrics expositions.

Shared by what Sidegate writes (:mod:`sidegate.observe.prometheus`) and the app's families it
rewrites (:mod:`sidegate.observe.app_metrics`), so that both sides of a scrape escape alike.
"""

from __future__ import annotations

import math


def escape_label(value: str) -> str:
    """Escape a label value: backslash, double quote and line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str, *, openmetrics: bool = False) -> str:
    """Escape a help text: backslash and line feed (and double quote in OpenMetrics)."""
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if openmetrics else text


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it (integers without a decimal point, Go-style infinities)."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)
