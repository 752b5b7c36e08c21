"""A `Flow` as plain JSON data and back, checked against the model's types.

Layer 1.  The parse cache (language/cache.py) stores flows in this form so
that a command running a deployed flow need not parse its text again.  The
data is read as untrusted: `from_data` builds only the model's own frozen
dataclasses (named in `CLASSES`), checks every value against the type its
field declares, and raises `ValueError` for anything else, so a damaged or
foreign file is refused, never run.  Nothing here evaluates text.

The form: a dataclass is an object whose key "@" names its class, with its
constructor's fields (spans included: diagnostics point into the source);
a tuple is a list; numbers, strings, booleans and null are themselves.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

from ..errors import Span
from . import expr
from . import flow as model


def _model_classes() -> dict[str, type]:
    """Span and every dataclass the model's modules define: what a flow is made of."""
    found: dict[str, type] = {"Span": Span}
    for module in (expr, model):
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and dataclasses.is_dataclass(value)
                and value.__module__ == module.__name__
            ):
                found[value.__name__] = value
    return found


CLASSES: dict[str, type] = _model_classes()
# The names an annotation may use for the model's type aliases (Expr, Value, FieldKind...).
_NAMES: dict[str, object] = {**vars(expr), **vars(model)}


def to_data(value: Any) -> Any:
    """A model value (a `Flow`, or any part of one) as JSON-able data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data: dict[str, Any] = {"@": type(value).__name__}
        for item in dataclasses.fields(value):
            if item.init:
                data[item.name] = to_data(getattr(value, item.name))
        return data
    if isinstance(value, tuple):
        return [to_data(item) for item in value]
    return value


def from_data(data: Any) -> model.Flow:
    """The `Flow` that `to_data` wrote as `data`; `ValueError` when `data`
    is not one, in any part (`RecursionError` when it nests deeper than
    Python's recursion limit lets it follow)."""
    flow = _object_plan(model.Flow)(data)
    assert isinstance(flow, model.Flow)
    return flow


# How each declared type is read: a "plan", a function from data to value
# that raises ValueError.  Plans are made from the fields' annotation text
# (the model's modules defer annotations), read by `_plan` below: names of
# the model's classes and aliases, `X | Y`, `tuple[X, ...]`, the scalars,
# and `TypingLiteral["a", "b"]`.  (typing.get_type_hints would evaluate
# every annotation of every class, and cost more than the decoding itself.)

Plan = Callable[[Any], Any]
_PLANS: dict[str, Plan] = {}
_OBJECTS: dict[type, Plan] = {}


def _scalar(kind: type) -> Plan:
    accepted = (int, float) if kind is float else (kind,)  # an int is a float too, never a bool

    def read(data: Any) -> Any:
        if type(data) not in accepted:
            raise ValueError(f"{data!r} is not {kind.__name__}")
        return data

    return read


def _none(data: Any) -> Any:
    if data is not None:
        raise ValueError(f"{data!r} is not null")
    return None


_SCALARS: dict[str, Plan] = {
    "str": _scalar(str),
    "int": _scalar(int),
    "float": _scalar(float),
    "bool": _scalar(bool),
    "None": _none,
}


def _split(text: str) -> list[str]:
    """`text` split at its top-level `|`s."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(text[start:index].strip())
            start = index + 1
    parts.append(text[start:].strip())
    return parts


def _plan(text: str) -> Plan:
    """The plan of an annotation's text."""
    text = text.strip()
    if text not in _PLANS:
        _PLANS[text] = _make_plan(text)
    return _PLANS[text]


def _make_plan(text: str) -> Plan:
    parts = _split(text)
    if len(parts) > 1:
        return _union(parts)
    if text in _SCALARS:
        return _SCALARS[text]
    if text.startswith("tuple[") and text.endswith(", ...]"):
        item = _plan(text[len("tuple[") : -len(", ...]")])

        def read_tuple(data: Any) -> Any:
            if type(data) is not list:
                raise ValueError(f"expected a list, not {type(data).__name__}")
            return tuple(item(value) for value in data)

        return read_tuple
    if text.startswith("TypingLiteral[") and text.endswith("]"):
        return _choices(
            tuple(arg.strip().strip("'\"") for arg in text[len("TypingLiteral[") : -1].split(","))
        )
    if text in CLASSES:
        return _object_plan(CLASSES[text])
    alias = _NAMES.get(text)
    if isinstance(alias, types.UnionType):  # Expr, Value
        return _union([text])
    if typing.get_origin(alias) is typing.Literal:  # FieldKind, CompareOp, StepKind
        return _choices(typing.get_args(alias))
    raise TypeError(f"model/codec.py cannot read the annotation {text!r}")  # a model change to follow here


def _choices(allowed: tuple[Any, ...]) -> Plan:
    def read(data: Any) -> Any:
        if type(data) is not str or data not in allowed:
            raise ValueError(f"{data!r} is not one of {allowed}")
        return data

    return read


def _members(part: str) -> list[str]:
    """The names a union's part stands for: an alias of a union (`Expr`,
    `Value`) is its members."""
    alias = _NAMES.get(part) if part not in CLASSES else None
    if isinstance(alias, types.UnionType):
        return [getattr(member, "__name__", str(member)) for member in typing.get_args(alias)]
    return [part]


def _union(written: list[str]) -> Plan:
    parts = [name for part in written for name in _members(part)]
    classes = {part: CLASSES[part] for part in parts if part in CLASSES}
    others = [_plan(part) for part in parts if part not in CLASSES]

    def read(data: Any) -> Any:
        if type(data) is dict:
            name = data.get("@")
            if name not in classes:
                raise ValueError(f"{name!r} is not one of {sorted(classes)}")
            return _object_plan(classes[name])(data)
        for plan in others:
            try:
                return plan(data)
            except ValueError:
                continue
        raise ValueError(f"{data!r} is not {' | '.join(parts)}")

    return read


def _object_plan(cls: type) -> Plan:
    if cls not in _OBJECTS:
        name = cls.__name__
        fields: list[tuple[str, Plan]] = []  # filled on first use: the model's types refer to each other

        def read(data: Any) -> Any:
            if type(data) is not dict or data.get("@") != name:
                raise ValueError(f"expected a {name}")
            if not fields:
                fields.extend((f.name, _plan(str(f.type))) for f in dataclasses.fields(cls) if f.init)
            if len(data) - 1 > len(fields) or not all(key == "@" or key in known for key in data):
                raise ValueError(f"{name} has a field it does not declare")
            values = {key: plan(data[key]) for key, plan in fields if key in data}
            try:
                return cls(**values)
            except TypeError as err:  # a required field left out
                raise ValueError(str(err)) from None

        known: set[str] = {f.name for f in dataclasses.fields(cls) if f.init}
        _OBJECTS[cls] = read
    return _OBJECTS[cls]
