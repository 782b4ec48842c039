"""Where a process finds its rate-limit state: the pod's shared table and the Redis client.

The local table is one file-backed shared memory region per pod (:class:`SharedTable`), so that
every worker of a pod counts against the same limits. Its path comes from
``SIDEGATE_RATELIMIT_TABLE``, which the supervisor sets (to a name under ``/dev/shm`` with its own
pid) before it spawns workers; a single process uses a name with its pid. It is created on first
use, so a config without local limits creates nothing, and removed by the process that named it.

The Redis client is one per process and URL, shared by every route and kept across reloads. A
decision from Redis runs as a task: the filter answers ``Wait`` on it and reads the outcome when
asked again (:class:`PendingDecision`). :func:`local_store` and :func:`redis_store` give both as
a :class:`~sidegate.ratelimit.store.LimitStore`, the one interface the filter uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Final
from urllib.parse import quote

from sidegate.config.snapshot import RedisSpec, RedisTls
from sidegate.policy.gcra import Decision, Gcra
from sidegate.ratelimit.redis import RedisLimiter
from sidegate.ratelimit.shared import SharedTable
from sidegate.ratelimit.store import LocalStore

ENV_TABLE: Final = "SIDEGATE_RATELIMIT_TABLE"
TABLE_SLOTS: Final = 65536

_table: SharedTable | None = None
_local_store: LocalStore | None = None
_stores: dict[RedisSpec, RedisStore] = {}
_limiters: dict[tuple[str, str, float, float, RedisTls | None], RedisLimiter] = {}
_TASKS: set[asyncio.Task[None]] = set()


def table_path(pid: int | None = None) -> str:
    """The pod's table file: ``$SIDEGATE_RATELIMIT_TABLE``, else one named after ``pid``."""
    named = os.environ.get(ENV_TABLE)
    if named:
        return named
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        base = "/dev/shm"
    else:
        import tempfile  # only here: it brings shutil, bz2 and lzma (~0.4 MiB) into the gateway

        base = tempfile.gettempdir()
    return os.path.join(base, f"sidegate-{pid or os.getpid()}-ratelimit")


def name_table_for_workers() -> str:
    """In the supervisor, before spawning workers: every worker will use this path."""
    path = table_path()
    os.environ[ENV_TABLE] = path
    return path


def local_table() -> SharedTable:
    """This pod's shared table (created by the first worker that needs it)."""
    global _table
    if _table is None:
        _table = SharedTable.open_or_create(table_path(), TABLE_SLOTS)
        # Only workers of a supervisor share the table (it names it for them); a single process
        # is its only user and needs no lock.
        _table.locking = ENV_TABLE in os.environ
    return _table


def local_store() -> LocalStore:
    """The pod's table as a limit store."""
    global _local_store
    if _local_store is None:
        _local_store = LocalStore(local_table())
    return _local_store


def redis_store(spec: RedisSpec) -> RedisStore:
    """The limit store in the Redis of ``spec`` (its client shared as :func:`redis_limiter` says)."""
    store = _stores.get(spec)
    if store is None:
        store = _stores[spec] = RedisStore(redis_limiter(spec), wait=spec.timeout * 2 + 0.05)
    return store


def remove_table(path: str | None = None) -> None:
    """At exit of the process that named the table: remove its file."""
    with contextlib.suppress(OSError):
        os.unlink(path or table_path())


def redis_limiter(spec: RedisSpec) -> RedisLimiter:
    """The process's client for ``spec`` (one per URL and settings)."""
    key = (spec.url, spec.password, spec.timeout, spec.connect_timeout, spec.tls)
    limiter = _limiters.get(key)
    if limiter is None:
        url = spec.url
        if spec.password and "@" not in url:
            scheme, rest = url.split("://", 1)
            url = f"{scheme}://:{quote(spec.password, safe='')}@{rest}"
        limiter = _limiters[key] = RedisLimiter(
            url, timeout=spec.timeout, connect_timeout=spec.connect_timeout, tls=spec.tls
        )
    return limiter


class RedisStore:
    """Counts kept in Redis, one limit across every pod: a decision is a task (a
    :class:`PendingDecision`), none while Redis is known to be down."""

    def __init__(self, limiter: RedisLimiter, *, wait: float) -> None:
        self.limiter = limiter
        self.wait = wait  # what a request may wait for a decision: the timeout, with room to spare

    def take(self, key: bytes, rule: Gcra, now: float) -> PendingDecision | None:
        if not self.limiter.healthy():
            return None
        return start_decision(self.limiter, key, rule.requests, rule.per, rule.burst, timeout=self.wait)


class PendingDecision:
    """A Redis decision in flight: ``done`` completes when ``decision`` or ``error`` is set."""

    def __init__(self, timeout: float) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.decision: Decision | None = None
        self.error: Exception | None = None
        self.timeout = timeout  # the longest a request waits for it


def start_decision(
    limiter: RedisLimiter, key: bytes, requests: int, per: float, burst: int, *, timeout: float
) -> PendingDecision:
    """Ask Redis in a task; never raises (a failure is kept in ``error``)."""
    pending = PendingDecision(timeout)

    async def ask() -> None:
        try:
            pending.decision = await limiter.gcra(key, requests, per, burst)
        except Exception as exc:  # RedisUnavailable, or anything unexpected: the filter falls back
            pending.error = exc
        finally:
            if not pending.done.done():
                pending.done.set_result(None)

    task = asyncio.get_running_loop().create_task(ask())
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return pending
