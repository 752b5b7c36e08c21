"""Computing the report: the store streams each lead's history, a chunk of
leads at a time; `_ReportCounts` folds it lead by lead into counters; the figures
are read off those.  Also the leads past their SLA now.

Why a fold and not window functions: see `saleflow.store.reporting`.

Over 500 lines on purpose: the fold (`_ReportCounts`) and the figures read
off it name the same counters; apart, every counter would be spelled in two
modules.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from ...errors import BadInput, NotFound, did_you_mean
from ...model.flow import FieldDef, Flow, Stage
from ...records import History, ReportSource
from .figures import (
    ChannelFigures,
    EndToEnd,
    Group,
    Overdue,
    Period,
    Reach,
    Recycled,
    Report,
    SlaFigures,
    StageFigures,
    TargetResult,
    TeamFigures,
    ratio,
    round_days,
)
from .medians import Medians

if TYPE_CHECKING:
    from ...runtime.engine import Engine


def _source(store: object) -> ReportSource:
    if not isinstance(store, ReportSource):
        raise BadInput(f"the store {store!r} cannot compute reports")
    return store


# --------------------------------------------------------------------------
# Building it
# --------------------------------------------------------------------------


class _Funnel:
    """Lead-cycles per key and furthest main-line position reached after
    entering it (None: none)."""

    def __init__(self) -> None:
        self._counts: dict[str, Counter[int | None]] = defaultdict(Counter)

    def add(self, key: str, furthest: int | None, lead_cycles: int) -> None:
        self._counts[key][furthest] += lead_cycles

    def entered(self, key: str) -> int:
        return sum(self._counts[key].values()) if key in self._counts else 0

    def reached(self, key: str, position: int) -> int:
        """Lead-cycles entering `key` that later reached `position` or beyond."""
        if key not in self._counts:
            return 0
        return sum(n for f, n in self._counts[key].items() if f is not None and f >= position)


@dataclass(frozen=True, slots=True)
class _Layout:
    """What the report reads from the flow, computed once."""

    flow: Flow
    stages: tuple[Stage, ...]  # main line first, then side stages
    positions: dict[str, int]

    @classmethod
    def of(cls, flow: Flow) -> _Layout:
        main = list(dict.fromkeys(flow.main_line))
        by_name = {name: flow.stage(name) for name in main}
        side = [s for s in dict.fromkeys(s.name for s in flow.stages) if s not in by_name]
        stages = [by_name[name] for name in main] + [flow.stage(name) for name in side]
        return cls(flow, tuple(s for s in stages if s is not None), {n: i for i, n in enumerate(main)})

    @property
    def start(self) -> str | None:
        """The first main-line stage (the initial one when it is on it)."""
        initial = self.flow.initial
        if initial is not None and initial.name in self.positions:
            return initial.name
        return next(iter(self.positions), None)

    def team_stages(self, team_name: str) -> list[str]:
        team = self.flow.team(team_name)
        return [] if team is None else [s for s in dict.fromkeys(team.stages) if s in self.positions]

    def teams(self) -> list[tuple[str, str, list[str]]]:
        seen: set[str] = set()
        out = []
        for team in self.flow.teams:
            if team.name in seen:
                continue
            seen.add(team.name)
            members = self.team_stages(team.name)
            if members:
                out.append((team.name, team.title or team.name, members))
        return out

    def advanced(self, funnel: _Funnel, stage: str) -> int:
        position = self.positions.get(stage)
        return funnel.reached(stage, 0 if position is None else position + 1)

    def reach(self, funnel: _Funnel, start: str, target: str) -> int:
        """Lead-cycles entering `start` that reached `target` or beyond."""
        if self.positions[target] <= self.positions[start]:
            return funnel.entered(start)
        return funnel.reached(start, self.positions[target])


def _stage_figures(
    layout: _Layout, funnel: _Funnel, current: Mapping[str, int], medians: Mapping[str, float]
) -> tuple[StageFigures, ...]:
    return tuple(
        StageFigures(
            stage=s.name,
            team=s.team,
            main_line=s.name in layout.positions,
            entered=funnel.entered(s.name),
            current=current.get(s.name, 0),
            advanced=layout.advanced(funnel, s.name),
            median_days=medians.get(s.name),
        )
        for s in layout.stages
    )


def _team_figures(layout: _Layout, teams: _Funnel, journeys: _Funnel) -> tuple[TeamFigures, ...]:
    """Team figures; `journeys` holds the leads entering the first stage
    and how far each got in any cycle (for end-to-end)."""
    start = layout.start
    out = []
    for name, title, members in layout.teams():
        last = members[-1]
        later = layout.positions[last] + 1
        end_to_end = None
        if start is not None:
            end_to_end = ratio(layout.reach(journeys, start, last), journeys.entered(start))
        out.append(
            TeamFigures(
                team=name,
                title=title,
                stages=tuple(members),
                entered=teams.entered(name),
                handed_off=teams.reached(name, later) if later < len(layout.positions) else None,
                end_to_end=end_to_end,
            )
        )
    return tuple(out)


def _end_to_end(layout: _Layout, funnel: _Funnel) -> EndToEnd:
    """Leads entering the first main-line stage, and how many reached each
    team's last stage and the last stage, in any cycle."""
    start = layout.start
    if start is None:
        return EndToEnd(None, 0, None, ())
    entered = funnel.entered(start)
    teams = tuple(
        Reach(name, members[-1], layout.reach(funnel, start, members[-1]), entered)
        for name, _, members in layout.teams()
    )
    last_stage = next(reversed(layout.positions))
    last = Reach(None, last_stage, layout.reach(funnel, start, last_stage), entered)
    return EndToEnd(start, entered, last, teams)


