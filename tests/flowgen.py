"""Flows for the fuzzing suite (tests/test_fuzz_flows.py): valid flows built
from the grammar, mutators that break them, and size generators.

`valid_flows()` draws flows that `check` must accept (no errors; warnings
are allowed): every field type with defaults at the edges of their ranges,
events with channels, conditions that name earlier conditions, score rules,
teams of stages with gates, SLAs and capacities, side stages, skips,
recycles and targets.  Expressions are drawn as model nodes and written with
`unparse`, so their text is what an author would write.

`mutated_flows()` breaks such a flow the ways an attacker would: slices
deleted, lines swapped or repeated, odd characters (NUL, a lone CR, BOM,
right-to-left marks, emoji, upper case) put anywhere, and numbers replaced
by numbers at every edge (0, -1, 2**31, 2**63, 400 digits, 1e309 written out,
5,000 digits).

`SIZES` build flows of a given size for the linearity tests.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from hypothesis import strategies as st

from saleflow.limits import (
    MAX_CAPACITY,
    MAX_DAYS,
    MAX_INT,
    MAX_NUMBER,
    MAX_POINTS,
    MAX_VERSION,
    MIN_INT,
)
from saleflow.model.expr import (
    And,
    AtLeast,
    Compare,
    DaysSince,
    Expr,
    InList,
    IsSet,
    Literal,
    Not,
    Or,
    Ref,
    Window,
)
from saleflow.model.unparse import literal_text, unparse

OPS = ("==", "!=", "<", "<=", ">", ">=")
ORDERING = ("<", "<=", ">", ">=")

# ---------------------------------------------------------------------------
# values at the edges of their ranges
# ---------------------------------------------------------------------------

whole = st.one_of(
    st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, MAX_INT, MIN_INT, 10**18]),
    st.integers(min_value=MIN_INT, max_value=MAX_INT),
)
decimal = st.one_of(
    st.sampled_from([0.0, -0.0, 0.5, MAX_NUMBER, -MAX_NUMBER, 5e-324, 1e-300]),
    st.floats(min_value=-MAX_NUMBER, max_value=MAX_NUMBER, allow_nan=False),
)
number = st.one_of(whole.filter(lambda v: abs(v) <= MAX_NUMBER), decimal)
days = st.one_of(st.sampled_from([0, 1, MAX_DAYS, -MAX_DAYS]), st.integers(-MAX_DAYS, MAX_DAYS))
positive_days = st.one_of(st.sampled_from([1, MAX_DAYS]), st.integers(1, MAX_DAYS))
# Text as users write it: any character but NUL (SF002) and lone surrogates
# (a flow file is UTF-8), quoted by `literal_text`.
# A CR is read as a line end (old Mac files), so a string cannot hold one.
text = st.text(st.characters(blacklist_characters="\x00\r", blacklist_categories=("Cs",)), max_size=20)
dates = st.dates(min_value=date(1900, 1, 1), max_value=date(8999, 12, 31)).map(date.isoformat)


def _name(prefix: str, index: int) -> str:
    return f"{prefix}{index}"


# ---------------------------------------------------------------------------
# valid flows
# ---------------------------------------------------------------------------


class _Names:
    """What a flow declares so far, for expressions to use."""

    def __init__(self) -> None:
        self.fields: dict[str, tuple[str, tuple[str, ...]]] = {}  # name → (kind, enum values)
        self.events: list[str] = []
        self.conditions: list[str] = []
        self.scored = False

    def of_kind(self, *kinds: str) -> list[str]:
        return [name for name, (kind, _) in self.fields.items() if kind in kinds]


def _numeric_operand(draw: Any, names: _Names) -> tuple[Expr, bool]:
    """A number-valued operand, and whether it counts days."""
    choices: list[Callable[[], tuple[Expr, bool]]] = [lambda: (Literal(draw(number)), False)]
    numbers = names.of_kind("int", "number", "money")
    if numbers:
        choices.append(lambda: (Ref(draw(st.sampled_from(numbers))), False))
    if names.events:
        events = st.sampled_from(names.events)
        choices.append(lambda: (Ref(draw(events)), False))
        choices.append(lambda: (Window(draw(events), draw(positive_days)), False))
        choices.append(lambda: (DaysSince(draw(events)), True))
    choices.append(lambda: (Ref(draw(st.sampled_from(["days_in_stage", "days_since_created"]))), True))
    if names.scored:
        choices.append(lambda: (Ref("score"), False))
    return draw(st.sampled_from(choices))()


def _comparison(draw: Any, names: _Names) -> Expr:
    left, left_days = _numeric_operand(draw, names)
    right, right_days = _numeric_operand(draw, names)
    # Days compared with lie within ±MAX_DAYS (SF118).
    if left_days and isinstance(right, Literal):
        right = Literal(draw(days))
    if right_days and isinstance(left, Literal):
        left = Literal(draw(days))
    if draw(st.booleans()):
        left, right = right, left
    return Compare(draw(st.sampled_from(OPS)), left, right)


def _atom(draw: Any, names: _Names) -> Expr:
    kinds: list[str] = ["compare", "literal"]
    if names.of_kind("bool"):
        kinds.append("bool")
    if names.of_kind("enum"):
        kinds.append("enum")
    if names.of_kind("text"):
        kinds.append("text")
    if names.of_kind("date"):
        kinds.append("date")
    if names.fields:
        kinds.append("is_set")
    if names.conditions:
        kinds.append("condition")
    kind = draw(st.sampled_from(kinds))
    if kind == "compare":
        return _comparison(draw, names)
    if kind == "literal":
        return Literal(draw(st.booleans()))
    if kind == "bool":
        field = Ref(draw(st.sampled_from(names.of_kind("bool"))))
        return field if draw(st.booleans()) else Compare("==", field, Literal(draw(st.booleans())))
    if kind == "enum":
        name = draw(st.sampled_from(names.of_kind("enum")))
        values = names.fields[name][1]
        chosen = draw(st.lists(st.sampled_from(values), min_size=1, max_size=3))
        if len(chosen) == 1 and draw(st.booleans()):
            value: Expr = Ref(chosen[0]) if draw(st.booleans()) else Literal(chosen[0])
            return Compare(draw(st.sampled_from(["==", "!="])), Ref(name), value)
        return InList(Ref(name), tuple(Ref(v) for v in chosen), draw(st.booleans()))
    if kind == "text":
        name = draw(st.sampled_from(names.of_kind("text")))
        return Compare(draw(st.sampled_from(["==", "!="])), Ref(name), Literal(draw(text)))
    if kind == "date":
        name = draw(st.sampled_from(names.of_kind("date")))
        return Compare(draw(st.sampled_from(OPS)), Ref(name), Literal(draw(dates)))
    if kind == "is_set":
        return IsSet(Ref(draw(st.sampled_from(sorted(names.fields)))), draw(st.booleans()))
    return Ref(draw(st.sampled_from(names.conditions)))


def _boolean(draw: Any, names: _Names, depth: int = 0) -> Expr:
    if depth >= 3 or draw(st.integers(0, 2)) == 0:
        return _atom(draw, names)
    kind = draw(st.sampled_from(["not", "and", "or", "at_least"]))
    if kind == "not":
        return Not(_boolean(draw, names, depth + 1))
    items = tuple(_boolean(draw, names, depth + 1) for _ in range(draw(st.integers(2, 4))))
    if kind == "and":
        return And(items)
    if kind == "or":
        return Or(items)
    return AtLeast(draw(st.integers(1, len(items))), items)


def _default(draw: Any, kind: str, values: tuple[str, ...]) -> str:
    if kind == "int":
        return literal_text(draw(whole))
    if kind in ("number", "money"):
        return literal_text(draw(number))
    if kind == "bool":
        return literal_text(draw(st.booleans()))
    if kind == "text":
        return literal_text(draw(text))
    if kind == "date":
        return literal_text(draw(dates))
    return draw(st.sampled_from(values))


@st.composite
def valid_flows(draw: Any) -> str:
    """The text of a flow that `check` accepts."""
    names = _Names()
    lines = [
        f"flow fuzzed version {draw(st.sampled_from([1, 2, MAX_VERSION]) | st.integers(1, MAX_VERSION))}"
    ]
    if draw(st.booleans()):
        lines[0] += " " + literal_text(draw(text))
    kinds = ["text", "int", "number", "money", "bool", "date", "enum"]
    for index, kind in enumerate(draw(st.lists(st.sampled_from(kinds), max_size=7))):
        name = _name("fa", index)
        values: tuple[str, ...] = ()
        declared = kind
        if kind == "enum":
            values = tuple(_name(f"v{index}_", v) for v in range(draw(st.integers(1, 5))))
            declared = f"one of [{', '.join(values)}]"
        default = f" default {_default(draw, kind, values)}" if draw(st.booleans()) else ""
        lines.append(f"field {name} {declared}{default}")
        names.fields[name] = (kind, values)
    for index in range(draw(st.integers(0, 3))):
        name = _name("ev", index)
        channel = f" channel {draw(st.sampled_from(['web', 'phone', 'mail']))}" if draw(st.booleans()) else ""
        lines.append(f"event {name}{channel}")
        names.events.append(name)
    rules = []
    for _ in range(draw(st.integers(0, 3))):
        points = draw(st.one_of(st.sampled_from([1, MAX_POINTS]), st.integers(1, MAX_POINTS)))
        sign = draw(st.sampled_from("+-"))
        if names.events and draw(st.booleans()):
            event = draw(st.sampled_from(names.events))
            window = f" in last {_duration(draw, draw(positive_days))}" if draw(st.booleans()) else ""
            rules.append(f"  {sign}{points} each {event}{window}")
        else:
            rules.append(f"  {sign}{points} if {unparse(_boolean(draw, names))}")
    names.scored = bool(rules)
    for index in range(draw(st.integers(0, 3))):
        name = _name("co", index)
        lines.append(f"condition {name} = {unparse(_boolean(draw, names))}")
        names.conditions.append(name)
    if rules:
        lines += ["score {", *rules, "}"]
    # the main line: teams of stages; the first stage is the initial one
    team_sizes = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    main = [_name("st", i) for i in range(sum(team_sizes))]
    last_final = len(main) > 1 and draw(st.booleans())
    at = 0
    for team_index, size in enumerate(team_sizes):
        title = f" {literal_text(draw(text))}" if draw(st.booleans()) else ""
        lines.append(f"team {_name('tm', team_index)}{title} {{")
        for name in main[at : at + size]:
            options = []
            if name == main[0]:
                options.append("initial")
            elif draw(st.booleans()):
                options.append(f"when {unparse(_boolean(draw, names))}")
            if name != main[0] and draw(st.integers(0, 3)) == 0:
                options.append("manual")
            if name == main[-1] and last_final:
                options.append("final")
            if draw(st.integers(0, 2)) == 0:
                sla = draw(st.one_of(st.sampled_from([1, MAX_DAYS, 0.5]), st.integers(1, MAX_DAYS)))
                options.append(f"sla {_duration(draw, sla)}")
            if draw(st.integers(0, 2)) == 0:
                options.append(f"capacity {draw(st.sampled_from([1, 2, MAX_CAPACITY]))}")
            lines.append(f"  stage {name} {' '.join(options)}".rstrip())
        stages = main[at : at + size]
        for _ in range(draw(st.integers(0, 2))):
            if draw(st.booleans()) and len(main) > 1:
                source = draw(st.integers(0, len(main) - 2))
                to = draw(st.integers(source + 1, len(main) - 1))
                percent = draw(st.one_of(st.sampled_from([0, 100, 0.5]), st.integers(0, 100)))
                op = draw(st.sampled_from(OPS))
                lines.append(
                    f"  target conversion {main[source]} -> {main[to]} {op} {literal_text(percent)}%"
                )
            else:
                stage = draw(st.sampled_from(stages))
                value = draw(st.one_of(st.sampled_from([0, MAX_DAYS, 1.5]), st.integers(0, MAX_DAYS)))
                op = draw(st.sampled_from(OPS))
                lines.append(f"  target time in {stage} {op} {_duration(draw, value)}")
        lines.append("}")
        at += size
    if draw(st.booleans()):
        lines.append("stage lost final")
    if draw(st.integers(0, 3)) == 0:
        lines.append("stage parked")  # a side stage no move enters: a warning only
    for _ in range(draw(st.integers(0, 2))):
        if len(main) > 2:
            source = draw(st.integers(0, len(main) - 2))
            to = draw(st.integers(source + 1, len(main) - 1))
            when = f" when {unparse(_boolean(draw, names))}" if draw(st.booleans()) else ""
            lines.append(f"skip {main[source]} -> {main[to]}{when}")
    for _ in range(draw(st.integers(0, 2))):
        movable = main[:-1] if last_final else main
        if len(movable) > 1:
            to = draw(st.integers(0, len(movable) - 2))
            sources = draw(st.lists(st.sampled_from(movable[to + 1 :]), min_size=1, max_size=3, unique=True))
            when = f" when {unparse(_boolean(draw, names))}" if draw(st.booleans()) else ""
            auto = " auto" if draw(st.booleans()) else ""
            lines.append(f"recycle {', '.join(sources)} -> {main[to]}{when}{auto}")
    if draw(st.integers(0, 2)) == 0:
        stages = [*main, *(["lost"] if "stage lost final" in lines else [])]
        capacities = [line.split()[1] for line in lines if line.startswith("  stage ") and "capacity" in line]
        for index in range(draw(st.integers(1, 2))):
            lines += _test_block(draw, names, stages, capacities, index)
    return "\n".join(lines) + "\n"


def _duration(draw: Any, days: float) -> str:
    """`days` as a flow file may write it: in days (`1 day` singular) or,
    when that is a whole number of hours, in hours."""
    hours = days * 24
    if hours == int(hours) and draw(st.booleans()):
        return f"{int(hours)} hour" if hours == 1 else f"{int(hours)} hours"
    return "1 day" if days == 1 and draw(st.booleans()) else f"{literal_text(days)} days"


def _test_block(draw: Any, names: _Names, stages: list[str], capacities: list[str], index: int) -> list[str]:
    """A test block `check` accepts (SPEC §7): every kind of step, over the
    names the flow declares; whether its expectations hold is the runner's
    business."""
    lines = [f'test "fuzz {index}" {{']
    assigned = [
        f"{name} = {_default(draw, kind, values)}"
        for name, (kind, values) in names.fields.items()
        if draw(st.booleans())
    ]
    lines.append("  lead t1" + (f" with {', '.join(assigned)}" if assigned else ""))
    leads = ["t1"]
    clock = 0
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["at", "lead", "use", "set", "event", "wait", "move", "expect"]))
        if kind == "at":
            clock += draw(st.integers(0, 400))
            lines.append(f"  at {date.fromordinal(date(2026, 1, 1).toordinal() + clock)}T00:00:00Z")
        elif kind == "lead":
            leads.append(f"t{len(leads) + 1}")
            lines.append(f"  lead {leads[-1]}")
        elif kind == "use":
            lines.append(f"  use {draw(st.sampled_from(leads))}")
        elif kind == "set" and names.fields:
            name = draw(st.sampled_from(list(names.fields)))
            field_kind, values = names.fields[name]
            lines.append(f"  set {name} = {_default(draw, field_kind, values)}")
        elif kind == "event" and names.events:
            count = f" x {draw(st.integers(1, 5))}" if draw(st.booleans()) else ""
            channel = " channel web" if draw(st.booleans()) else ""
            lines.append(f"  event {draw(st.sampled_from(names.events))}{count}{channel}")
        elif kind == "wait":
            hours = draw(st.integers(1, 24 * 400))
            clock += hours // 24 + 1
            lines.append(f"  wait {_duration(draw, hours / 24) if hours % 24 == 0 else f'{hours} hours'}")
        elif kind == "move":
            verb = draw(st.sampled_from(["advance to", "force to"]))
            reason = ' reason "fuzz"' if verb == "force to" or draw(st.booleans()) else ""
            lines.append(f"  {verb} {draw(st.sampled_from(stages))}{reason}")
        else:
            lines.append(
                draw(
                    st.sampled_from(
                        [
                            f"  expect stage {draw(st.sampled_from(stages))}",
                            f"  expect refused {draw(st.sampled_from(stages))}",
                            f"  expect cycle {draw(st.integers(1, 3))}",
                            "  expect sla breached",
                            f"  expect {unparse(_boolean(draw, names))}",
                            *(
                                [f"  expect waiting {draw(st.sampled_from(capacities))}"]
                                if capacities
                                else []
                            ),
                        ]
                    )
                )
            )
    lines.append("}")
    return lines


# ---------------------------------------------------------------------------
# mutators
# ---------------------------------------------------------------------------

EDGE_NUMBERS = (
    "0",
    "-1",
    "0.0",
    "1.5",
    str(2**31 - 1),
    str(2**31),
    str(2**63 - 1),
    str(2**63),
    str(2**64),
    "9" * 400,
    "1" + "0" * 309 + ".0",
    "0." + "0" * 400 + "1",
    "7" * 5000,
)
ODD = (
    "\x00",
    "\r",
    "\ufeff",
    "\u202e",
    "\u0301",
    "\U0001f600",
    "İ",
    "A",
    "'",
    '"',
    "\\",
    "{",
    "}",
    "[",
    "-",
    "%",
    "#",
    "\t",
    "\n",
)


@st.composite
def mutated_flows(draw: Any) -> bytes:
    """A valid flow broken by one to three mutations, as bytes (some are
    not UTF-8)."""
    source = draw(valid_flows())
    for _ in range(draw(st.integers(1, 3))):
        source = draw(_mutation(source))
    encoded = source.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:
        at = draw(st.integers(0, len(encoded)))
        encoded = encoded[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + encoded[at:]
    return encoded


@st.composite
def _mutation(draw: Any, source: str) -> str:
    kind = draw(st.sampled_from(["delete", "swap", "odd", "number", "repeat", "truncate", "word"]))
    size = len(source)
    if kind == "delete" and size:
        start = draw(st.integers(0, size - 1))
        return source[:start] + source[start + draw(st.integers(1, 40)) :]
    if kind == "swap":
        lines = source.split("\n")
        a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
        lines[a], lines[b] = lines[b], lines[a]
        return "\n".join(lines)
    if kind == "odd":
        at = draw(st.integers(0, size))
        return source[:at] + draw(st.sampled_from(ODD)) + source[at:]
    if kind == "number":
        spots = [i for i, c in enumerate(source) if c.isdigit() and (i == 0 or not source[i - 1].isalnum())]
        if spots:
            at = draw(st.sampled_from(spots))
            end = at
            while end < size and (source[end].isdigit() or source[end] == "."):
                end += 1
            return source[:at] + draw(st.sampled_from(EDGE_NUMBERS)) + source[end:]
        return source
    if kind == "repeat":
        lines = source.split("\n")
        at = draw(st.integers(0, len(lines) - 1))
        return "\n".join(lines[:at] + [lines[at]] * draw(st.sampled_from([2, 3, 200])) + lines[at:])
    if kind == "word":
        at = draw(st.integers(0, size))
        word = draw(
            st.sampled_from(["not ", " or ", "stage ", "initial", "final", " -> ", "score", "in last "])
        )
        return source[:at] + word + source[at:]
    return source[: draw(st.integers(0, size))]


# ---------------------------------------------------------------------------
# flows of a given size (linearity)
# ---------------------------------------------------------------------------

_BASE = """flow big
field x int default 0
event e
team t {{
  stage a initial
  stage b when {gate}
  stage c final
}}
stage lost final
"""


def enum_values(n: int) -> str:
    """A field with `n` values (every tenth one listed twice: SF101 each)."""
    values = ", ".join(f"v{i}" for i in range(n)) + ", " + ", ".join(f"v{i}" for i in range(0, n, 10))
    return _BASE.format(gate="k == v1") + f"field k one of [{values}]\n"


def or_gate(n: int) -> str:
    """A gate of `n` terms joined by `or`."""
    return _BASE.format(gate=" or ".join(f"x == {i}" for i in range(n)))


def and_gate(n: int) -> str:
    return _BASE.format(gate=" and ".join(f"x != {i} or e in last {i % 365 + 1} days >= 1" for i in range(n)))


def conditions(n: int) -> str:
    """`n` conditions, each naming the next one (a chain `n` deep: SF119)."""
    chain = "".join(f"condition c{i} = c{i + 1} and x > {i}\n" for i in range(n - 1))
    return _BASE.format(gate="c0") + chain + f"condition c{n - 1} = x > 0\n"


def wide_conditions(n: int) -> str:
    """`n` independent conditions and a gate of `at least` over them."""
    body = "".join(f"condition c{i} = x > {i} and days_since e <= {i % 1000}\n" for i in range(n))
    items = " ".join(f"c{i}" for i in range(n))
    return _BASE.format(gate=f"at least 2 of {{ {items} }}") + body


def in_list(n: int) -> str:
    return _BASE.format(gate="x in [" + ", ".join(str(i) for i in range(n)) + "]")


def stages(n: int) -> str:
    """`n` stages on the main line, skips, and a recycle from side stages."""
    body = "".join(f"  stage s{i} when e >= {i % 5}\n" for i in range(n))
    flow = _BASE.format(gate="e >= 1").replace("  stage c final\n", body + "  stage c final\n")
    skips = "".join(f"skip s{i} -> s{i + 2}\n" for i in range(0, n - 2, 3))
    side = "".join(f"stage side{i}\n" for i in range(n // 10))
    sources = ", ".join([*(f"s{i}" for i in range(5, n)), *(f"side{i}" for i in range(n // 10))])
    return flow + skips + side + f"recycle {sources} -> s1\n"


def scores(n: int) -> str:
    rules = "".join(
        f"  +{i % 100 + 1} each e in last {i % 365 + 1} days\n  -1 if x > {i}\n" for i in range(n)
    )
    return _BASE.format(gate="score >= 10") + "score {\n" + rules + "}\n"


SIZES: dict[str, Callable[[int], str]] = {
    "enum_values": enum_values,
    "or_gate": or_gate,
    "and_gate": and_gate,
    "conditions": conditions,
    "wide_conditions": wide_conditions,
    "in_list": in_list,
    "stages": stages,
    "scores": scores,
}
