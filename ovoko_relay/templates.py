"""The sandboxed Jinja environment in which every templated setting renders."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import Problem, TemplateError
from .yamlsource import Mark, mark_of


class _NamedUndefined(jinja2.StrictUndefined):
    """Fail on any use of a missing name, saying which name it was."""


def _make_environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=_NamedUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    return env


ENVIRONMENT = _make_environment()


class Template:
    """One compiled template string, or a constant that needs no rendering."""

    __slots__ = ("source", "where", "_compiled")

    def __init__(self, source: str, where: str, compiled: jinja2.Template | None):
        self.source = source
        self.where = where
        self._compiled = compiled

    def render(self, context: Mapping[str, Any]) -> str:
        """Render with ``context``, raising TemplateError naming the template."""
        if self._compiled is None:
            return self.source
        try:
            return self._compiled.render(context)
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"{self.where}: {_undefined_message(exc)}") from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{self.where}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 — any filter may raise; report it
            raise TemplateError(f"{self.where}: {type(exc).__name__}: {exc}") from exc


def is_template(source: str) -> bool:
    """Tell whether a string contains Jinja markup."""
    return "{{" in source or "{%" in source or "{#" in source


def compile_template(source: str, where: str, problems: list[Problem]) -> Template:
    """Compile ``source``, adding a located problem if its syntax is wrong."""
    if not is_template(source):
        return Template(source, where, None)
    try:
        return Template(source, where, ENVIRONMENT.from_string(source))
    except jinja2.TemplateSyntaxError as exc:
        mark = mark_of(source, Mark("<config>", 1, 1))
        problems.append(
            Problem(
                mark.file,
                mark.line + (exc.lineno or 1) - 1,
                mark.col,
                f"template error in {where}: {exc.message}",
            )
        )
        return Template(source, where, None)


def compile_value(value: Any, where: str, problems: list[Problem]) -> Any:
    """Compile every string inside a setting value (text, list or mapping)."""
    if isinstance(value, str):
        return compile_template(value, where, problems)
    if isinstance(value, list):
        return [
            compile_value(v, f"{where}[{i}]", problems) for i, v in enumerate(value)
        ]
    if isinstance(value, Mapping):
        return {
            str(k): compile_value(v, f"{where}.{k}", problems) for k, v in value.items()
        }
    return value


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render a value compiled by :func:`compile_value`."""
    if isinstance(value, Template):
        return value.render(context)
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, context) for k, v in value.items()}
    return value


def _undefined_message(exc: jinja2.UndefinedError) -> str:
    return (
        f"{exc.message}; the event has no such field (write "
        "`{{ data.field | default('…') }}` to allow it to be missing)"
    )
