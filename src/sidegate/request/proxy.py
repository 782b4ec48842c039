"""L4: the request handler every inbound connection is given.

Theory of operation
-------------------
:class:`Proxy` is the connections' :class:`~sidegate.server.stream.RequestHandler`: for each
request head it starts an :class:`~sidegate.request.exchange.Exchange`, the phase loop, which

1. takes the current :class:`~sidegate.request.view.View` (snapshot, live clusters, metric
   children) once: a reload never changes a request mid-flight;
2. routes the head and runs the route's ``on_request`` filters (any may answer on its own);
3. builds the upstream request head (:mod:`sidegate.request.upstream_head`) and borrows a
   keep-alive connection from the chosen endpoint's pool (opening one only when none is idle);
4. streams the request body up and the response back as response events, with backpressure both
   ways: a side that cannot write pauses the side that reads (the connection frames them for
   its client: :mod:`sidegate.server.framing`);
5. after a ``101`` for an Upgrade request, joins the two ends in a tunnel;
6. ends with ``on_log`` filters and one :class:`~sidegate.request.record.RequestRecord` handed to
   the :class:`~sidegate.request.recorder.Recorder` (metrics, access log, trace, explain), gives
   the upstream connection back when it is reusable, and tells the connection whether the
   request was read whole.

Failures become JSON answers with the status the error vocabulary gives (502/503/504), or a
closed client connection when part of the response was already sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sidegate.request.exchange import Exchange
from sidegate.request.services import RequestServices

if TYPE_CHECKING:
    from sidegate.http.request_head import ParsedRequest
    from sidegate.server.stream import ResponseChannel


class Proxy(RequestServices):
    """The request handler given to every inbound connection."""

    def begin(self, channel: ResponseChannel, head: ParsedRequest) -> Exchange:
        exchange = Exchange(self, channel, head)
        exchange.start()
        return exchange
