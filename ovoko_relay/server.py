"""Run the relay: waitress in front, workers behind, signals for reload and stop."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from waitress import wasyncore
from waitress.server import create_server

from . import config as config_module
from . import logs
from .app import create_app
from .config import Config
from .dispatch import Dispatcher, Runtime
from .errors import ConfigError
from .metrics import Metrics
from .notify import notify
from .store import Store

log = logging.getLogger(__name__)

DRAIN_REQUESTS_SECONDS = 5.0


class Relay:
    """The running relay: its config, store, dispatcher and metrics."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.config_file = config.file
        self.store = Store(config.storage.path)
        self.metrics = Metrics()
        self._runtime = Runtime(config)
        self.dispatcher = Dispatcher(self.store, lambda: self._runtime)
        self.wsgi = _SwappableApp(create_app(self))
        self.stale_since: float | None = None
        self.stale_problems: list[str] = []
        logs.set_secrets(config.secrets)

    def start(self) -> None:
        """Start the dispatcher and the delivery workers."""
        self.dispatcher.start(self.config.delivery.workers)

    def reload(self) -> bool:
        """Re-read the config file; keep the running one if the new one is invalid."""
        try:
            new = config_module.load(self.config_file)
        except ConfigError as exc:
            self.stale_since = self.stale_since or time.time()
            self.stale_problems = [str(p) for p in exc.problems]
            for problem in exc.problems:
                log.error("reload outcome=rejected problem=%r", str(problem))
            return False

        for what, old, now in _restart_only_changes(self.config, new):
            log.warning(
                "reload setting=%s outcome=needs_restart running=%r configured=%r",
                what,
                old,
                now,
            )
        logs.set_secrets(self.config.secrets | new.secrets)
        old_runtime = self._runtime
        self._runtime = Runtime(new)
        self.config = new
        self.wsgi.app = create_app(self)
        old_runtime.retire()
        logs.set_secrets(new.secrets)
        self.stale_since = None
        self.stale_problems = []
        log.info("reload outcome=applied rules=%d", len(new.rules))
        return True

    def health(self) -> dict[str, Any]:
        """Report whether the store is writable and the workers are alive."""
        writable = self.store.is_writable()
        alive = self.dispatcher.alive()
        report: dict[str, Any] = {
            "status": "ok" if writable and alive else "unavailable",
            "store": "writable" if writable else "not writable",
            "workers": "alive" if alive else "stopped",
            "config": "current" if self.stale_since is None else "stale",
        }
        if self.stale_since is not None:
            report["config_stale_since"] = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.stale_since)
            )
            report["config_problems"] = self.stale_problems
        return report

    def stop(self) -> bool:
        """Stop the workers within the grace period and close the store."""
        finished = self.dispatcher.stop(self.config.delivery.grace_period)
        self._runtime.retire()
        self.store.close()
        return finished


class _SwappableApp:
    """A WSGI callable whose app can be replaced between two requests."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.app(environ, start_response)


def _restart_only_changes(
    old: Config, new: Config
) -> Iterable[tuple[str, object, object]]:
    pairs = [
        ("server.host", old.server.host, new.server.host),
        ("server.port", old.server.port, new.server.port),
        ("server.threads", old.server.threads, new.server.threads),
        ("storage.path", old.storage.path, new.storage.path),
        ("delivery.workers", old.delivery.workers, new.delivery.workers),
    ]
    return [(what, a, b) for what, a, b in pairs if a != b]


def serve(config: Config, host: str | None = None, port: int | None = None) -> int:
    """Serve until SIGTERM or SIGINT; reload on SIGHUP. Return the exit code."""
    relay = Relay(config)
    server = create_server(
        relay.wsgi,
        host=host or config.server.host,
        port=config.server.port if port is None else port,
        threads=config.server.threads,
        max_request_body_size=config.server.max_body_bytes * 4,
        ident="ovoko-relay",
        asyncore_use_poll=True,
    )
    relay.start()
    flags = _SignalFlags(server)
    flags.install()

    actual_port = server.socket.getsockname()[1] if hasattr(server, "socket") else 0
    log.info(
        "server outcome=listening host=%s port=%s path=%s",
        host or config.server.host,
        actual_port,
        config.server.path,
    )
    notify("READY=1\nSTATUS=Listening")

    while not flags.stop:
        wasyncore.loop(timeout=1.0, map=server._map, use_poll=True, count=1)
        if flags.reload:
            flags.reload = False
            notify("RELOADING=1")
            relay.reload()
            notify("READY=1")

    notify("STOPPING=1")
    log.info("server outcome=stopping")
    server.close()
    _drain_requests(server)
    finished = relay.stop()
    log.info("server outcome=stopped deliveries_finished=%s", finished)
    return 0


class _SignalFlags:
    """Turn signals into flags the serving loop reads between two polls."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.stop = False
        self.reload = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self.on_stop)
        signal.signal(signal.SIGINT, self.on_stop)
        signal.signal(signal.SIGHUP, self.on_reload)

    def on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop = True
        self.server.trigger.pull_trigger()

    def on_reload(self, signum: int, frame: FrameType | None) -> None:
        self.reload = True
        self.server.trigger.pull_trigger()


def _drain_requests(server: Any) -> None:
    """Serve the requests already in flight so their answers reach the clients."""
    deadline = time.monotonic() + DRAIN_REQUESTS_SECONDS
    dispatcher = server.task_dispatcher
    while time.monotonic() < deadline:
        busy = dispatcher.active_count or dispatcher.queue
        unsent = any(
            getattr(channel, "total_outbufs_len", 0) or getattr(channel, "requests", 0)
            for channel in list(server._map.values())
        )
        if not busy and not unsent:
            break
        wasyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)
    dispatcher.shutdown(cancel_pending=False, timeout=1)
