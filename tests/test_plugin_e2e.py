"""A sold event through the real relay reaches Slack, e-mail, CSV, XLSX and HTTP."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io

import openpyxl
import pytest
from conftest import sample
from plugin_peers import (
    self_signed_cert,
    server_tls_context,
    start_receiver,
    start_smtp,
    wait_until,
)

SLACK_PATH = "/services/T000/B000/slack-secret-path"
SMTP_PASSWORD = "smtp-pass-e2e-123"
ERP_SECRET = "erp-signing-secret-456"

CONFIG = """\
auth: {tokens: ["${OVOKO_TOKEN}"]}
storage: {path: ./relay.sqlite3}
actions:
  sales-channel:
    plugin: slack
    webhook_url: "${SLACK_WEBHOOK_URL}"
  warehouse-mail:
    plugin: email
    smtp_host: 127.0.0.1
    smtp_port: %(smtp_port)d
    security: starttls
    username: relay
    password: "${SMTP_PASSWORD}"
    from: Relay <relay@scrapyard.example>
    to: [warehouse@scrapyard.example, "{{ data.external_id }}@shelves.example"]
  sales-csv:
    plugin: spreadsheet
    path: ./sheets/sold.csv
  sales-xlsx:
    plugin: spreadsheet
    path: ./sheets/sold.xlsx
    sheet: Sold parts
  erp:
    plugin: http
    url: %(erp_url)s/ovoko/sold
    signing_secret: "${ERP_SECRET}"
rules:
  - name: Part sold
    when:
      event_type: part.status.changed
      status: [sold, sold_in_ebay, sold_in_allegro]
    do:
      - action: sales-channel
        message: "Part {{ data.part_id }} sold ({{ data.status }})"
        blocks:
          - type: section
            text: {type: mrkdwn, text: "*Sold:* part {{ data.part_id }}"}
      - action: warehouse-mail
        subject: "Sold: part {{ data.part_id }}"
        body: "Pick part {{ data.part_id }} ({{ data.external_id }})."
        html: "<p>Pick part <b>{{ data.part_id }}</b></p>"
      - action: sales-csv
        columns:
          Part: "{{ data.part_id }}"
          Status: "{{ data.status }}"
          Event: "{{ event.event_id }}"
      - action: sales-xlsx
        columns:
          Part: "{{ data.part_id }}"
          Status: "{{ data.status }}"
          Event: "{{ event.event_id }}"
      - action: erp
"""


@pytest.mark.e2e
def test_a_sold_event_reaches_every_action(tmp_path, write_config, start_relay):
    pytest.importorskip("cryptography")
    cert, key = self_signed_cert(tmp_path)
    event = sample("part-sold")
    data = event["event_data"]

    for slack in start_receiver():
        for erp in start_receiver():
            for mailbox in start_smtp(
                tls_context=server_tls_context(cert, key),
                login=("relay", SMTP_PASSWORD),
            ):
                config = write_config(
                    CONFIG % {"smtp_port": mailbox.port, "erp_url": erp.url}
                )
                relay = start_relay(
                    config,
                    env={
                        "SLACK_WEBHOOK_URL": slack.url + SLACK_PATH,
                        "SMTP_PASSWORD": SMTP_PASSWORD,
                        "ERP_SECRET": ERP_SECRET,
                        "SSL_CERT_FILE": str(cert),
                    },
                )
                assert relay.post(event).status_code in (200, 202)

                posted = slack.wait()[0]
                mail = mailbox.wait()[0]
                forwarded = erp.wait()[0]
                csv_text = wait_until(
                    lambda: _rows(tmp_path / "sheets" / "sold.csv"), what="CSV row"
                )
                xlsx_rows = wait_until(
                    lambda: _xlsx_rows(tmp_path / "sheets" / "sold.xlsx"),
                    what="XLSX row",
                )
                log = relay.log()

    assert posted.path == SLACK_PATH
    assert posted.json() == {
        "text": f"Part {data['part_id']} sold (sold)",
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*Sold:* part {data['part_id']}"},
            }
        ],
    }

    assert mail["Subject"] == f"Sold: part {data['part_id']}"
    assert mail["From"] == "Relay <relay@scrapyard.example>"
    assert mailbox.envelopes[0][1] == [
        "warehouse@scrapyard.example",
        f"{data['external_id']}@shelves.example",
    ]
    assert mail.get_body(("plain",)).get_content().strip() == (
        f"Pick part {data['part_id']} ({data['external_id']})."
    )
    assert "<b>" + data["part_id"] + "</b>" in mail.get_body(("html",)).get_content()

    assert forwarded.json() == event
    digest = hmac.new(ERP_SECRET.encode(), forwarded.body, hashlib.sha256).hexdigest()
    assert forwarded.headers["X-Ovoko-Relay-Signature"] == f"sha256={digest}"

    expected = [
        ["Part", "Status", "Event"],
        [data["part_id"], "sold", event["event_id"]],
    ]
    assert csv_text == expected
    assert xlsx_rows == expected

    for secret in (SLACK_PATH, SMTP_PASSWORD, ERP_SECRET):
        assert secret not in log


def _rows(path):
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    return rows if len(rows) >= 2 else None


def _xlsx_rows(path):
    workbook = openpyxl.load_workbook(path)
    rows = [list(r) for r in workbook["Sold parts"].iter_rows(values_only=True)]
    return rows if len(rows) >= 2 else None
