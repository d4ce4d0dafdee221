"""Serving the app with waitress, hardened against hostile clients, with a graceful shutdown.

    server = build_server(app, settings)     # listening, not yet serving
    serve(server, settings.shutdown_timeout) # until SIGTERM/SIGINT, then drains; returns

Why waitress stays (and how it is set up). Waitress reads every request whole in its single
event loop before a worker thread sees it, so a slow client (a body byte per second) costs a
socket, never a thread: what locked readers out was only its default ``connection_limit`` of
100. Here:

* ``MAX_CONNECTIONS`` (default 1000) open connections, polled with ``poll()`` (``select()``
  cannot watch descriptors above FD_SETSIZE, 1024);
* ``REQUEST_TIMEOUT``: a request (line, headers and body) must arrive whole within that many
  seconds of its first byte, else the connection is dropped (no work was done for it) — this
  is what bounds a slowloris that keeps every connection busy with a byte now and then,
  which waitress's own idle timeout (``CHANNEL_TIMEOUT``) never catches;
* bodies above :data:`MAX_BODY_BYTES` are refused by waitress before they are buffered;
* errors waitress writes itself (malformed request line or headers, too large, unsupported
  transfer coding) are JSON ``{"error": ...}`` with an ``X-Request-ID``, like the app's; a
  transfer coding waitress does not implement is the client's fault here: 400, not 501.

Graceful shutdown (SIGTERM is what ``docker stop`` sends): the listening socket is closed at
once (new connections are refused before any work), idle keep-alive connections are closed,
requests being received or answered are finished for up to ``SHUTDOWN_TIMEOUT`` seconds;
then the worker threads stop and :func:`serve` returns, so the caller closes the services
(conversation log, spool) and the process exits 0.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
import uuid

from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask

log = logging.getLogger(__name__)

IDENT = "arsonor-assistant"
# Waitress refuses larger bodies before buffering them; the app's own limit (64 KB, a JSON
# 413) is lower, so a client over it still gets the app's message for bodies up to this size.
MAX_BODY_BYTES = 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024


class JsonErrorTask(ErrorTask):
    """The errors waitress answers itself, as the API's JSON error body."""

    def execute(self):
        error = self.request.error
        code, reason = error.code, error.reason
        if code == 501:  # "Transfer-Encoding: gzip" and the like: a request we refuse
            code, reason = 400, "Bad Request"
        detail = " ".join(str(error.body).split())
        body = json.dumps({"error": f"{reason.lower()}: {detail}" if detail else reason.lower()})
        payload = body.encode("utf-8")
        self.status = f"{code} {reason}"
        self.response_headers.extend([("Content-Type", "application/json"),
                                      ("X-Request-ID", uuid.uuid4().hex)])
        self.set_close_on_finish()
        self.content_length = len(payload)
        self.write(payload)


class HardenedChannel(HTTPChannel):
    """A connection that knows when the request it is receiving began."""

    error_task_class = JsonErrorTask
    receiving_since = 0.0

    def received(self, data):
        if self.request is None:  # the first bytes of a new request
            self.receiving_since = time.time()
        return super().received(data)

    def receiving(self) -> bool:
        """A request has begun arriving and is not complete yet."""
        return self.request is not None and not self.request.completed

    def busy(self) -> bool:
        """Receiving a request, answering one, or still sending an answer."""
        return bool(self.receiving() or self.requests or self.total_outbufs_len)


class HardenedServer(TcpWSGIServer):
    """Waitress's TCP server with :class:`HardenedChannel` and a whole-request deadline."""

    channel_class = HardenedChannel
    request_timeout = 30.0

    def maintenance(self, now):
        super().maintenance(now)  # idle connections (CHANNEL_TIMEOUT)
        cutoff = now - self.request_timeout
        for channel in list(self.active_channels.values()):
            if channel.receiving() and not channel.requests and channel.receiving_since < cutoff:
                log.info("dropped a connection from %s: its request did not arrive within "
                         "%.0f s", channel.addr, self.request_timeout)
                channel.will_close = True

    def stop_accepting(self) -> None:
        """Close the listening socket: new connections are refused from now on."""
        self.accepting = False
        self.del_channel()
        self.socket.close()

    def channels(self) -> list[HardenedChannel]:
        return [c for c in list(self._map.values()) if isinstance(c, HardenedChannel)]

    def poll_once(self) -> None:
        self.asyncore.loop(timeout=self.adj.asyncore_loop_timeout, map=self._map,
                           use_poll=self.adj.asyncore_use_poll, count=1)


def build_server(app, settings) -> HardenedServer:
    """A listening (not yet serving) server for ``app``. :raises OSError: cannot bind."""
    from waitress.adjustments import Adjustments

    adj = Adjustments(
        host=settings.host, port=settings.port, threads=settings.threads, ident=IDENT,
        connection_limit=settings.max_connections,
        channel_timeout=settings.channel_timeout,
        # How often idle and too-slow connections are looked for.
        cleanup_interval=max(1, min(30, int(settings.request_timeout // 3) or 1)),
        asyncore_use_poll=True,
        # Queued connections the kernel keeps while the loop is busy accepting others.
        backlog=max(1024, settings.max_connections),
        max_request_body_size=MAX_BODY_BYTES,
        max_request_header_size=MAX_HEADER_BYTES,
    )
    server = HardenedServer(app, map={}, adj=adj, sockinfo=adj.listen[0])
    server.request_timeout = settings.request_timeout
    return server


def serve(server: HardenedServer, shutdown_timeout: float,
          stop: threading.Event | None = None, *, handle_signals: bool = True) -> None:
    """Serve until SIGTERM or SIGINT (or ``stop`` is set), then drain as the module says.
    ``handle_signals`` False: only ``stop`` ends it (a server in a thread, benchmarks)."""
    stop = stop or threading.Event()
    if not handle_signals:
        while not stop.is_set():
            server.poll_once()
        drain(server, shutdown_timeout)
        return

    def request_stop(signum, _frame):
        if not stop.is_set():
            log.info("%s: draining (at most %.0f s)", signal.Signals(signum).name,
                     shutdown_timeout)
        stop.set()
        server.trigger.pull_trigger()  # wake the loop now rather than at its next timeout

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.is_set():
            server.poll_once()
        drain(server, shutdown_timeout)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def drain(server: HardenedServer, timeout: float) -> None:
    """Stop accepting, finish the requests under way for up to ``timeout`` s, stop."""
    server.stop_accepting()
    deadline = time.monotonic() + timeout
    while True:
        busy = 0
        for channel in server.channels():
            if channel.busy():
                busy += 1
            else:  # idle keep-alive: nothing started on it, close it
                channel.will_close = True
        if not busy:
            break
        if time.monotonic() >= deadline:
            log.warning("shutdown: %d request(s) still under way after %.0f s, dropped",
                        busy, timeout)
            break
        server.poll_once()
    for _ in range(3):  # let the loop close what was marked
        server.poll_once()
    server.task_dispatcher.shutdown(cancel_pending=True, timeout=2)
    for channel in server.channels():
        channel.close()
    server.trigger.close()
