"""``sidegate wait-ready``: block until Sidegate answers ``/ready`` with 200, for a postStart hook.

In classic mode (no native sidecars) Kubernetes starts a pod's containers in order and does not
start the next one until the previous one's ``postStart`` hook has returned; Sidegate is the first
container, and this command as its hook holds the app back until the gateway serves (what Istio's
``holdApplicationUntilProxyStarts`` and Linkerd's proxy-await do). It asks loopback only, never
through a proxy from the environment, with the standard library (no asyncio, a short-lived
process). Exit 0 when ready, 1 when the deadline passes (the kubelet then restarts the container).
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from typing import Final

POLL_INTERVAL: Final = 0.2


def wait_ready(url: str, timeout: float) -> int:
    """Poll ``url`` until it answers 200 or ``timeout`` seconds pass; the exit code."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            with opener.open(url, timeout=max(0.1, min(1.0, deadline - time.monotonic()))) as answer:
                if answer.status == 200:
                    return 0
                last = f"HTTP {answer.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            last = str(reason)
        if time.monotonic() + POLL_INTERVAL >= deadline:
            print(f"sidegate wait-ready: {url} not ready after {timeout:g}s ({last})", file=sys.stderr)
            return 1
        time.sleep(POLL_INTERVAL)
