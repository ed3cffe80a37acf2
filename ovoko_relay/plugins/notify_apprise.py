"""The `apprise` plugin: notify Telegram, Discord, Teams, ntfy… through Apprise URLs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Event, PermanentError, Plugin, RetryableError, Setting


class ApprisePlugin(Plugin):
    """Send the rendered title and body to every configured Apprise URL."""

    name = "apprise"
    settings = {
        "urls": Setting(
            kind="list",
            required=True,
            secret=True,
            help="One or more Apprise URLs (they hold credentials: keep them in "
            "${VAR}).",
        ),
        "title": Setting(help="The notification title."),
        "body": Setting(required=True, help="The notification text."),
    }

    def deliver(self, settings: Mapping[str, Any], event: Event) -> None:
        import apprise

        urls = settings["urls"]
        if isinstance(urls, str):
            urls = [urls]
        urls = [url.strip() for url in urls if url and url.strip()]
        if not urls:
            raise PermanentError("`urls` is empty: give at least one Apprise URL")

        notifier = apprise.Apprise()
        for number, url in enumerate(urls, start=1):
            if not notifier.add(url):
                raise PermanentError(
                    f"Apprise cannot use URL number {number} of `urls` "
                    f"(it starts with {_scheme(url)}); check it against the "
                    "Apprise documentation for that service"
                )
        if not notifier.notify(
            body=settings["body"], title=settings.get("title") or ""
        ):
            raise RetryableError(
                "at least one Apprise service did not accept the notification "
                "(see the relay's log for which)"
            )


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if sep and scheme.isascii() and scheme.replace("+", "").isalnum():
        return f"`{scheme}://`"
    return "no recognisable scheme like `tgram://`"
