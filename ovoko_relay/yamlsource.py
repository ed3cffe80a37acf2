"""Read YAML as written: every value keeps its text and its place in the file."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import ConfigError, Problem

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Values of environment variables named like these are masked wherever they
# are used; others (SMTP_HOST, STATE_DIRECTORY) stay readable in errors.
SECRET_NAME = re.compile(
    r"TOKEN|SECRET|PASS|PWD|KEY|WEBHOOK|CREDENTIAL|AUTH|COOKIE|DSN",
    re.IGNORECASE,
)
_UNQUOTED_TEMPLATE = re.compile(r"(?:^|:|-)\s+\{[{%]")
# Far more than any config holds; a few aliases of aliases can reach billions.
MAX_VALUES = 100_000
_JINJA_CHARS = re.compile(r"[{}%#]")
_NULLS = {"", "~", "null", "Null", "NULL"}


class Mark:
    """A place in a config file: file name, 1-based line and column."""

    __slots__ = ("file", "line", "col")

    def __init__(self, file: str, line: int, col: int) -> None:
        self.file = file
        self.line = line
        self.col = col

    def problem(self, message: str, severity: str = "error") -> Problem:
        """Return a problem located here."""
        return Problem(self.file, self.line, self.col, message, severity)

    def __repr__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class Text(str):
    """A scalar exactly as the person wrote it, with its place in the file.

    ``null`` is true for an empty value or ``~``/``null`` written without quotes.
    ``secret`` is true when part of the value came from an environment variable
    whose name marks it as secret (see SECRET_NAME); ``env_values`` holds those
    values, to mask them.
    ``block`` is true for a `|` or `>` block, whose text starts on the next line.
    """

    mark: Mark
    null: bool
    env_values: tuple[str, ...]
    template_source: str
    block: bool

    def __new__(
        cls,
        value: str,
        mark: Mark,
        null: bool = False,
        block: bool = False,
        env_values: tuple[str, ...] = (),
    ) -> Text:
        text = super().__new__(cls, value)
        text.mark = mark
        text.null = null
        text.block = block
        text.env_values = env_values
        text.template_source = value
        return text

    @property
    def secret(self) -> bool:
        """Tell whether a secret-named environment variable filled part of it."""
        return bool(self.env_values)


class Map(dict[str, Any]):
    """A YAML mapping whose keys are Text, so each key knows its line.

    The top mapping of a file also carries ``secret_values``: the values of
    secret-named environment variables the file used, to mask in messages.
    """

    mark: Mark
    secret_values: frozenset[str] = frozenset()

    def key_mark(self, key: str) -> Mark:
        """Return where ``key`` is written, or where the mapping starts."""
        for k in self:
            if k == key and isinstance(k, Text):
                return k.mark
        return self.mark


class Seq(list[Any]):
    """A YAML sequence that knows where it starts."""

    mark: Mark


def mark_of(value: Any, default: Mark) -> Mark:
    """Return the place of a loaded value, or ``default`` if it has none."""
    return getattr(value, "mark", default)


def is_null(value: Any) -> bool:
    """Tell whether a loaded value is absent, empty, or written as null."""
    return value is None or (isinstance(value, Text) and value.null)


def empty_map(mark: Mark) -> Map:
    """Return an empty mapping that stands at ``mark``."""
    empty = Map()
    empty.mark = mark
    return empty


def plain(value: Any) -> Any:
    """Return a loaded value as plain dicts, lists and strs (None for null)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, Text) and value.null:
        return None
    return str(value) if isinstance(value, str) else value


