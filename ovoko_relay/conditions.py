"""The condition language of a rule's `when`: compiled once, tested per event."""

from __future__ import annotations

import difflib
import fnmatch
import json
import math
import re
import re._parser as re_parser  # noqa: PLC2701 — the one parser of re's own syntax
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from .errors import Problem
from .events import Event
from .reader import suggest
from .yamlsource import Map, Mark, Seq, Text, is_null, mark_of

_MISSING = object()


def has_nested_repeat(pattern: str) -> bool:
    """Tell whether a regex repeats a group that itself holds an open repeat.

    Python's `re` has no time limit and keeps the interpreter to itself while it
    matches: such a pattern can backtrack for minutes on a crafted field.
    """
    try:
        tree = re_parser.parse(pattern)
    except re.error:
        return False
    return _nested(list(tree), inside_repeat=False)


_REPEATS = (re_parser.MAX_REPEAT, re_parser.MIN_REPEAT, re_parser.POSSESSIVE_REPEAT)


def _nested(items: list[Any], inside_repeat: bool) -> bool:
    for op, arg in items:
        if op in _REPEATS:
            _, high, body = arg
            open_ended = high == re_parser.MAXREPEAT or high > 100
            if (open_ended and inside_repeat) or _nested(
                list(body), inside_repeat or open_ended
            ):
                return True
        elif op == re_parser.SUBPATTERN:
            if _nested(list(arg[-1]), inside_repeat):
                return True
        elif op == re_parser.BRANCH and any(
            _nested(list(branch), inside_repeat) for branch in arg[1]
        ):
            return True
    return False


_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")
_TRUE = {"true", "yes", "on"}
_FALSE = {"false", "no", "off"}

ENVELOPE_FIELDS = ("event_id", "event_type", "timestamp")
KNOWN_STATUSES = (
    "in_warehouse",
    "reserved",
    "sold",
    "sold_in_ebay",
    "sold_in_allegro",
    "returned",
    "written_off",
    "unknown_stock_status",
)
KNOWN_EVENT_TYPES = ("part.status.changed",)
KNOWN_DATA_FIELDS = ("part_id", "status", "external_id", "id_bridge")
OPERATORS = (
    "not",
    "in",
    "not_in",
    "glob",
    "regex",
    "gt",
    "gte",
    "lt",
    "lte",
    "exists",
    "contains",
    "missing",
)
COMBINATORS = ("all", "any", "not")
MISSING_POLICIES = ("false", "match", "error")


@dataclass(frozen=True)
class Outcome:
    """Whether a condition held; if not, what failed, where, and the value seen.

    ``error`` is true when a field marked ``missing: error`` was absent.
    """

    matched: bool
    reason: str = ""
    mark: Mark | None = None
    error: bool = False


@dataclass
class Condition:
    """A compiled condition: ``test`` gets the event and returns an Outcome."""

    test: Callable[[Event], Outcome]
    describe: str = ""

    def evaluate(self, event: Event) -> Outcome:
        """Evaluate against ``event``; never raises for missing fields."""
        return self.test(event)


ALWAYS = Condition(lambda event: Outcome(True, "no conditions"), "always")


def canonical_path(path: str) -> str:
    """Return the full path of a field: `status` becomes `event_data.status`."""
    head, _, rest = path.partition(".")
    if head == "data" and rest:
        return f"event_data.{rest}"
    if head == "event" and rest:
        return rest
    if head in ENVELOPE_FIELDS or head == "event_data":
        return path
    return f"event_data.{path}"


def resolve(event: Event, path: str) -> Any:
    """Return the value at a field path, or _MISSING; never raises."""
    value: Any = event.envelope
    for part in canonical_path(path).split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def as_text(value: Any) -> str:
    """Render an event value as text so it compares with what was written."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return str(value)


def as_number(value: Any) -> float | None:
    """Return a number or numeric string as a float, else None; never raises."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, str) and _NUMBER.match(value):
        return float(value)
    return None


def seen(value: Any) -> str:
    """Describe a value from the event for a message: text in quotes, else JSON."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = as_text(value)
    return text if len(text) <= 80 else text[:77] + "..."


def compile_when(
    node: Any,
    mark: Mark,
    problems: list[Problem],
    warnings: list[Problem] | None = None,
) -> Condition:
    """Compile a rule's `when` mapping; every key must hold (all of)."""
    if is_null(node):
        return ALWAYS
    compiler = _Compiler(problems, [] if warnings is None else warnings)
    if not isinstance(node, Map):
        compiler.error(
            mark_of(node, mark),
            "`when` must be a mapping of field: value (or all/any/not)",
        )
        return ALWAYS
    return compiler.mapping(node)


