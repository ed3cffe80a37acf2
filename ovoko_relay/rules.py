"""Rules: which of them match an event, in file order, and why the others do not."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .conditions import (
    ALWAYS,
    ENVELOPE_FIELDS,
    KNOWN_EVENT_TYPES,
    KNOWN_STATUSES,
    OPERATORS,
    Condition,
    Outcome,
    as_text,
    compile_when,
    resolve,
)
from .events import Event
from .logs import quoted
from .yamlsource import Mark

log = logging.getLogger(__name__)

__all__ = [
    "ALWAYS",
    "ENVELOPE_FIELDS",
    "KNOWN_EVENT_TYPES",
    "KNOWN_STATUSES",
    "OPERATORS",
    "Condition",
    "Outcome",
    "Rule",
    "Step",
    "Verdict",
    "as_text",
    "compile_when",
    "explain",
    "matching_rules",
    "resolve",
]


@dataclass
class Step:
    """One action a rule runs: the action's name and this rule's overrides."""

    action: str
    overrides: dict[str, Any]
    mark: Mark
    compiled: dict[str, Any] = field(default_factory=dict)
    # Who this step is, whatever its place: its action and settings as written
    # (with a count for identical twins), so a delivery finds it after a reload.
    key: str = ""


@dataclass
class Rule:
    """A named rule: when its condition holds, its steps run."""

    name: str
    when: Condition
    steps: list[Step]
    mark: Mark
    enabled: bool = True
    stop: bool = False


@dataclass(frozen=True)
class Verdict:
    """What happened to one rule for one event.

    ``state`` is ``matched``, ``failed``, ``error`` (a field required by
    ``missing: error`` was absent), ``disabled`` or ``stopped`` (an earlier
    rule had ``stop: true``).
    """

    rule: Rule
    state: str
    outcome: Outcome | None = None
    stopped_by: str = ""


def explain(rules: Sequence[Rule], event: Event) -> list[Verdict]:
    """Evaluate every rule in file order and say what happened to each."""
    verdicts: list[Verdict] = []
    stopped_by = ""
    for rule in rules:
        if stopped_by:
            verdicts.append(Verdict(rule, "stopped", stopped_by=stopped_by))
        elif not rule.enabled:
            verdicts.append(Verdict(rule, "disabled"))
        else:
            outcome = rule.when.evaluate(event)
            state = "matched" if outcome.matched else "failed"
            if outcome.error:
                state = "error"
            verdicts.append(Verdict(rule, state, outcome))
            if outcome.matched and rule.stop:
                stopped_by = rule.name
    return verdicts


def matching_rules(rules: Sequence[Rule], event: Event) -> list[Rule]:
    """Return the enabled rules whose conditions hold, in file order."""
    matched = []
    for verdict in explain(rules, event):
        if verdict.state == "matched":
            matched.append(verdict.rule)
        elif verdict.state == "error":
            assert verdict.outcome is not None
            log.warning(
                "event_id=%s rule=%r outcome=missing_field reason=%r",
                quoted(event.event_id),
                verdict.rule.name,
                verdict.outcome.reason,
            )
    return matched
