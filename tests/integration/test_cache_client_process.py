"""The app's SharedCache in its own process and Sidegate's Store in this one, on one directory.

The app process is a real Python process holding the cache open for the whole test, driven
line by line over stdin/stdout, so both sides have the environment open at once, as a pod's
Sidegate and app do. Each side must see the other's put, invalidate and purge at once.
"""

from __future__ import annotations

import json
import select
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sidegate.cache.entry import Entry
from sidegate.cache.env import Env, acquire, release
from sidegate.cache.keys import normalize_url
from sidegate.cache.store import Store

pytestmark = pytest.mark.timeout(60)

APP = r"""
import json, sys
from sidegate.cache.client import SharedCache

cache = SharedCache(sys.argv[1], partition=sys.argv[2])
print(json.dumps("ready"), flush=True)
for line in sys.stdin:
    call = json.loads(line)
    op = call.pop("op")
    if op == "get":
        found = cache.get(**call)
        out = found and {
            "status": found.status, "headers": found.headers, "body": found.body.decode(),
            "fresh": found.fresh, "age": found.age, "tags": list(found.tags),
        }
    elif op == "put":
        call["body"] = call["body"].encode()
        call["headers"] = [tuple(field) for field in call["headers"]]
        out = cache.put(**call)
    elif op == "stats":
        out = cache.stats().max_size
    else:
        out = getattr(cache, op)(**call)
    print(json.dumps(out), flush=True)
cache.close()
"""

ITEM = "http://api.local/items/7"


class App:
    """The app process: ``app.call("put", url=..., ...)`` runs one SharedCache call there."""

    def __init__(self, directory: Path, partition: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", APP, str(directory), partition],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._read() == "ready"

    def call(self, op: str, **args: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def _read(self) -> Any:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"the app process did not answer: {err[-2000:]}")
        return json.loads(line)

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=10) == 0


@pytest.fixture
def sidegate(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "cache", max_size=8 << 20, quotas={"tenant": 1 << 20})
    yield store
    store.close()


@pytest.fixture
def app(tmp_path: Path, sidegate: Store) -> Iterator[App]:
    proc = App(tmp_path / "cache", "tenant")
    yield proc
    proc.stop()


def put(app: App, url: str, body: str, *headers: tuple[str, str], **args: Any) -> Any:
    return app.call("put", url=url, status=200, headers=list(headers), body=body, **args)


def served(sidegate: Store, url: str, headers: list[tuple[bytes, bytes]] | None = None) -> Entry | None:
    return sidegate.lookup("tenant", normalize_url(url), headers or [], time.time())


def stored_by_sidegate(sidegate: Store, url: str, body: bytes, tags: tuple[str, ...] = ()) -> None:
    entry = Entry.build(
        200,
        [(b"Content-Type", b"text/plain"), (b"Cache-Control", b"max-age=60")],
        body,
        response_time=time.time(),
        initial_age=0.0,
        freshness=60.0,
        tags=tags,
    )
    assert sidegate.store("tenant", normalize_url(url), (), [], entry)


def test_what_the_app_puts_sidegate_serves_at_once(app: App, sidegate: Store) -> None:
    ok = put(app, ITEM, '{"id": 7}', ("Content-Type", "application/json"), ("Cache-Control", "max-age=60"))
    assert ok is True
    entry = served(sidegate, "HTTP://API.LOCAL/items/7")
    assert entry is not None
    assert entry.body == b'{"id": 7}'
    assert entry.head == (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: max-age=60\r\n"
        b"Content-Length: 9\r\n"
    )
    assert (entry.freshness, entry.fresh(time.time())) == (60.0, True)


def test_what_sidegate_stores_the_app_reads_at_once(app: App, sidegate: Store) -> None:
    stored_by_sidegate(sidegate, ITEM, b"from the origin", tags=("items",))
    found = app.call("get", url=ITEM)
    assert found["status"] == 200
    assert found["body"] == "from the origin"
    assert found["headers"] == [["Content-Type", "text/plain"], ["Cache-Control", "max-age=60"]]
    assert (found["fresh"], found["tags"]) == (True, ["items"])
    assert 0 <= found["age"] < 5


def test_the_apps_invalidations_and_purges_reach_sidegate_at_once(app: App, sidegate: Store) -> None:
    for n in range(4):
        stored_by_sidegate(sidegate, f"http://api.local/items/{n}", b"x", tags=("odd",) if n % 2 else ())
    stored_by_sidegate(sidegate, "http://api.local/users/1", b"x")
    assert app.call("invalidate", url="http://api.local/items/0") == 1
    assert served(sidegate, "http://api.local/items/0") is None
    assert app.call("purge_tag", tag="odd") == 2
    assert served(sidegate, "http://api.local/items/1") is None
    assert served(sidegate, "http://api.local/items/2") is not None
    assert app.call("purge_prefix", prefix="http://api.local/items/") == 1
    assert served(sidegate, "http://api.local/items/2") is None
    assert served(sidegate, "http://api.local/users/1") is not None


