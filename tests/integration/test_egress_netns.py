"""Every non-loopback SSRF class refused by the egress listener with no connection made, proved
in a network namespace the test creates (``unshare -n``): the forbidden addresses are on its
loopback interface, each with a listener that counts connections, and nothing can leave it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.gateway import SIDEGATE

pytestmark = pytest.mark.timeout(90)

SCRIPT = Path(__file__).resolve().parents[1] / "support" / "egress_netns.py"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_no_ssrf_class_is_reachable(tmp_path: Path) -> None:
    out = subprocess.run(
        ["unshare", "-n", sys.executable, str(SCRIPT), str(SIDEGATE), str(tmp_path)],
        capture_output=True,
        timeout=80,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode() + (tmp_path / "sidegate.log").read_text(errors="replace")
    result = json.loads(out.stdout)
    statuses, accepted = result["status"], result["accepted"]
    assert statuses.pop("control") == 200  # the namespace works: an explicitly allowed range is reached
    assert statuses == dict.fromkeys(statuses, 403), statuses
    assert accepted == dict.fromkeys(accepted, 0), accepted
