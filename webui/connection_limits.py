"""Connections that cannot hold the server hostage: uvicorn's HTTP/1.1 protocol with deadlines and caps.

uvicorn closes a keep-alive connection after 5 idle seconds, but a client that sends a byte now and then
(slowloris), or never finishes its headers or body, keeps its socket forever, and enough of them use up
the process's file descriptors. `guarded_protocol` adds:

* a header deadline: a request's line and headers must be complete within `header_timeout` seconds of
  the connection opening (or of the previous response), however they trickle in;
* a body deadline: a request body may pause at most `body_idle_timeout` seconds between chunks;
* caps on open connections per client address and overall: past them a new connection is closed at
  once, before it costs more than its socket.

Websocket connections leave the HTTP protocol when they upgrade and are not counted (they are few and
authenticated). `quiet_accept_errors` rate-limits asyncio's "out of system resource" accept errors.
"""
from __future__ import annotations

import logging
import resource
import time
from collections import Counter

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("inkwash.connections")

HEADER_TIMEOUT = 20.0
BODY_IDLE_TIMEOUT = 60.0
MAX_CONNECTIONS_PER_CLIENT = 64


def max_connections() -> int:
    """Open connections allowed in all: well under the file-descriptor limit (models and the job
    database need descriptors too)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(32, min(4096, soft - 256) if soft > 0 else 4096)


def guarded_protocol(header_timeout: float = HEADER_TIMEOUT, body_idle_timeout: float = BODY_IDLE_TIMEOUT,
                     per_client: int = MAX_CONNECTIONS_PER_CLIENT, total: int | None = None) -> type[H11Protocol]:
    """An H11Protocol subclass (for uvicorn's `http=`) with these deadlines and caps, counting its own
    connections."""
    total = total if total is not None else max_connections()
    open_by_client: Counter[str] = Counter()
    refusals = _RateLimited(log, 10.0)

    class GuardedH11Protocol(H11Protocol):
        _deadline = None
        _counted: str | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            address = self.client[0] if self.client else "unknown"
            if open_by_client[address] >= per_client or sum(open_by_client.values()) >= total:
                refusals.warning("refused a connection from %s: %d open from it, %d in all (caps %d and %d)",
                                 address, open_by_client[address], sum(open_by_client.values()), per_client, total)
                transport.abort()
                return
            open_by_client[address] += 1
            self._counted = address
            self._arm(header_timeout)

        def connection_lost(self, exc) -> None:
            self._release()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.SEND_BODY:
                self._arm(body_idle_timeout)  # a body may pause, but not for long
            elif self.conn.their_state is not h11.IDLE:
                self._disarm()  # the request is in: the app may take its time
            # still IDLE: the header deadline stands, however the bytes trickle in

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm(header_timeout)  # the next request's headers are due

        def handle_websocket_upgrade(self, event) -> None:
            self._release()
            super().handle_websocket_upgrade(event)

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
                self.transport.abort()

        def _release(self) -> None:
            self._disarm()
            if self._counted is not None:
                open_by_client[self._counted] -= 1
                if open_by_client[self._counted] <= 0:
                    del open_by_client[self._counted]
                self._counted = None

    GuardedH11Protocol.open_by_client = open_by_client
    return GuardedH11Protocol


class _RateLimited:
    """One log line per `interval` seconds, with a count of those left out."""

    def __init__(self, logger: logging.Logger, interval: float):
        self.logger, self.interval = logger, interval
        self.last, self.skipped = 0.0, 0

    def warning(self, message: str, *args) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.skipped += 1
            return
        if self.skipped:
            message += f" (and {self.skipped} more like it in the last {self.interval:.0f} s)"
        self.last, self.skipped = now, 0
        self.logger.warning(message, *args)


class _AcceptErrorFilter(logging.Filter):
    """Lets one accept error ("Too many open files", "out of system resource") through per interval."""

    def __init__(self, interval: float = 10.0):
        super().__init__()
        self.interval, self.last, self.skipped = interval, 0.0, 0

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "out of system resource" not in text and "Too many open files" not in text and not (
                record.exc_info and isinstance(record.exc_info[1], OSError) and record.exc_info[1].errno == 24):
            return True
        now = time.monotonic()
        if now - self.last < self.interval:
            self.skipped += 1
            return False
        if self.skipped:
            record.msg = f"{record.msg} (and {self.skipped} more in the last {self.interval:.0f} s)"
        self.last, self.skipped = now, 0
        return True


def quiet_accept_errors(interval: float = 10.0) -> logging.Filter:
    """Install (once) and return the filter that rate-limits accept errors on asyncio's and uvicorn's loggers."""
    for name in ("asyncio", "uvicorn.error"):
        logger = logging.getLogger(name)
        for existing in logger.filters:
            if isinstance(existing, _AcceptErrorFilter):
                return existing
    accept_filter = _AcceptErrorFilter(interval)
    for name in ("asyncio", "uvicorn.error"):
        logging.getLogger(name).addFilter(accept_filter)
    return accept_filter
