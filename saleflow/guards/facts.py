"""Facts about one lead: its fields, events and times, and the counts,
windows and days that expressions read from them (`Facts`).

Layer 2, part of the guards.  What a fact derives from the events (counts
per event, the latest time of each) is computed once, on first use, and
shared by every expression evaluated on the same facts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as attr
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ..records import EventRecord, FieldValue, Lead

if TYPE_CHECKING:
    from .evaluate import Evaluator

Number = int | float

_SECONDS_PER_DAY = 86400.0


class _EventCounts:
    """What `Facts` derives from its events, each part computed on first use."""

    __slots__ = ("_by_name", "_events", "_latest", "_totals", "_windows", "scores")

    def __init__(self, events: Sequence[EventRecord]) -> None:
        self._events = events
        self._totals: dict[str, int] | None = None
        self._by_name: dict[str, list[EventRecord]] | None = None
        self._windows: dict[tuple[str, float], int] | None = None
        self._latest: dict[str, float | None] | None = None
        self.scores: dict[Evaluator, Number] = {}

    @property
    def totals(self) -> dict[str, int]:
        """How often each event happened."""
        totals = self._totals
        if totals is None:
            totals = self._totals = {}
            get = totals.get
            for event in self._events:
                name = event.name
                totals[name] = get(name, 0) + event.count
        return totals

    @property
    def windows(self) -> dict[tuple[str, float], int]:
        """Counts in windows, as they are computed: (event, days) -> count."""
        if self._windows is None:
            self._windows = {}
        return self._windows

    @property
    def latest(self) -> dict[str, float | None]:
        """Days since each event's latest time, as they are computed."""
        if self._latest is None:
            self._latest = {}
        return self._latest

    def of(self, name: str) -> list[EventRecord]:
        """The events called `name`."""
        by_name = self._by_name
        if by_name is None:
            by_name = {}
            for event in self._events:
                by_name.setdefault(event.name, []).append(event)
            self._by_name = by_name
        return by_name.get(name, [])


@dataclass(slots=True)
class Facts:
    """Everything a gate may read about one lead at one moment.  `events`
    are the current cycle's only (the engine filters them).

    Read-only by convention, not frozen: facts are built a few times per
    lead and move (an import builds some 25,000), and a frozen dataclass
    costs several times as much to build."""

    fields: Mapping[str, FieldValue]
    events: Sequence[EventRecord]
    now: datetime
    entered_at: datetime
    created_at: datetime
    _tally: _EventCounts | None = attr(default=None, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, lead: Lead, events: Sequence[EventRecord], now: datetime) -> Facts:
        """The facts of `lead` at `now`, keeping only its current cycle's events."""
        current = [event for event in events if event.cycle == lead.cycle]
        return cls(lead.fields, current, now, lead.entered_at, lead.created_at)

    def entering(self, entered_at: datetime) -> Facts:
        """The same facts after a move into a stage at `entered_at`.  The
        derived counts and scores are shared: only `days_in_stage` differs,
        so callers use this when no score rule reads it."""
        moved = Facts(self.fields, self.events, self.now, entered_at, self.created_at)
        moved._tally = self._tally
        return moved

    def _counts(self) -> _EventCounts:
        tally = self._tally
        if tally is None:
            tally = self._tally = _EventCounts(self.events)
        return tally

    def count(self, event: str) -> int:
        """How often `event` happened in the current cycle."""
        return self._counts().totals.get(event, 0)

    def window(self, event: str, days: float) -> int:
        """How often `event` happened in the `days` days (a fraction for hours) up to now."""
        tally = self._counts()
        if event not in tally.totals:
            return 0
        key = (event, days)
        found = tally.windows.get(key)
        if found is None:
            since = window_start(self.now, window_span(days))
            now = self.now
            found = 0
            for record in tally.of(event):
                if since <= record.at <= now:
                    found += record.count
            tally.windows[key] = found
        return found

    def days_since(self, event: str) -> float | None:
        """Days since the latest `event` at or before now; None if none."""
        tally = self._counts()
        if event not in tally.totals:
            return None
        if event not in tally.latest:
            now = self.now
            times = [e.at for e in tally.of(event) if e.at <= now]
            tally.latest[event] = _days(now - max(times)) if times else None
        return tally.latest[event]

    @property
    def days_in_stage(self) -> float:
        return _days(self.now - self.entered_at)

    @property
    def days_since_created(self) -> float:
        return _days(self.now - self.created_at)


def window_span(days: float) -> timedelta | None:
    """The length of a window of `days` (a fraction for hours); None when
    it reaches back past year 1: such a window holds everything."""
    try:
        return timedelta(days=days)
    except OverflowError:
        return None


def window_start(now: datetime, span: timedelta | None) -> datetime:
    """The first moment of a window of length `span` (`window_span`) that
    ends at `now`: an event is in it at or after this and at or before now."""
    if span is None:
        return _OLDEST
    try:
        return now - span
    except OverflowError:  # reaching back past year 1 holds everything
        return _OLDEST


_OLDEST = datetime.min.replace(tzinfo=UTC)


def _days(delta: timedelta) -> float:
    return delta.total_seconds() / _SECONDS_PER_DAY
