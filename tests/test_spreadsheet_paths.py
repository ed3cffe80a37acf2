"""A templated spreadsheet path fed from event data: found by trying to break it."""

from __future__ import annotations

from conftest import sample

CONFIG = """
    auth:
      tokens: ["${OVOKO_TOKEN}"]
    storage:
      path: ./data/relay.sqlite3
    actions:
      sheet:
        plugin: spreadsheet
        path: "./a/sheets/{{ data.part_id }}.csv"
        columns: {Part: "{{ data.part_id }}"}
    rules:
      - name: Part sold
        when: {status: sold}
        do:
          - action: sheet
"""


def test_event_data_in_a_path_cannot_write_outside_the_sheets_folder(
    tmp_path, write_config, start_relay
):
    relay = start_relay(write_config(CONFIG))
    event = sample("part-sold")
    event["event_data"]["part_id"] = "../../escaped"

    assert relay.post(event).status_code == 200
    relay.wait_for_log(r"action=sheet plugin=spreadsheet attempt=1 outcome=")

    escaped = tmp_path / "escaped.csv"
    assert not escaped.exists(), f"a row was written to {escaped}"
