"""Try rules on sample events without sending: explain, render, run office tests."""

from __future__ import annotations

import difflib
import functools
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import logs
from . import plugins as plugin_registry
from .config import Config, ExpectedMessage, OfficeTest
from .errors import PermanentError, RetryableError, TemplateError
from .events import EnvelopeError, Event, parse_body
from .logs import MASK, mask, plural
from .rules import Rule, Verdict, explain
from .settings import resolve_paths
from .templates import render_value


@dataclass
class Rendered:
    """The settings one action of one matched rule would be sent with."""

    rule: str
    action: str
    plugin: str
    settings: dict[str, Any] | None
    error: str = ""
    compiled: dict[str, Any] = field(default_factory=dict)


def template_context(event: Event, rule: Rule) -> dict[str, Any]:
    """Return the variables a template sees for this event and rule."""
    return {"event": event.envelope, "data": event.data, "rule": rule.name}


def render_rule(config: Config, rule: Rule, event: Event) -> list[Rendered]:
    """Render every step of a matched rule; a template error is kept, not raised."""
    rendered = []
    for step in rule.steps:
        plugin = config.actions[step.action].plugin
        try:
            settings = render_value(step.compiled, template_context(event, rule))
        except TemplateError as exc:
            rendered.append(
                Rendered(rule.name, step.action, plugin, None, mask_text(config, exc))
            )
            continue
        rendered.append(
            Rendered(rule.name, step.action, plugin, settings, compiled=step.compiled)
        )
    return rendered


def mask_text(config: Config, value: Any) -> str:
    """Return ``value`` as text with every known secret replaced by ***."""
    return mask(str(value), config.secrets)


def masked(config: Config, rendered: Rendered) -> dict[str, Any]:
    """Return rendered settings safe to show: secret settings and values hidden."""
    declared = _declared_settings(rendered.plugin)
    shown: dict[str, Any] = {}
    for key, value in (rendered.settings or {}).items():
        setting = declared.get(key)
        if setting is not None and setting.secret and value:
            shown[key] = MASK
        else:
            shown[key] = _mask_deep(config, value)
    return shown


@functools.cache
def _declared_settings(plugin: str) -> Mapping[str, Any]:
    info = plugin_registry.installed().get(plugin)
    return info.cls.settings if info and info.cls else {}


