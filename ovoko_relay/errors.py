"""The one error hierarchy of ovoko-relay, named for the condition it reports."""

from __future__ import annotations

from dataclasses import dataclass


class RelayError(Exception):
    """Base of every error ovoko-relay raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, with where it is."""

    file: str
    line: int
    col: int
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}:{self.col}: {prefix}{self.message}"


class ConfigError(RelayError):
    """The config cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class TemplateError(RelayError):
    """A message template could not be rendered for this event."""


class StoreError(RelayError):
    """The store could not keep or read what was asked of it."""


class NotFoundError(RelayError):
    """Something asked for by its id (an event, a database) does not exist."""


class DeliveryError(RelayError):
    """Base of the two outcomes a plugin may signal for a failed delivery."""


class RetryableError(DeliveryError):
    """The delivery failed for now; try it again later.

    ``retry_after`` (seconds), when given, is the earliest sensible next try,
    e.g. from an HTTP ``Retry-After`` header.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(DeliveryError):
    """The delivery can never succeed as configured; do not try again."""
