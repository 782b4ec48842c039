"""The health-check families, in both exposition formats, as Prometheus' own parsers read them."""

from __future__ import annotations

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

from sidegate.observe.aggregate import merge
from sidegate.observe.prometheus import render

ROW = {"upstream": "app", "endpoint": "127.0.0.1:3000", "healthy": 0, "success": 5, "failure": 2}


def samples(openmetrics: bool) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    snapshot = merge([{}, {"health": [ROW]}])  # one process of the pod runs the checks
    text = render(snapshot, openmetrics=openmetrics).decode()
    parse = parse_openmetrics if openmetrics else parse_prometheus
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parse(text)
        if "health" in family.name
        for s in family.samples
    }


def test_both_formats_carry_the_state_and_the_counts() -> None:
    labels = (("endpoint", "127.0.0.1:3000"), ("upstream", "app"))
    for openmetrics in (False, True):
        found = samples(openmetrics)
        assert found[("sidegate_upstream_endpoint_healthy", labels)] == 0
        assert (
            found[("sidegate_upstream_health_checks_total", (*labels[:1], ("result", "failure"), labels[1]))]
            == 2
        )
        assert (
            found[("sidegate_upstream_health_checks_total", (*labels[:1], ("result", "success"), labels[1]))]
            == 5
        )


def test_no_health_check_no_family() -> None:
    assert b"health" not in render(merge([{}]))
