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
class Compare:
    """What a scenario is compared with in the `vs nginx` and `vs direct` columns (and the added latency),
    and the throughput ratios it is expected to reach, if it has a target. The cache-hit rows compare
    with `nginx-cache` and `direct-cacheable`: a cache hit against nginx's cache hit and the direct app."""

    nginx: str = "nginx"
    direct: str = "direct"
    min_rps_vs_nginx: float | None = None
    min_rps_vs_direct: float | None = None


@dataclass(frozen=True)
class Summary:
    """One scenario over all repeats (medians), compared with its `nginx_ref` and `direct_ref` scenarios
    (`nginx` and `direct` unless its `Compare` says otherwise) when they ran."""

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
    nginx_ref: str = "nginx"
    direct_ref: str = "direct"
    min_rps_vs_nginx: float | None = None
    min_rps_vs_direct: float | None = None


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _median_opt(values: list[int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(
    runs: dict[str, list[Measurement]],
    descriptions: dict[str, str],
    compare: dict[str, Compare] | None = None,
) -> list[Summary]:
    """Medians per scenario and ratios against each one's references (`compare`, default nginx/direct)."""
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
    out = []
    for s in base.values():
        c = (compare or {}).get(s.scenario, Compare())
        direct, nginx = base.get(c.direct), base.get(c.nginx)
        nginx_added = nginx.p50_us - direct.p50_us if nginx and direct else None
        added50 = s.p50_us - direct.p50_us if direct and s is not direct else None
        added99 = s.p99_us - direct.p99_us if direct and s is not direct else None
        out.append(
            replace(
                s,
                rps_vs_nginx=_ratio(s.rps, nginx.rps if nginx else None),
                rps_vs_direct=_ratio(s.rps, direct.rps if direct else None),
                added_p50_us=added50,
                added_p99_us=added99,
                # A multiple of nothing (nginx adding <= 0 µs, within noise of direct) means nothing.
                added_p50_vs_nginx=_ratio(added50, nginx_added if nginx_added and nginx_added > 0 else None),
                nginx_ref=c.nginx,
                direct_ref=c.direct,
                min_rps_vs_nginx=c.min_rps_vs_nginx,
                min_rps_vs_direct=c.min_rps_vs_direct,
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
    """Plain-language lines under the table: which rows compare with other references, each proxy against
    its nginx, each target met or not, and any errors seen under load."""
    out = []
    groups: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if (r.nginx_ref, r.direct_ref) != ("nginx", "direct"):
            groups.setdefault((r.nginx_ref, r.direct_ref), []).append(r.scenario)
    for (nginx_ref, direct_ref), names in groups.items():
        out.append(
            f"rows {', '.join(names)}: `vs nginx` is against {nginx_ref}, `vs direct` against {direct_ref}"
        )
    for r in rows:
        if r.errors:
            out.append(f"WARNING {r.scenario}: {r.errors} socket errors or non-2xx responses under load")
        if r.scenario in (r.direct_ref, r.nginx_ref) or r.rps_vs_nginx is None:
            continue
        line = f"{r.scenario}: {r.rps_vs_nginx:.2f}x {r.nginx_ref}'s throughput"
        if r.added_p50_us is not None and r.added_p50_vs_nginx is not None:
            line += (
                f"; adds {_us(r.added_p50_us)} at p50, {r.added_p50_vs_nginx:.1f}x what {r.nginx_ref} adds"
            )
        out.append(line)
    for r in rows:
        if r.min_rps_vs_nginx is not None or r.min_rps_vs_direct is not None:
            out.append(_target_line(r))
    return out


def _target_line(r: Summary) -> str:
    """`<scenario> target: throughput >= 2.00x nginx-cache's and >= 0.80x direct-cacheable's; here ...`"""
    wanted, here, missing, met = [], [], [], True
    for ref, minimum, got in (
        (r.nginx_ref, r.min_rps_vs_nginx, r.rps_vs_nginx),
        (r.direct_ref, r.min_rps_vs_direct, r.rps_vs_direct),
    ):
        if minimum is None:
            continue
        wanted.append(f">= {minimum:.2f}x {ref}'s")
        if got is None:
            missing.append(ref)
        else:
            here.append(f"{got:.2f}x {ref}'s")
            met = met and got >= minimum
    verdict = f"here {' and '.join(here)}: " if here else ""
    if missing:
        verdict += f"cannot tell, {' and '.join(missing)} did not run"
    else:
        verdict += "met" if met else "NOT met"
    return f"{r.scenario} target: throughput {' and '.join(wanted)}; {verdict}"


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
