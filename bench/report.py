"""Turn measurements into a summary (medians and ratios), a Markdown table and a JSON record."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from wrk import WrkResult

MIB = 1024 * 1024
# Below this many Redis script calls per request under load, a Redis-backed row is flagged: the gateway
# answered some requests from its local fallback (Redis slow or unreachable), not from Redis.
REDIS_SHARE_MIN = 0.99


@dataclass(frozen=True)
class Measurement:
    """One scenario, one repeat: load at 64 connections, latency at 1, the proxy's RSS before and after."""

    scenario: str
    throughput: WrkResult
    latency: WrkResult
    rss_idle: int | None
    rss_loaded: int | None
    # With the limit in Redis: EVALSHA/EVAL commands Redis ran during the load at 64 connections (one per
    # request decided there; fewer means the gateway fell back to its local table).
    redis_calls: int | None = None


@dataclass(frozen=True)
class Compare:
    """What a scenario is compared with in the `vs nginx` and `vs direct` columns (and the added latency),
    and the throughput ratios it is expected to reach, if it has a target. The cache-hit rows compare
    with `nginx-cache` and `direct-cacheable`: a cache hit against nginx's cache hit and the direct app.
    A `baseline` adds a `vs baseline` column: the authenticated rows against plain `sidegate`, the same
    gateway without the filters whose cost they measure."""

    nginx: str = "nginx"
    direct: str = "direct"
    min_rps_vs_nginx: float | None = None
    min_rps_vs_direct: float | None = None
    baseline: str | None = None
    min_rps_vs_baseline: float | None = None


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
    baseline_ref: str | None = None
    rps_vs_baseline: float | None = None
    added_p50_vs_baseline_us: float | None = None  # this row's p50 minus its baseline's
    min_rps_vs_baseline: float | None = None
    redis_share: float | None = None  # Redis calls per request under load (median over the runs)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _median_opt(values: Sequence[float | None]) -> float | None:
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
            redis_share=_median_opt([_ratio(m.redis_calls, m.throughput.requests) for m in ms]),
        )
        for name, ms in runs.items()
        if ms
    }
    out = []
    for s in base.values():
        c = (compare or {}).get(s.scenario, Compare())
        direct, nginx = base.get(c.direct), base.get(c.nginx)
        baseline = base.get(c.baseline) if c.baseline else None
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
                baseline_ref=c.baseline,
                rps_vs_baseline=_ratio(s.rps, baseline.rps if baseline else None),
                added_p50_vs_baseline_us=s.p50_us - baseline.p50_us if baseline else None,
                min_rps_vs_baseline=c.min_rps_vs_baseline,
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
    """One line per row; a `vs baseline` column after `vs direct` when a row has a baseline."""
    baseline = any(r.baseline_ref for r in rows)
    head = (
        "| path | req/s (64 conn) | vs nginx | vs direct | "
        + ("vs baseline | " if baseline else "")
        + "p50 (1 conn) | p99 (1 conn) | added p50 | added p50 vs nginx | RSS idle | RSS after load |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        cells = [
            r.scenario,
            f"{r.rps:,.0f}",
            _x(r.rps_vs_nginx),
            _x(r.rps_vs_direct),
            *([_x(r.rps_vs_baseline)] if baseline else []),
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
    baselines: dict[str, list[str]] = {}
    for r in rows:
        if r.baseline_ref:
            baselines.setdefault(r.baseline_ref, []).append(r.scenario)
    for ref, names in baselines.items():
        out.append(f"rows {', '.join(names)}: `vs baseline` is against {ref}")
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
        if r.rps_vs_baseline is not None and r.added_p50_vs_baseline_us is not None:
            out.append(
                f"{r.scenario}: {r.rps_vs_baseline:.2f}x {r.baseline_ref}'s throughput; "
                f"p50 {_signed_us(r.added_p50_vs_baseline_us)} against {r.baseline_ref}'s"
            )
        if r.redis_share is not None:
            share = f"Redis ran {r.redis_share:.2f} rate-limit scripts per request under load"
            if r.redis_share < REDIS_SHARE_MIN:
                out.append(
                    f"WARNING {r.scenario}: {share}: the rest were decided by the local fallback, "
                    "so this row does not measure a Redis-backed limit"
                )
            else:
                out.append(f"{r.scenario}: {share}")
    for r in rows:
        if any(m is not None for m in (r.min_rps_vs_nginx, r.min_rps_vs_direct, r.min_rps_vs_baseline)):
            out.append(_target_line(r))
    return out


def _signed_us(v: float) -> str:
    return ("+" if v >= 0 else "-") + _us(abs(v))


def _target_line(r: Summary) -> str:
    """`<scenario> target: throughput >= 2.00x nginx-cache's and >= 0.80x direct-cacheable's; here ...`"""
    wanted, here, missing, met = [], [], [], True
    for ref, minimum, got in (
        (r.nginx_ref, r.min_rps_vs_nginx, r.rps_vs_nginx),
        (r.direct_ref, r.min_rps_vs_direct, r.rps_vs_direct),
        (r.baseline_ref, r.min_rps_vs_baseline, r.rps_vs_baseline),
    ):
        if minimum is None or ref is None:
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
    path: Path,
    meta: dict[str, Any],
    rows: list[Summary],
    runs: dict[str, list[Measurement]],
    *,
    bulk: dict[str, Any] | None = None,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "meta": meta,
        "summary": [asdict(r) for r in rows],
        "runs": {name: [asdict(m) for m in ms] for name, ms in runs.items()},
    }
    if bulk is not None:
        record["bulk"] = bulk  # the connect-bulk row (bench/bulk.py): MB/s direct and tunnelled
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
