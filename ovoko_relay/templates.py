"""The sandboxed Jinja environment in which every templated setting renders."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import Problem, TemplateError
from .reader import suggest
from .yamlsource import Mark, mark_of

VARIABLES = ("event", "data", "rule")
_NO_FILTER = re.compile(r"No (filter|test) named '([^']+)'")


class Fields(dict[str, Any]):
    """Event data that knows its own path, so a missing field can be named."""

    __slots__ = ("_relay_path",)

    def __init__(self, value: Mapping[str, Any], path: str) -> None:
        super().__init__({k: _wrap(v, f"{path}.{k}") for k, v in value.items()})
        self._relay_path = path


def _wrap(value: Any, path: str) -> Any:
    if isinstance(value, Mapping) and not isinstance(value, Fields):
        return Fields(value, path)
    if isinstance(value, list):
        return [_wrap(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


class _NamedUndefined(jinja2.StrictUndefined):
    """Fail on any use of a missing name, saying which name it was."""

    @property
    def _undefined_message(self) -> str:
        name = self._undefined_name
        owner = self._undefined_obj
        if self._undefined_hint:
            return self._undefined_hint
        if isinstance(owner, Fields):
            full = f"{owner._relay_path}.{name}"
            return (
                f"the event has no field `{full}` (write "
                f"`{{{{ {full} | default('') }}}}` to allow it to be missing)"
            )
        if owner is jinja2.utils.missing:
            hint = suggest(str(name), VARIABLES)
            return (
                f"`{name}` is not defined{hint}. A template can use `event`, "
                "`data` and `rule`"
            )
        return f"`{name}` is missing in {type(owner).__name__} value"


# -- filters ------------------------------------------------------------------


def _zone(name: str | None) -> ZoneInfo | None:
    if name is None:
        return None
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone `{name}`{_zone_hint(str(name))}") from None


def _zone_hint(name: str) -> str:
    return suggest(name, sorted(available_timezones())) or " (e.g. `Europe/Vilnius`)"


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(
            f"`{value}` is not a date and time like 2023-01-12T14:17:20+02:00"
        ) from None


def format_datetime(
    value: Any, format: str = "%Y-%m-%d %H:%M", tz: str | None = None
) -> str:
    """Format a date-time (ISO text, datetime or Unix seconds) in a time zone."""
    moment = _as_datetime(value)
    zone = _zone(tz)
    if zone is not None:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(zone)
    return moment.strftime(format)


def format_date(value: Any, format: str = "%Y-%m-%d", tz: str | None = None) -> str:
    """Format the date part of a date-time, in a time zone."""
    return format_datetime(value, format, tz)


def format_time(value: Any, format: str = "%H:%M", tz: str | None = None) -> str:
    """Format the time part of a date-time, in a time zone."""
    return format_datetime(value, format, tz)


def _as_decimal(value: Any, what: str) -> Decimal:
    if isinstance(value, bool):
        raise ValueError(f"{what}: `{value}` is not a number")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{what}: `{value}` is not a number") from None
    if not number.is_finite():
        raise ValueError(f"{what}: `{value}` is not a number")
    return number


def format_number(
    value: Any, places: int = 0, decimal: str = ".", thousands: str = ""
) -> str:
    """Round to ``places`` decimals (half up) with chosen separators."""
    number = _as_decimal(value, "number")
    quantum = Decimal(1).scaleb(-int(places))
    rounded = number.quantize(quantum, rounding=ROUND_HALF_UP)
    sign = "-" if rounded < 0 else ""
    whole, _, fraction = f"{abs(rounded):f}".partition(".")
    groups: list[str] = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    groups.insert(0, whole)
    text = sign + thousands.join(groups)
    return f"{text}{decimal}{fraction}" if fraction else text


def format_money(
    value: Any,
    currency: str = "EUR",
    places: int = 2,
    decimal: str = ".",
    thousands: str = ",",
) -> str:
    """Format an amount with two decimals and its currency, e.g. 1,234.50 EUR."""
    _as_decimal(value, "money")
    amount = format_number(value, places, decimal, thousands)
    return f"{amount} {currency}" if currency else amount


FILTERS = {
    "datetime": format_datetime,
    "date": format_date,
    "time": format_time,
    "number": format_number,
    "money": format_money,
}
# Far beyond any message, far below what would exhaust the server's memory.
MAX_LENGTH = 1_000_000
MAX_POWER = 1000
_ZONE_ARGUMENT = {"datetime": 1, "date": 1, "time": 1}


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, where `*` and `**` cannot build a result of gigabytes."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > MAX_POWER:
            raise SecurityError(f"an exponent above {MAX_POWER} is not allowed")
        if operator == "*":
            for sized, count in ((left, right), (right, left)):
                if (
                    isinstance(sized, (str, list, tuple))
                    and isinstance(count, int)
                    and len(sized) * count > MAX_LENGTH
                ):
                    raise SecurityError(
                        f"a text or list longer than {MAX_LENGTH} is not allowed"
                    )
        return super().call_binop(context, operator, left, right)


def _make_environment() -> ImmutableSandboxedEnvironment:
    env = _BoundedEnvironment(
        undefined=_NamedUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters.update(FILTERS)
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
            return str(self.source)
        try:
            return self._compiled.render(wrap_context(context))
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"{self.where}: {exc.message}") from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{self.where}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 — any filter may raise; report it
            raise TemplateError(f"{self.where}: {exc}") from exc


def wrap_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """Return the context with `event` and `data` able to name missing fields."""
    wrapped = dict(context)
    for name in ("event", "data"):
        if isinstance(wrapped.get(name), Mapping):
            wrapped[name] = _wrap(wrapped[name], name)
    return wrapped


def is_template(source: str) -> bool:
    """Tell whether a string contains Jinja markup."""
    return "{{" in source or "{%" in source or "{#" in source


def compile_template(source: str, where: str, problems: list[Problem]) -> Template:
    """Compile ``source``, adding a located problem if its syntax is wrong."""
    jinja_source = getattr(source, "template_source", source)
    if not is_template(jinja_source):
        return Template(source, where, None)
    mark = mark_of(source, Mark("<config>", 1, 1))
    block = getattr(source, "block", False)
    try:
        tree = ENVIRONMENT.parse(jinja_source)
        compiled = ENVIRONMENT.from_string(tree)
    except jinja2.TemplateSyntaxError as exc:
        line = mark.line + (exc.lineno or 1) - (0 if block else 1)
        problems.append(
            Problem(
                mark.file,
                line,
                mark.col,
                f"template error in {where}: {_syntax_message(exc)}",
            )
        )
        return Template(source, where, None)
    for message in _check_constants(tree):
        problems.append(mark.problem(f"template error in {where}: {message}"))
    return Template(source, where, compiled)


def _syntax_message(exc: jinja2.TemplateSyntaxError) -> str:
    match = _NO_FILTER.search(exc.message or "")
    if not match:
        return exc.message or "invalid template"
    kind, name = match.groups()
    known = ENVIRONMENT.filters if kind == "filter" else ENVIRONMENT.tests
    return f"there is no {kind} named `{name}`{suggest(name, list(known))}"


def _check_constants(tree: nodes.Template) -> list[str]:
    """Check literal time zones given to the date filters, before any event."""
    messages = []
    for node in tree.find_all(nodes.Filter):
        position = _ZONE_ARGUMENT.get(node.name)
        if position is None:
            continue
        zone = None
        given = node.args[position] if len(node.args) > position else None
        if isinstance(given, nodes.Const):
            zone = given.value
        for keyword in node.kwargs:
            given = keyword.value
            if keyword.key == "tz" and isinstance(given, nodes.Const):
                zone = given.value
        if zone is None:
            continue
        try:
            _zone(zone)
        except ValueError as exc:
            messages.append(str(exc))
    return messages


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
    return _render(value, wrap_context(context))


def _render(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, Template):
        return value.render(context)
    if isinstance(value, list):
        return [_render(v, context) for v in value]
    if isinstance(value, dict):
        return {k: _render(v, context) for k, v in value.items()}
    return value
