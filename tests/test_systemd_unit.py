"""The systemd unit: systemd accepts it, it is hardened, its reload validates first."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LOG_CONFIG, ROOT, sample

from ovoko_relay.config import DeliveryConfig
from ovoko_relay.server import DRAIN_REQUESTS_SECONDS

UNIT = ROOT / "contrib" / "systemd" / "ovoko-relay.service"
INSTALLED = "/opt/ovoko-relay/venv/bin/ovoko-relay"
CONFIG = "/etc/ovoko-relay/config.yaml"


def directives() -> list[tuple[str, str]]:
    """Return the unit's (key, value) lines in order; keys may repeat."""
    pairs = []
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            pairs.append((key, value))
    return pairs


def values(key: str) -> list[str]:
    return [value for k, value in directives() if k == key]


def installed_command() -> str:
    """Return the path of the ovoko-relay command installed with this Python."""
    beside = Path(sys.executable).parent / "ovoko-relay"
    found = str(beside) if beside.exists() else shutil.which("ovoko-relay")
    assert found, "the ovoko-relay command is not installed"
    return found


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify insists that ExecStart's program exists, so point the unit at the
    # command installed here instead of the /opt path of docs/deploy.md.
    text = UNIT.read_text()
    assert INSTALLED in text
    unit = tmp_path / "ovoko-relay.service"
    unit.write_text(text.replace(INSTALLED, installed_command()))

    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    complaints = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if "ovoko-relay" in line
    ]
    assert done.returncode == 0, done.stderr
    assert complaints == []


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("DynamicUser", "yes"),
        ("StateDirectory", "ovoko-relay"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("EnvironmentFile", "/etc/ovoko-relay/relay.env"),
        ("Restart", "on-failure"),
        ("KillMode", "mixed"),
    ],
)
def test_unit_sets(key: str, expected: str) -> None:
    assert values(key) == [expected]


def test_reload_validates_before_it_signals() -> None:
    assert values("ExecReload") == [
        f"{INSTALLED} check --config {CONFIG}",
        "/bin/kill -HUP $MAINPID",
    ]
    assert values("ExecStart") == [f"{INSTALLED} serve --config {CONFIG}"]


def test_stop_timeout_leaves_room_for_the_grace_period() -> None:
    (timeout,) = values("TimeoutStopSec")
    seconds = int(re.fullmatch(r"(\d+)s", timeout).group(1))  # type: ignore[union-attr]

    assert seconds > DeliveryConfig().grace_period + DRAIN_REQUESTS_SECONDS + 5


def run_exec_reload(config: Path, pid: int, env: dict[str, str]) -> int:
    """Run the unit's ExecReload lines as systemd does: in order, stop at a failure."""
    for line in values("ExecReload"):
        line = line.replace(INSTALLED, installed_command()).replace(CONFIG, str(config))
        argv = shlex.split(line.replace("$MAINPID", str(pid)))
        code = subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode
        if code != 0:
            return code
    return 0


@pytest.mark.e2e
def test_systemctl_reload_fails_on_a_bad_file_and_the_relay_keeps_running(
    write_config, start_relay, relay_env: dict[str, str]
) -> None:
    path = write_config(LOG_CONFIG)
    relay = start_relay(path)
    assert relay.proc is not None

    path.write_text(LOG_CONFIG.replace("action: office-log", "action: ofice-log"))
    assert run_exec_reload(path, relay.proc.pid, relay_env) != 0
    assert "reload outcome" not in relay.log()
    assert relay.post(sample("part-sold")).status_code == 200

    path.write_text(LOG_CONFIG.replace("sold {{", "SOLD {{"))
    assert run_exec_reload(path, relay.proc.pid, relay_env) == 0
    relay.wait_for_log("reload outcome=applied")
    assert relay.stop() == 0


def test_kill_is_where_the_unit_says() -> None:
    assert os.access("/bin/kill", os.X_OK)
