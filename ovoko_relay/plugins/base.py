"""The plugin API: what a plugin declares, what it receives, what it may raise."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import PermanentError, RetryableError
from ..events import Event

__all__ = [
    "Plugin",
    "Setting",
    "Event",
    "RetryableError",
    "PermanentError",
]

SETTING_KINDS = (
    "text",
    "path",
    "integer",
    "number",
    "boolean",
    "list",
    "mapping",
    "any",
)


@dataclass(frozen=True)
class Setting:
    """Declare one setting of a plugin.

    ``kind`` is one of ``text``, ``path`` (text; a relative path is taken from
    the config file's folder), ``integer``, ``number``, ``boolean``, ``list``
    (of text), ``mapping`` (text to text) or ``any``. Text, path, list and
    mapping values are Jinja templates unless ``template`` is false. A ``secret``
    setting is masked wherever the relay shows settings or errors.
    """

    kind: str = "text"
    required: bool = False
    default: Any = None
    secret: bool = False
    template: bool = True
    choices: tuple[str, ...] = ()
    help: str = ""

    def __post_init__(self) -> None:
        if self.kind not in SETTING_KINDS:
            raise ValueError(f"unknown setting kind {self.kind!r}")


class Plugin:
    """Base class of every delivery plugin, built-in or third-party.

    A subclass sets ``name`` and ``settings`` and implements :meth:`deliver`.
    The relay makes one instance per configured action, passing the action's
    settings as written (not yet rendered) and the seconds one attempt may
    take (``self.timeout``: use it for socket timeouts), and calls
    :meth:`deliver` once per delivery attempt, possibly from several threads
    at once.

    ``deliver`` returns normally on success. It raises :class:`RetryableError`
    for a failure worth retrying (a timeout, a 5xx), :class:`PermanentError`
    for one that never will succeed (a 4xx, a bad address); anything else it
    raises counts as retryable. Error messages are shown to the people who
    run the relay: name the service, never the value of a ``secret`` setting.

    docs/plugins.md describes the whole contract; names here do not change.
    """

    name: ClassVar[str] = ""
    settings: ClassVar[Mapping[str, Setting]] = {}

    def __init__(self, config: Mapping[str, Any], timeout: float = 10.0) -> None:
        self.config = config
        self.timeout = timeout

    def deliver(self, settings: Mapping[str, Any], event: Event) -> None:
        """Deliver one event with the rendered ``settings`` of this attempt."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the plugin holds; called when its config is replaced."""
