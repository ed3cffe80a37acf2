"""Environment values in settings: masking by name and literal values, second review."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLES, TOKEN

from ovoko_relay.templates import compile_template
from ovoko_relay.yamlsource import load_text

CONFIG = """\
auth: {tokens: ["${OVOKO_TOKEN}"]}
storage: {path: ./data/relay.sqlite3}
actions:
  forward:
    plugin: http
    url: "http://127.0.0.1:9/hook"
    headers: {Authorization: "Bearer ${%s}"}
rules:
  - name: Sold
    when: {status: sold}
    do:
      - {action: forward}
"""


# docs/deploy.md: "the value of every environment variable whose name contains
# TOKEN, SECRET, PASSWORD (or PASS, PWD), KEY, ..." is replaced by ***.
@pytest.mark.parametrize("name", ["ERP_PASSWORD", "ERP_PASS", "ERP_PWD"])
def test_a_secret_named_variable_is_masked_in_what_test_prints(
    tmp_path: Path, name: str
) -> None:
    secret = "hunter2-the-erp-secret"
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG % name)
    env = {"PATH": "/usr/bin:/bin", "OVOKO_TOKEN": TOKEN, name: secret}
    done = subprocess.run(
        [sys.executable, "-m", "ovoko_relay", "test", "-c", str(path)]
        + [str(SAMPLES / "part-sold.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert "Authorization: " in done.stdout, done.stdout + done.stderr
    assert secret not in done.stdout + done.stderr


@pytest.mark.parametrize(
    "value", ["p{x\N{GRINNING FACE}", "{{ \N{SNOWMAN} }}", "%}\N{PILE OF POO}"]
)
def test_an_environment_value_with_template_marks_reaches_the_plugin_unchanged(
    value: str,
) -> None:
    root = load_text(
        'password: "${SMTP_PASSWORD}"\n', "c.yaml", {"SMTP_PASSWORD": value}
    )
    problems: list = []
    template = compile_template(root["password"], "password", problems)
    assert problems == []
    assert template.render({}) == value


def test_an_environment_value_inside_an_expression_is_not_read_as_jinja_code() -> None:
    root = load_text(
        "message: \"{{ '${GREETING}' }} part {{ data.part_id }}\"\n",
        "c.yaml",
        {"GREETING": "Hi' ~ data.status ~ '"},
    )
    problems: list = []
    template = compile_template(root["message"], "message", problems)
    context = {"data": {"part_id": "17", "status": "sold"}, "event": {}, "rule": "r"}
    assert problems == []
    assert template.render(context) == "Hi' ~ data.status ~ ' part 17"
