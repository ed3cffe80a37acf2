"""The checking reader: typed values out of located YAML, every problem kept."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from typing import Any

from .errors import Problem
from .yamlsource import Map, Mark, Text, empty_map, is_null, mark_of

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
TRUE = {"true", "yes", "on", "1"}
FALSE = {"false", "no", "off", "0"}


def suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return a ' — did you mean `x`?' hint for a close choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" — did you mean `{close[0]}`?" if close else ""


def parse_duration(text: str) -> float:
    """Parse `500ms`, `2s`, `5m`, `1h`, `1d` or plain seconds; raise ValueError."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


class Reader:
    """Read values of a config file by shape, collecting located problems."""

    def __init__(self, file: str, environ: Mapping[str, str] | None = None) -> None:
        self.file = file
        self.environ = environ
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def error(self, mark: Mark, message: str) -> None:
        self.problems.append(mark.problem(message))

    def beside(self, name: str) -> str:
        """Return the path of ``name`` taken from the config file's folder."""
        return os.path.join(os.path.dirname(os.path.abspath(self.file)), name)

    def mapping(self, node: Any, what: str, mark: Mark) -> Map:
        if is_null(node):
            return empty_map(mark)
        if not isinstance(node, Map):
            at = mark_of(node, mark)
            self.error(at, f"{what} must be a mapping")
            return empty_map(at)
        return node

    def known_keys(self, node: Map, allowed: tuple[str, ...], where: str) -> None:
        for key in node:
            if key not in allowed:
                self.error(
                    node.key_mark(key),
                    f"unknown key `{key}` {where}{suggest(key, allowed)}",
                )

    def text(self, node: Map, key: str, default: str) -> str:
        value = node.get(key)
        if is_null(value):
            return default
        if not isinstance(value, Text):
            self.error(node.key_mark(key), f"`{key}` must be a single value")
            return default
        return str(value)

    def integer(self, node: Map, key: str, default: int, minimum: int = 0) -> int:
        value = self.text(node, key, "")
        if value == "":
            return default
        try:
            number = int(value)
        except ValueError:
            number = minimum - 1
        if number < minimum:
            self.error(
                node[key].mark,
                f"`{key}` must be a whole number of at least {minimum}, not `{value}`",
            )
            return default
        return number

    def boolean(self, node: Map, key: str, default: bool) -> bool:
        value = self.text(node, key, "").lower()
        if value == "":
            return default
        if value in TRUE:
            return True
        if value in FALSE:
            return False
        self.error(node[key].mark, f"`{key}` must be true or false, not `{value}`")
        return default

    def duration(self, node: Map, key: str, default: float) -> float:
        value = self.text(node, key, "")
        if value == "":
            return default
        try:
            return parse_duration(value)
        except ValueError:
            self.error(
                node[key].mark,
                f"`{key}` must be a duration like 500ms, 2s, 5m or 1h, not `{value}`",
            )
            return default

    def positive_duration(self, node: Map, key: str, default: float) -> float:
        value = self.duration(node, key, default)
        if value <= 0:
            self.error(
                node[key].mark,
                f"`{key}` must be longer than zero, like 500ms, 2s or 1m, not "
                f"`{node[key]}`",
            )
            return default
        return value
