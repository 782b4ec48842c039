"""Turn measurements into a summary (medians and ratios), a Markdown table and a JSON record."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from wrk import WrkResult

MIB = 1024 * 1024


@dataclass(frozen=True)
class Measurement:
    """One scenario, one repeat: load at 64 connections, latency at 1, the proxy's RSS before and after."""

    scenario: str
    throughput: WrkResult
    latency: WrkResult
    rss_idle: int | None
    rss_loaded: int | None


@dataclass(frozen=True)
class Summary:
    """One scenario over all repeats (medians), compared with `nginx` and `direct` when they ran."""

    scenario: str
    description: str
    runs: int
    rps: float
    p50_us: float
    p99_us: float
    rss_idle: float | None
    rss_loaded: float | None
    errors: int
    rps_vs_nginx: float | None = None
    rps_vs_direct: float | None = None
    added_p50_us: float | None = None
    added_p99_us: float | None = None
    added_p50_vs_nginx: float | None = None


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _median_opt(values: list[int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(runs: dict[str, list[Measurement]], descriptions: dict[str, str]) -> list[Summary]:
    base = {
        name: Summary(
            scenario=name,
            description=descriptions[name],
            runs=len(ms),
            rps=_median([m.throughput.rps for m in ms]),
            p50_us=_median([m.latency.percentiles_us.get("50", 0.0) for m in ms]),
            p99_us=_median([m.latency.percentiles_us.get("99", 0.0) for m in ms]),
            rss_idle=_median_opt([m.rss_idle for m in ms]),
            rss_loaded=_median_opt([m.rss_loaded for m in ms]),
            errors=sum(m.throughput.errors + m.latency.errors for m in ms),
        )
        for name, ms in runs.items()
        if ms
    }
    direct, nginx = base.get("direct"), base.get("nginx")
    nginx_added = nginx.p50_us - direct.p50_us if nginx and direct else None
    out = []
    for s in base.values():
        added50 = s.p50_us - direct.p50_us if direct and s is not direct else None
        added99 = s.p99_us - direct.p99_us if direct and s is not direct else None
        out.append(
            replace(
                s,
                rps_vs_nginx=_ratio(s.rps, nginx.rps if nginx else None),
                rps_vs_direct=_ratio(s.rps, direct.rps if direct else None),
                added_p50_us=added50,
                added_p99_us=added99,
                added_p50_vs_nginx=_ratio(added50, nginx_added),
            )
        )
    return out


def _us(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.2f} ms" if abs(v) >= 1000 else f"{v:.0f} µs"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _mib(v: float | None) -> str:
    return "-" if v is None else f"{v / MIB:.1f} MiB"


def markdown_table(rows: list[Summary]) -> str:
    head = (
        "| path | req/s (64 conn) | vs nginx | vs direct | p50 (1 conn) | p99 (1 conn) "
        "| added p50 | added p50 vs nginx | RSS idle | RSS after load |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        cells = [
            r.scenario,
            f"{r.rps:,.0f}",
            _x(r.rps_vs_nginx),
            _x(r.rps_vs_direct),
            _us(r.p50_us),
            _us(r.p99_us),
            _us(r.added_p50_us),
            _x(r.added_p50_vs_nginx),
            _mib(r.rss_idle),
            _mib(r.rss_loaded),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def findings(rows: list[Summary]) -> list[str]:
    """Plain-language lines under the table: each proxy against nginx, and any errors seen under load."""
    out = []
    for r in rows:
        if r.errors:
            out.append(f"WARNING {r.scenario}: {r.errors} socket errors or non-2xx responses under load")
        if r.scenario in ("direct", "nginx") or r.rps_vs_nginx is None:
            continue
        line = f"{r.scenario}: {r.rps_vs_nginx:.2f}x nginx's throughput"
        if r.added_p50_us is not None and r.added_p50_vs_nginx is not None:
            line += f"; adds {_us(r.added_p50_us)} at p50, {r.added_p50_vs_nginx:.1f}x what nginx adds"
        out.append(line)
    return out


def save_json(
    path: Path, meta: dict[str, Any], rows: list[Summary], runs: dict[str, list[Measurement]]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "meta": meta,
        "summary": [asdict(r) for r in rows],
        "runs": {name: [asdict(m) for m in ms] for name, ms in runs.items()},
    }
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
