"""The `ovoko-relay` command: serve, check, test and look after the store."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import __version__, logs
from . import config as config_module
from .errors import ConfigError, RelayError
from .store import DELIVERY_STATUSES, Store

if TYPE_CHECKING:
    from .rules import Rule

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except RelayError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ovoko-relay",
        description="Receive Ovoko webhooks and turn them into actions.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the relay")
    add_config_flag(serve)
    serve.add_argument("--host", help="address to listen on (overrides the config)")
    serve.add_argument(
        "--port", type=int, help="port to listen on (overrides the config)"
    )
    serve.set_defaults(run=cmd_serve)

    init = commands.add_parser(
        "init", help="write a starter config and a token for Ovoko"
    )
    init.add_argument(
        "path",
        nargs="?",
        default="config.yaml",
        metavar="PATH",
        help="config file to write (default: config.yaml); relay.env goes beside it",
    )
    init.add_argument(
        "--force", action="store_true", help="replace an existing config file"
    )
    init.set_defaults(run=cmd_init)

    check = commands.add_parser("check", help="validate a config file")
    add_config_flag(check)
    check.add_argument("--strict", action="store_true", help="treat warnings as errors")
    check.set_defaults(run=cmd_check)

    test = commands.add_parser(
        "test", help="show which rules match sample events and what they would send"
    )
    add_config_flag(test)
    test.add_argument("events", nargs="+", metavar="EVENT.json", help="event files")
    test.add_argument(
        "--send", action="store_true", help="really deliver through the plugins"
    )
    test.set_defaults(run=cmd_test)

    deliveries = commands.add_parser(
        "deliveries", help="list deliveries and what happened to them"
    )
    add_config_flag(deliveries)
    deliveries.add_argument(
        "--status", choices=DELIVERY_STATUSES, help="only deliveries in this state"
    )
    deliveries.add_argument(
        "--event", metavar="ID", help="only this event's, with every attempt"
    )
    deliveries.add_argument(
        "--limit", type=int, default=50, help="show at most this many (default: 50)"
    )
    deliveries.set_defaults(run=cmd_deliveries)

    replay = commands.add_parser(
        "replay", help="deliver an event again, or every dead delivery"
    )
    add_config_flag(replay)
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("event", nargs="?", metavar="EVENT_ID", help="the event")
    which.add_argument(
        "--dead", action="store_true", help="every delivery that gave up"
    )
    which.add_argument(
        "--rematch",
        metavar="EVENT_ID",
        help="run the current rules on this event again; done deliveries are kept",
    )
    replay.set_defaults(run=cmd_replay)

    plugins = commands.add_parser("plugins", help="list the installed plugins")
    plugins.set_defaults(run=cmd_plugins)
    return parser


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="config file (default: $OVOKO_RELAY_CONFIG)",
    )


def load_config(args: argparse.Namespace) -> config_module.Config:
    return config_module.load(config_module.config_path(args.config))


def cmd_serve(args: argparse.Namespace) -> int:
    from .dryrun import run_office_tests
    from .server import serve

    config = load_config(args)
    logs.configure(config.logging.level, config.logging.format)
    logs.set_secrets(config.secrets)
    for warning in config.warnings:
        log.warning("config outcome=warning problem=%r", str(warning))
    # A failing office test stops a reload, not a start: after a reboot the
    # relay must answer Ovoko, whose retries end within minutes.
    for failure in run_office_tests(config):
        log.warning("config outcome=office_test_failed problem=%r", failure)
    if config.auth.disabled:
        log.warning(
            "auth outcome=disabled reason=%r",
            "auth.disabled is true: webhooks are accepted without a token",
        )
    return serve(config, host=args.host, port=args.port)


def cmd_init(args: argparse.Namespace) -> int:
    from .starter import instructions, write_starter

    print(instructions(write_starter(args.path, force=args.force)), end="")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .dryrun import run_check

    return run_check(load_config(args), strict=args.strict)


def cmd_test(args: argparse.Namespace) -> int:
    from .dryrun import run_test

    return run_test(load_config(args), args.events, send=args.send)


def cmd_deliveries(args: argparse.Namespace) -> int:
    from . import report

    store = _open_store(config_module.config_path(args.config))
    try:
        report.print_deliveries(
            store, sys.stdout, args.status, args.event, max(1, args.limit)
        )
    finally:
        store.close()
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from . import report

    config_file = config_module.config_path(args.config)
    store = _open_store(config_file)
    try:
        if args.dead:
            report.replay_dead(store, sys.stdout)
        elif args.rematch:
            report.rematch_event(store, args.rematch, sys.stdout)
        else:
            report.replay_event(store, args.event, sys.stdout, _rules(config_file))
    finally:
        store.close()
    return 0


def _open_store(config_file: str) -> Store:
    """Open the store the config names, reading only its `storage` section."""
    from . import report

    return report.open_store(config_module.load_storage(config_file).path)


def _rules(config_file: str) -> list[Rule] | None:
    """Return the config's current rules, or None when it cannot load here."""
    # The store commands run without the service's secrets too; the rules are
    # then unknown and replay only skips its hint.
    try:
        return config_module.load(config_file).rules
    except RelayError:
        return None


def cmd_plugins(args: argparse.Namespace) -> int:
    from . import report

    # The table shows why a plugin is unusable; the warning log line would
    # only repeat it.
    logs.configure("ERROR")
    report.print_plugins(sys.stdout)
    return 0
