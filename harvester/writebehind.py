"""The directory sink's writes done behind the writer task: one thread of their own
takes each run's lines (hash, compress, write: `runfiles`) in the order they came,
while the writer task goes on to the next message.

Each write used to be awaited in anyio's worker thread: the writer task handed an answer
over, the thread waited for the GIL, did the work, and the writer resumed only once the
event loop, busy parsing answers, came back to it. The writer spent most of a large
harvest in those waits, so every millisecond a write took more (zstd's compression,
~1.5 ms a MB) lengthened the job by as much, with the second core idle meanwhile. Now a
write is queued and the writer task goes on; it waits only while `LIMIT` bytes are
queued. A write that fails is raised by the run's next write or by its commit.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

#: Bytes queued at most before the writer task waits (a few answers: the thread has
#: work while the event loop parses the next one).
LIMIT = 4 << 20


@dataclass
class Lane:
    """One run's writes: how many are queued or under way, and the first that failed (the
    run's later writes are skipped). `dropped`: the run is aborted, its writes moot."""

    queued: int = 0
    error: BaseException | None = None
    dropped: bool = False

    def raise_failed(self) -> None:
        if self.error is not None:
            raise self.error


class WriteBehind:
    """The thread and its queue; the thread starts with the first write."""

    def __init__(self, limit: int = LIMIT) -> None:
        self._limit = limit
        self._changed = threading.Condition()
        self._jobs: deque[tuple[Lane, Callable[[], object], int]] = deque()
        self._bytes = 0
        self._thread: threading.Thread | None = None
        self._closing = False

    def submit(self, lane: Lane, job: Callable[[], object], size: int) -> bool:
        """Queue `job` (`size` bytes) on `lane`; False when the queue is full: the caller
        waits with `wait_room` (in a worker thread) before it queues more."""
        with self._changed:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="write-behind")
                self._thread.daemon = True  # a job that dies unclosed is not held at exit
                self._thread.start()
            lane.queued += 1
            self._jobs.append((lane, job, size))
            self._bytes += size
            self._changed.notify_all()
            return self._bytes < self._limit

    def wait_room(self) -> None:
        """Block until fewer than `limit` bytes are queued."""
        with self._changed:
            self._changed.wait_for(lambda: self._bytes < self._limit)

    def settle(self, lane: Lane) -> None:
        """Block until `lane`'s writes are done (or skipped)."""
        with self._changed:
            self._changed.wait_for(lambda: lane.queued == 0)

    def close(self) -> None:
        """The thread ends once its queue is empty."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()

    def _work(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._jobs or self._closing)
                if not self._jobs:
                    self._thread = None
                    return
                lane, job, size = self._jobs.popleft()
            if lane.error is None and not lane.dropped:
                try:
                    job()
                except BaseException as exc:  # raised by the run's next write or commit
                    lane.error = exc
            with self._changed:
                lane.queued -= 1
                self._bytes -= size
                self._changed.notify_all()
