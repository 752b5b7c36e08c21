"""Static checks of a parsed flow (SPEC §2, "Static checks").

Layer 2.  The parser builds a `Flow` without judging it; the check package
judges it.  Every rule is one small function in the module of its family
(`names`, `types`, `numbers`, `structure`, `lint`; test blocks in `tests`),
and this module lists them all in `RULES`; `check` runs them all and returns every diagnostic, sorted by position, so that one run of
`saleflow check` reports every problem (sqlglot style: collect, then raise
once, in the caller).  No rule raises on a bad flow: a rule that cannot judge
something because another rule already reported it stays silent, so one
mistake gives one diagnostic.

Codes are stable (docs/diagnostics.md lists them with an example each):
SF1xx names and types, SF2xx structure, SF3xx warnings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .. import collecting
from ..errors import Diagnostic
from ..model.flow import Flow
from . import lint, names, ranges, structure, typecheck
from .context import Context

Rule = Callable[[Context], Iterable[Diagnostic]]

# Every rule, in the order they run: for one span, code and message the
# first rule's diagnostic is kept.
RULES: list[Rule] = [
    names.duplicate_names,
    names.long_names,
    names.enum_values,
    typecheck.field_defaults,
    ranges.default_ranges,
    typecheck.expression_types,
    ranges.expression_numbers,
    structure.condition_depth,
    typecheck.test_blocks,
    names.condition_cycles,
    names.unknown_stages,
    structure.initial_stage,
    structure.final_in_main_line,
    structure.skips,
    structure.recycles,
    structure.targets,
    ranges.stage_limits,
    ranges.flow_numbers,
    lint.unreachable_stages,
    lint.dead_ends,
    lint.impossible_at_least,
    lint.unused_events,
    lint.repeated_recycle_sources,
    lint.empty_lists,
    lint.score_without_rules,
    lint.teams_without_stages,
]


def check(flow: Flow) -> list[Diagnostic]:
    """Every diagnostic of every rule for `flow`, sorted by position."""
    # The cyclic collector would walk the big flow's nodes again and again
    # while the rules make their small objects.
    with collecting.paused():
        ctx = Context(flow)
        found: dict[tuple[object, ...], Diagnostic] = {}
        too_deep = list(structure.too_deep(ctx))
        if too_deep:  # the rules recurse over expressions: judge nothing else
            return too_deep
        for rule in RULES:
            for diagnostic in rule(ctx):
                key = (diagnostic.code, diagnostic.span, diagnostic.message)
                found.setdefault(key, diagnostic)
        return sorted(found.values(), key=_position)


def _position(d: Diagnostic) -> tuple[str, int, int, int, str]:
    return (d.span.file, d.span.line, d.span.column, 0 if d.is_error else 1, d.code)
