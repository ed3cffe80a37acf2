"""Plugin settings of actions and rule steps: declared, typed, compiled, masked."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import plugins as plugin_registry
from .errors import PermanentError
from .plugins.base import Setting
from .reader import FALSE, TRUE, Reader, suggest
from .templates import compile_value
from .yamlsource import Map, Mark, Seq, Text, is_null, mark_of

if TYPE_CHECKING:
    from .config import Action

STEP_KEYS = ("action", "retry", "timeout")
TEMPLATED_KINDS = ("text", "path", "list", "mapping", "any")


def resolve_paths(
    base_dir: str,
    declared: Mapping[str, Setting],
    compiled: Mapping[str, Any],
    settings: dict[str, Any],
) -> None:
    """Make rendered `path` settings absolute from the config file's folder.

    Raise PermanentError when event data moved a path out of the folder the
    config names (a part id of `../../x`): `..` may only come from the config.
    """
    for key, setting in declared.items():
        rendered = settings.get(key)
        if setting.kind != "path" or not rendered:
            continue
        written = str(getattr(compiled.get(key), "source", compiled.get(key)))
        ups = Path(rendered).parts.count("..")
        if ups > Path(written).parts.count("..") or (
            os.path.isabs(rendered) and not os.path.isabs(written)
        ):
            raise PermanentError(
                f"setting `{key}`: the path `{rendered}` made from the event's data "
                "leaves the folder the config names"
            )
        settings[key] = os.path.join(base_dir, rendered)


def secret_parts(value: str) -> list[str]:
    """Return the parts of a secret URL that a server may echo on their own.

    A webhook URL's secret is mostly its path (and query): a receiver's error
    page that quotes the path alone must not show it either.
    """
    parts = urlsplit(value)
    if not (parts.scheme and parts.netloc):
        return []
    found = [p for p in (parts.path.strip("/"), parts.query) if len(p) >= 8]
    if parts.password:
        found.append(parts.password)
    return found


def _texts(value: Any) -> Iterator[Text]:
    """Yield every Text inside a loaded value, through lists and mappings."""
    if isinstance(value, Text):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _texts(item)


class SettingsReader(Reader):
    """Check settings against what each plugin declares, and compile templates."""

    def __init__(self, file: str, environ: Mapping[str, str] | None = None) -> None:
        super().__init__(file, environ)
        self.secrets: set[str] = set()
        self.available: dict[str, plugin_registry.PluginInfo] = {}
        self.defined_actions: set[str] = set()

    def collect_secret_values(self, value: Any) -> None:
        """Mask every text inside a secret setting, list items included."""
        for text in _texts(value):
            if not text.null:
                self.secrets.add(str(text))
                self.secrets.update(secret_parts(str(text)))

    def collect_env_secrets(self, value: Any) -> None:
        """Mask every text inside a setting that took a secret-named variable."""
        for text in _texts(value):
            if text.secret:
                self.secrets.add(str(text))
                self.secrets.update(text.env_values)

    def declared(self, action: Action) -> Mapping[str, Setting]:
        cls = self.available[action.plugin].cls
        assert cls is not None  # actions are only built for usable plugins
        return cls.settings

    def known_settings(
        self,
        node: Map,
        reserved: tuple[str, ...],
        plugin: str,
        declared: Mapping[str, Setting],
    ) -> dict[str, Any]:
        """Return the settings written in ``node``, reporting undeclared ones."""
        settings = {}
        for key, value in node.items():
            if key in reserved:
                continue
            if key not in declared:
                self.error(
                    node.key_mark(key),
                    f"unknown setting `{key}` for plugin `{plugin}`"
                    f"{suggest(key, tuple(declared) + reserved)}",
                )
                continue
            settings[str(key)] = value
        return settings

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
            if is_null(merged.get(key)):
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
            if lowered not in TRUE | FALSE:
                self.error(at, f"setting `{key}` must be true or false, not `{value}`")
            return lowered in TRUE
        if setting.choices and value not in setting.choices:
            self.error(
                at,
                f"setting `{key}` must be one of {', '.join(setting.choices)}, not "
                f"`{value}`{suggest(value, setting.choices)}",
            )
        return value
