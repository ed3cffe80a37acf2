"""`ovoko-relay check` and `test` run as the office runs them, on real files."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES

EXAMPLE = (ROOT / "config.example.yaml").read_text()


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ovoko_relay", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def line_of(text: str, needle: str) -> int:
    """Return the 1-based line of the first line containing ``needle``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the config")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_check_passes_on_the_example_with_only_the_token(
    tmp_path: Path, relay_env: dict[str, str]
) -> None:
    config = write(tmp_path, EXAMPLE)
    result = run(relay_env, "check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{config}: OK (6 rules, 3 actions, 4 tests passed)\n"
    assert result.stderr == ""
    assert run(relay_env, "check", "--strict", "--config", str(config)).returncode == 0


def test_check_reports_every_problem_with_its_place(
    tmp_path: Path, relay_env: dict[str, str]
) -> None:
    broken = (
        EXAMPLE.replace("when:\n      status: returned", "wen:\n      status: returned")
        .replace("path: ./data/returns.csv", "path: ./data/returns.csv\n    colour: x")
        .replace("{{ data.part_id }} was written", "{{ data.part_id } was written")
        .replace("      status: reserved", "      status: {in: [reserved], eq: x}")
    )  # fmt: skip
    config = write(tmp_path, broken)
    result = run(relay_env, "check", "--config", str(config))

    assert result.returncode == 1
    assert result.stdout == ""
    wen = line_of(broken, "    wen:")
    colour = line_of(broken, "colour: x")
    template = line_of(broken, "{{ data.part_id } was written off")
    operator = line_of(broken, "eq: x")
    assert result.stderr.splitlines() == [
        f"{config}:{colour}:5: unknown setting `colour` for plugin `spreadsheet` — "
        "did you mean `columns`?",
        f"{config}:{wen}:5: unknown key `wen` in a rule — did you mean `when`?",
        f"{config}:{template}:18: template error in rule `Part written off`, action "
        "`office-log`, setting `message`: unexpected '}'",
        f"{config}:{operator}:32: unknown operator `eq` (operators: not, in, not_in, "
        "glob, regex, gt, gte, lt, lte, exists, contains, missing)",
    ]


def test_warnings_pass_check_but_fail_strict(
    tmp_path: Path, relay_env: dict[str, str]
) -> None:
    broken = EXAMPLE.replace("      status: written_off", "      status: writen_off")
    config = write(tmp_path, broken)
    where = f"{config}:{line_of(broken, 'status: writen_off')}:15"
    message = (
        "`writen_off` is not a part status Ovoko sends — did you mean `written_off`?"
    )

    result = run(relay_env, "check", "--config", str(config))
    assert result.returncode == 0
    assert f"{where}: warning: {message}\n" == result.stderr

    strict = run(relay_env, "check", "--strict", "--config", str(config))
    assert strict.returncode == 1
    assert strict.stderr == f"{where}: {message}\n"
    assert "OK" not in strict.stdout


def test_check_shows_a_diff_when_an_office_test_fails(
    tmp_path: Path, relay_env: dict[str, str]
) -> None:
    broken = EXAMPLE.replace(
        'message: "Part {{ data.part_id }} sold ({{ data.status }})"',
        'message: "Part {{ data.part_id }} has been sold ({{ data.status }})"',
    ).replace("          Sold on: eBay\n", "          Sold on: Ebay\n")
    config = write(tmp_path, broken)
    result = run(relay_env, "check", "--config", str(config))

    assert result.returncode == 1
    assert (
        "-Part 18 sold (sold_in_ebay)\n    +Part 18 has been sold (sold_in_ebay)"
        in (result.stderr)
    )
    assert "-Sold on: Ebay\n    +Sold on: eBay" in result.stderr
    expected_at = f"{config}:{line_of(broken, '      - rule: Part sold')}:9: "
    assert result.stderr.startswith(
        expected_at + "test `A part sold on eBay is logged and written to the sheet`: "
        "rule `Part sold`, action `office-log`, setting `message` differs\n"
    )
    assert "setting `message` differs" in result.stderr
    assert "setting `columns` differs" in result.stderr


def test_check_reports_rules_that_did_not_fire(
    tmp_path: Path, relay_env: dict[str, str]
) -> None:
    broken = EXAMPLE.replace(
        "  - name: Part reserved\n", "  - name: Part reserved\n    enabled: false\n"
    )
    config = write(tmp_path, broken)
    result = run(relay_env, "check", "--config", str(config))
    assert result.returncode == 1
    assert "the rules that fired differ\n    --- expected to fire\n    +++ fired\n" in (
        result.stderr
    )
    assert "    -Part reserved\n" in result.stderr
    assert "rule `Part reserved` did not fire, so action `office-log` sent nothing" in (
        result.stderr
    )


def test_check_without_the_token_names_the_variable(tmp_path: Path, relay_env) -> None:
    config = write(tmp_path, EXAMPLE)
    env = {k: v for k, v in relay_env.items() if k != "OVOKO_TOKEN"}
    result = run(env, "check", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"{config}:{line_of(EXAMPLE, 'tokens:')}:12: environment variable "
        "`OVOKO_TOKEN` is not set"
    )


def test_test_explains_each_rule_and_shows_messages_without_sending(
    tmp_path: Path, relay_env: dict[str, str]
) -> None:
    config = write(tmp_path, EXAMPLE)
    result = run(
        relay_env, "test", "--config", str(config),
        str(SAMPLES / "part-returned.json"), str(SAMPLES / "seed-example.json"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    status_line = line_of(EXAMPLE, "status: [sold, sold_in_ebay")
    assert (
        f'  no match Part sold: status is "returned", expected one of `sold`, '
        f"`sold_in_ebay`, `sold_in_allegro` [{config}:{status_line}:7]\n" in out
    )
    assert "  MATCH    Part returned\n" in out
    assert "  off      Part back in the warehouse (enabled: false)\n" in out
    assert (
        "  rule `Part returned` -> action `office-log` (log)\n"
        "    message: Part 20 came back: put it on the shelf again\n" in out
    )
    assert "      Part: 15\n      Warehouse code: \n      Status: sold\n" in out
    assert out.endswith("Nothing was sent (add --send to really deliver).\n")
    assert not (tmp_path / "data").exists()


def test_test_with_send_really_delivers(
    tmp_path: Path, relay_env: dict[str, str]
) -> None:
    config = write(tmp_path, EXAMPLE)
    result = run(
        relay_env, "test", "--send", "--config", str(config),
        str(SAMPLES / "part-sold-in-ebay.json"), str(SAMPLES / "part-reserved.json"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("    sent: done\n") == 3
    sheet = tmp_path / "data" / "sold-parts.csv"
    with open(sheet, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert rows == [
        {
            "Received": "12.01.2023 14:20",
            "Part": "18",
            "Warehouse code": "WH-1003",
            "Status": "sold_in_ebay",
            "Sold on": "eBay",
            "Event": "101aa6a1-ed22-42f0-8c4c-a1f8a028a2d3",
        }
    ]
    assert "Part 16 is reserved since 14:18: keep it aside" in result.stderr


def test_test_masks_secrets_and_reports_template_errors(
    tmp_path: Path, relay_env: dict[str, str]
) -> None:
    config = write(
        tmp_path,
        'auth: {tokens: ["${OVOKO_TOKEN}"]}\n'
        "actions:\n"
        "  note: {plugin: log, message: 'key ${SHOP_KEY} part {{ data.part_id }}'}\n"
        "rules:\n"
        "  - name: Any\n"
        "    do: [{action: note}]\n"
        "  - name: Price\n"
        "    do: [{action: note, message: '{{ data.price }}'}]\n",
    )
    env = {**relay_env, "SHOP_KEY": "very-secret-key-42"}
    result = run(
        env, "test", "--send", "--config", str(config), str(SAMPLES / "part-sold.json")
    )
    assert result.returncode == 1
    assert "    message: key *** part 17\n" in result.stdout
    assert (
        "    cannot render: rule `Price`, action `note`, setting `message`: the event "
        "has no field `data.price`" in result.stdout
    )
    assert "very-secret-key-42" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "not an Ovoko event: The request body is not valid JSON"),
        ('{"event_id": "x"}', "The field `event_type` of the event is missing."),
    ],
)
def test_test_rejects_a_file_that_is_not_an_event(
    tmp_path: Path, relay_env: dict[str, str], body: str, message: str
) -> None:
    config = write(tmp_path, EXAMPLE)
    bad = tmp_path / "bad.json"
    bad.write_text(body)
    shutil.copy(SAMPLES / "part-sold.json", tmp_path / "good.json")
    result = run(
        relay_env,
        "test",
        "--config",
        str(config),
        str(bad),
        str(tmp_path / "good.json"),
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"{bad}: ")
    assert message in result.stderr
    assert "MATCH    Part sold" in result.stdout


def test_check_diff_never_shows_a_secret(
    tmp_path: Path, relay_env: dict[str, str]
) -> None:
    shutil.copy(SAMPLES / "part-sold.json", tmp_path / "sold.json")
    config = write(
        tmp_path,
        'auth: {tokens: ["${OVOKO_TOKEN}"]}\n'
        "actions:\n"
        "  note: {plugin: log, message: 'key ${SHOP_KEY} part {{ data.part_id }}'}\n"
        "rules:\n"
        "  - name: Any\n"
        "    do: [{action: note}]\n"
        "tests:\n"
        "  - event: sold.json\n"
        "    fires: [Any]\n"
        "    messages:\n"
        "      - {rule: Any, action: note, message: 'key ${SHOP_KEY} part 9'}\n",
    )
    env = {**relay_env, "SHOP_KEY": "very-secret-key-42"}
    result = run(env, "check", "--config", str(config))
    assert result.returncode == 1
    assert "    -key *** part 9\n    +key *** part 17" in result.stderr
    assert "very-secret-key-42" not in result.stdout + result.stderr
