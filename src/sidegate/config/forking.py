"""The config checker as a server: imports done once, then one forked child per check.

Starting Python and importing pydantic is most of the time a check takes (0.2 s on an idle
machine, close to a second on a busy one). ``python -m sidegate.config.check --serve`` pays it
once: it imports what checks need, then reads requests from stdin, one JSON line each, and for
each one forks a child that does the check and exits. The server itself never reads a config,
so whatever a config does to the process that checks it (memory, a filter module's state, a
crash) ends with that child. For each request the server writes one line on stdout::

    {"answer": "<the child's JSON answer>", "exit": 0, "stderr": "<what the child wrote there>"}

``exit`` is the child's exit status (negative: the signal that killed it). A line
``warm jwt,cache`` has the server import those filters for the checks to come (the serving
process sends the names of the filters of a config it took). The server exits when its stdin
closes (the serving process has gone). See :mod:`sidegate.config.isolated` for the side
that asks.
"""

from __future__ import annotations

import gc
import json
import os
import select
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

_STDERR_KEPT = 8000  # characters of a child's stderr sent back (the end: where an error is)


def serve(handle: Callable[[bytes], str | None], warm: Callable[[list[str]], None]) -> NoReturn:
    """Answer each request line on stdin with :func:`check_in_child`, until stdin closes.

    A line ``warm NAME,NAME`` is no request: the server imports those filters (``warm``) for the
    checks to come, and answers nothing.
    """
    _freeze()
    for line in sys.stdin.buffer:
        if line.startswith(b"warm "):
            warm([name for name in line[5:].decode("ascii", "replace").strip().split(",") if name])
            _freeze()
        elif line.strip():
            _write(1, check_in_child(handle, line))
    os._exit(0)


def check_in_child(handle: Callable[[bytes], str | None], request: bytes) -> bytes:
    """Run ``handle(request)`` in a forked child; its answer, exit status and stderr as one line."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one check, its answer on out_w, anything else on err_w
        gc.disable()  # it lives for milliseconds: a collection would only copy shared pages
        status = 1
        try:
            os.close(out_r)
            os.close(err_r)
            os.dup2(err_w, 1)  # fd 1 is the server's replies: nothing the check prints goes there
            os.dup2(err_w, 2)
            _write(out_w, (handle(request) or "").encode("utf-8"))
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)  # the answer is out: skip tearing every module down
    os.close(out_w)
    os.close(err_w)
    answer, errors = _read_both(out_r, err_r)
    _, status = os.waitpid(pid, 0)
    reply = {
        "answer": answer.decode("utf-8", "replace"),
        "exit": os.waitstatus_to_exitcode(status),
        "stderr": errors.decode("utf-8", "replace")[-_STDERR_KEPT:],
    }
    return json.dumps(reply).encode("utf-8") + b"\n"


def _freeze() -> None:
    """Move what is imported out of the collector's sight: a child's collections would touch,
    and so copy, every page it shares with the server."""
    gc.collect()
    gc.freeze()


def _read_both(first: int, second: int) -> tuple[bytes, bytes]:
    """Everything written on two pipes, read as it comes (neither can fill and block the child)."""
    chunks: dict[int, list[bytes]] = {first: [], second: []}
    open_fds = [first, second]
    while open_fds:
        for fd in select.select(open_fds, [], [])[0]:
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                open_fds.remove(fd)
                os.close(fd)
    return b"".join(chunks[first]), b"".join(chunks[second])


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
