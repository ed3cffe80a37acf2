"""Run the relay: waitress in front, workers behind, signals for reload and stop."""

from __future__ import annotations

import logging
import signal
import threading
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
from .dryrun import run_office_tests
from .errors import ConfigError, RelayError
from .metrics import Metrics
from .notify import notify
from .retention import Pruner
from .store import Store

log = logging.getLogger(__name__)

DRAIN_REQUESTS_SECONDS = 5.0


class Relay:
    """The running relay: its config, store, dispatcher and metrics."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.config_file = config.file
        logs.set_secrets(config.secrets)
        self.store = Store(config.storage.path)
        self.metrics = Metrics()
        self._runtime = Runtime(config)
        self.dispatcher = Dispatcher(
            self.store, lambda: self._runtime, on_attempt=self.metrics.attempt
        )
        self.metrics.watch(self.store, self.dispatcher.alive)
        self.pruner = Pruner(
            self.store,
            lambda: self.config.storage.retention_days,
            on_pruned=self._count_pruned,
        )
        self.wsgi = _SwappableApp(create_app(self))
        self.loaded_at = time.time()
        self.stale_since: float | None = None
        self.stale_problems = 0

    def start(self) -> None:
        """Start the dispatcher, the delivery workers and the daily pruning."""
        self.dispatcher.start(self.config.delivery.workers)
        self.pruner.start()

    def reload(self) -> bool:
        """Re-read the config file; keep the running one if the new one is invalid."""
        try:
            new = config_module.load(self.config_file)
            failures = run_office_tests(new)
            if failures:
                # As `check` (which the unit's reload runs first) would refuse it.
                return self._reject(failures)
            runtime = Runtime(new)
        except ConfigError as exc:
            return self._reject([str(p) for p in exc.problems])
        except Exception as exc:  # noqa: BLE001 — e.g. a plugin that fails to start
            log.exception("reload outcome=error")
            return self._reject([f"{self.config_file}: {type(exc).__name__}: {exc}"])

        for what, old, now in _restart_only_changes(self.config, new):
            log.warning(
                "reload setting=%s outcome=needs_restart running=%r configured=%r",
                what,
                old,
                now,
            )
        # Old secrets stay masked too: retiring plugins may still log them.
        logs.set_secrets(self.config.secrets | new.secrets)
        if new.logging != self.config.logging:
            logs.configure(new.logging.level, new.logging.format)
        old_runtime = self._runtime
        self._runtime = runtime
        self.config = new
        self.wsgi.app = create_app(self)
        old_runtime.retire()
        self.loaded_at = time.time()
        self.stale_since = None
        self.stale_problems = 0
        self.metrics.reloaded(applied=True)
        log.info("reload outcome=applied rules=%d", len(new.rules))
        return True

    def _reject(self, problems: list[str]) -> bool:
        self.stale_since = self.stale_since or time.time()
        self.stale_problems = len(problems)
        for problem in problems:
            log.error("reload outcome=rejected problem=%r", problem)
        log.error(
            "reload outcome=kept_running_config problems=%d stale_since=%s",
            len(problems),
            _utc(self.stale_since),
        )
        self.metrics.reloaded(applied=False)
        return False

    def _count_pruned(self, events: int, deliveries: int) -> None:
        self.metrics.pruned.labels(table="events").inc(events)
        self.metrics.pruned.labels(table="deliveries").inc(deliveries)

    def health(self) -> dict[str, Any]:
        """Report whether the store is writable and the workers are alive."""
        writable = self.store.is_writable()
        alive = self.dispatcher.alive()
        report: dict[str, Any] = {
            "status": "ok" if writable and alive else "unavailable",
            "store": "writable" if writable else "not writable",
            "workers": "alive" if alive else "stopped",
            "config": "current" if self.stale_since is None else "stale",
            "config_loaded_at": _utc(self.loaded_at),
        }
        if self.stale_since is not None:
            report["config_stale_since"] = _utc(self.stale_since)
            # NOTE: the count only: /healthz may be public, the problems are in
            # the log and in `ovoko-relay check`.
            report["config_problems"] = self.stale_problems
        return report

    def stop(self) -> bool:
        """Stop the workers within the grace period and close the store."""
        self.pruner.stop()
        finished = self.dispatcher.stop(self.config.delivery.grace_period)
        self._runtime.retire()
        self.store.close()
        return finished


def _utc(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


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
    host = host or config.server.host
    port = config.server.port if port is None else port
    try:
        server = create_server(
            relay.wsgi,
            host=host,
            port=port,
            threads=config.server.threads,
            max_request_body_size=config.server.max_body_bytes * 4,
            ident="ovoko-relay",
            asyncore_use_poll=True,
        )
    except OSError as exc:
        relay.store.close()
        reason = exc.strerror or str(exc)
        raise RelayError(
            f"cannot listen on {host} port {port}: {reason}. Is another relay "
            "(or another program) already using it? Change `server.port` or pass "
            "--port."
        ) from exc
    flags = _SignalFlags(server)
    flags.install()
    relay.start()

    actual_port = server.socket.getsockname()[1] if hasattr(server, "socket") else 0
    log.info(
        "server outcome=listening host=%s port=%s path=%s",
        host,
        actual_port,
        config.server.path,
    )
    notify("READY=1\nSTATUS=Listening")

    reloads = _Reloader(relay)
    while not flags.stop:
        wasyncore.loop(timeout=1.0, map=server._map, use_poll=True, count=1)
        if flags.reload and not flags.stop:
            flags.reload = False
            reloads.request()

    notify("STOPPING=1\nSTATUS=Draining")
    log.info("server outcome=stopping")
    # NOTE: close only the listening socket; the trigger must outlive the
    # requests in flight, which pull it to hand their answers to the loop.
    wasyncore.dispatcher.close(server)
    _drain_requests(server)
    server.trigger.close()
    finished = relay.stop()
    log.info("server outcome=stopped deliveries_finished=%s", finished)
    return 0


class _Reloader:
    """Reload in a thread of its own, so webhooks are answered meanwhile.

    A SIGHUP during a reload is kept and served by one more reload after it.
    """

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.wanted = threading.Event()
        threading.Thread(target=self._loop, name="reload", daemon=True).start()

    def request(self) -> None:
        self.wanted.set()

    def _loop(self) -> None:
        while True:
            self.wanted.wait()
            self.wanted.clear()
            # systemd 253+ wants the monotonic time beside RELOADING=1.
            usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")
            applied = self.relay.reload()
            notify(
                "READY=1\nSTATUS="
                + ("Listening" if applied else "Listening; config reload REJECTED")
            )


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
            getattr(channel, "total_outbufs_len", 0)
            or getattr(channel, "requests", None)
            or getattr(channel, "request", None) is not None
            for channel in list(server._map.values())
        )
        if not busy and not unsent:
            break
        wasyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)
    dispatcher.shutdown(cancel_pending=False, timeout=1)
