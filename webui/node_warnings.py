"""Warnings that nodes log while a job runs, collected for that job (ComfyUI only prints them).

Nodes and the runtime warn through `logging` (a missing embedding, say); `node_warnings` passes each
warning logged under `inkwash.nodes` by the calling thread to a callback as well, so the job queue
can keep it in the job's messages and send it to the job's client. The log keeps it too.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

NODES_LOGGER = "inkwash.nodes"


class _ToCallback(logging.Handler):
    def __init__(self, callback: Callable[[str], None]):
        super().__init__(logging.WARNING)
        self.callback = callback
        self.thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:  # another thread's work (a tab, another request)
            return
        try:
            self.callback(record.getMessage())
        except Exception:  # a failing listener must not fail the node that warned
            self.handleError(record)


@contextmanager
def node_warnings(callback: Callable[[str], None]) -> Iterator[None]:
    """Within the block, call `callback(message)` for each warning this thread logs from the nodes."""
    handler = _ToCallback(callback)
    logger = logging.getLogger(NODES_LOGGER)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
