"""Load the relay's YAML config, check every part of it, report each problem located."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import plugins as plugin_registry
from . import rules as rules_module
from .errors import ConfigError, Problem
from .events import EnvelopeError, check_envelope, parse_body
from .plugins.base import Setting
from .templates import compile_value
from .yamlsource import Map, Mark, Seq, Text, load_file, mark_of, plain

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
ACTION_KEYS = ("plugin", "retry", "timeout")
STEP_KEYS = ("action", "retry", "timeout")
TEMPLATED_KINDS = ("text", "path", "list", "mapping", "any")
TEST_KEYS = ("name", "event", "fires", "messages")
MESSAGE_KEYS = ("rule", "action")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed delivery is tried again."""

    attempts: int = 8
    first_delay: float = 2.0
    max_delay: float = 3600.0


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    path: str = "/webhooks/ovoko"
    threads: int = 8
    max_body_bytes: int = 64 * 1024


@dataclass(frozen=True)
class AuthConfig:
    header: str = "X-Ovoko-Token"
    tokens: tuple[str, ...] = ()
    disabled: bool = False


@dataclass(frozen=True)
class StorageConfig:
    path: str = "./data/relay.sqlite3"
    retention_days: int = 90


@dataclass(frozen=True)
class DeliveryConfig:
    workers: int = 4
    retry: RetryPolicy = RetryPolicy()
    timeout: float = 30.0
    grace_period: float = 10.0


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    format: str = "logfmt"


@dataclass
class Action:
    """A named, configured plugin instance that rules refer to."""

    name: str
    plugin: str
    settings: dict[str, Any]
    mark: Mark
    retry: RetryPolicy
    timeout: float


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


@dataclass
class Config:
    """Everything the relay needs, checked; built only by :func:`load`."""

    file: str
    server: ServerConfig
    auth: AuthConfig
    storage: StorageConfig
    delivery: DeliveryConfig
    logging: LoggingConfig
    actions: dict[str, Action]
    rules: list[rules_module.Rule]
    secrets: frozenset[str] = frozenset()
    warnings: list[Problem] = field(default_factory=list)
    tests: list[OfficeTest] = field(default_factory=list)


def config_path(explicit: str | None) -> str:
    """Return the config file to use: the flag, then $OVOKO_RELAY_CONFIG."""
    path = explicit or os.environ.get("OVOKO_RELAY_CONFIG")
    if not path:
        raise ConfigError(
            [
                Problem(
                    "<command line>",
                    1,
                    1,
                    "no config file given; pass --config FILE or set "
                    "OVOKO_RELAY_CONFIG",
                )
            ]
        )
    return path


