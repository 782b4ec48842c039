"""What ``/ready`` says while a process starts: one reason per listener not bound yet."""

from __future__ import annotations

from sidegate.config.check import check_text
from sidegate.config.compile import compile_checked
from sidegate.runtime import SingleProcess
from sidegate.supervisor import Supervisor
from support.configs import MINIMAL


def test_before_anything_is_bound_ready_names_every_missing_listener() -> None:
    checked = check_text(MINIMAL, "test.yaml", {})
    single = SingleProcess("test.yaml", compile_checked(checked))
    assert single.readiness() == (
        False,
        "starting: inbound listener not bound; admin and health listeners not bound",
    )
    supervisor = Supervisor(
        "test.yaml", compile_checked(check_text(MINIMAL + "workers: 2\n", "t.yaml", {})), checked
    )
    assert supervisor.readiness() == (False, "0 of 2 workers serving; admin and health listeners not bound")
    single.draining = supervisor.draining = True
    assert single.readiness() == supervisor.readiness() == (False, "draining")
