"""The pod-wide rate-limit table: real processes deciding at once on one file hold one limit.

Each worker is a real Python process that maps the table and hammers it with ``time.monotonic()``
(one clock for every process of the host), started together so their decisions interleave. The
limits refill one request a day, so exactly the burst may pass, whoever asks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sidegate.policy.gcra import Gcra
from sidegate.ratelimit.shared import SharedTable

pytestmark = pytest.mark.timeout(60)

WORKER = r"""
import json, sys, time
from sidegate.policy.gcra import Gcra
from sidegate.ratelimit.shared import SharedTable

path, opening = sys.argv[1:3]
burst, keys, tries = map(int, sys.argv[3:6])
table = SharedTable.attach(path) if opening == "attach" else SharedTable.open_or_create(path, 4096)
gcra = Gcra(burst, 86400.0)
names = [b"tenant-%d" % i for i in range(keys)]
print("ready", flush=True)
sys.stdin.readline()
passed = dict.fromkeys(names, 0)
for i in range(tries):
    key = names[i % keys]
    if table.gcra(key, gcra, time.monotonic()).allowed:
        passed[key] += 1
table.close()
print(json.dumps({k.decode(): v for k, v in passed.items()}), flush=True)
"""

DAY = 86400.0


def hammer(
    path: Path, opening: str, *, workers: int, burst: int, keys: int, tries: int
) -> list[dict[str, int]]:
    """Start ``workers`` processes, release them at once; what each of them was allowed, per key."""
    args = [str(path), opening, str(burst), str(keys), str(tries)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(workers)
    ]
    try:
        for proc in procs:  # every worker has mapped the table before any decides
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=50)
            assert proc.returncode == 0
            results.append(json.loads(out))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("opening", ["attach", "open_or_create"])
def test_two_processes_hammering_one_table_hold_one_limit_exactly(tmp_path: Path, opening: str) -> None:
    path = tmp_path / "ratelimit"
    if opening == "attach":
        SharedTable.create(str(path), slots=4096).close()
    # Each process tries 3000 times per key: 6000 tries for 1000 places. (Without the lock this comes
    # out hundreds over; how the places split between the processes is up to the scheduler.)
    burst, keys, tries = 1000, 4, 12_000
    results = hammer(path, opening, workers=2, burst=burst, keys=keys, tries=tries)
    for key in results[0]:
        per_process = [result[key] for result in results]
        assert sum(per_process) == burst, f"{key}: {per_process}"


def test_a_limit_spent_by_one_process_is_spent_for_the_other(tmp_path: Path) -> None:
    path = str(tmp_path / "ratelimit")
    with SharedTable.create(path, slots=64) as table:
        gcra = Gcra(3, DAY)
        assert [table.gcra(b"client", gcra, 1000.0).allowed for _ in range(3)] == [True] * 3
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from sidegate.policy.gcra import Gcra; "
                "from sidegate.ratelimit.shared import SharedTable; "
                "t = SharedTable.attach(sys.argv[1]); d = t.gcra(b'client', Gcra(3, 86400.0), 1000.0); "
                "print(d.allowed, d.remaining, d.retry_after)",
                path,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert other.stdout.split() == ["False", "0", str(DAY / 3)]


def test_a_full_table_keeps_deciding_and_keeps_the_live_limits(tmp_path: Path) -> None:
    path = tmp_path / "ratelimit"
    with SharedTable.create(str(path), slots=16) as table:  # two buckets of eight
        size = path.stat().st_size
        strict = Gcra(5, 60.0)
        now = 1000.0
        assert sum(table.gcra(b"abuser", strict, now).allowed for _ in range(10)) == 5
        # A thousand other clients come and go: far more keys than slots.
        one_shot = Gcra(100, 1.0)
        for i in range(1000):
            now += 0.001
            assert table.gcra(b"visitor-%d" % i, one_shot, now).allowed
        # The abuser's state (the newest TAT) was never the one given up: still limited.
        limited = table.gcra(b"abuser", strict, now)
        assert not limited.allowed
        assert limited.retry_after == pytest.approx(60.0 / 5 - 1.0, abs=0.01)
        # The table never grew, and a newcomer still gets its full burst.
        assert path.stat().st_size == size
        assert sum(table.gcra(b"newcomer", strict, now).allowed for _ in range(10)) == 5


def test_create_replaces_an_old_table_and_attach_refuses_what_is_not_one(tmp_path: Path) -> None:
    path = str(tmp_path / "ratelimit")
    gcra = Gcra(1, DAY)
    with SharedTable.create(path, slots=8) as old:
        assert old.gcra(b"k", gcra, 1000.0).allowed
        with SharedTable.create(path, slots=8) as new:
            assert new.gcra(b"k", gcra, 1000.0).allowed  # a fresh table
            assert not old.gcra(b"k", gcra, 1000.0).allowed  # the old one still works, on its own
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a table" * 100)
    with pytest.raises(ValueError, match="not a Sidegate rate-limit table"):
        SharedTable.attach(str(junk))
    with pytest.raises(ValueError, match="not a Sidegate rate-limit table"):
        SharedTable.open_or_create(str(junk))
    assert junk.read_bytes() == b"not a table" * 100
