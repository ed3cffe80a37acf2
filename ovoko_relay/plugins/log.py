"""The `log` plugin: write the rendered message to the relay's own log."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .base import Event, Plugin, Setting

log = logging.getLogger(__name__)


class LogPlugin(Plugin):
    """Write one log line per delivery with the rendered message."""

    name = "log"
    settings = {
        "message": Setting(required=True, help="The text to log (a template)."),
    }

    def deliver(self, settings: Mapping[str, Any], event: Event) -> None:
        log.info("event_id=%s message=%r", event.event_id, settings["message"])
