"""Load the relay's YAML config, check every part of it, report each problem located."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import plugins as plugin_registry
from . import rules as rules_module
from .errors import ConfigError, Problem
from .logs import mask
from .officetests import ExpectedMessage, OfficeTest, TestsReader
from .reader import parse_duration, suggest
from .settings import STEP_KEYS
from .yamlsource import Mark, Seq, Text, is_null, load_file, mark_of, plain

ACTION_KEYS = ("plugin", "retry", "timeout")
RESERVED_PATHS = ("/healthz", "/metrics")
_WEBHOOK_PATH = re.compile(r"/[A-Za-z0-9._~/-]*")


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
    secrets = reader.secrets | getattr(root, "secret_values", frozenset())
    if reader.problems:
        raise ConfigError(_masked(reader.problems + reader.warnings, secrets))
    config.warnings = _masked(reader.warnings, secrets)
    return config


def _masked(problems: list[Problem], secrets: Iterable[str]) -> list[Problem]:
    """Order problems by place; hide any secret a message quotes."""
    return [
        replace(p, message=mask(p.message, secrets))
        for p in sorted(problems, key=lambda p: (p.file, p.line, p.col))
    ]


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


class _Reader(TestsReader):
    """Walk the loaded YAML, building the Config and collecting problems."""

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

    # -- sections -------------------------------------------------------------

    def server(self, node: Any, mark: Mark) -> ServerConfig:
        node = self.mapping(node, "`server`", mark)
        d = ServerConfig()
        self.known_keys(
            node, ("host", "port", "path", "threads", "max_body_bytes"), "in `server`"
        )
        path = self.text(node, "path", d.path)
        if not _WEBHOOK_PATH.fullmatch(path):
            self.error(
                node.key_mark("path"),
                f"`path` must start with / and hold only letters, digits and "
                f"- _ . ~ /, like /webhooks/ovoko, not `{path}`",
            )
        elif path.rstrip("/") in RESERVED_PATHS:
            self.error(
                node.key_mark("path"),
                f"`path` cannot be {path}: the relay answers its own "
                f"{', '.join(RESERVED_PATHS)} there",
            )
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
        elif not is_null(tokens):
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
            path = os.path.normpath(self.beside(path))
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
        self.available = plugin_registry.installed()
        self.defined_actions = {str(name) for name in node}
        actions = {}
        for name, spec in node.items():
            action = self.action(str(name), spec, name.mark, delivery)
            if action:
                actions[str(name)] = action
        return actions

    def action(
        self,
        name: str,
        node: Any,
        mark: Mark,
        delivery: DeliveryConfig,
    ) -> Action | None:
        node = self.mapping(node, f"action `{name}`", mark)
        plugin_name = self.text(node, "plugin", "")
        if not plugin_name:
            self.error(mark, f"action `{name}` needs `plugin:` (which plugin to use)")
            return None
        info = self.available.get(plugin_name)
        if info is None or info.cls is None:
            usable = sorted(n for n, i in self.available.items() if i.cls is not None)
            why = f" ({info.error})" if info is not None else ""
            self.error(
                node["plugin"].mark,
                f"unknown plugin `{plugin_name}`{why}{suggest(plugin_name, usable)}; "
                f"installed plugins: {', '.join(usable) or 'none'}",
            )
            return None

        declared = info.cls.settings
        settings = self.known_settings(node, ACTION_KEYS, plugin_name, declared)
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

    def rules(
        self, node: Any, mark: Mark, actions: dict[str, Action]
    ) -> list[rules_module.Rule]:
        if is_null(node):
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
            if action is None and action_name in self.defined_actions:
                continue  # its own problems are reported where it is defined
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
                    key=step_key(action_name, overrides),
                )
            )
        seen: dict[str, int] = {}
        for built in steps:
            seen[built.key] = seen.get(built.key, 0) + 1
            built.key = f"{built.key}-{seen[built.key]}"
        return steps


def step_key(action: str, overrides: dict[str, Any]) -> str:
    """Return a short fingerprint of a step: its action and its settings."""
    written = json.dumps([action, plain(overrides)], sort_keys=True, default=str)
    return hashlib.sha256(written.encode("utf-8")).hexdigest()[:16]


__all__ = [
    "Action",
    "Config",
    "ConfigError",
    "ExpectedMessage",
    "OfficeTest",
    "RetryPolicy",
    "load",
    "parse_duration",
    "plain",
    "suggest",
]