# A check takes a present value and returns (held, what was expected).
Check = Callable[[Any], tuple[bool, str]]


class _Compiler:
    """Turn a `when` tree into Conditions, collecting errors and warnings."""

    def __init__(self, problems: list[Problem], warnings: list[Problem]) -> None:
        self.problems = problems
        self.warnings = warnings

    def error(self, mark: Mark, message: str) -> None:
        self.problems.append(mark.problem(message))

    def warn(self, mark: Mark, message: str) -> None:
        self.warnings.append(mark.problem(message, "warning"))

    # -- combinators ----------------------------------------------------------

    def mapping(self, node: Map) -> Condition:
        if not node:
            self.error(node.mark, "an empty condition: write at least one field")
            return ALWAYS
        return _all_of([self.entry(key, value) for key, value in _items(node)])

    def entry(self, key: Text, value: Any) -> Condition:
        if key == "all":
            return _all_of(self.branches(key, value))
        if key == "any":
            return _any_of(self.branches(key, value), key.mark)
        if key == "not":
            if not isinstance(value, Map):
                self.error(
                    mark_of(value, key.mark),
                    "`not` here takes a mapping of conditions, e.g. "
                    "`not: {status: sold}`; to test a field named `not` write "
                    "`event_data.not`",
                )
                return ALWAYS
            return _negate(self.mapping(value), key.mark)
        return self.field(str(key), value, key.mark)

    def branches(self, key: Text, value: Any) -> list[Condition]:
        if isinstance(value, Map):
            if key == "any":
                return [self.entry(k, v) for k, v in _items(value)]
            return [self.mapping(value)]
        if not isinstance(value, Seq) or not value:
            self.error(
                mark_of(value, key.mark),
                f"`{key}` takes a list of conditions, each starting with -",
            )
            return [ALWAYS]
        branches = []
        for item in value:
            if isinstance(item, Map):
                branches.append(self.mapping(item))
            else:
                self.error(
                    mark_of(item, value.mark),
                    f"each item of `{key}` must be a condition like `status: sold`, "
                    f"not `{item}`",
                )
        return branches or [ALWAYS]

    # -- one field ------------------------------------------------------------

    def field(self, path: str, expected: Any, mark: Mark) -> Condition:
        if not all(path.split(".")):
            self.error(mark, f"`{path}` is not a field name")
            return ALWAYS
        full = canonical_path(path)
        self.check_field_name(path, full, mark)

        checks: list[Check] = []
        exists: bool | None = None
        policy = "false"
        if isinstance(expected, Map):
            exists, policy = self.operators(full, expected, checks)
        else:
            checks.append(self.equals(full, expected, mark, negate=False))
        return _field_condition(path, checks, exists, policy, mark)

    def check_field_name(self, path: str, full: str, mark: Mark) -> None:
        parts = full.split(".")
        if parts[0] != "event_data" or len(parts) != 2 or parts[1] in KNOWN_DATA_FIELDS:
            return
        close = difflib.get_close_matches(parts[1], KNOWN_DATA_FIELDS, n=1, cutoff=0.75)
        if close:
            self.warn(
                mark,
                f"`{path}` is not a field Ovoko sends in its events — did you mean "
                f"`{close[0]}`?",
            )

    def operators(
        self, path: str, node: Map, checks: list[Check]
    ) -> tuple[bool | None, str]:
        if not node:
            self.error(node.mark, f"`{path}` has an empty mapping: give an operator")
        exists: bool | None = None
        policy = "false"
        for key, value in _items(node):
            if key == "exists":
                exists = self.boolean(key, value)
            elif key == "missing":
                policy = self.missing_policy(value, key.mark)
            elif key in OPERATORS:
                check = self.operator(path, str(key), value, key.mark)
                if check is not None:
                    checks.append(check)
            else:
                hint = suggest(key, OPERATORS)
                if not hint and not any(k in OPERATORS for k in node):
                    hint = (
                        " — to test a field inside another, write its path with "
                        f"dots, like `{path.removeprefix('event_data.')}.{key}:`"
                    )
                self.error(
                    key.mark,
                    f"unknown operator `{key}`{hint} (operators: "
                    f"{', '.join(OPERATORS)})",
                )
        return exists, policy

    def operator(self, path: str, op: str, value: Any, mark: Mark) -> Check | None:
        if op == "not":
            if isinstance(value, Map):
                inner: list[Check] = []
                exists, _policy = self.operators(path, value, inner)
                if exists is not None or "missing" in value:
                    self.error(
                        value.mark,
                        "`exists` and `missing` cannot be inside `not`; write "
                        "`exists: false` instead",
                    )
                return _not_checks(inner)
            return self.equals(path, value, mark, negate=True)
        if op == "in":
            return self.equals(path, value, mark, negate=False)
        if op == "not_in":
            return self.equals(path, value, mark, negate=True)
        values = self.texts(op, value, mark)
        if values is None:
            return None
        if op == "glob":
            self.check_glob(path, values, mark)
            return _glob(values)
        if op == "regex":
            return self.regex(values, mark)
        if op == "contains":
            return _contains(values)
        return self.comparison(op, values, mark)

    def texts(self, op: str, value: Any, mark: Mark) -> list[str] | None:
        items = value if isinstance(value, Seq) else [value]
        if not items or not all(isinstance(v, Text) for v in items):
            self.error(
                mark_of(value, mark),
                f"`{op}` takes a value or a list of values",
            )
            return None
        return list(items)

    def equals(self, path: str, value: Any, mark: Mark, negate: bool) -> Check:
        items = value if isinstance(value, Seq) else [value]
        wanted: list[str | None] = []
        for item in items:
            if isinstance(item, Text):
                wanted.append(None if item.null else str(item))
                if not item.null:
                    self.check_known(path, str(item), item.mark)
            else:
                self.error(
                    mark_of(item, mark),
                    f"`{path.removeprefix('event_data.')}` must be a value or a list "
                    "of values; for operators write a mapping like `{glob: sold*}`",
                )
        if isinstance(value, Seq) and not value:
            self.error(value.mark, "an empty list matches nothing; give some values")
        return _equals(wanted, negate)

    def check_known(self, path: str, value: str, mark: Mark) -> None:
        known: tuple[str, ...]
        if path == "event_data.status":
            known, what = KNOWN_STATUSES, "a part status"
        elif path == "event_type":
            known, what = KNOWN_EVENT_TYPES, "an event type"
        else:
            return
        if value in known:
            return
        hint = suggest(value, known)
        listing = "" if hint else f"; Ovoko sends: {', '.join(known)}"
        self.warn(mark, f"`{value}` is not {what} Ovoko sends{hint}{listing}")

    def check_glob(self, path: str, patterns: list[str], mark: Mark) -> None:
        known = {"event_data.status": KNOWN_STATUSES, "event_type": KNOWN_EVENT_TYPES}
        if path not in known:
            return
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(k, pattern) for k in known[path]):
                self.warn(
                    mark,
                    f"the pattern `{pattern}` matches nothing Ovoko sends in "
                    f"`{path.removeprefix('event_data.')}`; Ovoko sends: "
                    f"{', '.join(known[path])}",
                )

    def regex(self, patterns: list[str], mark: Mark) -> Check | None:
        compiled = []
        for pattern in patterns:
            at = mark_of(pattern, mark)
            try:
                compiled.append(re.compile(pattern))
            except re.error as exc:
                self.error(at, f"`{pattern}` is not a valid regular expression: {exc}")
                continue
            if has_nested_repeat(pattern):
                self.error(
                    at,
                    f"`{pattern}` repeats something that itself repeats, like "
                    "(a+)+: on some texts such a pattern takes minutes and holds up "
                    "the whole relay; write it with one repeat, like a+",
                )
        return _regex(compiled) if compiled else None

    def comparison(self, op: str, values: list[str], mark: Mark) -> Check | None:
        if len(values) != 1 or as_number(values[0]) is None:
            self.error(
                mark,
                f"`{op}` needs one number, like `{op}: 100`, not `{', '.join(values)}`",
            )
            return None
        limit = as_number(values[0])
        assert limit is not None
        return _compare(op, limit, values[0])

    def boolean(self, key: Text, value: Any) -> bool | None:
        text = str(value).lower() if isinstance(value, Text) else ""
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        self.error(
            mark_of(value, key.mark),
            f"`{key}` must be true or false, not `{value}`",
        )
        return None

    def missing_policy(self, value: Any, mark: Mark) -> str:
        text = str(value).lower() if isinstance(value, Text) else ""
        if text in _FALSE:
            return "false"
        if text in MISSING_POLICIES:
            return text
        self.error(
            mark_of(value, mark),
            f"`missing` must be false, match or error, not `{value}`"
            f"{suggest(str(value), MISSING_POLICIES)}",
        )
        return "false"