def _targets(
    layout: _Layout, funnel: _Funnel, medians: Mapping[str, float], passes: Mapping[str, int]
) -> tuple[TargetResult, ...]:
    out = []
    for team in layout.flow.teams:
        for target in team.targets:
            if target.kind == "conversion" and target.to is not None:
                entered = funnel.entered(target.stage)
                reached = 0
                if target.stage in layout.positions and target.to in layout.positions:
                    reached = layout.reach(funnel, target.stage, target.to)
                share = ratio(reached, entered)
                actual = None if share is None else share * 100
                out.append(TargetResult(target, team.name, actual, entered))
            else:
                median = medians.get(target.stage)
                out.append(TargetResult(target, team.name, round_days(median), passes.get(target.stage, 0)))
    return tuple(out)


def _group_key(definition: FieldDef | None, raw: str | None) -> str | None:
    """A group's value as the flow writes it (``true``, ``800``, ``saas``)."""
    if raw is None or definition is None:
        return raw
    kind = definition.type.kind
    if kind == "bool":
        return "true" if raw.lower() in ("1", "true") else "false" if raw.lower() in ("0", "false") else raw
    if kind in ("int", "number", "money"):
        try:
            number = float(raw)
        except ValueError:
            return raw
        return str(int(number)) if number.is_integer() else repr(number)
    return raw


def _group_order(definition: FieldDef | None) -> Callable[[str | None], tuple[Any, ...]]:
    """Enum values in declared order, numbers by value, unset last."""
    choices = {c: i for i, c in enumerate(definition.type.choices)} if definition else {}
    numeric = definition is not None and definition.type.kind in ("int", "number", "money")

    def key(value: str | None) -> tuple[Any, ...]:
        if value is None:
            return (2, 0, "")
        if value in choices:
            return (0, choices[value], value)
        if numeric:
            try:
                return (1, float(value), value)
            except ValueError:
                pass
        return (1, 0.0, value)

    return key


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_DAY = 86_400_000_000  # microseconds


def _micros(value: datetime | None) -> int | None:
    return None if value is None else (value - _EPOCH) // _MICROSECOND


