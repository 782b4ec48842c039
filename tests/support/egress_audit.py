"""The egress audit trail as the tests read it: the ``type: egress`` lines of a gateway's access log."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from support.gateway import GatewayProcess


def audit_lines(gw: GatewayProcess, at_least: int = 1) -> list[dict[str, Any]]:
    """The egress lines of the access log, once there are ``at_least`` (it is written off the
    loop), or what there is after 5 s. The gateway's fixture sets ``gw.access_log``."""
    path: Path = gw.access_log  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        egress = [line for line in lines if line.get("type") == "egress"]
        if len(egress) >= at_least or time.monotonic() > deadline:
            return egress
        time.sleep(0.05)