def load_file(path: str, environ: Mapping[str, str] | None = None) -> Any:
    """Load a YAML file as Map/Seq/Text, raising ConfigError with every problem."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError([Problem(path, 1, 1, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(path, 1, 1, f"cannot read file: {exc}")]) from exc
    return load_text(text, path, os.environ if environ is None else environ)


def load_text(text: str, file: str, environ: Mapping[str, str]) -> Any:
    """Load YAML text as Map/Seq/Text, raising ConfigError with every problem."""
    problems = _tab_problems(text, file)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        if not problems:
            problems.append(_syntax_problem(exc, file, text))
        raise ConfigError(problems) from exc
    if problems:
        raise ConfigError(problems)

    if root is None:
        return empty_map(Mark(file, 1, 1))
    builder = _Builder(file, environ)
    try:
        value = builder.build(root)
    except _TooLarge:
        raise ConfigError(
            [
                Problem(
                    file,
                    1,
                    1,
                    f"the file expands to more than {MAX_VALUES} values, through "
                    "YAML aliases (*name); write the values out instead",
                )
            ]
        ) from None
    if builder.problems:
        raise ConfigError(builder.problems)
    if isinstance(value, Map):
        value.secret_values = frozenset(builder.secret_values)
    return value


def _tab_problems(text: str, file: str) -> list[Problem]:
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent:
            col = indent.index("\t") + 1
            problems.append(
                Problem(file, number, col, "tab in the indentation; indent with spaces")
            )
    return problems


def _syntax_problem(exc: yaml.MarkedYAMLError, file: str, text: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    what = exc.problem or exc.context or "invalid YAML"
    if exc.context == "while scanning a quoted scalar" and exc.context_mark:
        line, col = exc.context_mark.line + 1, exc.context_mark.column + 1
        what = "this quote is never closed; end the text with the same quote mark"
        return Problem(file, line, col, f"YAML syntax error: {what}")
    return Problem(file, line, col, f"YAML syntax error: {what}{_hint(exc, text)}")


def _hint(exc: yaml.MarkedYAMLError, text: str) -> str:
    """Suggest the usual fix for the syntax errors people make most."""
    lines = text.splitlines()
    first = exc.context_mark.line if exc.context_mark else 0
    last = exc.problem_mark.line if exc.problem_mark else first
    for number in range(max(0, last - 5), min(last + 1, len(lines))):
        if lines[number].count('"') % 2:
            return (
                f" — the quote on line {number + 1} may not be closed; end the "
                "text with the same quote mark"
            )
    if exc.problem == "mapping values are not allowed here":
        return (
            ' — a value that contains ": " must be in quotes, like '
            'message: "Sold: {{ data.part_id }}"'
        )
    nearby = lines[max(0, min(first, last) - 1) : last + 1]
    if any(_UNQUOTED_TEMPLATE.search(line) for line in nearby):
        return (
            " — a value that starts with {{ or {% must be in quotes, like "
            'message: "{{ data.part_id }} sold"'
        )
    return ""


def _quote_at(text: str, position: int) -> str | None:
    """Return the quote of the Jinja string literal open at ``position``, if any."""
    in_tag, quote, index = False, None, 0
    while index < position:
        pair = text[index : index + 2]
        if quote is not None:
            if text[index] == "\\":
                index += 1
            elif text[index] == quote:
                quote = None
        elif in_tag and pair in ("}}", "%}"):
            in_tag = False
            index += 1
        elif in_tag and text[index] in "'\"":
            quote = text[index]
        elif not in_tag and pair in ("{{", "{%"):
            in_tag = True
            index += 1
        index += 1
    return quote


class _TooLarge(Exception):
    """The document expands to more values than any config needs."""


class _Builder:
    """Turn composed YAML nodes into Map/Seq/Text, collecting problems."""

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.problems: list[Problem] = []
        self.built = 0
        self.secret_values: set[str] = set()

    def mark(self, node: Node) -> Mark:
        return Mark(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: Node) -> Any:
        self.built += 1
        if self.built > MAX_VALUES:
            raise _TooLarge
        if isinstance(node, MappingNode):
            return self.build_map(node)
        if isinstance(node, SequenceNode):
            seq = Seq(self.build(item) for item in node.value)
            seq.mark = self.mark(node)
            return seq
        assert isinstance(node, ScalarNode)
        return self.build_text(node)

    def build_map(self, node: MappingNode) -> Map:
        result = Map()
        result.mark = self.mark(node)
        first_seen: dict[str, Mark] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.problems.append(
                    self.mark(key_node).problem(
                        "YAML merge keys (<<) are not supported"
                    )
                )
                continue
            if not isinstance(key_node, ScalarNode):
                self.problems.append(
                    self.mark(key_node).problem("a key must be plain text")
                )
                continue
            key = Text(key_node.value, self.mark(key_node))
            if key in first_seen:
                self.problems.append(
                    key.mark.problem(
                        f"duplicate key `{key}` (first written on line "
                        f"{first_seen[key].line}); keep only one"
                    )
                )
                continue
            first_seen[key] = key.mark
            result[key] = self.build(value_node)
        return result

    def build_text(self, node: ScalarNode) -> Text:
        mark = self.mark(node)
        quoted = node.style in ("'", '"', "|", ">")
        if not quoted and node.value in _NULLS:
            return Text("", mark, null=True)
        used: list[str] = []
        value, template_source = self.interpolate(node.value, mark, used)
        block = node.style in ("|", ">")
        text = Text(value, mark, block=block, env_values=tuple(used))
        text.template_source = template_source
        return text

    def interpolate(self, value: str, mark: Mark, used: list[str]) -> tuple[str, str]:
        """Return the value, and its source for Jinja with env values as literals.

        A password with {{ or {% in it must reach the plugin as it is, not be
        read as a template: in the Jinja source, such a value is a string
        literal.
        """
        if "$" not in value:
            return value, value
        text, source, position = [], [], 0
        for match in _ENV_REF.finditer(value):
            written = value[position : match.start()]
            text.append(written)
            source.append(written)
            position = match.end()
            found, literal = self.resolve(match, mark, used)
            text.append(found)
            quote = _quote_at(value, match.start())
            if quote is None:
                source.append(literal)
            else:  # inside a string literal of a Jinja tag: escape for it
                source.append(found.replace("\\", "\\\\").replace(quote, "\\" + quote))
        text.append(value[position:])
        source.append(value[position:])
        return "".join(text), "".join(source)

    def resolve(
        self, match: re.Match[str], mark: Mark, used: list[str]
    ) -> tuple[str, str]:
        """Return what one ${NAME} stands for, and how to write it in Jinja."""
        if match.group(0) == "$$":
            return "$", "$"
        name, default = match.group(1), match.group(2)
        if name in self.environ and self.environ[name] != "":
            found = self.environ[name]
            if SECRET_NAME.search(name):
                used.append(found)
                self.secret_values.add(found)
            if _JINJA_CHARS.search(found):
                return found, "{{ " + json.dumps(found, ensure_ascii=False) + " }}"
            return found, found
        if default is not None:
            return default, default
        self.problems.append(
            mark.problem(
                f"environment variable `{name}` is not set; set it, or give a "
                f"default with ${{{name}:-default}}"
            )
        )
        return "", ""