def load(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Load and check a config file; raise ConfigError listing every problem."""
    root = load_file(path, environ)
    reader = _Reader(path, environ)
    config = reader.config(root)
    if reader.problems:
        raise ConfigError(_in_order(reader.problems + reader.warnings))
    config.warnings = _in_order(reader.warnings)
    return config


def _in_order(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.file, p.line, p.col))


def load_storage(path: str) -> StorageConfig:
    """Read only the `storage` section, for the commands that just open the store.

    Environment variables the rest of the file needs (tokens, passwords) may be
    unset here, so an operator can look at deliveries without the secrets.
    """
    root = load_file(path, _AnyVariable(os.environ))
    reader = _Reader(path)
    top = Mark(path, 1, 1)
    root = reader.mapping(root, "the config file", top)
    storage = reader.storage(root.get("storage"), root.key_mark("storage"))
    unset = re.search(r"\$\{(\w+)\}", storage.path)
    if unset:
        reader.error(
            mark_of(root.get("storage"), top),
            f"`storage.path` needs the environment variable `{unset.group(1)}`, "
            "which is not set",
        )
    if reader.problems:
        raise ConfigError(reader.problems)
    return storage


class _AnyVariable(Mapping[str, str]):
    """The environment, where an unset variable reads as its own `${NAME}`."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def __getitem__(self, name: str) -> str:
        return self.environ.get(name) or f"${{{name}}}"

    def __contains__(self, name: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.environ)

    def __len__(self) -> int:
        return len(self.environ)


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


class _Reader:
    """Walk the loaded YAML, building the Config and collecting problems."""

    def __init__(self, file: str, environ: Mapping[str, str] | None = None) -> None:
        self.file = file
        self.environ = environ
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.secrets: set[str] = set()
        self.available: dict[str, plugin_registry.PluginInfo] = {}

    def error(self, mark: Mark, message: str) -> None:
        self.problems.append(mark.problem(message))

    def config(self, root: Any) -> Config:
        top = Mark(self.file, 1, 1)
        root = self.mapping(root, "the config file", top)
        sections = (
            "server", "auth", "storage", "delivery", "logging", "actions", "rules",
            "tests",
        )  # fmt: skip
        self.known_keys(root, sections, "at the top level")

        server = self.server(root.get("server"), root.key_mark("server"))
        auth = self.auth(root.get("auth"), root.key_mark("auth"))
        storage = self.storage(root.get("storage"), root.key_mark("storage"))
        delivery = self.delivery(root.get("delivery"), root.key_mark("delivery"))
        logging_config = self.logging(root.get("logging"), root.key_mark("logging"))
        actions = self.actions(root.get("actions"), root.key_mark("actions"), delivery)
        rules = self.rules(root.get("rules"), root.key_mark("rules"), actions)
        tests = self.tests(root.get("tests"), root.key_mark("tests"), rules, actions)
        return Config(
            file=self.file,
            server=server,
            auth=auth,
            storage=storage,
            delivery=delivery,
            logging=logging_config,
            actions=actions,
            rules=rules,
            secrets=frozenset(s for s in self.secrets if s),
            tests=tests,
        )

    # -- shapes ---------------------------------------------------------------

    def mapping(self, node: Any, what: str, mark: Mark) -> Map:
        if node is None or (isinstance(node, Text) and node.null):
            empty = Map()
            empty.mark = mark
            return empty
        if not isinstance(node, Map):
            self.error(getattr(node, "mark", mark), f"{what} must be a mapping")
            empty = Map()
            empty.mark = getattr(node, "mark", mark)
            return empty
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
        if value is None or (isinstance(value, Text) and value.null):
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
        if value in _TRUE:
            return True
        if value in _FALSE:
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

    # -- sections -------------------------------------------------------------

    def server(self, node: Any, mark: Mark) -> ServerConfig:
        node = self.mapping(node, "`server`", mark)
        d = ServerConfig()
        self.known_keys(
            node, ("host", "port", "path", "threads", "max_body_bytes"), "in `server`"
        )
        path = self.text(node, "path", d.path)
        if not path.startswith("/"):
            self.error(node.key_mark("path"), f"`path` must start with /, not `{path}`")
        port = self.integer(node, "port", d.port)
        if port > 65535:
            self.error(node["port"].mark, f"`port` must be 0 to 65535, not `{port}`")
        return ServerConfig(
            host=self.text(node, "host", d.host),
            port=port,
            path=path,
            threads=self.integer(node, "threads", d.threads, minimum=1),
            max_body_bytes=self.integer(
                node, "max_body_bytes", d.max_body_bytes, minimum=1
            ),
        )

    def auth(self, node: Any, mark: Mark) -> AuthConfig:
        node = self.mapping(node, "`auth`", mark)
        self.known_keys(node, ("header", "tokens", "disabled"), "in `auth`")
        disabled = self.boolean(node, "disabled", False)
        header = self.text(node, "header", AuthConfig.header)
        tokens = node.get("tokens")
        if isinstance(tokens, Text) and not tokens.null:
            tokens = [tokens]
        values = []
        if isinstance(tokens, list):
            for token in tokens:
                if not isinstance(token, Text) or token.null or not token.strip():
                    self.error(mark_of(token, node.mark), "a token must not be empty")
                    continue
                values.append(str(token))
        elif tokens is not None and not (isinstance(tokens, Text) and tokens.null):
            self.error(node.key_mark("tokens"), "`tokens` must be a list of values")
        if not values and not disabled:
            self.error(
                node.key_mark("tokens") if "tokens" in node else mark,
                "no token configured: set `auth.tokens` (for example "
                '["${OVOKO_TOKEN}"]), or set `auth.disabled: true` to accept '
                "webhooks without a token",
            )
        self.secrets.update(values)
        return AuthConfig(header=header, tokens=tuple(values), disabled=disabled)

    def storage(self, node: Any, mark: Mark) -> StorageConfig:
        node = self.mapping(node, "`storage`", mark)
        self.known_keys(node, ("path", "retention_days"), "in `storage`")
        d = StorageConfig()
        path = self.text(node, "path", d.path)
        if not os.path.isabs(path):
            path = os.path.join(os.path.dirname(os.path.abspath(self.file)), path)
        return StorageConfig(
            path=path,
            retention_days=self.integer(node, "retention_days", d.retention_days, 1),
        )

    def retry(self, node: Any, mark: Mark, base: RetryPolicy) -> RetryPolicy:
        node = self.mapping(node, "`retry`", mark)
        self.known_keys(node, ("attempts", "first_delay", "max_delay"), "in `retry`")
        return RetryPolicy(
            attempts=self.integer(node, "attempts", base.attempts, minimum=1),
            first_delay=self.duration(node, "first_delay", base.first_delay),
            max_delay=self.duration(node, "max_delay", base.max_delay),
        )

    def delivery(self, node: Any, mark: Mark) -> DeliveryConfig:
        node = self.mapping(node, "`delivery`", mark)
        self.known_keys(
            node, ("workers", "retry", "timeout", "grace_period"), "in `delivery`"
        )
        d = DeliveryConfig()
        return DeliveryConfig(
            workers=self.integer(node, "workers", d.workers, minimum=1),
            retry=self.retry(node.get("retry"), node.key_mark("retry"), d.retry),
            timeout=self.positive_duration(node, "timeout", d.timeout),
            grace_period=self.duration(node, "grace_period", d.grace_period),
        )

    def logging(self, node: Any, mark: Mark) -> LoggingConfig:
        node = self.mapping(node, "`logging`", mark)
        self.known_keys(node, ("level", "format"), "in `logging`")
        level = self.text(node, "level", "INFO").upper()
        levels = ("DEBUG", "INFO", "WARNING", "ERROR")
        if level not in levels:
            self.error(
                node.key_mark("level"),
                f"`level` must be one of {', '.join(levels)}, not `{level}`"
                f"{suggest(level, levels)}",
            )
        fmt = self.text(node, "format", "logfmt")
        if fmt not in ("logfmt", "json"):
            self.error(
                node.key_mark("format"),
                f"`format` must be logfmt or json, not `{fmt}`"
                f"{suggest(fmt, ('logfmt', 'json'))}",
            )
        return LoggingConfig(level=level, format=fmt)

    def actions(
        self, node: Any, mark: Mark, delivery: DeliveryConfig
    ) -> dict[str, Action]:
        node = self.mapping(node, "`actions`", mark)
        available = self.available = plugin_registry.installed()
        actions = {}
        for name, spec in node.items():
            action = self.action(str(name), spec, name.mark, available, delivery)
            if action:
                actions[str(name)] = action
        return actions

    def action(
        self,
        name: str,
        node: Any,
        mark: Mark,
        available: dict[str, plugin_registry.PluginInfo],
        delivery: DeliveryConfig,
    ) -> Action | None:
        node = self.mapping(node, f"action `{name}`", mark)
        plugin_name = self.text(node, "plugin", "")
        if not plugin_name:
            self.error(mark, f"action `{name}` needs `plugin:` (which plugin to use)")
            return None
        info = available.get(plugin_name)
        if info is None or info.cls is None:
            usable = sorted(n for n, i in available.items() if i.cls is not None)
            why = f" ({info.error})" if info is not None else ""
            self.error(
                node["plugin"].mark,
                f"unknown plugin `{plugin_name}`{why}{suggest(plugin_name, usable)}; "
                f"installed plugins: {', '.join(usable) or 'none'}",
            )
            return None

        declared = info.cls.settings
        settings = {}
        for key, value in node.items():
            if key in ACTION_KEYS:
                continue
            if key not in declared:
                self.error(
                    key.mark,
                    f"unknown setting `{key}` for plugin `{plugin_name}`"
                    f"{suggest(key, tuple(declared) + ACTION_KEYS)}",
                )
                continue
            settings[str(key)] = value
        for key, setting in declared.items():
            if setting.secret:
                self.collect_secret_values(node.get(key))
            self.collect_env_secrets(node.get(key))
        return Action(
            name=name,
            plugin=plugin_name,
            settings=settings,
            mark=mark,
            retry=self.retry(node.get("retry"), node.key_mark("retry"), delivery.retry)
            if "retry" in node
            else delivery.retry,
            timeout=self.positive_duration(node, "timeout", delivery.timeout),
        )

    def collect_secret_values(self, value: Any) -> None:
        """Mask every text inside a secret setting, list items included."""
        if isinstance(value, Text) and not value.null:
            self.secrets.add(str(value))
        elif isinstance(value, list):
            for item in value:
                self.collect_secret_values(item)
        elif isinstance(value, Mapping):
            for item in value.values():
                self.collect_secret_values(item)

    def collect_env_secrets(self, value: Any) -> None:
        if isinstance(value, Text) and value.secret:
            self.secrets.add(str(value))
            self.secrets.update(value.env_values)
        elif isinstance(value, list):
            for item in value:
                self.collect_env_secrets(item)
        elif isinstance(value, Mapping):
            for item in value.values():
                self.collect_env_secrets(item)

    def rules(
        self, node: Any, mark: Mark, actions: dict[str, Action]
    ) -> list[rules_module.Rule]:
        if node is None or (isinstance(node, Text) and node.null):
            return []
        if not isinstance(node, Seq):
            self.error(mark, "`rules` must be a list of rules, each starting with -")
            return []
        rules = []
        seen: dict[str, Mark] = {}
        for item in node:
            rule = self.rule(item, node.mark, actions)
            if rule is None:
                continue
            if rule.name in seen:
                self.error(
                    rule.mark,
                    f"rule name `{rule.name}` is used twice (first on line "
                    f"{seen[rule.name].line}); rule names must be unique",
                )
            seen.setdefault(rule.name, rule.mark)
            rules.append(rule)
        return rules

    def rule(
        self, node: Any, mark: Mark, actions: dict[str, Action]
    ) -> rules_module.Rule | None:
        node = self.mapping(node, "a rule", mark)
        self.known_keys(node, ("name", "when", "do", "stop", "enabled"), "in a rule")
        name = self.text(node, "name", "")
        if not name:
            self.error(node.mark, "a rule needs a `name`")
            name = f"rule at line {node.mark.line}"
        when = rules_module.compile_when(
            node.get("when"), node.key_mark("when"), self.problems, self.warnings
        )
        steps = self.steps(node.get("do"), node.key_mark("do"), name, actions)
        return rules_module.Rule(
            name=name,
            when=when,
            steps=steps,
            mark=node.mark,
            enabled=self.boolean(node, "enabled", True),
            stop=self.boolean(node, "stop", False),
        )

    def steps(
        self, node: Any, mark: Mark, rule: str, actions: dict[str, Action]
    ) -> list[rules_module.Step]:
        if not isinstance(node, Seq) or not node:
            self.error(mark, f"rule `{rule}` needs `do:`, a list of actions to run")
            return []
        steps = []
        for item in node:
            step = self.mapping(item, "a step of `do`", node.mark)
            action_name = self.text(step, "action", "")
            if not action_name:
                self.error(step.mark, "each step of `do` needs `action: NAME`")
                continue
            action = actions.get(action_name)
            if action is None:
                self.error(
                    step["action"].mark,
                    f"unknown action `{action_name}`"
                    f"{suggest(action_name, tuple(actions))}; actions defined: "
                    f"{', '.join(actions) or 'none'}",
                )
                continue
            for key in ("retry", "timeout"):
                if key in step:
                    self.error(
                        step.key_mark(key),
                        f"`{key}` belongs to the action `{action_name}` (under "
                        f"`actions:`, line {action.mark.line}), not to a step of a "
                        f"rule; to give this rule its own `{key}`, define a second "
                        "action with the same plugin",
                    )
            overrides = {str(k): v for k, v in step.items() if k not in STEP_KEYS}
            self.step_settings(step, action, overrides)
            merged = {**action.settings, **overrides}
            where = f"rule `{rule}`, action `{action_name}`"
            steps.append(
                rules_module.Step(
                    action=action_name,
                    overrides=overrides,
                    mark=step.mark,
                    compiled=self.compile_settings(merged, action, where, step.mark),
                )
            )
        return steps

    def declared(self, action: Action) -> Mapping[str, Setting]:
        cls = self.available[action.plugin].cls
        assert cls is not None  # actions are only built for usable plugins
        return cls.settings

    def step_settings(self, step: Map, action: Action, overrides: dict) -> None:
        declared = self.declared(action)
        for key in list(overrides):
            if key not in declared:
                self.error(
                    step.key_mark(key),
                    f"unknown setting `{key}` for plugin `{action.plugin}`"
                    f"{suggest(key, tuple(declared) + STEP_KEYS)}",
                )
                del overrides[key]
            else:
                if declared[key].secret:
                    self.collect_secret_values(overrides[key])
                self.collect_env_secrets(overrides[key])

    def compile_settings(
        self, merged: dict[str, Any], action: Action, where: str, mark: Mark
    ) -> dict[str, Any]:
        declared = self.declared(action)
        compiled: dict[str, Any] = {}
        for key, setting in declared.items():
            if key not in merged or (
                isinstance(merged[key], Text) and merged[key].null
            ):
                if setting.required:
                    self.error(
                        mark,
                        f"{where}: setting `{key}` is required by plugin "
                        f"`{action.plugin}`",
                    )
                elif setting.default is not None:
                    compiled[key] = setting.default
                continue
            value = self.setting_value(key, merged[key], setting, action.mark)
            if setting.template and setting.kind in TEMPLATED_KINDS:
                value = compile_value(value, f"{where}, setting `{key}`", self.problems)
            compiled[key] = value
        return compiled

    def setting_value(self, key: str, value: Any, setting: Setting, mark: Mark) -> Any:
        at = mark_of(value, mark)
        kind = setting.kind
        if kind == "any":
            # Text keeps its place in the file, so template errors can name it.
            return value
        if kind == "list":
            items = value if isinstance(value, Seq) else [value]
            if not all(isinstance(v, Text) for v in items):
                self.error(at, f"setting `{key}` must be a value or a list of values")
            return [v for v in items if isinstance(v, Text)]
        if kind == "mapping":
            if not isinstance(value, Map):
                self.error(at, f"setting `{key}` must be a mapping of name: value")
                return {}
            return {str(k): v for k, v in value.items()}
        if not isinstance(value, Text):
            self.error(at, f"setting `{key}` must be a single value")
            return None
        if kind == "integer":
            try:
                return int(value)
            except ValueError:
                self.error(at, f"setting `{key}` must be a whole number, not `{value}`")
                return None
        if kind == "number":
            try:
                return float(value)
            except ValueError:
                self.error(at, f"setting `{key}` must be a number, not `{value}`")
                return None
        if kind == "boolean":
            lowered = value.lower()
            if lowered not in _TRUE | _FALSE:
                self.error(at, f"setting `{key}` must be true or false, not `{value}`")
            return lowered in _TRUE
        if setting.choices and value not in setting.choices:
            self.error(
                at,
                f"setting `{key}` must be one of {', '.join(setting.choices)}, not "
                f"`{value}`{suggest(value, setting.choices)}",
            )
        return value

    # -- the office's own tests -----------------------------------------------

    def tests(
        self,
        node: Any,
        mark: Mark,
        rules: list[rules_module.Rule],
        actions: dict[str, Action],
    ) -> list[OfficeTest]:
        if node is None or (isinstance(node, Text) and node.null):
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
        path = os.path.join(os.path.dirname(os.path.abspath(self.file)), name)
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
        if value is not None and not (isinstance(value, Text) and value.null):
            if not isinstance(value, Seq):
                self.error(
                    node.key_mark("messages"),
                    "`messages` must be a list, each item starting with - rule:",
                )
            else:
                for item in value:
                    message = self.expected(item, value.mark, name, steps, actions)
                    if message is not None:
                        messages.append(message)
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
        path = os.path.join(os.path.dirname(os.path.abspath(self.file)), value)
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
        declared = self.declared(actions[action_name])
        settings = {}
        for key, value in node.items():
            if key in MESSAGE_KEYS:
                continue
            if key not in declared:
                self.error(
                    key.mark,
                    f"unknown setting `{key}` for plugin "
                    f"`{actions[action_name].plugin}`"
                    f"{suggest(key, tuple(declared) + MESSAGE_KEYS)}",
                )
                continue
            settings[str(key)] = plain(value)
        return ExpectedMessage(rule, action_name, settings, node.mark)


__all__ = ["Action", "Config", "ConfigError", "RetryPolicy", "load", "plain"]
