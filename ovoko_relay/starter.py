"""Write a starter config and its secrets file for `ovoko-relay init`."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from .config import AuthConfig, ServerConfig
from .errors import RelayError

ENV_FILE = "relay.env"
TOKEN_VARIABLE = "OVOKO_TOKEN"  # noqa: S105 — a variable name, not a token
HEADER = AuthConfig.header
WEBHOOK_PATH = ServerConfig.path

STARTER_CONFIG = f"""\
# ovoko-relay configuration, written by `ovoko-relay init`.
#
# Values written as ${{NAME}} come from the environment. Under systemd they come
# from the EnvironmentFile ({ENV_FILE} beside this file), so no secret is kept
# here. After editing, check the file, then reload:
#   sudo systemctl reload ovoko-relay
# (the reload runs `ovoko-relay check` first and refuses a broken file).

server:
  host: 127.0.0.1          # the reverse proxy in front talks to this address
  port: 8080
  path: {WEBHOOK_PATH}    # the URL path you register at Ovoko

auth:
  header: {HEADER}    # the header name you enter at Ovoko
  tokens: ["${{{TOKEN_VARIABLE}}}"]

storage:
  # systemd sets STATE_DIRECTORY (/var/lib/ovoko-relay); elsewhere ./data
  # beside this file is used.
  path: "${{STATE_DIRECTORY:-./data}}/relay.sqlite3"
  retention_days: 90

delivery:
  workers: 4
  grace_period: 10s        # keep TimeoutStopSec in the unit above this

logging:
  level: INFO
  format: logfmt           # or json

actions:
  office-log:
    plugin: log

rules:
  - name: Part sold
    when:
      event_type: part.status.changed
      status: [sold, sold_in_ebay, sold_in_allegro]
    do:
      - action: office-log
        message: "Part {{{{ data.part_id }}}} sold ({{{{ data.status }}}})"
"""


@dataclass(frozen=True)
class Written:
    """What `init` wrote: the files, and the token to register at Ovoko."""

    config: str
    env_file: str
    env_created: bool
    token: str


def write_starter(path: str, force: bool = False) -> Written:
    """Write the starter config at ``path`` and, if missing, the env file beside it."""
    if os.path.isdir(path):
        path = os.path.join(path, "config.yaml")
    path = os.path.abspath(path)
    if os.path.exists(path) and not force:
        raise RelayError(
            f"{path} already exists; nothing was written. Pass --force to replace "
            "it (the token in the env file beside it is kept)."
        )
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)

    env_file = os.path.join(directory, ENV_FILE)
    token = read_token(env_file)
    created = token is None
    if token is None:
        token = secrets.token_urlsafe(32)
        _write_env_file(env_file, token)

    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(STARTER_CONFIG)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
    return Written(path, env_file, created, token)


def read_token(env_file: str) -> str | None:
    """Return the token kept in an existing env file, or None."""
    try:
        with open(env_file, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        name, _, value = line.strip().partition("=")
        if name == TOKEN_VARIABLE and value:
            return value.strip().strip("'\"")
    raise RelayError(
        f"{env_file} exists but has no {TOKEN_VARIABLE}= line; add one or move the "
        "file away, then run init again."
    )


def _write_env_file(env_file: str, token: str) -> None:
    text = (
        "# Secrets for ovoko-relay: systemd reads this file (EnvironmentFile=).\n"
        "# Readable by root only. Add SMTP passwords and webhook URLs here too\n"
        "# and refer to them in config.yaml as ${NAME}.\n"
        f"{TOKEN_VARIABLE}={token}\n"
    )
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def instructions(written: Written) -> str:
    """Return what to tell the person who ran `init`."""
    env_note = (
        "(new, readable by root only: it holds the token)"
        if written.env_created
        else "(kept as it was: its token is reused)"
    )
    return f"""\
Wrote {written.config}
{"Wrote" if written.env_created else "Found"} {written.env_file} {env_note}

In Ovoko, open Settings > Integrations > API and add a webhook:
  URL:           https://YOUR-DOMAIN{WEBHOOK_PATH}
  Header name:   {HEADER}
  Header value:  {written.token}

Check the config with:
  set -a; . {written.env_file}; set +a
  ovoko-relay check --config {written.config}
"""
