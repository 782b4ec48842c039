"""TLS origination: which calls the sidecar speaks TLS for, and their contexts, kept fresh.

The app speaks plain HTTP to the egress listener; the sidecar speaks HTTPS to the destination
(Istio's egress TLS origination, Envoy's upstream TLS context). A call is originated when

* it is an absolute-form ``https://`` request (the destination must allow scheme https), or
* its destination has ``tls: {originate: true}``: a plain ``http://`` request to it, in
  absolute-form or by name, goes out over TLS. The policy decides on what the app asked
  (``http``, port 80); the connection goes to ``tls.port`` (443) when the app asked for port
  80, and to the port asked for otherwise (``http://api:8443/`` speaks TLS to 8443). Istio maps
  each port of a ServiceEntry on its own; one mapping, 80 to ``tls.port``, covers what apps send.

CONNECT tunnels are never originated: the app's own TLS is inside them.

One :class:`ssl.SSLContext` per distinct :class:`~sidegate.config.egress_tls_spec.TlsSettings`
(built by the ssl module, :func:`~sidegate.config.egress_tls_spec.build_context`), made at the
first call that needs it and kept across reloads while the settings are unchanged. Its files are
mounted Secrets that rotate, so, as :mod:`sidegate.egress.credentials` does for secret files,
they are looked at (one ``stat`` each) at most once a second (:data:`CHECK_INTERVAL`) and the
context is rebuilt when a file's device, inode, size or mtime changed. A rebuild that fails (a
file gone or half written) keeps the last good context, which still verifies, and logs the
problem once: a rotation in progress never turns into unverified TLS or an outage. A new
context is a new :class:`~sidegate.upstream.tls_origin.TlsOrigin`, hence new pools: connections
made with the old files finish their requests and close when idle.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sidegate.config.egress_spec import DestinationSpec
from sidegate.config.egress_tls_spec import DEFAULT_TLS, TlsFileError, TlsSettings, build_context, file_stamps
from sidegate.upstream.tls_origin import TlsOrigin

log = logging.getLogger("sidegate.egress")

CHECK_INTERVAL = 1.0  # seconds between two looks at a context's files


@dataclass(frozen=True, slots=True)
class Origination:
    """How one call goes out over TLS: the pool's TLS identity and the port dialled."""

    origin: TlsOrigin
    port: int


class _Context:
    """One settings' context and the stamps of the files it was built from."""

    __slots__ = ("context", "next_check", "problem", "settings", "stamps")

    def __init__(self, settings: TlsSettings, now: float) -> None:
        self.settings = settings
        self.stamps = file_stamps(settings)
        self.context: ssl.SSLContext = build_context(settings)
        self.next_check = now + CHECK_INTERVAL
        self.problem = ""

    def current(self, now: float) -> ssl.SSLContext:
        if now >= self.next_check:
            self.next_check = now + CHECK_INTERVAL
            stamps = file_stamps(self.settings)
            if stamps != self.stamps:
                self._rebuild(stamps)
        return self.context

    def _rebuild(self, stamps: tuple[tuple[int, int, int, int] | None, ...]) -> None:
        try:
            self.context = build_context(self.settings)
        except TlsFileError as error:
            if str(error) != self.problem:
                self.problem = str(error)
                log.error(
                    "TLS origination: %s; the last good certificates stay in use until it is fixed",
                    error,
                    extra={"event": "egress_tls", "result": "kept"},
                )
            return  # stamps kept: looked at again in a second
        self.stamps, self.problem = stamps, ""
        log.info(
            "TLS origination: reloaded %s", ", ".join(self.settings.files()), extra={"event": "egress_tls"}
        )


class TlsContexts:
    """The contexts of every destination's TLS settings (see the module's docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._contexts: dict[TlsSettings, _Context] = {}
        self._origins: dict[tuple[int, str], TlsOrigin] = {}  # (id(context), name): one pool key

    def originate(
        self, scheme: str, host: str, port: int, destination: DestinationSpec
    ) -> Origination | None:
        """The TLS this call goes out with, or None for plain HTTP. ``scheme``, ``host`` and
        ``port`` are what the app asked for (the host canonical, as the guard parsed it).
        Raises :class:`~sidegate.config.egress_tls_spec.TlsFileError` if a context cannot be
        built at all (its files broke between the config check and the first call)."""
        settings = destination.tls
        if scheme == "https":
            settings = settings or DEFAULT_TLS
        elif settings is None or not settings.originate:
            return None
        else:
            port = settings.port if port == 80 else port
        now = self._clock()
        holder = self._contexts.get(settings)
        if holder is None:
            holder = self._contexts[settings] = _Context(settings, now)
        context = holder.current(now)
        name = settings.server_name or host
        key = (id(context), name)
        origin = self._origins.get(key)
        if origin is None or origin.context is not context:
            if len(self._origins) > 1024:  # names under a wildcard are many: start again
                self._origins.clear()
            origin = self._origins[key] = TlsOrigin(context, name)
        return Origination(origin, port)

    def keep_only(self, destinations: Iterable[DestinationSpec]) -> None:
        """A reload: forget the contexts no destination uses any more (the rest are kept)."""
        used = {d.tls for d in destinations if d.tls is not None} | {DEFAULT_TLS}
        self._contexts = {s: c for s, c in self._contexts.items() if s in used}
        live = {id(c.context) for c in self._contexts.values()}
        self._origins = {k: o for k, o in self._origins.items() if k[0] in live}
