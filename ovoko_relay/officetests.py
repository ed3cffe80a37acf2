"""The office's own tests: sample events with the rules and messages they expect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .events import EnvelopeError, check_envelope, parse_body
from .reader import suggest
from .settings import SettingsReader
from .yamlsource import Map, Mark, Seq, Text, is_null, load_file, mark_of, plain

if TYPE_CHECKING:
    from .config import Action
    from .rules import Rule

TEST_KEYS = ("name", "event", "fires", "messages")
MESSAGE_KEYS = ("rule", "action")


@dataclass
class ExpectedMessage:
    """What one action of one rule must render for an office test."""

    rule: str
    action: str
    settings: dict[str, Any]
    mark: Mark


@dataclass
class OfficeTest:
    """One case of the `tests:` section: an event, the rules and messages due."""

    name: str
    event: Any
    fires: list[str] | None
    messages: list[ExpectedMessage]
    mark: Mark


class TestsReader(SettingsReader):
    """Read the `tests:` section (or the file it names) of a config."""

    def tests(
        self,
        node: Any,
        mark: Mark,
        rules: list[Rule],
        actions: dict[str, Action],
    ) -> list[OfficeTest]:
        if is_null(node):
            return []
        if isinstance(node, Text):
            node = self.tests_file(node)
            if node is None:
                return []
        if not isinstance(node, Seq):
            self.error(
                mark_of(node, mark),
                "`tests` must be a list of tests, each starting with -, or the "
                "name of a file that holds them",
            )
            return []
        steps = {rule.name: {step.action for step in rule.steps} for rule in rules}
        tests = []
        for item in node:
            test = self.test(item, node.mark, steps, actions)
            if test is not None:
                tests.append(test)
        return tests

    def tests_file(self, name: Text) -> Any:
        path = self.beside(name)
        try:
            loaded = load_file(path, self.environ)
        except ConfigError as exc:
            if exc.problems and exc.problems[0].message == "file not found":
                self.error(name.mark, f"the tests file `{name}` does not exist")
            else:
                self.problems.extend(exc.problems)
            return None
        if isinstance(loaded, Map) and "tests" in loaded:
            self.known_keys(loaded, ("tests",), "in a tests file")
            return loaded["tests"]
        return loaded

    def test(
        self,
        node: Any,
        mark: Mark,
        steps: dict[str, set[str]],
        actions: dict[str, Action],
    ) -> OfficeTest | None:
        node = self.mapping(node, "a test", mark)
        self.known_keys(node, TEST_KEYS, "in a test")
        name = self.text(node, "name", "") or f"test at line {node.mark.line}"
        if "event" not in node:
            self.error(node.mark, f"test `{name}` needs `event:` (a file or a mapping)")
            return None
        event = self.test_event(node["event"], node.key_mark("event"))

        fires = None
        if "fires" in node:
            fires = []
            value = node["fires"]
            items = value if isinstance(value, Seq) else [value]
            for item in items:
                if not isinstance(item, Text) or item.null:
                    continue
                if str(item) not in steps:
                    self.error(
                        item.mark,
                        f"test `{name}`: there is no rule named `{item}`"
                        f"{suggest(item, tuple(steps))}",
                    )
                fires.append(str(item))

        messages = []
        value = node.get("messages")
        if isinstance(value, Seq):
            for item in value:
                message = self.expected(item, value.mark, name, steps, actions)
                if message is not None:
                    messages.append(message)
        elif not is_null(value):
            self.error(
                node.key_mark("messages"),
                "`messages` must be a list, each item starting with - rule:",
            )
        return OfficeTest(name, event, fires, messages, node.mark)

    def test_event(self, value: Any, mark: Mark) -> Any:
        at = mark_of(value, mark)
        if isinstance(value, Map):
            envelope = plain(value)
            try:
                check_envelope(envelope)
            except EnvelopeError as exc:
                self.error(at, exc.description)
            return envelope
        if not isinstance(value, Text) or value.null:
            self.error(at, "`event` must be a JSON file name or a mapping")
            return None
        path = self.beside(value)
        try:
            with open(path, "rb") as f:
                return parse_body(f.read()).envelope
        except OSError:
            self.error(at, f"cannot read the event file `{value}`")
        except EnvelopeError as exc:
            self.error(at, f"`{value}` is not an Ovoko event: {exc.description}")
        return None

    def expected(
        self,
        node: Any,
        mark: Mark,
        test: str,
        steps: dict[str, set[str]],
        actions: dict[str, Action],
    ) -> ExpectedMessage | None:
        node = self.mapping(node, "an expected message", mark)
        rule = self.text(node, "rule", "")
        action_name = self.text(node, "action", "")
        if not rule or not action_name:
            self.error(node.mark, "each expected message needs `rule:` and `action:`")
            return None
        if rule not in steps:
            self.error(
                node["rule"].mark,
                f"test `{test}`: there is no rule named `{rule}`"
                f"{suggest(rule, tuple(steps))}",
            )
            return None
        if action_name not in steps[rule]:
            self.error(
                node["action"].mark,
                f"test `{test}`: rule `{rule}` has no action `{action_name}`"
                f"{suggest(action_name, tuple(steps[rule]))}",
            )
            return None
        action = actions[action_name]
        written = self.known_settings(
            node, MESSAGE_KEYS, action.plugin, self.declared(action)
        )
        settings = {key: plain(value) for key, value in written.items()}
        return ExpectedMessage(rule, action_name, settings, node.mark)
