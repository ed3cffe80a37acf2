"""A reload must not hold up webhooks: found by a second adversarial review."""

from __future__ import annotations

import signal
import time

from conftest import LOG_CONFIG, sample

# An office test whose regex backtracks for seconds on its long sample field,
# as a pattern with nested repeats does (conditions.py has a TODO about it).
SLOW_TESTS = """\
tests:
  - name: A long warehouse code
    event:
      event_id: t1
      event_type: part.status.changed
      timestamp: "2023-01-12T14:18:20+02:00"
      event_data: {part_id: "16", status: sold, external_id: %s}
    fires: []
"""


def test_a_webhook_is_answered_quickly_while_a_reload_runs_the_office_tests(
    write_config, start_relay
):
    path = write_config(LOG_CONFIG)
    relay = start_relay(path)
    slow = LOG_CONFIG.replace(
        "when: {status: sold}",
        "when: {status: sold, external_id: {regex: '^(a+)+$'}}",
    ) + SLOW_TESTS % ("a" * 27 + "b")
    path.write_text(slow)

    relay.signal(signal.SIGHUP)
    time.sleep(0.3)  # the reload has begun: loading the file takes far less
    started = time.monotonic()
    answer = relay.post(sample("part-sold"))
    took = time.monotonic() - started

    assert answer.status_code == 200
    # Invariant 2: nothing slow before the answer; Ovoko's sender gives up soon.
    assert took < 1.0, f"the webhook waited {took:.1f}s for the reload"
    # Such a pattern is now refused when the config is read, so the reload is
    # rejected at once instead of backtracking for seconds.
    log = relay.wait_for_log("reload outcome=kept_running_config", timeout=60)
    assert "repeats something that itself repeats" in log
    assert relay.stop() == 0
