"""The report's figures: the period, and one frozen dataclass per table of
the report, each with the JSON it turns into (SPEC §4: the keys of ``report
--format json``).  Built by `build.py`, rendered by `text.py` and `views/page`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from ...coerce import parse_time
from ...errors import BadInput
from ...model.expr import COMPARE
from ...model.flow import Flow, Target
from ...records import Lead

# --------------------------------------------------------------------------
# The period
# --------------------------------------------------------------------------

_ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Period:
    """``since <= at <= until``; an open end when None.  `end` is the
    exclusive bound the queries use."""

    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(cls, since: str | None = None, until: str | None = None) -> Period:
        """From `--since`/`--until` text: a date (a whole day: ``--until
        2026-03-31`` includes that day) or an ISO 8601 time."""
        start = _bound(since, "--since", end_of_day=False)
        stop = _bound(until, "--until", end_of_day=True)
        if start is not None and stop is not None and stop < start:
            raise BadInput(f"--until {until} is before --since {since}")
        return cls(start, stop)

    @property
    def end(self) -> datetime | None:
        return None if self.until is None else self.until + _ONE_MICROSECOND

    def to_json(self) -> dict[str, str | None]:
        return {
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
        }

    def __str__(self) -> str:
        if self.since is None and self.until is None:
            return "all time"
        start = "the start" if self.since is None else short_time(self.since)
        stop = "now" if self.until is None else short_time(self.until)
        return f"{start} to {stop}"


def _bound(text: str | None, what: str, *, end_of_day: bool) -> datetime | None:
    if text is None or not text.strip():
        return None
    value = parse_time(text, what)
    try:
        date.fromisoformat(text.strip())
    except ValueError:
        return value
    return value + timedelta(days=1) - _ONE_MICROSECOND if end_of_day else value


def short_time(value: datetime) -> str:
    if value.hour == value.minute == value.second == 0 and value.microsecond == 0:
        return value.date().isoformat()
    if (value + _ONE_MICROSECOND).hour == 0 and value.second == 59 and value.microsecond == 999_999:
        return value.date().isoformat()
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------


def ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


def round_days(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass(frozen=True, slots=True)
class StageFigures:
    stage: str
    team: str | None
    main_line: bool
    entered: int
    current: int
    advanced: int
    median_days: float | None

    @property
    def conversion(self) -> float | None:
        return ratio(self.advanced, self.entered)

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "team": self.team,
            "entered": self.entered,
            "current": self.current,
            "advanced": self.advanced,
            "conversion": self.conversion,
            "median_days": round_days(self.median_days),
            "main_line": self.main_line,
        }


@dataclass(frozen=True, slots=True)
class TeamFigures:
    team: str
    title: str
    stages: tuple[str, ...]
    entered: int
    handed_off: int | None  # None for the last team: there is no later one
    end_to_end: float | None  # first main-line stage -> this team's last stage

    @property
    def conversion(self) -> float | None:
        return None if self.handed_off is None else ratio(self.handed_off, self.entered)

    def to_json(self) -> dict[str, Any]:
        return {
            "team": self.team,
            "title": self.title,
            "stages": list(self.stages),
            "entered": self.entered,
            "handed_off": self.handed_off,
            "conversion": self.conversion,
            "end_to_end": self.end_to_end,
        }


@dataclass(frozen=True, slots=True)
class TargetResult:
    target: Target
    team: str
    actual: float | None  # percent for conversion targets, days for time targets
    basis: int  # lead-cycles entering the stage, or passes that left it

    @property
    def unit(self) -> str:
        return "%" if self.target.kind == "conversion" else "days"

    @property
    def met(self) -> bool | None:
        if self.actual is None:
            return None
        return COMPARE[self.target.op](self.actual, self.target.value)

    def to_json(self) -> dict[str, Any]:
        t = self.target
        return {
            "target": str(t),
            "team": self.team,
            "kind": t.kind,
            "stage": t.stage,
            "to": t.to,
            "op": t.op,
            "value": t.value,
            "unit": self.unit,
            "actual": self.actual,
            "met": self.met,
            "basis": self.basis,
        }


@dataclass(frozen=True, slots=True)
class Reach:
    team: str | None  # None: the last main-line stage
    stage: str
    reached: int
    entered: int

    @property
    def conversion(self) -> float | None:
        return ratio(self.reached, self.entered)

    def to_json(self) -> dict[str, Any]:
        return {
            "team": self.team,
            "stage": self.stage,
            "reached": self.reached,
            "conversion": self.conversion,
        }


@dataclass(frozen=True, slots=True)
class EndToEnd:
    start: str | None
    entered: int
    last: Reach | None
    teams: tuple[Reach, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.start,
            "entered": self.entered,
            "to": None if self.last is None else self.last.stage,
            "reached": 0 if self.last is None else self.last.reached,
            "conversion": None if self.last is None else self.last.conversion,
            "teams": [reach.to_json() for reach in self.teams],
        }


@dataclass(frozen=True, slots=True)
class SlaFigures:
    stage: str
    team: str | None
    sla_days: float
    breaches: int
    overdue_now: int

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "team": self.team,
            "sla_days": self.sla_days,
            "breaches": self.breaches,
            "overdue_now": self.overdue_now,
        }


@dataclass(frozen=True, slots=True)
class Recycled:
    lead_cycles: int
    later_advanced: int
    by_stage: tuple[tuple[str, int, int], ...]  # (recycled from, lead-cycles, later advanced)

    @property
    def conversion(self) -> float | None:
        return ratio(self.later_advanced, self.lead_cycles)

    def to_json(self) -> dict[str, Any]:
        return {
            "lead_cycles": self.lead_cycles,
            "later_advanced": self.later_advanced,
            "conversion": self.conversion,
            "by_stage": [
                {"stage": stage, "lead_cycles": n, "later_advanced": m} for stage, n, m in self.by_stage
            ],
        }


@dataclass(frozen=True, slots=True)
class ChannelFigures:
    channel: str | None  # None: no event with a channel before the entry
    stages: tuple[StageFigures, ...]  # only stages entered through this channel

    def to_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "stages": [
                {
                    "stage": s.stage,
                    "entered": s.entered,
                    "advanced": s.advanced,
                    "conversion": s.conversion,
                }
                for s in self.stages
            ],
        }


@dataclass(frozen=True, slots=True)
class Group:
    value: str | None
    stages: tuple[StageFigures, ...]
    teams: tuple[TeamFigures, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "stages": [s.to_json() for s in self.stages],
            "teams": [t.to_json() for t in self.teams],
        }


@dataclass(frozen=True, slots=True)
class Report:
    definition: Flow
    version: int
    period: Period
    generated_at: datetime
    stages: tuple[StageFigures, ...]
    teams: tuple[TeamFigures, ...]
    targets: tuple[TargetResult, ...]
    end_to_end: EndToEnd
    sla: tuple[SlaFigures, ...]
    recycled: Recycled
    channels: tuple[ChannelFigures, ...]
    by: str | None = None
    groups: tuple[Group, ...] = field(default=())

    @property
    def flow(self) -> str:
        return self.definition.name

    @property
    def title(self) -> str:
        return self.definition.title or self.definition.name

    @property
    def sla_breaches(self) -> int:
        return sum(s.breaches for s in self.sla)

    def stage(self, name: str) -> StageFigures | None:
        return next((s for s in self.stages if s.stage == name), None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "flow": self.flow,
            "version": self.version,
            "title": self.title,
            "generated_at": self.generated_at.isoformat(),
            "period": self.period.to_json(),
            "stages": [s.to_json() for s in self.stages],
            "teams": [t.to_json() for t in self.teams],
            "targets": [t.to_json() for t in self.targets],
            "sla_breaches": self.sla_breaches,
            "sla": [s.to_json() for s in self.sla],
            "recycled": self.recycled.to_json(),
            "channels": [c.to_json() for c in self.channels],
            "end_to_end": self.end_to_end.to_json(),
        }
        if self.by is not None:
            out["by"] = self.by
            out["groups"] = [g.to_json() for g in self.groups]
        return out


@dataclass(frozen=True, slots=True)
class Overdue:
    lead: Lead
    sla_days: float
    due_at: datetime
    now: datetime

    @property
    def overdue_days(self) -> float:
        return round((self.now - self.due_at).total_seconds() / 86400, 4)

    def to_json(self) -> dict[str, Any]:
        lead = self.lead
        return {
            "id": lead.id,
            "flow": lead.flow,
            "stage": lead.stage,
            "score": lead.score,
            "entered_at": lead.entered_at.isoformat(),
            "sla_days": self.sla_days,
            "due_at": self.due_at.isoformat(),
            "overdue_days": self.overdue_days,
        }
