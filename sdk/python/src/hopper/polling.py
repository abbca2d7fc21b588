"""`Poll`: the schedule of `wait` loops (jobs, documents, workflows), shared by both clients.

Pauses start at 50 ms and grow by half each time up to 1 s (or the caller's
`max_pause`), so a short job is seen almost at once and a long one costs about
one request a second; the deadline turns into the builtin `TimeoutError`
naming the last state seen.
"""

from __future__ import annotations

import time

FIRST_PAUSE_S = 0.05
MAX_PAUSE_S = 1.0


class Poll:
    """A deadline and a growing pause."""

    def __init__(self, timeout: float, what: str, max_pause: float = MAX_PAUSE_S) -> None:
        if max_pause <= 0:
            raise ValueError(
                f"the longest pause between two looks must be positive, not {max_pause}"
            )
        self._deadline = time.monotonic() + timeout
        self._timeout = timeout
        self._what = what
        self._max_pause = max_pause
        self._pause = min(FIRST_PAUSE_S, max_pause)

    def next_pause(self, state: str) -> float:
        """The pause before the next look; `TimeoutError` when past the deadline."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{self._what} after {self._timeout:g} s (last state: {state})")
        pause = min(self._pause, left)
        self._pause = min(self._max_pause, self._pause * 1.5)
        return pause