class _ReportCounts:
    """What the report counts, folded one lead at a time.

    A lead's entries are walked twice: backwards, for the furthest main-line
    position reached after each entry (in the same cycle, and at all), then
    forwards over the entries in the period.  Memory: counters that do not
    grow with the number of leads, and `Medians`, which spills to a temporary
    file past a fixed number of values.  `group` maps a lead's raw group
    value to the one reported."""

    def __init__(
        self,
        layout: _Layout,
        period: Period,
        medians: Medians,
        group: Callable[[str | None], str | None] | None = None,
    ) -> None:
        self.positions = layout.positions
        self.team_of = {s: team for team, _, members in layout.teams() for s in members}
        self.known = {s.name for s in layout.stages}
        self.lo, self.hi = _micros(period.since), _micros(period.end)
        self.group = group
        # (group, stage, last-touch channel, furthest later) -> lead-cycles
        self.stages: Counter[tuple[str | None, str, str | None, int | None]] = Counter()
        # (group, team, furthest later) -> lead-cycles
        self.teams: Counter[tuple[str | None, str, int | None]] = Counter()
        # days in stage per stage, and per (group, stage) when grouped
        self.medians = medians
        # (recycled from, went further later) -> recycles
        self.recycles: Counter[tuple[str, bool]] = Counter()
        # (group, furthest later in any cycle) -> leads entering the first stage
        self.start = layout.start
        self.journeys: Counter[tuple[str | None, int | None]] = Counter()

    def add(self, history: History) -> None:
        entries = history.entries
        count = len(entries)
        position, lo, hi = self.positions.get, self.lo, self.hi
        place: list[int | None] = [None] * count
        later: list[int | None] = [None] * count  # furthest after, same cycle
        after: list[int] = [-1] * count  # furthest after, any cycle (-1: none)
        in_cycle: int | None = None
        at_all = -1
        cycle = None
        for i in range(count - 1, -1, -1):
            entry = entries[i]
            if entry[1] != cycle:
                cycle, in_cycle = entry[1], None
            later[i] = in_cycle
            after[i] = at_all
            p = place[i] = position(entry[3])
            if p is not None:
                if in_cycle is None or p > in_cycle:
                    in_cycle = p
                if p > at_all:
                    at_all = p

        group = history.group if self.group is None else self.group(history.group)
        touches = history.touches
        times = [t[1] for t in touches] if touches else None
        stages, teams, team_of, known = self.stages, self.teams, self.team_of, self.known
        seen: set[tuple[int, str]] = set()
        before = -1  # furthest before, any cycle (-1: none)
        start, started = self.start, False
        for i, (_, cycle, source, stage, kind, at) in enumerate(entries):
            if (lo is None or at >= lo) and (hi is None or at < hi):
                if stage == start and not started:
                    started = True
                    self.journeys[(group, after[i] if after[i] >= 0 else None)] += 1
                if (cycle, stage) not in seen:
                    seen.add((cycle, stage))
                    channel = None
                    if times:
                        k = bisect_right(times, at)
                        channel = touches[k - 1][2] if k else None
                    stages[(group, stage, channel, later[i])] += 1
                    # An earlier entry into this stage would have counted its team.
                    team = team_of.get(stage)
                    if team is not None and (cycle, "\x00" + team) not in seen:
                        seen.add((cycle, "\x00" + team))
                        teams[(group, team, later[i])] += 1
                if i + 1 < count and stage in known:
                    days = (entries[i + 1][5] - at) / _DAY
                    self.medians.add(stage, days)
                    if self.group is not None:
                        self.medians.add((group, stage), days)
                if kind == "recycle":
                    self.recycles[(source or "?", after[i] > before)] += 1
            p = place[i]
            if p is not None and p > before:
                before = p