def _mask_deep(config: Config, value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(config, value)
    if isinstance(value, list):
        return [_mask_deep(config, v) for v in value]
    if isinstance(value, Mapping):
        return {k: _mask_deep(config, v) for k, v in value.items()}
    return value


def show_value(value: Any, indent: str) -> Iterator[str]:
    """Yield a setting's value as indented lines, exactly as it would be sent."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield f"{indent}{key}: {item}"
    elif isinstance(value, list):
        for item in value:
            yield f"{indent}- {item}"
    elif isinstance(value, str) and "\n" in value:
        for line in value.splitlines():
            yield f"{indent}| {line}"
    else:
        yield f"{indent}{value}"


def verdict_line(verdict: Verdict) -> str:
    """Say in one line what happened to a rule, with the first failed condition."""
    name = verdict.rule.name
    if verdict.state == "matched":
        return f"  MATCH    {name}"
    if verdict.state == "disabled":
        return f"  off      {name} (enabled: false)"
    if verdict.state == "stopped":
        return f"  skipped  {name} (rule `{verdict.stopped_by}` has stop: true)"
    outcome = verdict.outcome
    assert outcome is not None
    where = f" [{outcome.mark}]" if outcome.mark else ""
    label = "ERROR   " if verdict.state == "error" else "no match"
    return f"  {label} {name}: {outcome.reason}{where}"


def describe(config: Config, event: Event) -> tuple[list[str], list[Rendered]]:
    """Return the report lines for one event and what its matched rules render."""
    verdicts = explain(config.rules, event)
    lines = [verdict_line(v) for v in verdicts]
    rendered = [
        item
        for verdict in verdicts
        if verdict.state == "matched"
        for item in render_rule(config, verdict.rule, event)
    ]
    return lines, rendered


def rendered_lines(config: Config, item: Rendered) -> list[str]:
    """Return how one rendered action is shown, secrets masked."""
    lines = [f"  rule `{item.rule}` -> action `{item.action}` ({item.plugin})"]
    if item.settings is None:
        lines.append(f"    cannot render: {item.error}")
        return lines
    for key, value in masked(config, item).items():
        if isinstance(value, (Mapping, list)) or (
            isinstance(value, str) and "\n" in value
        ):
            lines.append(f"    {key}:")
            lines.extend(show_value(value, "      "))
        else:
            lines.append(f"    {key}: {value}")
    return lines


# -- the office's `tests:` ------------------------------------------------------


def run_office_tests(config: Config) -> list[str]:
    """Run the config's `tests:`; return one located report per failure."""
    failures: list[str] = []
    for test in config.tests:
        failures.extend(_run_one(config, test))
    return failures


def _run_one(config: Config, test: OfficeTest) -> list[str]:
    if test.event is None:
        return []
    event = Event.from_envelope(test.event)
    verdicts = explain(config.rules, event)
    fired = [v.rule for v in verdicts if v.state == "matched"]
    failures = []
    prefix = f"{test.mark}: test `{test.name}`"

    if test.fires is not None and set(test.fires) != {r.name for r in fired}:
        expected = sorted(test.fires, key=_order(config))
        actual = [r.name for r in fired]
        lines = [f"{prefix}: the rules that fired differ"]
        lines.extend(_diff(expected, actual, "expected to fire", "fired"))
        for verdict in verdicts:
            if verdict.rule.name in test.fires and verdict.state != "matched":
                lines.append("  why:" + verdict_line(verdict)[1:])
        failures.append("\n".join(lines))

    rendered = [item for rule in fired for item in render_rule(config, rule, event)]
    for item in rendered:
        if item.settings is None:
            failures.append(f"{prefix}: a template failed: {item.error}")
    for message in test.messages:
        failures.extend(_compare(config, test, message, rendered))
    return failures


def _order(config: Config) -> Any:
    names = [rule.name for rule in config.rules]
    return lambda name: names.index(name) if name in names else len(names)


def _compare(
    config: Config,
    test: OfficeTest,
    expected: ExpectedMessage,
    rendered: list[Rendered],
) -> list[str]:
    prefix = f"{expected.mark}: test `{test.name}`"
    found = [
        r for r in rendered if r.rule == expected.rule and r.action == expected.action
    ]
    if not found:
        return [
            f"{prefix}: rule `{expected.rule}` did not fire, so action "
            f"`{expected.action}` sent nothing"
        ]
    item = found[0]
    if item.settings is None:
        return []
    failures = []
    # Compare what is really sent; show the difference with secrets masked.
    for key, want in expected.settings.items():
        got = item.settings.get(key)
        if _normal(want) == _normal(got):
            continue
        lines = [
            f"{prefix}: rule `{expected.rule}`, action `{expected.action}`, "
            f"setting `{key}` differs"
        ]
        diff = _diff(_as_lines(want), _as_lines(got), "expected", "rendered")
        lines.extend(mask_text(config, line) for line in diff)
        failures.append("\n".join(lines))
    return failures


def _normal(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return {str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return str(value)


def _as_lines(value: Any) -> list[str]:
    if isinstance(value, (Mapping, list)):
        return list(show_value(value, ""))
    return str("" if value is None else value).splitlines() or [""]


def _diff(expected: list[str], actual: list[str], a: str, b: str) -> list[str]:
    diff = difflib.unified_diff(expected, actual, a, b, lineterm="", n=3)
    return ["    " + line for line in diff]


def load_event_file(path: str) -> Event:
    """Read an event JSON file as Ovoko would send it; raise ValueError if not."""
    try:
        with open(path, "rb") as f:
            body = f.read()
    except OSError as exc:
        raise ValueError(f"cannot read the file: {exc.strerror}") from None
    try:
        return parse_body(body)
    except EnvelopeError as exc:
        raise ValueError(exc.description) from None


# -- the two commands -----------------------------------------------------------


def run_check(config: Config, strict: bool = False) -> int:
    """Print warnings and office-test failures; return the exit code of `check`."""
    for warning in config.warnings:
        shown = replace(warning, severity="error") if strict else warning
        print(shown, file=sys.stderr)
    failures = run_office_tests(config)
    for failure in failures:
        print(failure, file=sys.stderr)
    if failures or (strict and config.warnings):
        return 1
    print(
        f"{config.file}: OK ({plural(len(config.rules), 'rule')}, "
        f"{plural(len(config.actions), 'action')}, "
        f"{plural(len(config.tests), 'test')} passed)"
    )
    return 0


def run_test(config: Config, paths: list[str], send: bool = False) -> int:
    """Explain each event, show every message, and deliver only with ``send``."""
    runtime = None
    if send:
        from .dispatch import Runtime

        logs.configure(config.logging.level, config.logging.format)
        logs.set_secrets(config.secrets)
        runtime = Runtime(config)
    failed = False
    try:
        for path in paths:
            failed |= not _test_one(config, path, runtime)
    finally:
        if runtime is not None:
            runtime.close()
    if not send:
        print("\nNothing was sent (add --send to really deliver).")
    return 1 if failed else 0


def _test_one(config: Config, path: str, runtime: Any) -> bool:
    try:
        event = load_event_file(path)
    except ValueError as exc:
        print(f"{path}: not an Ovoko event: {exc}", file=sys.stderr)
        return False
    print(f"== {path}: {event.event_type} {event.event_id}")
    lines, rendered = describe(config, event)
    print("\n".join(lines))
    print("Messages:" if rendered else "Messages: none (no rule matched)")
    ok = True
    for item in rendered:
        print("\n".join(rendered_lines(config, item)))
        ok &= item.settings is not None
        if runtime is not None and item.settings is not None:
            ok &= _send(config, runtime, item, event)
    return ok


def _send(config: Config, runtime: Any, item: Rendered, event: Event) -> bool:
    plugin = runtime.plugins[item.action]
    settings = dict(item.settings or {})
    try:
        resolve_paths(runtime.base_dir, plugin.settings, item.compiled, settings)
        plugin.deliver(settings, event)
    except PermanentError as exc:
        print(f"    sent: FAILED, for good: {mask_text(config, exc)}")
        return False
    except Exception as exc:  # noqa: BLE001 — any plugin failure is reported
        what = str(exc) if isinstance(exc, RetryableError) else f"{exc!r}"
        print(
            "    sent: FAILED, the relay would try again later: "
            f"{mask_text(config, what)}"
        )
        return False
    print("    sent: done")
    return True
