"""Where one proxied request's Python work goes: lines executed and calls made, per function.

Runs the same fake-transport exchange as ``micro_proxy.py`` under ``sys.settrace`` and prints the
functions by lines executed per request. Lines are a rough proxy for cost (calls cost more), but the
table is exact and repeatable, which timings on a shared machine are not.

    .venv/bin/python bench/trace_lines.py [--requests 100] [--top 40]
"""

from __future__ import annotations

import argparse
import collections
import sys
from types import FrameType
from typing import Any

from micro_proxy import build


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    cycle = build()
    cycle(10)  # warm: pool connection in place, caches filled
    lines: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        name = frame.f_code.co_qualname
        if event == "call":
            calls[name] += 1
        elif event == "line":
            lines[name] += 1
        return tracer

    sys.settrace(tracer)
    cycle(args.requests)
    sys.settrace(None)
    n = args.requests
    print(f"{sum(lines.values()) / n:.0f} lines and {sum(calls.values()) / n:.0f} calls per request")
    for name, count in lines.most_common(args.top):
        print(f"{count / n:6.1f} lines {calls[name] / n:5.1f} calls  {name}")


if __name__ == "__main__":
    main()
