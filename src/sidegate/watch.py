"""Watching the config file for changes, the way Kubernetes changes it.

A ConfigMap volume does not rewrite the file in place: it writes a new timestamped directory and
swaps the ``..data`` symlink, so the file's own inode never sees a write. We therefore watch the
*directory* (watchfiles, inotify underneath) and, on any event there, compare a fingerprint of the
file's content as read through the symlinks; only a real change triggers a reload, and a file
that is missing for a moment during the swap is waited out.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable

log = logging.getLogger("sidegate.watch")


def fingerprint(path: str) -> str | None:
    """A hash of the file's bytes, or None if it cannot be read right now."""
    try:
        with open(path, "rb") as file:
            return hashlib.sha256(file.read()).hexdigest()
    except OSError:
        return None


async def watch_config(path: str, on_change: Callable[[], Awaitable[object]], stop: asyncio.Event) -> None:
    """Call ``on_change`` each time the content of ``path`` changes, until ``stop`` is set."""
    import watchfiles  # imported here: only a running gateway needs it

    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    name = os.path.basename(path)

    def relevant(_: object, changed: str) -> bool:
        # the file itself, or Kubernetes' ..data / ..<timestamp> entries behind its symlink
        base = os.path.basename(changed)
        return base == name or base.startswith("..")

    last = fingerprint(path)
    try:
        async for _ in watchfiles.awatch(
            directory, watch_filter=relevant, debounce=150, step=50, stop_event=stop, recursive=False
        ):
            current = fingerprint(path)
            if current is None or current == last:
                continue
            last = current
            await on_change()
    except Exception:  # the gateway keeps serving; SIGHUP and POST /reload still work
        log.exception("config watcher stopped; reload with SIGHUP or POST /reload")
