"""Rule conditions (`when`) and matching an event against the rules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import Problem
from .events import Event
from .yamlsource import Map, Mark, Seq, Text

_MISSING = object()
ENVELOPE_FIELDS = ("event_id", "event_type", "timestamp")


@dataclass(frozen=True)
class Outcome:
    """Whether a condition held, and if not, what failed and the value seen."""

    matched: bool
    reason: str = ""


@dataclass
class Condition:
    """A compiled condition: ``test`` gets the event and returns an Outcome."""

    test: Callable[[Event], Outcome]
    describe: str = ""

    def evaluate(self, event: Event) -> Outcome:
        """Evaluate against ``event``; never raises for missing fields."""
        return self.test(event)


ALWAYS = Condition(lambda event: Outcome(True), "always")


@dataclass
class Step:
    """One action a rule runs: the action's name and this rule's overrides."""

    action: str
    overrides: dict[str, Any]
    mark: Mark
    compiled: dict[str, Any] = field(default_factory=dict)


@dataclass
class Rule:
    """A named rule: when its condition holds, its steps run."""

    name: str
    when: Condition
    steps: list[Step]
    mark: Mark
    enabled: bool = True
    stop: bool = False


def matching_rules(rules: Sequence[Rule], event: Event) -> list[Rule]:
    """Return the enabled rules whose conditions hold, in file order."""
    matched = []
    for rule in rules:
        if not rule.enabled or not rule.when.evaluate(event).matched:
            continue
        matched.append(rule)
        if rule.stop:
            break
    return matched


def resolve(event: Event, path: str) -> Any:
    """Return the value at a field path, or _MISSING; never raises."""
    parts = path.split(".")
    if parts[0] in ENVELOPE_FIELDS or parts[0] == "event_data":
        value: Any = event.envelope
    else:
        value = event.data
    for part in parts:
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
    return str(value)


def compile_when(node: Any, mark: Mark, problems: list[Problem]) -> Condition:
    """Compile a rule's `when` mapping; every key must hold (all of)."""
    if node is None or (isinstance(node, Text) and node.null):
        return ALWAYS
    if not isinstance(node, Map):
        problems.append(mark.problem("`when` must be a mapping of field: value"))
        return ALWAYS
    conditions = [_compile_field(str(k), v, k.mark, problems) for k, v in node.items()]
    return _all_of(conditions)


def _all_of(conditions: list[Condition]) -> Condition:
    def test(event: Event) -> Outcome:
        for condition in conditions:
            outcome = condition.evaluate(event)
            if not outcome.matched:
                return outcome
        return Outcome(True)

    return Condition(test, " and ".join(c.describe for c in conditions))


def _compile_field(
    path: str, expected: Any, mark: Mark, problems: list[Problem]
) -> Condition:
    if isinstance(expected, Seq):
        wanted = [str(v) for v in expected]
    elif isinstance(expected, Text):
        wanted = [str(expected)]
    else:
        problems.append(mark.problem(f"`{path}` must be a value or a list of values"))
        wanted = []

    def test(event: Event) -> Outcome:
        value = resolve(event, path)
        if value is _MISSING:
            return Outcome(False, f"{path} is missing")
        if as_text(value) in wanted:
            return Outcome(True)
        return Outcome(
            False, f"{path} is {as_text(value)!r}, not {' or '.join(wanted)}"
        )

    return Condition(test, f"{path} in {wanted}")
