"""`ovoko-relay init`: a starter config that checks, a token kept out of it."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ovoko_relay.cli import main


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ovoko_relay", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def env_file_values(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name] = value
    return pairs


def test_init_writes_a_config_that_passes_check(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "config.yaml"

    done = run("init", str(config))

    assert done.returncode == 0, done.stderr
    env_file = tmp_path / "etc" / "relay.env"
    token = env_file_values(env_file)["OVOKO_TOKEN"]
    assert len(token) >= 40
    assert token not in config.read_text()
    assert "${OVOKO_TOKEN}" in config.read_text()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert "Settings > Integrations > API" in done.stdout
    assert re.search(r"Header name: +X-Ovoko-Token\n", done.stdout)
    assert re.search(rf"Header value: +{re.escape(token)}\n", done.stdout)

    env = {k: v for k, v in os.environ.items() if not k.startswith("OVOKO_")}
    checked = run("check", "--config", str(config), env={**env, "OVOKO_TOKEN": token})
    assert checked.returncode == 0, checked.stderr
    assert "OK" in checked.stdout


def test_each_init_makes_a_new_token(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "config.yaml", tmp_path / "b" / "config.yaml"
    assert main(["init", str(first)]) == 0
    assert main(["init", str(second)]) == 0

    assert (
        env_file_values(first.parent / "relay.env")["OVOKO_TOKEN"]
        != env_file_values(second.parent / "relay.env")["OVOKO_TOKEN"]
    )


def test_init_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("# mine\n")

    assert main(["init", str(config)]) == 1

    assert config.read_text() == "# mine\n"
    assert not (tmp_path / "relay.env").exists()
    assert "already exists" in capsys.readouterr().err


def test_force_replaces_the_config_and_keeps_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    assert main(["init", str(config)]) == 0
    env_file = tmp_path / "relay.env"
    before = env_file.read_text()
    config.write_text("# broken by hand\n")
    capsys.readouterr()

    assert main(["init", "--force", str(config)]) == 0

    assert env_file.read_text() == before
    assert "auth:" in config.read_text()
    token = env_file_values(env_file)["OVOKO_TOKEN"]
    assert f"Header value:  {token}" in capsys.readouterr().out


def test_init_into_a_folder_writes_config_yaml(tmp_path: Path) -> None:
    assert main(["init", str(tmp_path)]) == 0

    assert (tmp_path / "config.yaml").exists()
    assert (tmp_path / "relay.env").exists()
