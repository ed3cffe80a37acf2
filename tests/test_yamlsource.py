"""YAML as written: text kept, places kept, ${VAR} filled, mistakes located."""

from __future__ import annotations

import pytest

from ovoko_relay.errors import ConfigError
from ovoko_relay.yamlsource import (
    Map,
    Seq,
    Text,
    is_null,
    load_file,
    load_text,
    plain,
)


def load(text: str, environ: dict[str, str] | None = None):
    return load_text(text, "c.yaml", environ or {})


@pytest.mark.parametrize(
    ("written", "text"),
    [
        ("no", "no"),
        ("yes", "yes"),
        ("0123", "0123"),
        ("15", "15"),
        ("1e3", "1e3"),
        ("0x1F", "0x1F"),
        ("1_000", "1_000"),
        ("'15'", "15"),
        ('"sold"', "sold"),
        ("2023-01-12", "2023-01-12"),
    ],
)
def test_scalars_stay_as_written(written: str, text: str) -> None:
    value = load(f"key: {written}\n")["key"]
    assert type(value) is Text
    assert value == text
    assert not value.null


@pytest.mark.parametrize("written", ["", "~", "null", "NULL"])
def test_unquoted_null_is_marked_null(written: str) -> None:
    value = load(f"key: {written}\n")["key"]
    assert value.null and value == ""
    assert plain({"key": value}) == {"key": None}


def test_quoted_null_is_text() -> None:
    assert not load("key: 'null'\n")["key"].null


@pytest.mark.parametrize(
    ("written", "null"),
    [("~", True), ("", True), ("''", False), ("x", False), ("[]", False)],
)
def test_is_null_tells_an_absent_value_from_a_written_one(
    written: str, null: bool
) -> None:
    assert is_null(load(f"key: {written}\n")["key"]) is null
    assert is_null(load("other: 1\n").get("key"))


def test_every_value_knows_its_line_and_column() -> None:
    root = load("a:\n  b: [x, y]\n  c: |\n    text\n")
    assert isinstance(root, Map) and isinstance(root["a"]["b"], Seq)
    assert (root["a"]["b"][1].mark.line, root["a"]["b"][1].mark.col) == (2, 10)
    assert (root["a"].key_mark("c").line, root["a"].key_mark("c").col) == (3, 3)
    assert root["a"]["c"].block and not root["a"]["b"][0].block


def test_duplicate_key_names_both_lines() -> None:
    with pytest.raises(ConfigError) as info:
        load("rules: []\nserver:\n  port: 1\n  port: 2\n")
    [problem] = info.value.problems
    assert (problem.line, problem.col) == (4, 3)
    assert problem.message == (
        "duplicate key `port` (first written on line 3); keep only one"
    )


def test_tab_in_indentation_names_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        load("server:\n  port: 1\n\thost: x\n")
    [problem] = info.value.problems
    assert (problem.line, problem.col) == (3, 1)
    assert "tab in the indentation" in problem.message


def test_syntax_error_is_located() -> None:
    with pytest.raises(ConfigError) as info:
        load("a: [1, 2\nb: 3\n")
    assert info.value.problems[0].message.startswith("YAML syntax error")
    assert info.value.problems[0].line == 2


@pytest.mark.parametrize(
    ("written", "environ", "text", "secret"),
    [
        ("${TOKEN}", {"TOKEN": "abc"}, "abc", True),
        ("Bearer ${TOKEN}", {"TOKEN": "abc"}, "Bearer abc", True),
        ("${PORT:-8080}", {}, "8080", False),
        ("${PORT:-8080}", {"PORT": "9"}, "9", False),
        ("${SMTP_PASSWORD}", {"SMTP_PASSWORD": "pw"}, "pw", True),
        (
            "${SLACK_WEBHOOK_URL}",
            {"SLACK_WEBHOOK_URL": "https://h/x"},
            "https://h/x",
            True,
        ),
        ("${API_KEY}", {"API_KEY": "k"}, "k", True),
        ("${SMTP_HOST}", {"SMTP_HOST": "127.0.0.1"}, "127.0.0.1", False),
        (
            "${STATE_DIRECTORY}/x",
            {"STATE_DIRECTORY": "/var/lib/r"},
            "/var/lib/r/x",
            False,
        ),
        ("${EMPTY:-x}", {"EMPTY": ""}, "x", False),
        ("price $$5", {}, "price $5", False),
        ("plain", {"plain": "no"}, "plain", False),
    ],
)
def test_environment_interpolation(
    written: str, environ: dict[str, str], text: str, secret: bool
) -> None:
    value = load(f"key: '{written}'\n", environ)["key"]
    assert (value, value.secret) == (text, secret)


def test_missing_variable_is_an_error_naming_it_and_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        load("a: 1\nauth:\n  tokens: ['${OVOKO_TOKEN}', '${OTHER}']\n")
    problems = info.value.problems
    assert [(p.line, p.col) for p in problems] == [(3, 12), (3, 30)]
    assert "environment variable `OVOKO_TOKEN` is not set" in problems[0].message
    assert "`OTHER`" in problems[1].message


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        load_file(str(tmp_path / "nope.yaml"))
    assert info.value.problems[0].message == "file not found"


def test_python_tags_are_not_constructed() -> None:
    root = load("a: !!python/object/apply:os.system ['echo hi']\n")
    assert plain(root) == {"a": ["echo hi"]}


RULE_WITH = (
    "rules:\n  - name: A\n    do:\n      - action: n\n        {line}\n"
    '  - name: B\n    do:\n      - action: n\n        message: "ok"\n'
)


@pytest.mark.parametrize(
    ("line", "where", "hint"),
    [
        (
            "message: {{ data.part_id }} was written off",
            (5, 37),
            "a value that starts with {{ or {% must be in quotes",
        ),
        (
            "message: Part was written off: {{ data.part_id }}",
            (5, 38),
            'a value that contains ": " must be in quotes',
        ),
        (
            'message: "Part {{ data.part_id }} sold',
            (9, 19),
            "the quote on line 5 may not be closed",
        ),
    ],
)
def test_a_common_syntax_mistake_gets_a_hint_on_how_to_fix_it(
    line: str, where: tuple[int, int], hint: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(RULE_WITH.format(line=line))

    [problem] = info.value.problems
    assert (problem.line, problem.col) == where
    assert problem.message.startswith("YAML syntax error: ")
    assert hint in problem.message
