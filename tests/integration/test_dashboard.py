"""The admin dashboard in a real browser: headless Chromium (Debian ``chromium``) loads admin ``/``
from a running Sidegate, and its charts must show the numbers of the traffic that was sent."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.helpers import http
from support import traffic
from support.browser import Browser, chromium_path
from support.cache import fetch
from support.gateway import GatewayFactory, GatewayProcess

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        chromium_path() is None,
        reason="chromium is not installed: `make system-deps` installs it (Debian package chromium)",
    ),
]

# What the page shows, read from its DOM in one go.
READ_PAGE = """(() => {
  const main = document.getElementById("dashboard");
  const attrs = (node) => Object.fromEntries([...node.attributes].map((a) => [a.name, a.value]));
  const q = (sel) => [...document.querySelectorAll(sel)];
  return {
    polls: Number(main.dataset.polls),
    requests: Number(main.dataset.requests),
    error: main.dataset.error || null,
    banner: document.getElementById("banner").hidden ? null : document.getElementById("banner").textContent,
    tiles: Object.fromEntries(q(".tile .value").map((n) => [n.id, attrs(n)])),
    tileText: Object.fromEntries(q(".tile .value").map((n) => [n.id, n.textContent])),
    routes: q("#chart-status g.route").map(attrs),
    bars: q("#chart-status rect").length,
    endpoints: q("#chart-upstreams g.endpoint").map(attrs),
    series: Object.fromEntries(q("svg.chart g.series").map((g) => [g.dataset.series, attrs(g)])),
    lines: Object.fromEntries(q("svg.chart").map((s) => [s.id, s.querySelectorAll("polyline").length])),
    meta: document.getElementById("meta").textContent,
  };
})()"""


@pytest.fixture
def browser() -> Iterator[Browser]:
    with Browser() as b:
        yield b


def test_the_page_and_its_files_are_served_with_a_strict_policy(gateway: GatewayFactory) -> None:
    gw = gateway()
    expected = {
        "/": "text/html; charset=utf-8",
        "/dashboard.js": "text/javascript; charset=utf-8",
        "/dashboard.css": "text/css; charset=utf-8",
    }
    for path, content_type in expected.items():
        status, headers, body = http(gw.admin_port, path)
        assert status == 200 and headers["content-type"] == content_type and body
        policy = headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert "'unsafe-inline'" not in policy and "http" not in policy
        assert headers["x-content-type-options"] == "nosniff"
    page = http(gw.admin_port, "/")[2].decode()
    assert '<script src="dashboard.js"' in page and "<script>" not in page and "style=" not in page
    assert "//" not in page.replace("<!doctype", "")  # nothing loaded from elsewhere


def test_dump_dom_shows_the_totals(gateway: GatewayFactory, tmp_path: Path) -> None:
    """The plainest use of the browser: ``--dump-dom`` after a few polls in virtual time."""
    gw, _ = traffic.start(gateway, tmp_path / "cache")
    sent = traffic.send(gw)
    command = [
        str(chromium_path()),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        gw.admin_url("/?interval=1"),
    ]
    dom = subprocess.run(command, capture_output=True, timeout=60, check=True).stdout.decode()
    assert f'data-requests="{sent.total}"' in dom
    assert 'id="total-requests" data-value="17">17<' in dom
    assert 'data-route="limited" data-total="5" data-2xx="3" data-3xx="0" data-4xx="2"' in dom
    assert 'data-state="failing"' in dom and "<polyline" in dom


def read(browser: Browser) -> dict[str, Any]:
    page: dict[str, Any] = browser.evaluate(READ_PAGE)
    return page


def test_the_dashboard_draws_live_numbers(gateway: GatewayFactory, tmp_path: Path, browser: Browser) -> None:
    gw, dead = traffic.start(gateway, tmp_path / "cache")
    sent = traffic.send(gw)
    browser.open(gw.admin_url("/?interval=0.5"))
    browser.wait_for("Number(document.getElementById('dashboard').dataset.polls) >= 2")
    page = read(browser)
    assert page["error"] is None and page["banner"] is None
    assert page["requests"] == sent.total
    assert page["tiles"]["total-requests"]["data-value"] == str(sent.total)
    assert page["tiles"]["total-5xx"]["data-value"] == "2"
    assert page["tiles"]["total-cache"]["data-hits"] == "2"
    assert page["tiles"]["total-cache"]["data-misses"] == "1"
    assert page["tileText"]["total-cache"] == "66.7%"
    assert page["tiles"]["total-limited"]["data-value"] == "2"
    assert page["tiles"]["total-limited"]["data-allowed"] == str(traffic.LIMIT)
    assert "config version 1" in page["meta"] and "1 worker" in page["meta"]

    # Status mix: one stacked bar per route, by class.
    routes = {r["data-route"]: r for r in page["routes"]}
    assert list(routes) == ["cached", "limited", "dead", "all"]
    for name, route in routes.items():
        assert route["data-total"] == str(sent.count(name))
        for cls in ("2xx", "4xx", "5xx"):
            assert route[f"data-{cls}"] == str(sent.count(name, cls)), (name, cls)
    assert page["bars"] >= 5  # segments: cached 2xx, limited 2xx+4xx, dead 5xx, all 2xx+4xx, legend

    # Upstream states.
    states = {e["data-upstream"]: e for e in page["endpoints"]}
    assert states["dead"]["data-state"] == "failing" and states["dead"]["data-address"] == dead
    assert states["dead"]["data-failures"] == "2"
    assert states["app"]["data-state"] == "ok"

    # Time series: a point per poll; the first covers the traffic sent since the start.
    assert int(page["series"]["rate"]["data-points"]) >= 2
    assert page["lines"]["chart-rate"] >= 1
    for key in ("p50", "p90", "p99"):
        assert int(page["series"][key]["data-points"]) >= 1
    assert float(page["series"]["p50"]["data-last"]) <= float(page["series"]["p99"]["data-last"])
    assert page["series"]["ratio"]["data-last"] == str(2 / 3)

    # Live: more traffic shows up on a later poll, with a request rate above zero.
    for _ in range(6):
        assert fetch(gw, "/status/200").status == 200
    browser.wait_for(f"document.getElementById('dashboard').dataset.requests == '{sent.total + 6}'")
    page = read(browser)
    routes = {r["data-route"]: r for r in page["routes"]}
    assert routes["all"]["data-2xx"] == str(sent.count("all", "2xx") + 6)
    rates = browser.evaluate(
        "[...document.querySelectorAll('#chart-rate polyline')].map((p) => p.getAttribute('points'))"
    )
    assert rates and all(len(points.split()) >= 2 for points in rates)

    # The admin API goes away: the page says so and keeps the last numbers.
    gw.stop()
    banner = browser.wait_for(
        "!document.getElementById('banner').hidden && document.getElementById('banner').textContent"
    )
    assert "unreachable" in banner
    assert read(browser)["requests"] == sent.total + 6


def test_the_dashboard_of_a_supervisor_shows_every_worker(
    gateway: GatewayFactory, tmp_path: Path, browser: Browser
) -> None:
    gw: GatewayProcess
    gw, _ = traffic.start(gateway, tmp_path / "cache", workers=2)
    sent = traffic.send(gw, ok=12)
    browser.open(gw.admin_url("/?interval=0.5"))
    browser.wait_for(f"document.getElementById('dashboard').dataset.requests == '{sent.total}'")
    page = read(browser)
    assert "2 workers" in page["meta"]
    routes = {r["data-route"]: r for r in page["routes"]}
    assert routes["all"]["data-2xx"] == "12" and routes["dead"]["data-5xx"] == "2"


def test_the_dashboard_shows_what_the_health_checks_found(gateway: GatewayFactory, browser: Browser) -> None:
    check = {"path": "/healthz", "interval": "0.2s", "timeout": "0.1s"}
    gw = gateway(
        upstreams={"app": {"endpoints": [gateway.origin.address], "health_check": check}},
    )
    http(gw.port, "/one")
    browser.open(gw.admin_url("/?interval=0.5"))
    healthy = "#chart-upstreams g.endpoint[data-health='healthy']"
    browser.wait_for(f'document.querySelector("{healthy}") !== null')
    [endpoint] = read(browser)["endpoints"]
    assert endpoint["data-health"] == "healthy" and endpoint["data-state"] == "ok"
    text = browser.evaluate("document.querySelector('#chart-upstreams g.endpoint').textContent")
    assert "healthy" in text and " ok / 0 failed" in text


def test_behind_a_token_the_browser_signs_in_and_the_page_draws(
    gateway: GatewayFactory, tmp_path: Path, browser: Browser
) -> None:
    """The page cannot send `Authorization`: `/login` sets the session cookie its polls carry."""
    token_file = tmp_path / "admin-token"
    token_file.write_text("dashboard-admin-token-42\n")
    gw = gateway(mutate=lambda config: config["listeners"]["admin"].update(token_file=str(token_file)))
    browser.open(gw.admin_url("/"))
    assert "/login" in browser.evaluate("document.body.innerText")  # the 401's reason says where to go
    browser.open(gw.admin_url("/login"))
    browser.evaluate(
        "document.querySelector('input[name=token]').value = 'dashboard-admin-token-42';"
        "document.querySelector('form').submit(); true"
    )
    polls = "Number(document.getElementById('dashboard')?.dataset.polls || 0) >= 1"
    browser.wait_for(f"location.pathname === '/' && {polls}")
    page = read(browser)
    assert page["error"] is None and page["banner"] is None, page
    assert "config version 1" in page["meta"]
