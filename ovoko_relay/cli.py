"""The `ovoko-relay` command: serve, check, test and look after the store."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from . import __version__, logs
from . import config as config_module
from .errors import ConfigError, RelayError

Command = Callable[[argparse.Namespace], int]


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

    check = commands.add_parser("check", help="validate a config file")
    add_config_flag(check)
    check.add_argument("--strict", action="store_true", help="treat warnings as errors")
    check.set_defaults(run=cmd_check)
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
    from .server import serve

    config = load_config(args)
    logs.configure(config.logging.level, config.logging.format)
    if config.auth.disabled:
        import logging

        logging.getLogger(__name__).warning(
            "auth outcome=disabled reason=%r",
            "auth.disabled is true: webhooks are accepted without a token",
        )
    return serve(config, host=args.host, port=args.port)


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args)
    for warning in config.warnings:
        print(warning, file=sys.stderr)
    if args.strict and config.warnings:
        return 1
    print(
        f"{config.file}: OK ({len(config.rules)} rules, {len(config.actions)} actions)"
    )
    return 0
