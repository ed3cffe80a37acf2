"""The `slack` plugin: post a message to a Slack incoming webhook."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from . import _http
from .base import Event, PermanentError, Plugin, Setting

WHO = "the Slack webhook"


class SlackPlugin(Plugin):
    """Post the rendered text, and optionally Block Kit blocks, to one channel."""

    name = "slack"
    settings = {
        "webhook_url": Setting(
            required=True,
            secret=True,
            help="The incoming-webhook URL Slack gave you (keep it in ${VAR}).",
        ),
        "message": Setting(
            required=True,
            help="The message text; with blocks, the text shown in notifications.",
        ),
        "blocks": Setting(
            kind="any",
            help="Block Kit blocks: a YAML list, or JSON text, of blocks.",
        ),
    }

    def deliver(self, settings: Mapping[str, Any], event: Event) -> None:
        payload: dict[str, Any] = {"text": settings["message"]}
        if settings.get("blocks") not in (None, "", [], {}):
            payload["blocks"] = blocks(settings["blocks"])
        _http.request(
            "POST",
            settings["webhook_url"],
            json.dumps(payload, ensure_ascii=False).encode("utf-8"),
            {"Content-Type": "application/json; charset=utf-8"},
            self.timeout,
            WHO,
        )


def blocks(value: Any) -> list[Any]:
    """Return Block Kit blocks from rendered YAML, or from JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise PermanentError(
                f"`blocks` is text but not valid JSON ({exc.msg} at line "
                f"{exc.lineno} column {exc.colno}); write the blocks as a YAML "
                "list or as a JSON array"
            ) from None
    else:
        value = _typed(value)
    if isinstance(value, dict):
        value = value["blocks"] if isinstance(value.get("blocks"), list) else [value]
    if not isinstance(value, list) or not all(isinstance(b, dict) for b in value):
        raise PermanentError(
            "`blocks` must be a list of blocks, each a mapping with a `type`"
        )
    return value


def _typed(value: Any) -> Any:
    # YAML settings reach plugins as text; Block Kit wants real booleans
    # for fields like `emoji: true`.
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if value in ("true", "false"):
        return value == "true"
    return value
