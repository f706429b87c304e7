"""Cross-request batching on the planner's cost rule: a scheduler, the batch step, and the queue that runs
them on worker threads. The engine's encode and the server both go through it."""

from .queue import BatchQueue, BatchRecord, run_inline
from .request import PoolSpec, Progress, Submission, run_batch
from .scheduler import ScheduledBatch, Scheduler

__all__ = [
    "BatchQueue",
    "BatchRecord",
    "PoolSpec",
    "Progress",
    "Submission",
    "ScheduledBatch",
    "Scheduler",
    "run_batch",
    "run_inline",
]
