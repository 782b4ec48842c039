"""The access log sink: lines queued by the event loop, written by a background thread.

Theory of operation
-------------------
A request's line (UTF-8 bytes with its newline) is made on the event loop
(:mod:`sidegate.request.outcome`) and appended to :attr:`AccessLogWriter.lines` (the proxy does it inline,
:meth:`AccessLogWriter.write` is the same), unless ``max_lines`` are already waiting: then the
line is dropped and counted. The loop never waits for the sink, whatever it is (a slow terminal, a
full pipe, a stalled disk).

The thread takes lines with two list operations, each atomic under the GIL: a copy of what is
there, then ``del lines[:n]`` of exactly that many, so a line appended in between stays queued.

A daemon thread wakes every ``interval`` seconds, takes what is queued and writes it. Written
to a pipe or a terminal (standard output in a container), lines go in writes of at most
``PIPE_BUF`` bytes cut at line ends, which the kernel keeps whole: the workers of one pod share
the same standard output and their lines never interleave mid-line. A file is opened with
``O_APPEND`` and written in larger batches.
"""

from __future__ import annotations

import logging
import os
import stat
import threading

log = logging.getLogger("sidegate.access_log")

_PIPE_BUF = 4096  # POSIX: writes up to this size to a pipe are atomic
_FILE_BATCH = 256 * 1024


class AccessLogWriter:
    """Lines to standard output (``path="-"``) or appended to a file, written off the loop."""

    def __init__(self, path: str, max_lines: int, interval: float = 0.05) -> None:
        self.path = path
        self.max_lines = max_lines
        self.interval = interval
        self.written = 0  # lines written
        self.dropped = 0  # lines dropped: the queue was full, or the sink failed
        self.lines: list[bytes] = []  # queued, each with its newline
        self._own_fd = path != "-"
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if self._own_fd else 1
        mode = os.fstat(self.fd).st_mode
        self._batch = _FILE_BATCH if stat.S_ISREG(mode) else _PIPE_BUF
        self._wake = threading.Event()
        self._stop = False
        self._failed_once = False
        self._thread = threading.Thread(target=self._run, name="sidegate-access-log", daemon=True)
        self._thread.start()

    def write(self, line: bytes) -> None:
        """Queue one line (with its newline). Never blocks."""
        if len(self.lines) < self.max_lines:
            self.lines.append(line)
        else:
            self.dropped += 1

    def close(self) -> None:
        """Write what is queued, stop the thread and close the file (not standard output)."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=5.0)
        if self._own_fd:
            os.close(self.fd)

    def stats(self) -> dict[str, int]:
        return {"written": self.written, "dropped": self.dropped, "queued": len(self.lines)}

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self._flush()
            if self._stop:
                self._flush()
                return

    def _flush(self) -> None:
        lines = self.lines
        taken = lines[:]
        if not taken:
            return
        del lines[: len(taken)]
        data = b"".join(taken)
        limit = self._batch
        start = 0
        while len(data) - start > limit:  # cut at the last line end within the limit
            cut = data.rfind(b"\n", start, start + limit) + 1
            if cut <= start:  # one line longer than the limit: alone in its write
                cut = data.find(b"\n", start + limit) + 1 or len(data)
            self._emit(data[start:cut])
            start = cut
        if start < len(data):
            self._emit(data[start:])

    def _emit(self, data: bytes) -> None:
        lines = data.count(b"\n")
        try:
            view = memoryview(data)
            while view:
                done = os.write(self.fd, view)
                view = view[done:]
        except OSError as exc:
            self.dropped += lines
            if not self._failed_once:  # once: a broken sink must not flood the error log
                self._failed_once = True
                log.error("access log: cannot write to %s: %s (lines are dropped)", self.path, exc)
            return
        self.written += lines