def _items(node: Map) -> list[tuple[Text, Any]]:
    """Return a mapping's entries with their keys typed as Text, as loaded."""
    return [(cast(Text, key), value) for key, value in node.items()]


def _listing(values: Sequence[str | None]) -> str:
    shown = ["null" if v is None else f"`{v}`" for v in values]
    if len(shown) == 1:
        return shown[0]
    return "one of " + ", ".join(shown)


# -- checks on a present value ------------------------------------------------


def _equals(wanted: list[str | None], negate: bool) -> Check:
    texts = {w for w in wanted if w is not None}
    want_null = None in wanted
    expected = ("not " if negate else "") + _listing(wanted)

    def check(value: Any) -> tuple[bool, str]:
        if value is None:
            held = want_null
        else:
            held = not isinstance(value, (dict, list)) and as_text(value) in texts
        return held != negate, expected

    return check


def _not_checks(checks: list[Check]) -> Check:
    def check(value: Any) -> tuple[bool, str]:
        results = [c(value) for c in checks]
        expected = " and ".join(e for _, e in results)
        return not all(held for held, _ in results), f"not ({expected})"

    return check


def _scalar_text(value: Any) -> str | None:
    return None if isinstance(value, (dict, list)) else as_text(value)


def _glob(patterns: list[str]) -> Check:
    expected = "text like " + " or ".join(f"`{p}`" for p in patterns)

    def check(value: Any) -> tuple[bool, str]:
        text = _scalar_text(value)
        held = text is not None and any(fnmatch.fnmatchcase(text, p) for p in patterns)
        return held, expected

    return check


