"""Watching the config file for changes, the way Kubernetes changes it.

A ConfigMap volume does not rewrite the file in place: it writes a new timestamped directory and
swaps the ``..data`` symlink, so the file's own inode never sees a write and inotify watches on the
file miss the change. We poll instead: every ``interval`` the file is ``stat``-ed *through* its
symlinks (a couple of microseconds), and only when what it points at changed is it read and its
bytes compared with the last seen, so a touch without a change, or a file missing for a moment
during the swap, triggers nothing.

The pod's labels file (the downward API volume, read by ``profiles:``, :mod:`sidegate.config.profiles`)
changes the same way, so it is watched the same way, beside the config file, while the config
has profiles that read it; either change runs the one reload routine (:mod:`sidegate.reload`).

Polling costs no dependency and no thread, and keeps the serving process small (the RSS budget is
30 MiB). A tenth of a second between looks (ten `stat` calls a second, about 0.05 % of a CPU)
leaves most of the second a reload may take to the validation, which the checker server (its
imports done once, a forked child per check: :mod:`sidegate.config.isolated`) does in about ten
milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger("sidegate.watch")

Signature = tuple[str, int, int, int, int]


def signature(path: str) -> Signature | None:
    """Where ``path`` leads and that file's identity, size and mtime; None if it cannot be seen."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return (real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return None


async def watch_config(
    path: str,
    on_change: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    *,
    interval: float = 0.1,
    watched: Callable[[], Sequence[str]] | None = None,
) -> None:
    """Call ``on_change`` each time the content of ``path`` changes, until ``stop`` is set.

    ``watched`` (asked at each look, since a reload may change it) names every file to watch,
    ``path`` among them: the pod's labels file too, when the config has ``profiles:``, so that
    ``kubectl label pod`` reloads like an edit of the config does.
    """
    files: dict[str, _Seen] = {}
    while True:
        changed = False
        for name in (path,) if watched is None else watched():
            seen = files.get(name)
            if seen is None:  # a file new to the watch: what it holds now is no change
                files[name] = _Seen(signature(name), read_bytes(name))
            elif seen.changed(name):
                changed = True  # one reload reads them all
        if changed:
            try:
                await on_change()
            except Exception:  # the watcher must outlive a failed reload; the reload logs its error
                log.exception("config reload after a file change failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set():
            return


class _Seen:
    """What the watcher last saw of one file."""

    def __init__(self, last_signature: Signature | None, last_content: bytes | None) -> None:
        self.signature = last_signature
        self.content = last_content

    def changed(self, path: str) -> bool:
        """Whether ``path`` now holds other bytes than last time (a missing file is no change)."""
        current = signature(path)
        if current is None or current == self.signature:
            return False
        self.signature = current
        content = read_bytes(path)
        if content is None or content == self.content:
            return False
        self.content = content
        return True
