"""Headless Chromium (the Debian ``chromium`` package) driven over the DevTools protocol.

:class:`Browser` starts ``chromium --headless --remote-debugging-port=0`` with a throw-away profile,
attaches to its first page and offers what the dashboard tests and the screenshot script need:
``open(url)``, ``evaluate(js)``, ``wait_for(js)`` and ``screenshot()``. A real browser, no mocks.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.sync.client import ClientConnection, connect


def chromium_path() -> str | None:
    """The Chromium command, or None when it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium process and a DevTools session on its page."""

    def __init__(self, width: int = 1280, height: int = 1000, timeout: float = 20.0) -> None:
        command = chromium_path()
        if command is None:
            raise RuntimeError("chromium is not installed (Debian: apt-get install chromium)")
        self._profile = tempfile.TemporaryDirectory(prefix="sidegate-chromium-")
        self.proc = subprocess.Popen(
            [
                command,
                "--headless",
                "--no-sandbox",  # tests run as root in a container
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--no-first-run",
                f"--user-data-dir={self._profile.name}",
                f"--window-size={width},{height}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._ids = itertools.count(1)
        self._session = contextlib.ExitStack()
        self._drain: threading.Thread | None = None
        try:
            port = self._devtools_port(timeout)
            self._ws = self._attach(port, timeout)
        except Exception:
            self.close()
            raise

    def _devtools_port(self, timeout: float) -> int:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            seen.append(line)
            match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if match:
                # Keep reading its log, so a chatty browser never blocks on a full pipe.
                self._drain = threading.Thread(target=self.proc.stderr.read, daemon=True)
                self._drain.start()
                return int(match.group(1))
        raise RuntimeError("chromium did not open its DevTools port:\n" + "".join(seen[-20:]))

    def _attach(self, port: int, timeout: float) -> ClientConnection:
        deadline = time.monotonic() + timeout
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as resp:
                targets = json.loads(resp.read())
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                url = pages[0]["webSocketDebuggerUrl"]
                ws: ClientConnection = self._session.enter_context(connect(url, max_size=64 * 1024 * 1024))
                return ws
            if time.monotonic() > deadline:
                raise RuntimeError(f"chromium has no page target: {targets}")
            time.sleep(0.1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and wait for its answer (events in between are dropped)."""
        ident = next(self._ids)
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=30))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def open(self, url: str, timeout: float = 15.0) -> None:
        """Navigate to ``url`` and wait until the page has loaded."""
        self.call("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'", timeout)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able values only)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        """Evaluate ``expression`` until it is truthy; its value. Fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"not true within {timeout}s in the page: {expression} (last: {value!r})")

    def screenshot(self, path: Path) -> None:
        """A PNG of the whole page."""
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self._session.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._drain is not None:
            self._drain.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
