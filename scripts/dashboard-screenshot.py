"""Take docs/dashboard.png: a real Sidegate under a mix of traffic, its dashboard in headless Chromium.

    .venv/bin/python scripts/dashboard-screenshot.py [--seconds 40] [--out docs/dashboard.png]

Starts the tests' recording origin app and a Sidegate with the routes of ``tests/support/traffic.py``
(a cached route, a rate-limited one, one whose upstream is down, a catch-all), sends traffic whose
rate rises and falls for ``--seconds``, with the dashboard open and polling every 2 s, then saves a
screenshot of the page. Needs Debian's ``chromium`` (``make system-deps``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support import traffic  # noqa: E402
from support.browser import Browser  # noqa: E402
from support.gateway import GatewayFactory, GatewayProcess, OriginProcess, http_get  # noqa: E402


def load(gw: GatewayProcess, until: float, seconds: float, stop: threading.Event) -> None:
    """One client: about 10 to 40 requests a second, rising and falling, of every kind."""
    rng = random.Random()
    start = time.monotonic()
    while not stop.is_set() and time.monotonic() < until:
        phase = (time.monotonic() - start) / seconds
        per_second = 25 + 15 * math.sin(phase * 2 * math.pi * 1.5)
        roll = rng.random()
        if roll < 0.50:
            path = f"/slow?seconds={rng.expovariate(1 / 0.012):.4f}"
        elif roll < 0.58:
            path = "/status/404"
        elif roll < 0.60:
            path = "/status/500"
        elif roll < 0.85:
            path = f"/cache/item{rng.randrange(40)}?cc=max-age%3D3600"
        elif roll < 0.97:
            path = "/limited/x"
        else:
            path = "/dead/x"
        with contextlib.suppress(OSError):  # a refused or timed-out request is part of the picture
            http_get(gw.port, path, timeout=5)
        time.sleep(rng.expovariate(per_second / 3))  # three clients share the rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="how long to send traffic")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1020)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sidegate-screenshot-") as tmp:
        work = Path(tmp)
        origin = OriginProcess(work)
        factory = GatewayFactory(work, origin)
        stop = threading.Event()
        clients: list[threading.Thread] = []
        try:
            gw, _ = traffic.start(factory, work / "cache")
            with Browser(args.width, args.height) as browser:
                browser.open(gw.admin_url("/?interval=2"))
                until = time.monotonic() + args.seconds
                clients += [
                    threading.Thread(target=load, args=(gw, until, args.seconds, stop)) for _ in range(3)
                ]
                for client in clients:
                    client.start()
                time.sleep(args.seconds)
                browser.wait_for("Number(document.getElementById('dashboard').dataset.polls) > 5")
                browser.screenshot(args.out)  # while the traffic still runs
        finally:
            stop.set()
            for client in clients:
                client.join()
            factory.close()
            origin.stop()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
