"""Which pending job an idle worker takes.

Jobs run in queue order, with one exception that keeps seed-only re-runs fast: a job whose checkpoint
another idle worker holds warm (and this one does not) is left for that worker, and this one takes the
next job. A job is never left for a busy worker, so nothing waits while a worker is free.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .base import Worker, job_checkpoints

if TYPE_CHECKING:
    from ..jobs import Job


def choose(pending: Sequence[Job], worker: Worker, idle: Sequence[Worker]) -> Job | None:
    """The job `worker` should take from `pending` (in queue order), given the other `idle` workers."""
    others = [other for other in idle if other is not worker]
    for job in pending:
        needed = job_checkpoints(job.workflow)
        if not needed or needed <= worker.warm:
            return job
        if not any(needed <= other.warm for other in others):
            return job
    return None
