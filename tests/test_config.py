"""Loading the config: every mistake reported at its line, with a suggestion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES, sample

from ovoko_relay import config as config_module
from ovoko_relay.errors import ConfigError, TemplateError
from ovoko_relay.events import Event
from ovoko_relay.rules import matching_rules
from ovoko_relay.templates import render_value

ENV = {"OVOKO_TOKEN": "secret-token-123"}

HEAD = """\
auth: {tokens: ["${OVOKO_TOKEN}"]}
actions:
  office-log: {plugin: log}
  sheet: {plugin: spreadsheet, path: ./data/x.csv}
rules:
"""  # lines 1-5; rules start on line 6


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return config_module.load(str(path), {**ENV, **(env or {})})


def problems_of(tmp_path: Path, text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return [(p.line, p.col, str(p)) for p in info.value.problems]


RULE = """\
  - name: Sold
    when: {status: sold}
    do:
      - action: office-log
        message: "Part {{ data.part_id }}"
"""

# (text, line, col, message part) — every kind of config mistake.
ERRORS = [
    (HEAD + RULE + "rulez: []\n", 11, 1,
     "unknown key `rulez` at the top level — did you mean `rules`?"),
    (HEAD + RULE.replace("    when:", "    wen:"), 7, 5,
     "unknown key `wen` in a rule — did you mean `when`?"),
    (HEAD + RULE.replace("message:", "mesage:"), 10, 9,
     "unknown setting `mesage` for plugin `log` — did you mean `message`?"),
    (HEAD + RULE.replace('        message: "Part {{ data.part_id }}"\n', ""), 9, 9,
     "rule `Sold`, action `office-log`: setting `message` is required by plugin "
     "`log`"),
    (HEAD.replace("{plugin: log}", "{plugin: lgo}") + RULE, 3, 24,
     "unknown plugin `lgo` — did you mean `log`?; installed plugins: "),
    (HEAD.replace("path: ./data/x.csv", "path: ./x.csv, colour: red") + RULE, 4, 47,
     "unknown setting `colour` for plugin `spreadsheet`"),
    (HEAD + RULE.replace("action: office-log", "action: ofice-log"), 9, 17,
     "unknown action `ofice-log` — did you mean `office-log`?"),
    (HEAD + RULE + RULE, 11, 5,
     "rule name `Sold` is used twice (first on line 6); rule names must be unique"),
    (HEAD + RULE.replace("{status: sold}", "{status: {glb: sold}}"), 7, 21,
     "unknown operator `glb` — did you mean `glob`?"),
    (HEAD + RULE.replace("{status: sold}", "{status: {regex: '[sold'}}"), 7, 28,
     "`[sold` is not a valid regular expression"),
    (HEAD + RULE.replace("{{ data.part_id }}", "{{ data.part_id }"), 10, 18,
     "template error in rule `Sold`, action `office-log`, setting `message`: "),
    (HEAD + RULE.replace("{{ data.part_id }}", "{{ data.part_id | uper }}"), 10, 18,
     "there is no filter named `uper` — did you mean `upper`?"),
    (HEAD + RULE + "    enabled: maybe\n", 11, 14,
     "`enabled` must be true or false, not `maybe`"),
    (HEAD + RULE + "    stop: please\n", 11, 11,
     "`stop` must be true or false, not `please`"),
    (HEAD + RULE.replace("Part {{", "${NOT_SET} {{"), 10, 18,
     "environment variable `NOT_SET` is not set"),
    (HEAD + RULE + "tests:\n  - name: t\n    evnt: {}\n", 13, 5,
     "unknown key `evnt` in a test — did you mean `event`?"),
    (HEAD + RULE + "tests:\n  - name: t\n    event: missing.json\n", 13, 12,
     "cannot read the event file `missing.json`"),
    (HEAD + RULE + "tests:\n  - event: {event_id: x, event_type: y}\n", 12, 12,
     "The field `timestamp` of the event is missing."),
    (HEAD + RULE + "tests:\n  - event: e.json\n    fires: [Sld]\n", 13, 13,
     "test `test at line 12`: there is no rule named `Sld` — did you mean `Sold`?"),
    (HEAD + RULE + "tests:\n  - event: e.json\n    messages:\n"
     "      - {rule: Sold, action: sheet}\n", 14, 30,
     "test `test at line 12`: rule `Sold` has no action `sheet`"),
    (HEAD + RULE + "tests:\n  - event: e.json\n    messages:\n"
     "      - {rule: Sold, action: office-log, mesage: x}\n", 14, 42,
     "unknown setting `mesage` for plugin `log` — did you mean `message`?"),
    (HEAD + RULE + "tests: other-tests.yaml\n", 11, 8,
     "the tests file `other-tests.yaml` does not exist"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "col", "message"), ERRORS)
def test_each_config_error_is_located(
    tmp_path: Path, text: str, line: int, col: int, message: str
) -> None:
    shutil.copy(SAMPLES / "part-sold.json", tmp_path / "e.json")
    found = problems_of(tmp_path, text)
    prefix = f"{tmp_path / 'config.yaml'}:{line}:{col}: "
    assert [p for _, _, p in found if p.startswith(prefix) and message in p], found


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    text = (
        HEAD
        + RULE.replace("    when:", "    wen:")
        + (
            "  - name: Other\n"
            "    when: {status: {rgx: x}, stauts: sold}\n"
            "    do: [{action: office-log, message: '{{ x'}]\n"
        )
    )
    found = problems_of(tmp_path, text)
    assert [(line, col) for line, col, _ in found] == [
        (7, 5),
        (12, 21),
        (12, 30),
        (13, 40),
    ]
    assert "warning: `stauts` is not a field" in found[2][2]


def test_unknown_statuses_are_warnings_and_the_config_still_loads(
    tmp_path: Path,
) -> None:
    text = HEAD + RULE.replace("{status: sold}", "{status: [sould, sold]}")
    text = text.replace("  - name: Sold", "  - name: Sold\n    stop: yes")
    config = load(tmp_path, text + "tests: []\n")
    [warning] = config.warnings
    assert (warning.line, warning.col, warning.severity) == (8, 21, "warning")
    assert str(warning).endswith(
        "warning: `sould` is not a part status Ovoko sends — did you mean `sold`?"
    )
    assert config.rules[0].stop is True


def test_enabled_false_and_stop(tmp_path: Path) -> None:
    text = HEAD + RULE + RULE.replace("Sold", "Off") + "    enabled: off\n"
    text += RULE.replace("Sold", "Stopper") + "    stop: true\n"
    text += RULE.replace("Sold", "After")
    config = load(tmp_path, text)
    assert [r.enabled for r in config.rules] == [True, False, True, True]
    event = Event.from_envelope(sample("part-sold"))
    assert [r.name for r in matching_rules(config.rules, event)] == [
        "Sold",
        "Stopper",
    ]


def test_missing_field_in_a_template_names_rule_action_setting_and_field(
    tmp_path: Path,
) -> None:
    config = load(tmp_path, HEAD + RULE.replace("data.part_id", "data.price"))
    event = sample("part-sold")
    step = config.rules[0].steps[0]
    with pytest.raises(TemplateError) as info:
        render_value(step.compiled, {"event": event, "data": event["event_data"]})
    assert str(info.value) == (
        "rule `Sold`, action `office-log`, setting `message`: the event has no "
        "field `data.price` (write `{{ data.price | default('') }}` to allow it to "
        "be missing)"
    )


def test_tests_section_in_its_own_file(tmp_path: Path) -> None:
    (tmp_path / "sold.json").write_text(json.dumps(sample("part-sold")))
    (tmp_path / "office-tests.yaml").write_text(
        "tests:\n"
        "  - name: sold\n"
        "    event: sold.json\n"
        "    fires: [Sold]\n"
        "    messages:\n"
        "      - {rule: Sold, action: office-log, message: Part 17}\n"
        "      - {rule: Sold, action: office-log, mesage: x}\n"
    )
    with pytest.raises(ConfigError) as info:
        load(tmp_path, HEAD + RULE + "tests: office-tests.yaml\n")
    [problem] = info.value.problems
    assert problem.file.endswith("office-tests.yaml")
    assert (problem.line, problem.col) == (7, 42)

    text = (tmp_path / "office-tests.yaml").read_text().splitlines()[:-1]
    (tmp_path / "office-tests.yaml").write_text("\n".join(text) + "\n")
    config = load(tmp_path, HEAD + RULE + "tests: office-tests.yaml\n")
    [test] = config.tests
    assert (test.name, test.fires, test.event["event_id"]) == (
        "sold",
        ["Sold"],
        sample("part-sold")["event_id"],
    )
    assert test.messages[0].settings == {"message": "Part 17"}


def test_inline_test_event_keeps_ids_as_text(tmp_path: Path) -> None:
    text = (
        HEAD
        + RULE
        + (
            "tests:\n"
            "  - event:\n"
            "      event_id: x\n"
            "      event_type: part.status.changed\n"
            "      timestamp: '2023-01-12T14:17:20+02:00'\n"
            "      event_data: {part_id: 0123, status: no}\n"
        )
    )
    [test] = load(tmp_path, text).tests
    assert test.event["event_data"] == {"part_id": "0123", "status": "no"}


def test_the_example_config_loads_with_only_the_token(tmp_path: Path) -> None:
    shutil.copy(ROOT / "config.example.yaml", tmp_path / "config.yaml")
    config = config_module.load(str(tmp_path / "config.yaml"), ENV)
    assert config.warnings == []
    assert {"Part sold", "Part returned", "Part written off", "Part reserved"} <= {
        r.name for r in config.rules
    }
    assert {a.plugin for a in config.actions.values()} == {"log", "spreadsheet"}
    assert len(config.tests) >= 3


def test_a_rule_using_an_action_with_a_broken_plugin_gets_no_misleading_hint(
    tmp_path,
):
    path = tmp_path / "config.yaml"
    path.write_text(
        "auth: {tokens: [abcd1234]}\n"
        "actions:\n"
        "  sales-sheet: {plugin: spreadshet, path: a.csv}\n"
        "  returns-sheet: {plugin: log}\n"
        "rules:\n"
        "  - name: A\n"
        "    do:\n"
        "      - action: sales-sheet\n"
    )

    with pytest.raises(ConfigError) as info:
        config_module.load(str(path), {})

    messages = [p.message for p in info.value.problems]
    assert len(messages) == 1
    assert messages[0].startswith("unknown plugin `spreadshet` — did you mean")
