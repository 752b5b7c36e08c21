"""What changed between two versions of a flow: `deploy --dry-run`'s list.

Layer 2.  Compares two parsed flows' model objects (spans and tests aside,
as `Flow` equality does), stage by stage, then skips, recycles, score rules,
targets, conditions, fields and events.  Expressions are quoted as an author
writes them (`unparse`), so a changed gate reads `gate was score >= 60, now score >= 70`.

Each change is a `Change`: what it is about (`what`: stage, gate, sla,
capacity, team, manual, final, initial, main line, skip, recycle, score
rule, target, condition, field, event), the stage it belongs to when it
belongs to one, whether it was added, removed or changed, and the text
before and after.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .expr import Expr, duration_text
from .flow import FieldDef, Flow, Recycle, ScoreRule, Skip, Stage
from .unparse import literal_text, unparse


@dataclass(frozen=True, slots=True)
class Change:
    what: str
    change: str  # "added" | "removed" | "changed"
    stage: str | None = None
    before: str | None = None
    after: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "change": self.change,
            "stage": self.stage,
            "before": self.before,
            "after": self.after,
        }

    def __str__(self) -> str:
        where = f'stage "{self.stage}": ' if self.stage is not None else ""
        if self.what == "stage":
            return f'stage "{self.stage}" {self.change}' + (
                f" ({self.after or self.before})" if (self.after or self.before) else ""
            )
        if self.change == "added":
            return f"{where}{self.what} added: {self.after}"
        if self.change == "removed":
            return f"{where}{self.what} removed: {self.before}"
        return f"{where}{self.what} was {self.before}, now {self.after}"


def _expr(expr: Expr | None) -> str | None:
    return None if expr is None else unparse(expr)


def _stage_summary(stage: Stage) -> str:
    parts = [f"team {stage.team}" if stage.team else "side stage"]
    for flag in ("initial", "final", "manual"):
        if getattr(stage, flag):
            parts.append(flag)
    if stage.when is not None:
        parts.append(f"when {unparse(stage.when)}")
    if stage.sla_days is not None:
        parts.append(f"sla {duration_text(stage.sla_days)}")
    if stage.capacity is not None:
        parts.append(f"capacity {stage.capacity}")
    return ", ".join(parts)


def _stage_changes(old: Stage, new: Stage) -> list[Change]:
    name = new.name
    found: list[Change] = []

    def compare(what: str, before: str | None, after: str | None) -> None:
        if before == after:
            return
        change = "added" if before is None else "removed" if after is None else "changed"
        found.append(Change(what, change, name, before, after))

    compare("team", old.team, new.team)
    for flag in ("initial", "final", "manual"):
        if getattr(old, flag) != getattr(new, flag):
            found.append(
                Change(
                    flag, "changed", name, str(getattr(old, flag)).lower(), str(getattr(new, flag)).lower()
                )
            )
    compare("gate", _expr(old.when), _expr(new.when))
    compare(
        "sla",
        None if old.sla_days is None else duration_text(old.sla_days),
        None if new.sla_days is None else duration_text(new.sla_days),
    )
    compare(
        "capacity",
        None if old.capacity is None else str(old.capacity),
        None if new.capacity is None else str(new.capacity),
    )
    return found


def _skip_text(skip: Skip) -> str:
    return f"skip {skip.source} -> {skip.target}" + (f" when {unparse(skip.when)}" if skip.when else "")


def _recycle_text(recycle: Recycle) -> str:
    sources = ", ".join(recycle.sources)
    text = f"recycle {sources} -> {recycle.target}"
    if recycle.when is not None:
        text += f" when {unparse(recycle.when)}"
    return text + (" (auto)" if recycle.auto else "")


def _rule_text(rule: ScoreRule) -> str:
    sign = "+" if rule.points >= 0 else ""
    if rule.condition is not None:
        return f"{sign}{rule.points} if {unparse(rule.condition)}"
    assert rule.each is not None
    return f"{sign}{rule.points} each {unparse(rule.each)}"


def _field_text(field: FieldDef) -> str:
    text = f"{field.name}: {field.type}"
    return text + (f" = {literal_text(field.default)}" if field.default is not None else "")


def _keyed(
    what: str,
    old: Iterable[tuple[Any, str, str | None]],
    new: Iterable[tuple[Any, str, str | None]],
) -> list[Change]:
    """Items with a key (key, text, stage): added, removed, or changed text."""
    before = {key: (text, stage) for key, text, stage in old}
    after = {key: (text, stage) for key, text, stage in new}
    found: list[Change] = []
    for key, (text, stage) in after.items():
        if key not in before:
            found.append(Change(what, "added", stage, None, text))
        elif before[key][0] != text:
            found.append(Change(what, "changed", stage, before[key][0], text))
    for key, (text, stage) in before.items():
        if key not in after:
            found.append(Change(what, "removed", stage, text, None))
    return found


def _rules(flow: Flow) -> Iterable[tuple[Any, str, str | None]]:
    """Score rules keyed by what they count or test: a changed number of
    points is a changed rule."""
    for rule in flow.score_rules:
        body = unparse(rule.condition) if rule.condition is not None else unparse(rule.each)  # type: ignore[arg-type]
        yield (rule.condition is not None, body), _rule_text(rule), None


def _targets(flow: Flow) -> Iterable[tuple[Any, str, str | None]]:
    """Targets keyed by team, kind, stages and comparison: a changed value
    is a changed target."""
    for team in flow.teams:
        for target in team.targets:
            yield (
                (team.name, target.kind, target.stage, target.to, target.op),
                f"{team.name}: {target}",
                None,
            )


def _numbered(items: Iterable[tuple[Any, str, str | None]]) -> list[tuple[Any, str, str | None]]:
    """Keys made unique by their occurrence (a flow may repeat a rule)."""
    seen: Counter[Any] = Counter()
    out = []
    for key, text, stage in items:
        seen[key] += 1
        out.append(((key, seen[key]), text, stage))
    return out


def diff(old: Flow | None, new: Flow) -> list[Change]:
    """What changed from `old` (None: nothing deployed) to `new`, stage by stage first."""
    if old is None:
        return [Change("stage", "added", s.name, None, _stage_summary(s)) for s in new.stages]
    found: list[Change] = []
    for stage in new.stages:
        before = old.stage(stage.name)
        if before is None:
            found.append(Change("stage", "added", stage.name, None, _stage_summary(stage)))
        else:
            found.extend(_stage_changes(before, stage))
    for stage in old.stages:
        if new.stage(stage.name) is None:
            found.append(Change("stage", "removed", stage.name, _stage_summary(stage), None))
    if old.main_line != new.main_line:
        found.append(
            Change("main line", "changed", None, " -> ".join(old.main_line), " -> ".join(new.main_line))
        )
    found += _keyed(
        "skip",
        (((s.source, s.target), _skip_text(s), s.source) for s in old.skips),
        (((s.source, s.target), _skip_text(s), s.source) for s in new.skips),
    )
    found += _keyed(
        "recycle",
        (((r.sources, r.target), _recycle_text(r), None) for r in old.recycles),
        (((r.sources, r.target), _recycle_text(r), None) for r in new.recycles),
    )
    found += _keyed("score rule", _numbered(_rules(old)), _numbered(_rules(new)))
    found += _keyed("target", _numbered(_targets(old)), _numbered(_targets(new)))
    found += _keyed(
        "condition",
        ((c.name, f"{c.name} = {unparse(c.expr)}", None) for c in old.conditions),
        ((c.name, f"{c.name} = {unparse(c.expr)}", None) for c in new.conditions),
    )
    found += _keyed(
        "field",
        ((f.name, _field_text(f), None) for f in old.fields),
        ((f.name, _field_text(f), None) for f in new.fields),
    )
    found += _keyed(
        "event",
        ((e.name, e.name + (f" channel {e.channel}" if e.channel else ""), None) for e in old.events),
        ((e.name, e.name + (f" channel {e.channel}" if e.channel else ""), None) for e in new.events),
    )
    return found
