"""Config files that broke `ovoko-relay check`: found by trying to break it."""

from __future__ import annotations

import subprocess
import sys

import pytest


def check(path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ovoko_relay", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=10,
    )


@pytest.mark.parametrize(
    "text",
    ["", "# the office will fill this in\n", "\n\n"],
    ids=["empty", "only-a-comment", "blank-lines"],
)
def test_an_empty_config_is_reported_as_file_line_col_not_a_traceback(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)

    result = check(path)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert f"{path}:1:1:" in result.stdout + result.stderr


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, 9):
        refs = ", ".join([f"*a{n - 1}"] * 8)
        lines.append(f"a{n}: &a{n} [{refs}]")
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(lines) + '\nauth: {tokens: ["x1234567"]}\n')

    try:
        result = check(path)
    except subprocess.TimeoutExpired:
        pytest.fail("check ran for over 10 s on a 10-line file")

    assert result.returncode == 1
    assert f"{path}:" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "webhook_path",
    ["/hooks/{seller}", "/healthz", "/metrics", "/web hooks"],
    ids=["uri-template", "health-route", "metrics-route", "space"],
)
def test_a_webhook_path_the_server_cannot_serve_fails_check(tmp_path, webhook_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        f'server: {{path: "{webhook_path}"}}\n'
        'auth: {tokens: ["x1234567"]}\n'
        "storage: {path: ./data/relay.sqlite3}\n"
    )

    result = check(path)

    # serve answers every webhook 500 or 405, or stops with a traceback.
    assert result.returncode == 1, result.stdout
    assert f"{path}:1:" in result.stdout + result.stderr