def build_report(
    store: Any,
    flow: Flow,
    *,
    version: int,
    now: datetime,
    period: Period | None = None,
    by: str | None = None,
    definitions: Callable[[int], Flow] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """The report of `flow` (deployed as `version`) over `period`;
    `progress(n)` is called after each chunk of `n` leads read.

    Leads of every version of the flow count; stages, teams and targets are
    `flow`'s.  `definitions(v)` gives version v's flow, for the SLAs of leads
    still on an older version (default: `flow` for all)."""
    source = _source(store)
    period = period or Period()
    layout = _Layout.of(flow)
    name = flow.name
    by_field: FieldDef | None = None
    if by is not None:
        by_field = flow.field(by)
        if by_field is None:
            hint = did_you_mean(by, [f.name for f in flow.fields])
            raise NotFound(f'flow "{name}" has no field "{by}" to group by' + (f"; {hint}" if hint else ""))
    default = None if by_field is None else by_field.default

    def norm(raw: str | None) -> str | None:
        return _group_key(by_field, raw)

    with Medians() as medians:
        tally = _ReportCounts(layout, period, medians, norm if by is not None else None)
        for chunk in source.iter_histories(name, group=by, group_default=default, touches=True):
            for history in chunk:
                tally.add(history)
            if progress is not None:
                progress(len(chunk))
        days_in = {key: medians.median(key) for key in medians.counts}
    passes = {key: n for key, n in medians.counts.items() if isinstance(key, str)}

    # Totals, per channel and per group, from the same counts.
    stages, teams, journeys = _Funnel(), _Funnel(), _Funnel()
    by_channel: dict[str | None, _Funnel] = defaultdict(_Funnel)
    by_group: dict[str | None, tuple[_Funnel, _Funnel, _Funnel]] = defaultdict(
        lambda: (_Funnel(), _Funnel(), _Funnel())
    )
    for (group, stage, channel, furthest), n in tally.stages.items():
        stages.add(stage, furthest, n)
        by_channel[channel].add(stage, furthest, n)
        by_group[group][0].add(stage, furthest, n)
    for (group, team, furthest), n in tally.teams.items():
        teams.add(team, furthest, n)
        by_group[group][1].add(team, furthest, n)
    if layout.start is not None:
        for (group, furthest), n in tally.journeys.items():
            journeys.add(layout.start, furthest, n)
            by_group[group][2].add(layout.start, furthest, n)
    current: Counter[str] = Counter()
    group_current: dict[str | None, Counter[str]] = defaultdict(Counter)
    for row in source.stage_counts(name, group=by, group_default=default):
        current[row.stage] += row.leads
        group_current[norm(row.group)][row.stage] += row.leads
    stage_medians = {key: days for key, days in days_in.items() if isinstance(key, str) and days is not None}
    stage_figures = _stage_figures(layout, stages, current, stage_medians)

    channel_order = {e.channel: i for i, e in enumerate(flow.events) if e.channel}

    def channel_key(item: tuple[str | None, _Funnel]) -> tuple[bool, int, str]:
        channel = item[0]
        return (channel is None, channel_order.get(channel or "", len(channel_order)), channel or "")

    channels = tuple(
        ChannelFigures(channel, tuple(s for s in _stage_figures(layout, funnel, {}, {}) if s.entered))
        for channel, funnel in sorted(by_channel.items(), key=channel_key)
    )

    groups: tuple[Group, ...] = ()
    if by is not None:
        group_medians: dict[str | None, dict[str, float]] = defaultdict(dict)
        for key, days in days_in.items():
            if isinstance(key, tuple) and days is not None:
                group_medians[key[0]][key[1]] = days
        values = set(by_group) | set(group_current)
        groups = tuple(
            Group(
                value,
                _stage_figures(
                    layout,
                    by_group[value][0],
                    group_current[value],
                    group_medians[value],
                ),
                _team_figures(layout, by_group[value][1], by_group[value][2]),
            )
            for value in sorted(values, key=_group_order(by_field))
        )

    breaches = source.sla_breach_counts(name, since=period.since, until=period.end)
    overdue: Counter[str] = Counter()
    for lead_flow, lead_version in source.lead_versions(name):
        definition = definitions(lead_version) if definitions is not None else flow
        overdue.update(source.overdue_counts(lead_flow, lead_version, sla_cutoffs(definition, now)))
    sla = tuple(
        SlaFigures(s.name, s.team, s.sla_days, breaches.get(s.name, 0), overdue.get(s.name, 0))
        for s in layout.stages
        if s.sla_days is not None
    )

    recycled_from: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (stage, further), n in tally.recycles.items():
        recycled_from[stage][0] += n
        recycled_from[stage][1] += n if further else 0
    recycled = Recycled(
        lead_cycles=sum(n for n, _ in recycled_from.values()),
        later_advanced=sum(m for _, m in recycled_from.values()),
        by_stage=tuple(
            (stage, n, m)
            for stage, (n, m) in sorted(
                recycled_from.items(),
                key=lambda item: (layout.positions.get(item[0], len(layout.positions)), item[0]),
            )
        ),
    )

    return Report(
        definition=flow,
        version=version,
        period=period,
        generated_at=now,
        stages=stage_figures,
        teams=_team_figures(layout, teams, journeys),
        targets=_targets(layout, stages, stage_medians, passes),
        end_to_end=_end_to_end(layout, journeys),
        sla=sla,
        recycled=recycled,
        channels=channels,
        by=by,
        groups=groups,
    )


def sla_cutoffs(flow: Flow, now: datetime, stages: Iterable[str] | None = None) -> dict[str, datetime]:
    """Per stage with an SLA (of `stages`, when given): a lead that entered it
    before this time is overdue at `now` (as `tick` judges a breach)."""
    wanted = None if stages is None else set(stages)
    return {
        s.name: now - timedelta(days=s.sla_days)
        for s in flow.stages
        if s.sla_days is not None and not s.final and (wanted is None or s.name in wanted)
    }


def report_for(
    engine: Engine,
    flow: str | None = None,
    *,
    period: Period | None = None,
    by: str | None = None,
    progress: Callable[[int], None] | None = None,
    version: int | None = None,
    now: datetime | None = None,
) -> Report:
    """The report of the deployed flow `flow` (the only one when None), as
    its `version` defines it (the latest when None), as of `now` (the
    engine's clock when None)."""
    if flow is None:
        names = engine.store.flow_names()
        if not names:
            raise NotFound("no flow is deployed; run `saleflow deploy FLOW` first")
        if len(names) > 1:
            raise BadInput(f"several flows are deployed ({', '.join(names)}); say which with --flow")
        flow = names[0]
    compiled = engine.compiled(flow, version)
    name = compiled.name
    return build_report(
        engine.store,
        compiled.flow,
        version=compiled.version,
        now=engine.now() if now is None else now,
        period=period,
        by=by,
        definitions=lambda version: engine.compiled(name, version).flow,
        progress=progress,
    )


# --------------------------------------------------------------------------
# Overdue leads (`saleflow leads --overdue`)
# --------------------------------------------------------------------------


def overdue_leads(
    engine: Engine, *, flow: str | None = None, stage: str | None = None, team: str | None = None
) -> Iterator[Overdue]:
    """Leads past their stage's SLA now, by flow, version and id, streamed."""
    source = _source(engine.store)
    now = engine.now()
    if flow is not None:
        engine.compiled(flow)  # NotFound for a flow that is not deployed
    versions = source.lead_versions(flow)
    if team is not None and not any(engine.compiled(f, v).flow.team(team) for f, v in versions):
        raise NotFound(f'no deployed flow with leads has a team "{team}"')
    for name, version in versions:
        definition = engine.compiled(name, version).flow
        wanted = [
            s.name
            for s in definition.stages
            if (stage is None or s.name == stage) and (team is None or s.team == team)
        ]
        cutoffs = sla_cutoffs(definition, now, wanted)
        for chunk in source.iter_overdue(name, version, cutoffs):
            for lead in engine.scored(chunk):  # scores as of now, as `leads` shows them
                sla_days = cast(float, definition.stage(lead.stage).sla_days)  # type: ignore[union-attr]
                yield Overdue(lead, sla_days, lead.entered_at + timedelta(days=sla_days), now)
