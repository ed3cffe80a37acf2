"""The `email` plugin: send a text (and optionally HTML) e-mail over SMTP."""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid
from typing import Any

from .base import Event, PermanentError, Plugin, RetryableError, Setting

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+$")


class EmailPlugin(Plugin):
    """Send one message per delivery through the configured SMTP server."""

    name = "email"
    settings = {
        "smtp_host": Setting(required=True, help="The SMTP server's host name."),
        "smtp_port": Setting(
            kind="integer",
            help="The SMTP port (default: 587 for starttls, 465 for tls, 25 for none).",
        ),
        "security": Setting(
            default="starttls",
            choices=("starttls", "tls", "none"),
            template=False,
            help="starttls (upgrade after connecting), tls (TLS from the start) "
            "or none (plain text, only on a trusted network).",
        ),
        "username": Setting(help="The SMTP login name, if the server wants one."),
        "password": Setting(
            secret=True,
            help='The SMTP password; write "${SMTP_PASSWORD}", never the password.',
        ),
        "from": Setting(required=True, help="The sender address."),
        "to": Setting(
            kind="list", required=True, help="One or more recipient addresses."
        ),
        "subject": Setting(required=True, help="The subject line."),
        "body": Setting(required=True, help="The plain-text body."),
        "html": Setting(help="An HTML body, sent beside the text body."),
    }

    def deliver(self, settings: Mapping[str, Any], event: Event) -> None:
        message = build_message(settings, event)
        recipients = [address for _, address in getaddresses(message.get_all("To", []))]
        with self._connect(settings) as smtp:
            self._login(smtp, settings)
            try:
                refused = smtp.send_message(message, to_addrs=recipients)
            except smtplib.SMTPRecipientsRefused as exc:
                raise _refused(exc.recipients, everyone=True) from None
            except smtplib.SMTPResponseException as exc:
                raise _answer(
                    "the mail server did not accept the message", exc
                ) from None
            except (OSError, smtplib.SMTPException) as exc:
                raise RetryableError(f"sending the e-mail failed: {exc}") from None
        if refused:
            raise _refused(refused, everyone=False)

    def _connect(self, settings: Mapping[str, Any]) -> smtplib.SMTP:
        security = settings.get("security") or "starttls"
        host = settings["smtp_host"].strip()
        port = settings.get("smtp_port") or DEFAULT_PORTS[security]
        where = f"the mail server {host}:{port}"
        try:
            if security == "tls":
                return smtplib.SMTP_SSL(
                    host, port, timeout=self.timeout, context=_tls_context()
                )
            smtp = smtplib.SMTP(host, port, timeout=self.timeout)
            if security == "starttls":
                try:
                    _start_tls(smtp, where)
                except BaseException:
                    smtp.close()
                    raise
            return smtp
        except ssl.SSLCertVerificationError as exc:
            raise PermanentError(
                f"{where} presented a TLS certificate that is not trusted "
                f"({exc.verify_message}); if it uses a private CA, point "
                "SSL_CERT_FILE at that CA's certificate"
            ) from None
        except ssl.SSLError as exc:
            if exc.reason == "WRONG_VERSION_NUMBER":
                # The server spoke plain text where TLS was expected: a config
                # mistake that no retry mends.
                raise PermanentError(
                    f"{where} does not speak TLS on that port; with `security: "
                    f"{security}`, check `smtp_port` (587 for starttls, 465 for "
                    "tls) or choose the other `security`"
                ) from None
            raise RetryableError(f"TLS with {where} failed: {exc.reason}") from None
        except smtplib.SMTPResponseException as exc:
            raise _answer(f"{where} refused the connection", exc) from None
        except TimeoutError:
            raise RetryableError(
                f"{where} did not answer within {self.timeout:g}s"
            ) from None
        except socket.gaierror:
            raise RetryableError(
                f"{where} could not be found (its host name does not resolve)"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise RetryableError(f"{where} could not be reached: {exc}") from None

    def _login(self, smtp: smtplib.SMTP, settings: Mapping[str, Any]) -> None:
        username = settings.get("username") or ""
        password = settings.get("password") or ""
        if not username:
            if password:
                raise PermanentError("`password` is set but `username` is not")
            return
        if not password:
            raise PermanentError("`username` is set but `password` is not")
        try:
            smtp.login(username, password)
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentError(
                f"the mail server refused the username or password "
                f"({exc.smtp_code} {_text(exc.smtp_error)})"
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise PermanentError(
                "the mail server does not offer login (AUTH); remove `username` and "
                "`password`, or use `security: starttls` or `tls` if it only offers "
                "login over TLS"
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise _answer("the mail server did not accept the login", exc) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise RetryableError(
                f"logging in to the mail server failed: {exc}"
            ) from None


def build_message(settings: Mapping[str, Any], event: Event) -> EmailMessage:
    """Build the message: text body, plus an HTML alternative when given."""
    sender = _one_line(settings["from"])
    if not _ADDRESS.match(getaddresses([sender])[0][1]):
        raise PermanentError(f"`from` is not an e-mail address: {sender!r}")
    recipients = addresses(settings["to"])

    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = _one_line(settings["subject"])
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].strip("> "))
    message["X-Ovoko-Event-Id"] = event.event_id
    message.set_content(settings["body"])
    if settings.get("html"):
        message.add_alternative(settings["html"], subtype="html")
    return message


def addresses(values: list[str] | str) -> list[str]:
    """Return the recipient addresses; an item may hold several, comma-separated."""
    if isinstance(values, str):
        values = [values]
    found = []
    for name, address in getaddresses([v.replace(";", ",") for v in values]):
        if not address and not name:
            continue
        if not _ADDRESS.match(address):
            raise PermanentError(
                "`to` holds something that is not an e-mail address: "
                f"{(address or name)!r}"
            )
        found.append(f"{name} <{address}>" if name else address)
    if not found:
        raise PermanentError("`to` is empty: give at least one address")
    return found


def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def _start_tls(smtp: smtplib.SMTP, where: str) -> None:
    smtp.ehlo()
    if not smtp.has_extn("starttls"):
        raise PermanentError(
            f"{where} does not offer STARTTLS; use `security: tls` if it expects "
            "TLS from the first byte (often port 465), or `security: none` only on "
            "a trusted network"
        )
    smtp.starttls(context=_tls_context())
    smtp.ehlo()


def _refused(
    recipients: Mapping[str, tuple[int, bytes]], everyone: bool
) -> RetryableError | PermanentError:
    listed = "; ".join(
        f"{address} ({code} {_text(reply)})"
        for address, (code, reply) in recipients.items()
    )
    if not everyone:
        return PermanentError(
            f"the mail server refused some recipients: {listed}; the others got the "
            "e-mail (a replay sends it to everyone again)"
        )
    if all(code >= 500 for code, _ in recipients.values()):
        return PermanentError(f"the mail server refused every recipient: {listed}")
    return RetryableError(f"the mail server refused the recipients for now: {listed}")


def _answer(
    what: str, exc: smtplib.SMTPResponseException
) -> RetryableError | PermanentError:
    message = f"{what}: {exc.smtp_code} {_text(exc.smtp_error)}"
    if exc.smtp_code >= 500:
        return PermanentError(message)
    return RetryableError(message)


def _text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return " ".join(reply.split())


def _one_line(value: str) -> str:
    # A line break from event data must not start a new mail header.
    return " ".join(str(value).split())
