"""How many runs an `ObjectSink` holds in memory at once (`Room`).

A run's bytes stay in memory until its commit (a run below the part size whole, a larger
one its unfinished parts): when commits fall behind, the next run must wait to begin
rather than memory growing with the job. That wait stalls the writer, and the fetchers
with it, so the bound follows the runs' size: a few runs may always be held, more while
that many runs of the largest size seen at a commit fit in a budget. The bytes held when
a run begins say little (the runs being fetched fill up afterwards: with large's 5 MB
runs, a budget on them let 8 runs be held and the peak grew by ~10 MB). Medium, under
load, 10 jobs each: the writer waited 0.5-0.8 s of a ~1.8 s job for runs to be let go with
`runs_in_flight` + 2 held, 0.1-0.2 s with up to 6 more (its 2.5 MB runs); large's peak
stayed where it was (121-125 MB against 119-126), medium's rose ~5-10 MB.
"""

from __future__ import annotations

import anyio


class Room:
    """A run may begin while fewer than `fewest` are held, or fewer than `most` whose
    number, at the largest a run has held (`note`), fits in `budget` bytes."""

    def __init__(self, fewest: int, most: int, budget: int) -> None:
        self.fewest, self.most, self.budget = fewest, max(fewest, most), budget
        self.held = 0
        self.largest: int | None = None  # none committed yet: no more than `fewest`
        self._freed: anyio.Event | None = None  # set when a run is let go (made on the loop)

    def fits(self) -> bool:
        if self.held < self.fewest:
            return True
        if self.largest is None or self.held >= self.most:
            return False
        return (self.held + 1) * self.largest <= self.budget

    def note(self, held_bytes: int) -> None:
        """What a whole run held, at its commit."""
        self.largest = max(self.largest or 0, held_bytes)

    async def take(self) -> None:
        """Wait until one more run fits, then count it held."""
        while not self.fits():
            if self._freed is None:
                self._freed = anyio.Event()
            await self._freed.wait()
        self.held += 1

    def give(self) -> None:
        """A run let go (committed or aborted): those waiting try again."""
        self.held -= 1
        if self._freed is not None:
            freed, self._freed = self._freed, None
            freed.set()
