"""Find, load and check delivery plugins registered under one entry-point group."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from .base import Plugin, Setting

# Not `log`: importing the `log` plugin submodule would overwrite that name.
logger = logging.getLogger(__name__)

GROUP = "ovoko_relay.plugins"

__all__ = ["GROUP", "Plugin", "PluginInfo", "Setting", "discover", "installed"]


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin: where it comes from and, once loaded, its class."""

    name: str
    distribution: str
    version: str
    target: str
    cls: type[Plugin] | None
    error: str = ""


def discover() -> list[EntryPoint]:
    """Return the entry points registered in the plugin group."""
    return sorted(entry_points(group=GROUP), key=lambda ep: ep.name)


def load(entry_point: EntryPoint) -> PluginInfo:
    """Import one entry point and check that it is a usable plugin class."""
    dist = entry_point.dist
    distribution = dist.name if dist else "?"
    version = dist.version if dist else "?"
    info = dict(
        name=entry_point.name,
        distribution=distribution,
        version=version,
        target=entry_point.value,
    )
    try:
        cls = entry_point.load()
    except Exception as exc:  # noqa: BLE001 — any import error is reported, not fatal
        return PluginInfo(cls=None, error=f"cannot be imported: {exc}", **info)

    problem = validate(cls, entry_point.name)
    if problem:
        return PluginInfo(cls=None, error=problem, **info)
    return PluginInfo(cls=cls, **info)


def validate(cls: object, name: str) -> str:
    """Return what is wrong with a plugin class, or an empty string."""
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        return "is not a subclass of ovoko_relay.plugins.Plugin"
    if cls.name != name:
        return f"declares name {cls.name!r} but is registered as {name!r}"
    for setting_name, setting in cls.settings.items():
        if not isinstance(setting, Setting):
            return f"setting {setting_name!r} is not declared with Setting(...)"
    if cls.deliver is Plugin.deliver:
        return "does not implement deliver()"
    return ""


def installed() -> dict[str, PluginInfo]:
    """Load every registered plugin; ones that fail are kept with their error."""
    found: dict[str, PluginInfo] = {}
    for entry_point in discover():
        info = load(entry_point)
        if info.error:
            logger.warning(
                "plugin=%s distribution=%s outcome=unusable error=%r",
                info.name,
                info.distribution,
                info.error,
            )
        if entry_point.name in found and found[entry_point.name].cls is not None:
            logger.warning(
                "plugin=%s distribution=%s outcome=ignored reason=%r",
                info.name,
                info.distribution,
                f"name already registered by {found[info.name].distribution}",
            )
            continue
        found[entry_point.name] = info
    return found
