"""Conditions: every operator and combinator, text as written, missing fields."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

import pytest
from conftest import ROOT, sample
from hypothesis import given, settings
from hypothesis import strategies as st

from ovoko_relay.errors import ConfigError, Problem
from ovoko_relay.events import Event
from ovoko_relay.rules import (
    OPERATORS,
    Condition,
    Rule,
    compile_when,
    explain,
    matching_rules,
)
from ovoko_relay.yamlsource import Mark, load_text

RICH = {
    "event_id": "5d0c8f3e-0000-4c7e-9f00-3a9d1b2c4e51",
    "event_type": "part.status.changed",
    "timestamp": "2023-01-12T14:17:20+02:00",
    "event_data": {
        "part_id": "15",
        "status": "sold",
        "code": "0123",
        "answer": "no",
        "price": "1e3",
        "amount": 1000,
        "weight": "12.5",
        "car": {"make": "BMW", "model": "320d", "year": "2011"},
        "tags": ["engine", "used"],
        "note": None,
        "flag": False,
    },
}


def compile_yaml(text: str) -> tuple[Condition, list[Problem], list[Problem]]:
    node = load_text(text, "rules.yaml", {})
    problems: list[Problem] = []
    warnings: list[Problem] = []
    condition = compile_when(node, Mark("rules.yaml", 1, 1), problems, warnings)
    return condition, problems, warnings


def event(envelope: dict[str, Any]) -> Event:
    return Event.from_envelope(copy.deepcopy(envelope))


def holds(text: str, envelope: dict[str, Any]) -> bool:
    condition, problems, _ = compile_yaml(text)
    assert problems == []
    return condition.evaluate(event(envelope)).matched


# (when, event, expected) — every operator and combinator, on the samples.
CASES = [
    # a scalar means equal, as text
    ("status: sold", "part-sold", True),
    ("status: sold", "part-reserved", False),
    ("event_data.status: sold", "part-sold", True),
    ("data.status: sold", "part-sold", True),
    ("event_type: part.status.changed", "part-sold", True),
    ("event_id: 101aa6a1-ed22-42f0-8c4c-a1f8a028a2d2", "part-sold", True),
    ("timestamp: '2023-01-12T14:19:20+02:00'", "part-sold", True),
    ("part_id: 17", "part-sold", True),
    ("external_id: WH-1002", "part-sold", True),
    ("id_bridge: '12345'", "part-sold-legacy-id-bridge", True),
    # a list means any of
    ("status: [sold, sold_in_ebay, sold_in_allegro]", "part-sold-in-ebay", True),
    ("status: [sold, sold_in_ebay, sold_in_allegro]", "part-returned", False),
    # several keys: all must hold
    ("{status: sold, part_id: 17}", "part-sold", True),
    ("{status: sold, part_id: 18}", "part-sold", False),
    # operators
    ("status: {not: sold}", "part-reserved", True),
    ("status: {not: sold}", "part-sold", False),
    ("status: {not: [sold, reserved]}", "part-reserved", False),
    ("status: {not: {glob: 'sold*'}}", "part-sold-in-ebay", False),
    ("status: {not: {glob: 'sold*'}}", "part-returned", True),
    ("status: {in: [returned, written_off]}", "part-written-off", True),
    ("status: {in: [returned, written_off]}", "part-sold", False),
    ("status: {not_in: [returned, written_off]}", "part-sold", True),
    ("status: {not_in: [returned, written_off]}", "part-returned", False),
    ("status: {glob: 'sold*'}", "part-sold-in-allegro", True),
    ("status: {glob: 'sold*'}", "part-reserved", False),
    ("status: {glob: ['*_off', 'ret*']}", "part-returned", True),
    ("status: {regex: '^sold_in_(ebay|allegro)$'}", "part-sold-in-ebay", True),
    ("status: {regex: '^sold_in_(ebay|allegro)$'}", "part-sold", False),
    ("status: {regex: 'ware'}", "part-in-warehouse", True),
    ("part_id: {gt: 16}", "part-sold", True),
    ("part_id: {gt: 17}", "part-sold", False),
    ("part_id: {gte: 17}", "part-sold", True),
    ("part_id: {lt: 17}", "part-sold", False),
    ("part_id: {lte: 17}", "part-sold", True),
    ("part_id: {gte: 16, lte: 18}", "part-sold", True),
    ("external_id: {gt: 5}", "part-sold", False),
    ("external_id: {exists: true}", "part-sold", True),
    ("external_id: {exists: true}", "seed-example", False),
    ("external_id: {exists: false}", "seed-example", True),
    ("id_bridge: {exists: false}", "part-sold", True),
    ("external_id: {contains: '100'}", "part-sold", True),
    ("external_id: {contains: XYZ}", "part-sold", False),
    # combinators
    ("all: [{status: sold}, {part_id: 17}]", "part-sold", True),
    ("all: [{status: sold}, {part_id: 15}]", "part-sold", False),
    ("any: [{status: returned}, {part_id: 17}]", "part-sold", True),
    ("any: [{status: returned}, {part_id: 99}]", "part-sold", False),
    ("any: {status: returned, part_id: 17}", "part-sold", True),
    ("not: {status: sold}", "part-reserved", True),
    ("not: {status: sold}", "part-sold", False),
    ("not: {any: [{status: sold}, {status: reserved}]}", "part-reserved", False),
    ("any: [{all: [{status: sold}, {not: {part_id: 17}}]}, {status: returned}]",
     "part-sold", False),
    ("any: [{all: [{status: sold}, {not: {part_id: 99}}]}, {status: returned}]",
     "part-sold", True),
    # a missing field: false by default, `not` of it true, `any` only that branch
    ("missing_field: x", "part-sold", False),
    ("not: {missing_field: x}", "part-sold", True),
    ("any: [{missing_field: x}, {status: sold}]", "part-sold", True),
    ("missing_field: {not: x}", "part-sold", False),
    ("missing_field: {gt: 1}", "part-sold", False),
    ("missing_field: {exists: false}", "part-sold", True),
    ("missing_field: {not: x, missing: match}", "part-sold", True),
    ("missing_field: {glob: 'x*', missing: false}", "part-sold", False),
    ("not: {missing_field: {in: [x], missing: match}}", "part-sold", False),
    ("external_id: {glob: 'WH-*', missing: match}", "seed-example", True),
    ("external_id: {glob: 'WH-*', missing: match}", "part-sold", True),
]  # fmt: skip


@pytest.mark.parametrize(("when", "name", "expected"), CASES)
def test_condition_on_samples(when: str, name: str, expected: bool) -> None:
    assert holds(when, sample(name)) is expected


# Values are compared as the person wrote them, never as YAML's bool/int/float.
RICH_CASES = [
    ("answer: no", True),
    ("answer: 'false'", False),
    ("code: 0123", True),
    ("code: 123", False),
    ("code: 83", False),
    ("part_id: 15", True),
    ("part_id: 15.0", False),
    ("part_id: '015'", False),
    ("price: 1e3", True),
    ("price: 1000", False),
    ("price: {gte: 1000}", True),
    ("price: {gt: 1000}", False),
    ("amount: 1000", True),
    ("amount: {gte: 1e3}", True),
    ("amount: {lt: 999.5}", False),
    ("weight: {gt: 12.4, lt: 12.6}", True),
    ("flag: false", True),
    ("flag: no", False),
    ("flag: {gt: -1}", False),
    ("note: null", True),
    ("note: ~", True),
    ("note: 'null'", False),
    ("note: {exists: true}", True),
    ("status: null", False),
    ("car.make: BMW", True),
    ("event_data.car.make: BMW", True),
    ("car.make: {in: [Audi, BMW]}", True),
    ("car.year: {gte: 2010}", True),
    ("car.year: {lt: 2010}", False),
    ("car.engine: {exists: false}", True),
    ("car: {contains: model}", True),
    ("car: {contains: engine}", False),
    ("car: BMW", False),
    ("tags: {contains: engine}", True),
    ("tags: {contains: [tyre, used]}", True),
    ("tags: {contains: tyre}", False),
    ("tags.0: engine", True),
    ("tags.5: engine", False),
    ("status: {regex: '^SOLD$'}", False),
    ("status: {regex: '(?i)^SOLD$'}", True),
    ("status: {glob: 'S*'}", False),
    ("status: {contains: ol}", True),
    ("car.model: {regex: '^\\d{3}d$'}", True),
]


@pytest.mark.parametrize(("when", "expected"), RICH_CASES)
def test_text_as_written(when: str, expected: bool) -> None:
    assert holds(when, RICH) is expected


@pytest.mark.parametrize(
    ("when", "reason"),
    [
        ("status: sold", 'status is "reserved", expected `sold`'),
        (
            "status: [sold, returned]",
            'status is "reserved", expected one of `sold`, `returned`',
        ),
        ("part_id: {gt: 100}", 'part_id is "16", expected a number greater than 100'),
        ("price: {gt: 1}", "price is missing from the event"),
        ("not: {status: reserved}", '`not` excludes this: status is "reserved"'),
        (
            "any: [{status: sold}, {part_id: 1}]",
            'none of the `any` choices held: status is "reserved", expected `sold`; '
            'part_id is "16", expected `1`',
        ),
    ],
)
def test_failure_reason_names_condition_and_value_seen(when: str, reason: str) -> None:
    condition, problems, _ = compile_yaml(when)
    assert problems == []
    outcome = condition.evaluate(event(sample("part-reserved")))
    assert not outcome.matched
    assert outcome.reason == reason
    assert outcome.mark is not None and outcome.mark.line == 1


def test_missing_error_policy_flags_the_event_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    condition, problems, _ = compile_yaml("price: {gt: 1, missing: error}")
    assert problems == []
    rule = Rule("Price check", condition, [], Mark("rules.yaml", 1, 1))
    outcome = condition.evaluate(event(sample("part-sold")))
    assert (outcome.matched, outcome.error) == (False, True)
    with caplog.at_level(logging.WARNING, logger="ovoko_relay.rules"):
        assert matching_rules([rule], event(sample("part-sold"))) == []
    assert "rule='Price check' outcome=missing_field" in caplog.text
    assert [v.state for v in explain([rule], event(sample("part-sold")))] == ["error"]


def make_rule(name: str, when: str, **flags: bool) -> Rule:
    condition, problems, _ = compile_yaml(when)
    assert problems == []
    return Rule(name, condition, [], Mark("rules.yaml", 1, 1), **flags)


def test_rules_run_in_file_order_and_stop_ends_evaluation() -> None:
    rules = [
        make_rule("first", "status: reserved"),
        make_rule("any sold", "status: {glob: 'sold*'}"),
        make_rule("stopper", "status: sold", stop=True),
        make_rule("after stop", "status: sold"),
    ]
    sold = event(sample("part-sold"))
    assert [r.name for r in matching_rules(rules, sold)] == ["any sold", "stopper"]
    states = [(v.rule.name, v.state) for v in explain(rules, sold)]
    assert states == [
        ("first", "failed"),
        ("any sold", "matched"),
        ("stopper", "matched"),
        ("after stop", "stopped"),
    ]
    ebay = event(sample("part-sold-in-ebay"))
    assert [r.name for r in matching_rules(rules, ebay)] == ["any sold"]


def test_stop_on_a_rule_that_does_not_match_stops_nothing() -> None:
    rules = [
        make_rule("stopper", "status: returned", stop=True),
        make_rule("later", "status: sold"),
    ]
    assert [r.name for r in matching_rules(rules, event(sample("part-sold")))] == [
        "later"
    ]


def test_disabled_rule_never_matches() -> None:
    rules = [make_rule("off", "status: sold", enabled=False)]
    assert matching_rules(rules, event(sample("part-sold"))) == []
    assert explain(rules, event(sample("part-sold")))[0].state == "disabled"


# (when, line, col, message part) — each compile error with its exact place.
ERRORS = [
    ("status: {glb: 'sold*'}", 1, 10, "unknown operator `glb` — did you mean `glob`?"),
    ("status:\n  regx: x", 2, 3, "unknown operator `regx` — did you mean `regex`?"),
    ("car: {make: BMW}", 1, 7, "write its path with dots, like `car.make:`"),
    ("status: {regex: 'sold('}", 1, 17, "`sold(` is not a valid regular expression"),
    ("part_id: {gt: lots}", 1, 11, "`gt` needs one number, like `gt: 100`"),
    ("part_id: {gte: [1, 2]}", 1, 11, "`gte` needs one number"),
    ("status: {exists: maybe}", 1, 18, "`exists` must be true or false, not `maybe`"),
    ("status: {in: x, missing: always}", 1, 26,
     "`missing` must be false, match or error, not `always`"),
    ("status: {missing: eror, in: x}", 1, 19, "did you mean `error`?"),
    ("any: sold", 1, 6, "`any` takes a list of conditions"),
    ("any: []", 1, 6, "`any` takes a list of conditions"),
    ("all: [sold]", 1, 7, "each item of `all` must be a condition"),
    ("not: sold", 1, 6, "`not` here takes a mapping of conditions"),
    ("status: [sold, [x]]", 1, 16, "`status` must be a value or a list of values"),
    ("status: []", 1, 9, "an empty list matches nothing"),
    ("status: {glob: {a: b}}", 1, 16, "`glob` takes a value or a list of values"),
    ("status: {not: {exists: true}}", 1, 15, "cannot be inside `not`"),
    ("event_data..x: 1", 1, 1, "`event_data..x` is not a field name"),
]  # fmt: skip


@pytest.mark.parametrize(("when", "line", "col", "message"), ERRORS)
def test_condition_errors_are_located(
    when: str, line: int, col: int, message: str
) -> None:
    _, problems, _ = compile_yaml(when)
    assert len(problems) == 1, problems
    assert (problems[0].line, problems[0].col) == (line, col)
    assert message in problems[0].message


# (when, line, col, warning) — values Ovoko never sends.
WARNINGS = [
    ("status: sould", 1, 9, "`sould` is not a part status Ovoko sends — did you "
     "mean `sold`?"),
    ("status: [sold, retruned]", 1, 16, "did you mean `returned`?"),
    ("event_data.status: {in: [reserved, writen_off]}", 1, 36,
     "did you mean `written_off`?"),
    ("status: {not: resrved}", 1, 15, "did you mean `reserved`?"),
    ("event_type: part.status.change", 1, 13,
     "`part.status.change` is not an event type Ovoko sends — did you mean "
     "`part.status.changed`?"),
    ("status: {glob: 'sould*'}", 1, 10, "the pattern `sould*` matches nothing"),
    ("stauts: sold", 1, 1, "`stauts` is not a field Ovoko sends in its events — "
     "did you mean `status`?"),
    ("status: xyzzy", 1, 9, "Ovoko sends: in_warehouse, reserved, sold"),
]  # fmt: skip


@pytest.mark.parametrize(("when", "line", "col", "message"), WARNINGS)
def test_unknown_ovoko_values_are_warnings(
    when: str, line: int, col: int, message: str
) -> None:
    _, problems, warnings = compile_yaml(when)
    assert problems == []
    assert len(warnings) == 1, warnings
    assert warnings[0].severity == "warning"
    assert (warnings[0].line, warnings[0].col) == (line, col)
    assert message in warnings[0].message


def test_known_values_give_no_warning() -> None:
    _, problems, warnings = compile_yaml(
        "status: [in_warehouse, reserved, sold, sold_in_ebay, sold_in_allegro, "
        "returned, written_off, unknown_stock_status]\n"
        "event_type: part.status.changed\npart_id: 1\ncar.make: BMW\n"
    )
    assert (problems, warnings) == ([], [])


def test_yaml_problems_stop_before_conditions() -> None:
    with pytest.raises(ConfigError):
        compile_yaml("status: sold\nstatus: returned\n")


# -- property: matching never raises -------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["sold", "15", "0123", "1e3", "BMW", "", " 7 "])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["make", "0", "x", "status"]), inner, max_size=3
        )
    ),
    max_leaves=8,
)
event_datas = st.dictionaries(
    st.sampled_from(["status", "part_id", "price", "car", "tags", "note", "x"]),
    json_values,
    max_size=6,
)

field_names = st.sampled_from(
    ["status", "part_id", "price", "car.make", "tags.0", "event_type", "x.y.z",
     "event_data.note", "data.car", "timestamp"]
)  # fmt: skip
words = st.sampled_from(["sold", "15", "0123", "1e3", "no", "null", "~", "x", "''"])
numbers = st.sampled_from(["0", "-3", "1e3", "15", "0.5", "99999999999999999999"])
operators = st.one_of(
    words.map(lambda w: f"not: {w}"),
    st.lists(words, min_size=1, max_size=3).map(lambda ws: f"in: [{', '.join(ws)}]"),
    st.lists(words, min_size=1, max_size=3).map(
        lambda ws: f"not_in: [{', '.join(ws)}]"
    ),
    st.sampled_from(["'sold*'", "'*'", "'[0-9]*'", "'?'"]).map(lambda g: f"glob: {g}"),
    st.sampled_from(["'^s'", "'\\d+'", "'(?i)bmw'", "''"]).map(lambda r: f"regex: {r}"),
    st.tuples(st.sampled_from(["gt", "gte", "lt", "lte"]), numbers).map(
        lambda t: f"{t[0]}: {t[1]}"
    ),
    st.sampled_from(["exists: true", "exists: false"]),
    words.map(lambda w: f"contains: {w}"),
)


def _field_with_operators(parts: tuple[str, list[str], str]) -> str:
    path, ops, policy = parts
    return "{" + path + ": {" + ", ".join([*ops, policy] if policy else ops) + "}}"


field_conditions = st.one_of(
    st.tuples(field_names, words).map(lambda t: f"{{{t[0]}: {t[1]}}}"),
    st.tuples(
        field_names,
        st.lists(operators, min_size=1, max_size=2, unique_by=lambda o: o[:4]),
        st.sampled_from(["", "missing: match", "missing: error", "missing: false"]),
    ).map(_field_with_operators),
)
conditions = st.recursive(
    field_conditions,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(
            lambda cs: f"{{all: [{', '.join(cs)}]}}"
        ),
        st.lists(inner, min_size=1, max_size=3).map(
            lambda cs: f"{{any: [{', '.join(cs)}]}}"
        ),
        inner.map(lambda c: f"{{not: {c}}}"),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(when=conditions, data=event_datas)
def test_matching_arbitrary_data_never_raises(when: str, data: dict) -> None:
    condition, problems, _ = compile_yaml(when)
    assert problems == [], when
    envelope = {**RICH, "event_data": data}
    outcome = condition.evaluate(event(envelope))
    assert isinstance(outcome.matched, bool)
    assert isinstance(outcome.reason, str)


def test_the_docs_show_every_operator_with_a_working_example() -> None:
    text = (ROOT / "docs" / "rules.md").read_text()
    row = re.compile(r"^\| `(\w+)` \| [^|]* \| `([^`]+)` \|$", re.MULTILINE)
    examples = dict(row.findall(text))
    assert set(OPERATORS) - {"missing"} <= set(examples)
    for example in examples.values():
        _, problems, warnings = compile_yaml(example)
        assert (problems, warnings) == ([], []), example
    assert "missing:" in text and "`false` (the default)" in text


@pytest.mark.parametrize(
    ("pattern", "refused"),
    [
        (r"^(a+)+$", True),
        (r"(x*)*", True),
        (r"^(\w+\s?)*$", True),
        (r"^WH-\d+$", False),
        (r"(?:ab|c)*d+", False),
        (r"([a-z]+)-([0-9]+)", False),
    ],
)
def test_a_regex_with_a_repeat_inside_a_repeat_is_refused(pattern, refused):
    problems: list = []
    node = load_text(f"external_id: {{regex: '{pattern}'}}\n", "c.yaml", {})

    compile_when(node, node.mark, problems)

    messages = [p.message for p in problems]
    assert any("repeats something that itself repeats" in m for m in messages) is (
        refused
    )
