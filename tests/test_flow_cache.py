"""The parse cache (saleflow/language/cache.py) and the model's JSON form
(saleflow/model/codec.py).

A cached flow is the very flow the parser makes, spans and all; a cache file
that is damaged, foreign or hostile is ignored and written again, never
trusted; a cache folder that cannot be used means no cache, never an error.
Real files in a real folder of the test's own, no mocks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from flowgen import mutated_flows, valid_flows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saleflow.errors import FlowInvalid, SaleflowError
from saleflow.language.cache import cache_key, parse_cached, read_cached
from saleflow.language.parse import parse_flow
from saleflow.model.codec import CLASSES, from_data, to_data
from saleflow.model.flow import Flow

ROOT = Path(__file__).resolve().parent.parent
FLOW_FILES = sorted(
    p for p in ROOT.rglob("*.flow") if ".venv" not in p.parts and "build" not in p.parts and p.is_file()
)
THE_MODEL = ROOT / "flows" / "the_model.flow"
FUZZ = settings(
    deadline=None,
    derandomize=True,
    max_examples=40,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


def text_of(flow: Flow) -> str:
    """Everything a flow holds, spans included, as one comparable text."""
    return json.dumps(to_data(flow), sort_keys=True)


def round_trip(flow: Flow) -> Flow:
    return from_data(json.loads(json.dumps(to_data(flow))))


def parsed(path: Path) -> Flow | None:
    try:
        return parse_flow(path.read_text(encoding="utf-8-sig"), str(path))
    except (SaleflowError, UnicodeDecodeError):
        return None


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("SALEFLOW_CACHE_DIR", str(folder))
    return folder


def cached_file(folder: Path) -> Path:
    (found,) = folder.glob("flow-*.json")
    return found


# -- the model's JSON form -------------------------------------------------------


@pytest.mark.parametrize("path", FLOW_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_flow_of_the_repository_survives_the_round_trip(path: Path, cache: Path) -> None:
    flow = parsed(path)
    if flow is None:  # a bad-input fixture: refused through the cache as without it, and not kept
        text = path.read_text(encoding="utf-8-sig", errors="replace")
        with pytest.raises(FlowInvalid) as direct:
            parse_flow(text, str(path))
        with pytest.raises(FlowInvalid) as through:
            parse_cached(text, str(path))
        assert through.value.diagnostics == direct.value.diagnostics
        assert not list(cache.glob("flow-*.json"))
        return
    again = round_trip(flow)
    assert again == flow
    assert text_of(again) == text_of(flow)
    assert again.tests == flow.tests and again.source == flow.source and again.path == flow.path
    assert text_of(parse_cached(flow.source, flow.path)) == text_of(flow)  # written
    assert text_of(parse_cached(flow.source, flow.path)) == text_of(flow)  # and read


def test_the_repository_has_flows_to_try() -> None:
    assert sum(parsed(p) is not None for p in FLOW_FILES) >= 10


@FUZZ
@given(valid_flows())
def test_generated_flows_survive_the_round_trip(source: str) -> None:
    flow = parse_flow(source, "fuzzed.flow")
    assert text_of(round_trip(flow)) == text_of(flow)


@FUZZ
@given(mutated_flows())
def test_mutants_that_parse_survive_the_round_trip(data: bytes) -> None:
    try:
        flow = parse_flow(data.decode("utf-8", "replace"), "mutant.flow")
    except FlowInvalid:
        return
    assert text_of(round_trip(flow)) == text_of(flow)


def _good() -> dict:
    return to_data(parse_flow(THE_MODEL.read_text(), "the_model.flow"))


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update({"@": "Stage"}),
        lambda d: d.update({"@": "os.system"}),
        lambda d: d.update({"name": 7}),
        lambda d: d.update({"version": True}),  # a bool is no int here
        lambda d: d.update({"version": "1"}),
        lambda d: d.update({"stages": {"@": "Stage"}}),
        lambda d: d.update({"stages": "stage a"}),
        lambda d: d.update({"unknown": 1}),
        lambda d: d.pop("name"),
        lambda d: d["stages"][0].update({"when": {"@": "Flow", "name": "x"}}),
        lambda d: d["stages"][0].update({"sla_days": "3 days"}),
        lambda d: d["fields"][0]["type"].update({"kind": "pickle"}),
        lambda d: d["stages"][0]["span"].update({"line": 1.5}),
        lambda d: d["stages"][0].update({"__class__": "x"}),
        lambda d: d["teams"][0]["targets"].append(
            {"@": "Target", "kind": "exec", "stage": "a", "to": None, "op": "==", "value": 1}
        ),
    ],
)
def test_data_that_is_not_a_flow_is_refused(damage) -> None:  # type: ignore[no-untyped-def]
    data = _good()
    damage(data)
    with pytest.raises(ValueError):
        from_data(data)


def test_only_the_models_classes_are_built() -> None:
    assert {cls.__module__ for cls in CLASSES.values()} == {
        "saleflow.model.expr",
        "saleflow.model.flow",
        "saleflow.errors",
    }


@FUZZ
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: (
            st.lists(inner)
            | st.dictionaries(st.sampled_from(["@", "name", "stages", "span", "x"]) | st.text(), inner)
        ),
        max_leaves=30,
    )
)
def test_any_json_is_a_flow_or_a_value_error(data: object) -> None:
    try:
        flow = from_data(data)
    except ValueError:
        return
    assert isinstance(flow, Flow)


# -- the cache ---------------------------------------------------------------------


def test_a_parsed_flow_is_kept_and_read_back(cache: Path) -> None:
    text = THE_MODEL.read_text()
    first = parse_cached(text, "the_model.flow")
    file = cached_file(cache)
    assert oct(file.stat().st_mode & 0o777) == oct(0o600)
    assert oct(cache.stat().st_mode & 0o777) == oct(0o700)
    key = cache_key(text, "the_model.flow")
    assert key is not None
    again = read_cached(file, key)
    assert again is not None and text_of(again) == text_of(first) == text_of(
        parse_flow(text, "the_model.flow")
    )
    assert text_of(parse_cached(text, "the_model.flow")) == text_of(first)
    assert list(cache.glob("flow-*.json")) == [file]


def test_the_key_is_the_text_and_its_path(cache: Path) -> None:
    text = THE_MODEL.read_text()
    keys = {cache_key(text, "a.flow"), cache_key(text, "b.flow"), cache_key(text + "\n", "a.flow")}
    assert len(keys) == 3
    parse_cached(text, "a.flow")
    moved = parse_cached(text, "b.flow")  # not the flow cached for a.flow: its spans name b.flow
    assert moved.path == "b.flow" and moved.stages[0].span.file == "b.flow"
    assert len(list(cache.glob("flow-*.json"))) == 2


def test_a_file_of_another_key_is_not_used(cache: Path) -> None:
    one = THE_MODEL.read_text()
    other = (ROOT / "flows" / "product_led.flow").read_text()
    parse_cached(one, "x.flow")
    file = cached_file(cache)
    key = cache_key(other, "x.flow")
    assert key is not None
    os.replace(file, cache / f"flow-{key[:40]}.json")  # the file of `one` where `other`'s belongs
    got = parse_cached(other, "x.flow")
    assert text_of(got) == text_of(parse_flow(other, "x.flow"))


def _damaged(body: bytes, damage: str, position: int) -> bytes:
    head, _, rest = body.partition(b"\n")
    if damage == "truncate":
        return body[: position % len(body)]
    if damage == "flip":
        index = position % len(rest)
        return head + b"\n" + rest[:index] + bytes([rest[index] ^ 0x20]) + rest[index + 1 :]
    if damage == "append":
        return body + b"garbage"
    if damage == "header":
        return b'{"format": 1}\n' + rest
    if damage == "empty":
        return b""
    raise AssertionError(damage)


@FUZZ
@given(
    damage=st.sampled_from(["truncate", "flip", "append", "header", "empty"]),
    position=st.integers(min_value=0, max_value=10**6),
)
def test_a_damaged_file_is_ignored_and_written_again(cache: Path, damage: str, position: int) -> None:
    text = THE_MODEL.read_text()
    expected = text_of(parse_flow(text, "m.flow"))
    parse_cached(text, "m.flow")
    file = cached_file(cache)
    good = file.read_bytes()
    file.write_bytes(_damaged(good, damage, position))
    assert text_of(parse_cached(text, "m.flow")) == expected
    assert file.read_bytes() == good  # rebuilt


def test_a_forged_file_with_a_right_digest_but_foreign_data_is_refused(cache: Path) -> None:
    """Even a file whose header and digest are right is only trusted as far
    as the model's types go."""
    import hashlib

    text = THE_MODEL.read_text()
    parse_cached(text, "m.flow")
    file = cached_file(cache)
    header = json.loads(file.read_bytes().partition(b"\n")[0])
    for body in (b'{"@": "Flow", "name": {"@": "os.system"}}', b'"__import__(\\"os\\")"', b"[1, 2]", b"null"):
        header["sha256"] = hashlib.sha256(body).hexdigest()
        file.write_bytes(json.dumps(header).encode() + b"\n" + body)
        assert text_of(parse_cached(text, "m.flow")) == text_of(parse_flow(text, "m.flow"))


def test_a_syntax_error_is_not_cached(cache: Path) -> None:
    with pytest.raises(FlowInvalid):
        parse_cached("flow f\nstage", "bad.flow")
    with pytest.raises(FlowInvalid):
        parse_cached("flow f\nstage", "bad.flow")
    assert not list(cache.glob("flow-*.json"))


@pytest.mark.parametrize("kind", ["a file", "shared", "empty", "missing parent of a file"])
def test_a_folder_that_cannot_be_used_means_no_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    folder = tmp_path / "c"
    value = str(folder)
    if kind == "a file":
        folder.write_text("x")
    elif kind == "shared":
        folder.mkdir()
        folder.chmod(0o777)
    elif kind == "empty":
        value = ""
    else:
        (tmp_path / "f").write_text("x")
        value = str(tmp_path / "f" / "c")
    monkeypatch.setenv("SALEFLOW_CACHE_DIR", value)
    text = THE_MODEL.read_text()
    assert text_of(parse_cached(text, "m.flow")) == text_of(parse_flow(text, "m.flow"))
    if kind == "shared":
        assert not list(folder.glob("flow-*.json"))
