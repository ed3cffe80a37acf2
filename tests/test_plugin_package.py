"""The plugin distribution in plugins/ installs, is discovered, and delivers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, sample
from plugin_peers import wait_until

PACKAGE = ROOT / "plugins" / "ovoko-relay-jsonl"

CONFIG = """\
auth: {tokens: ["${OVOKO_TOKEN}"]}
storage: {path: ./relay.sqlite3}
actions:
  audit:
    plugin: jsonl
    folder: ./audit
rules:
  - name: Keep part events
    when:
      event_type: part.status.changed
    do:
      - action: audit
      - action: audit
        prefix: sales
        fields:
          part: "{{ data.part_id }}"
          status: "{{ data.status }}"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the distribution with pip into a folder of its own, offline.

    A target folder on PYTHONPATH, rather than site-packages, keeps the
    shared environment unchanged; discovery works the same way because the
    relay finds plugins through the installed metadata on sys.path.
    """
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--no-index", "--target", str(target),
         str(PACKAGE)],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, (
        "pip could not install plugins/ovoko-relay-jsonl (it needs setuptools and "
        f"wheel in this environment: pip install -e .[test]):\n{result.stderr}"
    )
    return target


def with_site(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site)}


def relay_command(
    *args: str, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ovoko_relay", *args],
        capture_output=True,
        text=True,
        env={**env, "OVOKO_TOKEN": "t" * 20},
        cwd=cwd,
        timeout=60,
    )


def test_the_installed_distribution_registers_its_entry_point(site):
    dist_info = next(site.glob("ovoko_relay_jsonl-*.dist-info"))
    entry_points = (dist_info / "entry_points.txt").read_text()
    assert "[ovoko_relay.plugins]" in entry_points
    assert "jsonl = ovoko_relay_jsonl:JsonLinesPlugin" in entry_points

    probe = (
        "from ovoko_relay.plugins import installed; i = installed()['jsonl']; "
        "print(i.distribution, i.version, i.cls.__name__, i.error or 'ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True, text=True, env=with_site(site), timeout=60,
    )  # fmt: skip
    assert result.stdout.split() == [
        "ovoko-relay-jsonl",
        "1.0.0",
        "JsonLinesPlugin",
        "ok",
    ]


def test_the_plugins_command_lists_it_with_version_and_source(site, tmp_path):
    result = relay_command("plugins", env=with_site(site), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("jsonl "))
    assert line.split() == [
        "jsonl",
        "1.0.0",
        "ovoko-relay-jsonl",
        "ovoko_relay_jsonl:JsonLinesPlugin",
        "ok",
    ]


def test_check_accepts_the_plugin_only_once_installed(site, tmp_path):
    (tmp_path / "config.yaml").write_text(CONFIG)

    without = relay_command(
        "check", "--config", "config.yaml", env=dict(os.environ), cwd=tmp_path
    )
    assert without.returncode == 1
    assert "unknown plugin `jsonl`" in without.stderr

    with_plugin = relay_command(
        "check", "--config", "config.yaml", env=with_site(site), cwd=tmp_path
    )
    assert with_plugin.returncode == 0, with_plugin.stderr


def test_the_distributions_own_tests_pass(site):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        capture_output=True, text=True, cwd=PACKAGE, env=with_site(site), timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout


@pytest.mark.e2e
def test_the_relay_delivers_through_the_installed_plugin(
    site, write_config, start_relay, tmp_path
):
    relay = start_relay(write_config(CONFIG), env={"PYTHONPATH": str(site)})
    event = sample("part-sold")

    assert relay.post(event).status_code in (200, 202)
    day = event["timestamp"][:10]
    whole = wait_until(
        (tmp_path / "audit" / f"ovoko-events-{day}.jsonl").read_text, what="jsonl"
    )
    picked = wait_until((tmp_path / "audit" / f"sales-{day}.jsonl").read_text)
    assert [json.loads(line) for line in whole.splitlines()] == [event]
    assert json.loads(picked) == {
        "part": event["event_data"]["part_id"],
        "status": event["event_data"]["status"],
    }
