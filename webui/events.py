"""Fan-out of executor events to the clients listening (websockets, tests, the CLI).

The worker thread publishes; each subscriber reads from its own bounded buffer, from asyncio code
(`await sub.get()`) or from a plain thread (`sub.get(timeout)`). Publishing never blocks and never
waits for a reader.

When a subscriber's buffer is full, the oldest *transient* event ("progress" with its preview image,
"status") is dropped first: a newer one supersedes it. A "progress" that carries an image an output
node streams (SaveImageWebsocket's ImageFrame) is an output, not transient. Events a client cannot reconstruct ("executing",
"executed", "execution_*") are never dropped silently: if the buffer is full of them, the subscription
is closed as overflowed and its reader gets SubscriptionClosed, so a websocket handler closes the
connection and the client reconnects and reads /history. Memory per subscriber stays bounded either way.
"""
from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import Awaitable
from typing import Any, overload

from ..nodes.formats.preview_frames import ImageFrame

Event = tuple[str, dict]

# Events that a later event of the same kind makes obsolete; safe to drop when a reader lags.
TRANSIENT_EVENTS = frozenset({"progress", "status", "hash_progress"})
DEFAULT_BUFFER_SIZE = 512


def is_transient(event: str, data: dict) -> bool:
    """Safe to drop for a lagging reader: a later event of its kind supersedes it."""
    return event in TRANSIENT_EVENTS and not isinstance(data.get("preview"), ImageFrame)


class SubscriptionClosed(Exception):
    """The subscription was unsubscribed, or closed because its reader fell too far behind."""


class _Async:
    """Sentinel default of `Subscription.get`: no timeout given means the asyncio form."""


_ASYNC = _Async()


class Subscription:
    """One reader's view of the hub: events for `client_id` (or every event when it is None)."""

    def __init__(self, hub: EventHub | None, client_id: str | None, maxsize: int = DEFAULT_BUFFER_SIZE):
        self.client_id = client_id
        self.maxsize = maxsize
        self.dropped = 0  # transient events discarded because the reader lagged
        self.overflowed = False
        self._hub = hub
        self._buffer: deque[Event] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._closed = False

    # -- writing (any thread) ------------------------------------------------------------------------
    def _put(self, event: str, data: dict) -> None:
        with self._lock:
            if self._closed:
                return
            if len(self._buffer) >= self.maxsize and not self._make_room(event, data):
                return
            self._buffer.append((event, data))
            self._wake()

    def _make_room(self, event: str, data: dict) -> bool:
        """Free one slot for `event`; False when it should not be buffered. Lock held."""
        for index, (name, buffered) in enumerate(self._buffer):
            if is_transient(name, buffered):
                del self._buffer[index]
                self.dropped += 1
                return True
        if is_transient(event, data):
            self.dropped += 1
            return False
        # Full of events that must not be lost: end this subscription rather than lose one silently.
        self.overflowed = True
        self._buffer.clear()
        self._close_locked()
        return False

    def _wake(self) -> None:
        """Wake blocked readers, in threads and in event loops. Lock held."""
        self._ready.notify_all()
        for loop, future in self._waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # that loop is closed; its reader is gone
                pass
        self._waiters.clear()

    def _close_locked(self) -> None:
        self._closed = True
        self._wake()

    # -- reading -------------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def pending_count(self) -> int:
        with self._lock:
            return len(self._buffer)

    @overload
    def get(self) -> Awaitable[Event]: ...

    @overload
    def get(self, timeout: float | None) -> Event: ...

    def get(self, timeout: Any = _ASYNC) -> Any:
        """`await sub.get()` in asyncio code; `sub.get(timeout)` blocks this thread up to `timeout`
        seconds (None: forever) and raises queue.Empty when nothing came. Both raise SubscriptionClosed
        once the subscription is closed and its buffer is drained."""
        if isinstance(timeout, _Async):
            return self._get_async()
        with self._ready:
            self._ready.wait_for(lambda: self._buffer or self._closed, timeout)
            return self._take()

    def get_nowait(self) -> Event:
        with self._lock:
            return self._take()

    def _take(self) -> Event:
        if self._buffer:
            return self._buffer.popleft()
        if self._closed:
            raise SubscriptionClosed("overflowed" if self.overflowed else "unsubscribed")
        raise queue.Empty

    async def _get_async(self) -> Event:
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._buffer or self._closed:
                    return self._take()
                waiter = (loop, loop.create_future())
                self._waiters.append(waiter)
            try:
                await waiter[1]
            finally:
                with self._lock:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)

    def drain(self) -> list[Event]:
        """Everything buffered now, without waiting."""
        with self._lock:
            events = list(self._buffer)
            self._buffer.clear()
            return events

    def close(self) -> None:
        """Stop receiving; readers get what is buffered, then SubscriptionClosed."""
        if self._hub is not None:
            self._hub.unsubscribe(self)
        else:
            with self._lock:
                self._close_locked()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class EventHub:
    """Thread-safe publish/subscribe of (event, data) pairs keyed by ComfyUI client id.

    `data` dicts are shared between subscribers, not copied: readers must not mutate them (the
    websocket layer builds a new dict without "preview")."""

    def __init__(self, buffer_size: int = DEFAULT_BUFFER_SIZE):
        self.buffer_size = buffer_size
        self._lock = threading.Lock()
        self._subscriptions: list[Subscription] = []

    def subscribe(self, client_id: str | None) -> Subscription:
        """None: every event, whatever client it is for."""
        sub = Subscription(self, client_id, self.buffer_size)
        with self._lock:
            self._subscriptions.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscriptions:
                self._subscriptions.remove(sub)
        with sub._lock:
            sub._close_locked()

    def publish(self, event: str, data: dict, client_id: str | None = None) -> None:
        """client_id None broadcasts to everyone; otherwise to that client's subscribers and to the
        subscribers of every event."""
        with self._lock:
            targets = [s for s in self._subscriptions
                       if client_id is None or s.client_id is None or s.client_id == client_id]
        for sub in targets:
            sub._put(event, data)
        if any(sub.closed for sub in targets):  # overflowed ones closed themselves; forget them
            with self._lock:
                self._subscriptions = [s for s in self._subscriptions if not s.closed]

    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscriptions)