def _regex(patterns: list[re.Pattern[str]]) -> Check:
    expected = "text matching " + " or ".join(f"`{p.pattern}`" for p in patterns)

    def check(value: Any) -> tuple[bool, str]:
        text = _scalar_text(value)
        held = text is not None and any(p.search(text) for p in patterns)
        return held, expected

    return check


def _contains(values: list[str]) -> Check:
    expected = "something containing " + " or ".join(f"`{v}`" for v in values)

    def check(value: Any) -> tuple[bool, str]:
        if isinstance(value, str):
            held = any(v in value for v in values)
        elif isinstance(value, list):
            items = {_scalar_text(item) for item in value}
            held = any(v in items for v in values)
        elif isinstance(value, dict):
            held = any(v in value for v in values)
        else:
            held = False
        return held, expected

    return check


_COMPARE = {
    "gt": (lambda a, b: a > b, "greater than"),
    "gte": (lambda a, b: a >= b, "at least"),
    "lt": (lambda a, b: a < b, "less than"),
    "lte": (lambda a, b: a <= b, "at most"),
}


def _compare(op: str, limit: float, written: str) -> Check:
    compare, words = _COMPARE[op]
    expected = f"a number {words} {written}"

    def check(value: Any) -> tuple[bool, str]:
        number = as_number(value)
        return number is not None and bool(compare(number, limit)), expected

    return check


# -- conditions ---------------------------------------------------------------


def _field_condition(
    path: str, checks: list[Check], exists: bool | None, policy: str, mark: Mark
) -> Condition:
    def test(event: Event) -> Outcome:
        value = resolve(event, path)
        if value is _MISSING:
            if exists is not None:
                return Outcome(not exists, f"{path} is missing", mark)
            if policy == "match":
                return Outcome(True, f"{path} is missing (allowed by missing: match)")
            return Outcome(
                False,
                f"{path} is missing from the event",
                mark,
                error=policy == "error",
            )
        if exists is False:
            return Outcome(
                False, f"{path} is {seen(value)}, expected it to be missing", mark
            )
        for check in checks:
            held, expected = check(value)
            if not held:
                return Outcome(
                    False, f"{path} is {seen(value)}, expected {expected}", mark
                )
        return Outcome(True, f"{path} is {seen(value)}", mark)

    return Condition(test, path)


def _all_of(conditions: list[Condition]) -> Condition:
    if len(conditions) == 1:
        return conditions[0]

    def test(event: Event) -> Outcome:
        reasons = []
        for condition in conditions:
            outcome = condition.evaluate(event)
            if not outcome.matched:
                return outcome
            reasons.append(outcome.reason)
        return Outcome(True, " and ".join(reasons))

    return Condition(test, " and ".join(c.describe for c in conditions))


def _any_of(conditions: list[Condition], mark: Mark) -> Condition:
    def test(event: Event) -> Outcome:
        failures = []
        for condition in conditions:
            outcome = condition.evaluate(event)
            if outcome.matched:
                return outcome
            failures.append(outcome)
        return Outcome(
            False,
            "none of the `any` choices held: " + "; ".join(f.reason for f in failures),
            mark,
            error=any(f.error for f in failures),
        )

    return Condition(test, "any of " + ", ".join(c.describe for c in conditions))


def _negate(condition: Condition, mark: Mark) -> Condition:
    def test(event: Event) -> Outcome:
        outcome = condition.evaluate(event)
        if outcome.error:
            return outcome
        if outcome.matched:
            return Outcome(False, f"`not` excludes this: {outcome.reason}", mark)
        return Outcome(True, f"not ({outcome.reason})", mark)

    return Condition(test, f"not ({condition.describe})")
