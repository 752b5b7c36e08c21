"""When a failed delivery is tried again, and when it is given up.

Exponential back-off with jitter, on the engine's clock (SPEC §8: `--now`
moves it too): the n-th failure of an entry waits ``min(BASE * 2**(n-1),
CAP)`` scaled by a random factor in [1 - JITTER, 1] (so that many leads
failing together do not come back together), but never past the entry's
deadline, GIVE_UP after it was queued; a failure at or after the deadline
gives the entry up.  With BASE 10 s and CAP 1 h an entry is tried about
35 times in its 24 hours.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

BASE = timedelta(seconds=10)
CAP = timedelta(hours=1)
JITTER = 0.5
GIVE_UP = timedelta(hours=24)


def backoff(attempts: int, rng: random.Random | None = None) -> timedelta:
    """The wait after the `attempts`-th failure (1 for the first)."""
    if attempts < 1:
        raise ValueError("attempts counts from 1")
    full = CAP if attempts > 20 else min(BASE * 2 ** (attempts - 1), CAP)
    factor = 1 - JITTER * (rng or random).random()
    return full * factor


def next_attempt(
    attempts: int, queued_at: datetime, now: datetime, rng: random.Random | None = None
) -> datetime | None:
    """When to try again after the `attempts`-th failure at `now` of an
    entry queued at `queued_at`; None: give it up."""
    deadline = queued_at + GIVE_UP
    if now >= deadline:
        return None
    return min(now + backoff(attempts, rng), deadline)
