"""Templates: the sandbox, the filters sellers need, errors that name the field."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import ROOT, sample

from ovoko_relay.errors import Problem, TemplateError
from ovoko_relay.templates import (
    Template,
    compile_template,
    compile_value,
    format_money,
    format_number,
    render_value,
)
from ovoko_relay.yamlsource import load_text

WHERE = "rule `Part sold`, action `office-log`, setting `message`"


def context(name: str = "part-sold", **data: Any) -> dict[str, Any]:
    event = sample(name)
    event["event_data"].update(data)
    return {"event": event, "data": event["event_data"], "rule": "Part sold"}


def compiled(source: str) -> Template:
    problems: list[Problem] = []
    template = compile_template(source, WHERE, problems)
    assert problems == []
    return template


def render(source: str, ctx: dict[str, Any] | None = None) -> str:
    return render_value(compiled(source), ctx or context())


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Part {{ data.part_id }} {{ data.status }}", "Part 17 sold"),
        ("{{ rule }}: {{ event.event_type }}", "Part sold: part.status.changed"),
        ("{{ event.event_data.external_id }}", "WH-1002"),
        ("plain text, no markup", "plain text, no markup"),
        # dates and times, in a chosen zone and format
        ("{{ event.timestamp | datetime }}", "2023-01-12 14:19"),
        (
            "{{ event.timestamp | datetime('%d.%m.%Y %H:%M', 'Europe/Vilnius') }}",
            "12.01.2023 14:19",
        ),
        ("{{ event.timestamp | datetime('%H:%M', 'UTC') }}", "12:19"),
        ("{{ event.timestamp | datetime('%H:%M %Z', tz='Europe/London') }}",
         "12:19 GMT"),
        ("{{ event.timestamp | datetime('%Y-%m-%d %H:%M', 'Asia/Tokyo') }}",
         "2023-01-12 21:19"),
        ("{{ event.timestamp | date }}", "2023-01-12"),
        ("{{ event.timestamp | date('%d.%m.%Y', 'Pacific/Auckland') }}",
         "13.01.2023"),
        ("{{ event.timestamp | time }}", "14:19"),
        ("{{ event.timestamp | time('%H:%M:%S', 'Europe/Berlin') }}", "13:19:20"),
        ("{{ 0 | datetime('%Y-%m-%d %H:%M', 'UTC') }}", "1970-01-01 00:00"),
        ("{{ '2023-07-01T10:00:00' | datetime('%H:%M', 'Europe/Vilnius') }}",
         "13:00"),
        # numbers and money
        ("{{ '1234.5' | number(2) }}", "1234.50"),
        ("{{ 1234.5 | number }}", "1235"),
        ("{{ 2.675 | number(2) }}", "2.68"),
        ("{{ '1e3' | number(1) }}", "1000.0"),
        ("{{ 1234567.891 | number(2, ',', ' ') }}", "1 234 567,89"),
        ("{{ -1234.5 | number(1, thousands='.', decimal=',') }}", "-1.234,5"),
        ("{{ 1234.5 | money('EUR') }}", "1,234.50 EUR"),
        ("{{ '99' | money }}", "99.00 EUR"),
        ("{{ '1234.5' | money('€', decimal=',', thousands=' ') }}", "1 234,50 €"),
        ("{{ 5 | money('PLN', 0) }}", "5 PLN"),
        # the usual Jinja ones
        ("{{ data.status | upper }}", "SOLD"),
        ("{{ data.status | replace('_', ' ') | title }}", "Sold"),
        ("{{ data.price | default('no price') }}", "no price"),
        ("{% if data.price is defined %}x{% else %}none{% endif %}", "none"),
        ("{{ data.external_id | lower | truncate(5, true, '', 0) }}", "wh-10"),
        ("{{ data | tojson }}", '{"external_id": "WH-1002", "part_id": "17", '
         '"status": "sold"}'),
        ("{{ [data.part_id, data.status] | join('/') }}", "17/sold"),
    ],
)  # fmt: skip
def test_render(source: str, expected: str) -> None:
    assert render(source) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "Sold for {{ data.price }}",
            f"{WHERE}: the event has no field `data.price` (write "
            "`{{ data.price | default('') }}` to allow it to be missing)",
        ),
        ("{{ data.car.make }}", "the event has no field `data.car`"),
        ("{{ event.event_data.car }}", "the event has no field `event.event_data.car`"),
        ("{{ event.sender }}", "the event has no field `event.sender`"),
        ("{{ dat.part_id }}", f"{WHERE}: `dat` is not defined — did you mean `data`?"),
        ("{{ price }}", "`price` is not defined. A template can use `event`, `data`"),
        ("{{ data.status | money }}", f"{WHERE}: money: `sold` is not a number"),
        ("{{ data.part_id | datetime }}", "`17` is not a date and time like"),
        ("{{ data.price is defined and data.price | number }}", ""),
    ],
)
def test_render_errors_name_the_template_and_the_field(
    source: str, message: str
) -> None:
    if not message:
        assert render(source) == "False"
        return
    with pytest.raises(TemplateError) as info:
        render(source)
    assert message in str(info.value)


def test_nested_missing_field_is_named_in_full() -> None:
    ctx = context(car={"make": "BMW"})
    assert render("{{ data.car.make }}", ctx) == "BMW"
    with pytest.raises(TemplateError, match=r"no field `data\.car\.model`"):
        render("{{ data.car.model }}", ctx)


@pytest.mark.parametrize(
    "source",
    [
        "{{ data.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ data.update({'status': 'x'}) }}",
        "{{ data.pop('status') }}",
        "{{ event.event_data.clear() }}",
        "{{ rule.__len__ }}",
        "{{ lipsum.__globals__['os'] }}",
    ],
)
def test_sandbox_blocks_python_internals_and_changes(source: str) -> None:
    ctx = context()
    with pytest.raises(TemplateError):
        render(source, ctx)
    assert ctx["data"]["status"] == "sold"


def test_no_file_system_access() -> None:
    template = compiled("{% include '/etc/passwd' %}")
    with pytest.raises(TemplateError, match="no loader"):
        render_value(template, context())


# (yaml, line, col, message) — template errors found when the config loads.
COMPILE_ERRORS = [
    ('message: "{{ data.part_id "\n', 1, 10,
     "template error in W.message: unexpected end"),
    ("message: x\nother: '{% if data.x %}no end'\n", 2, 8,
     "Unexpected end of template"),
    ("message: |\n  line one\n  {{ data.status | nope }}\n", 3, 10,
     "there is no filter named `nope`"),
    ('message: "{{ data.status | uper }}"\n', 1, 10,
     "there is no filter named `uper` — did you mean `upper`?"),
    ("message: \"{{ event.timestamp | datetime('%H', 'Europe/Vilinus') }}\"\n", 1, 10,
     "unknown time zone `Europe/Vilinus` — did you mean `Europe/Vilnius`?"),
    ("message: \"{{ event.timestamp | date(tz='Mars/Base') }}\"\n", 1, 10,
     "unknown time zone `Mars/Base`"),
    ('message: "{{ data.status | is_sold }}"\n', 1, 10, "no filter named `is_sold`"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "col", "message"), COMPILE_ERRORS)
def test_compile_errors_are_located(
    text: str, line: int, col: int, message: str
) -> None:
    problems: list[Problem] = []
    compile_value(load_text(text, "c.yaml", {}), "W", problems)
    assert len(problems) == 1, problems
    assert (problems[0].file, problems[0].line, problems[0].col) == (
        "c.yaml",
        line,
        col,
    )
    assert message in problems[0].message


def test_compile_value_walks_lists_and_mappings() -> None:
    node = load_text("columns: {Part: '{{ data.part_id }}', Fixed: x}\n", "c", {})
    value = compile_value(node, "W", [])
    assert render_value(value, context()) == {"columns": {"Part": "17", "Fixed": "x"}}


def test_number_and_money_refuse_text() -> None:
    with pytest.raises(ValueError, match="`abc` is not a number"):
        format_number("abc")
    with pytest.raises(ValueError, match="not a number"):
        format_money(True)
    with pytest.raises(ValueError, match="not a number"):
        format_money("nan")


def doc_examples() -> list[tuple[str, str]]:
    """Return each `{{ … }}` example of docs/rules.md with the result it shows."""
    row = re.compile(r"^\|[^|]*\| `(\{\{.*?\}\})` \| `([^`]*)` \|$")
    examples = []
    text = (ROOT / "docs" / "rules.md").read_text()
    for line in text.replace("\\|", "\x00").splitlines():
        match = row.match(line)
        if match:
            source, result = (g.replace("\x00", "|") for g in match.groups())
            examples.append((source, result))
    return examples


def test_the_docs_show_enough_examples() -> None:
    assert len(doc_examples()) >= 10


@pytest.mark.parametrize(("source", "result"), doc_examples())
def test_every_filter_example_in_the_docs_is_true(source: str, result: str) -> None:
    assert render(source, context(tags=["engine", "used"])) == result