def test_sidegates_invalidations_and_purges_reach_the_app_at_once(app: App, sidegate: Store) -> None:
    ttl = {"ttl": 60, "tags": ["users"]}
    assert put(app, "http://api.local/users/1", "a", **ttl) is True
    assert put(app, "http://api.local/users/2", "b", **ttl) is True
    assert put(app, "http://api.local/users/3", "c") is False  # no freshness, no validator: useless
    assert sidegate.invalidate("tenant", b"http://api.local/users/1") == 1
    assert app.call("get", url="http://api.local/users/1") is None
    assert app.call("get", url="http://api.local/users/2") is not None
    assert sidegate.purge_tag("tenant", "users") == 1
    assert app.call("get", url="http://api.local/users/2") is None
    assert put(app, "http://api.local/users/4", "d", ttl=60) is True
    assert sidegate.purge_all("tenant") == 1
    assert app.call("get", url="http://api.local/users/4") is None


def test_vary_selects_the_same_variant_on_both_sides(app: App, sidegate: Store) -> None:
    vary = ("Vary", "Accept-Encoding")
    gzip = {"Accept-Encoding": "gzip"}
    assert put(app, ITEM, "gzipped", vary, ("Content-Encoding", "gzip"), ttl=60, request_headers=gzip)
    entry = served(sidegate, ITEM, [(b"accept-encoding", b"gzip")])
    assert entry is not None and entry.body == b"gzipped"
    assert served(sidegate, ITEM, [(b"accept-encoding", b"br")]) is None
    brotli = Entry.build(
        200,
        [(b"Vary", b"Accept-Encoding")],
        b"brotli",
        response_time=time.time(),
        initial_age=0,
        freshness=60,
    )
    assert sidegate.store(
        "tenant", normalize_url(ITEM), (b"accept-encoding",), [(b"Accept-Encoding", b"br")], brotli
    )
    assert app.call("get", url=ITEM, headers={"Accept-Encoding": "br"})["body"] == "brotli"
    assert app.call("get", url=ITEM, headers=gzip)["body"] == "gzipped"
    assert app.call("get", url=ITEM) is None


def test_the_app_follows_the_headers_and_the_limits_sidegate_set(app: App, sidegate: Store) -> None:
    assert app.call("stats") == 8 << 20  # the max_size Sidegate recorded
    assert put(app, ITEM, "x" * (1 << 20), ttl=60) is False  # over the partition's quota
    assert put(app, ITEM, "secret", ("Cache-Control", "private, max-age=60")) is False
    assert put(app, ITEM, "never", ("Cache-Control", "no-store")) is False
    targeted = ("Sidegate-Cache-Control", "max-age=30")  # RFC 9213: wins over Cache-Control
    assert put(app, ITEM, "mine", ("Cache-Control", "private"), targeted) is True
    entry = served(sidegate, ITEM)
    assert entry is not None and entry.freshness == 30.0
    assert put(app, ITEM, "stale", ("Cache-Control", "max-age=0"), ("ETag", '"v2"')) is True
    assert app.call("get", url=ITEM) is None
    stale = app.call("get", url=ITEM, allow_stale=True)
    assert (stale["body"], stale["fresh"]) == ("stale", False)


def test_reads_in_the_app_count_for_sidegates_lru_eviction(tmp_path: Path) -> None:
    urls = [f"http://api.local/lru/{n}" for n in range(5)]

    def old_entry(t: float) -> Entry:
        return Entry.build(200, [], b"z" * 1000, response_time=t, initial_age=0, freshness=1e10)

    probe = Store(tmp_path / "probe", max_size=1 << 20)
    probe.store("tenant", normalize_url(urls[0]), (), [], old_entry(0))
    size = probe.stats().bytes
    probe.close()
    sidegate = Store(tmp_path / "cache", max_size=int(size * 4.5))  # room for four
    for n in range(4):  # last read at t = 0..3 (1970): the app's read of 0 makes it the newest
        assert sidegate.store("tenant", normalize_url(urls[n]), (), [], old_entry(float(n)))
    app = App(tmp_path / "cache", "tenant")
    try:
        assert app.call("get", url=urls[0]) is not None
        key = b"tenant\x1f" + normalize_url(urls[0]) + b"\x00"
        env = acquire(tmp_path / "cache", 1 << 20)
        try:  # the app's LRU thread writes the access time (docs/cache-layout.md: access DB) soon
            deadline = time.monotonic() + 10
            while last_access_ms(env, key) < 1_000_000 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            release(env)
        assert sidegate.store("tenant", normalize_url(urls[4]), (), [], old_entry(4.0))
        present = [served_from(sidegate, url) for url in urls]
        assert present == [True, False, True, True, True]
    finally:
        app.stop()
        sidegate.close()


def last_access_ms(env: Env, key: bytes) -> int:
    with env.transaction(write=False) as txn:
        value = txn.get(key, db=env.access)
        return 0 if value is None else int(struct.unpack_from("<Q", value)[0])


def served_from(store: Store, url: str) -> bool:
    return store.lookup("tenant", normalize_url(url), [], 10.0) is not None


def test_entries_kept_between_hits_follow_the_apps_writes_at_once(app: App, sidegate: Store) -> None:
    # Sidegate reuses decoded entries while the store's generation is unchanged (no transaction
    # per hit); every write of the app must end that reuse before the app's call returns.
    url = "http://api.local/hot"
    assert put(app, url, "first", ("Cache-Control", "max-age=60")) is True
    for _ in range(3):  # read, then served from what this process kept
        entry = served(sidegate, url)
        assert entry is not None and entry.body == b"first"
    assert put(app, url, "second", ("Cache-Control", "max-age=60")) is True
    entry = served(sidegate, url)
    assert entry is not None and entry.body == b"second"
    assert app.call("invalidate", url=url) == 1
    assert served(sidegate, url) is None
