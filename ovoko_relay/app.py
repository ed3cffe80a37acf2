"""The Falcon app: the webhook endpoint, the health check and the metrics."""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any

import falcon

from .errors import StoreError
from .events import EnvelopeError, parse_body
from .logs import quoted

if TYPE_CHECKING:
    from .server import Relay

log = logging.getLogger(__name__)

JSON_TYPES = ("application/json",)


def token_matches(presented: str | None, accepted: tuple[str, ...]) -> bool:
    """Compare a presented token with every accepted one in constant time."""
    given = (presented or "").encode("utf-8")
    matched = False
    for token in accepted:
        matched |= hmac.compare_digest(given, token.encode("utf-8"))
    return matched and presented is not None


class WebhookResource:
    """Accept Ovoko events: check, store durably, then answer."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        config = self.relay.config
        if not config.auth.disabled and not token_matches(
            req.get_header(config.auth.header), config.auth.tokens
        ):
            self.reject("unauthorized")
            raise falcon.HTTPUnauthorized(
                title="Not authorized",
                description="The request does not carry a valid token header.",
            )

        self.check_content_type(req)
        body = self.read_body(req, config.server.max_body_bytes)
        try:
            event = parse_body(body)
        except EnvelopeError as exc:
            self.reject("invalid_body", exc.description)
            raise falcon.HTTPError(
                falcon.code_to_http_status(exc.status),
                title=exc.title,
                description=exc.description,
            ) from None

        try:
            stored = self.relay.store.add_event(event, event.body)
        except StoreError as exc:
            log.error(
                "event_id=%s type=%s outcome=unavailable reason=%r",
                quoted(event.event_id),
                quoted(event.event_type),
                str(exc),
            )
            raise falcon.HTTPServiceUnavailable(
                title="Event not stored",
                description="The event could not be stored safely; send it again "
                "later.",
                retry_after=30,
            ) from None

        outcome = "accepted" if stored else "duplicate"
        log.info(
            "event_id=%s type=%s outcome=%s",
            quoted(event.event_id),
            quoted(event.event_type),
            outcome,
        )
        self.relay.metrics.event(outcome)
        if stored:
            self.relay.dispatcher.wake()
        resp.media = {"status": outcome, "event_id": event.event_id}

    def check_content_type(self, req: falcon.Request) -> None:
        if req.content_type is None:
            return
        media_type = req.content_type.split(";", 1)[0].strip().lower()
        if media_type not in JSON_TYPES:
            self.reject("unsupported_media_type", media_type)
            raise falcon.HTTPUnsupportedMediaType(
                title="Unsupported content type",
                description=f"The body must be application/json, not {media_type}.",
            )

    def read_body(self, req: falcon.Request, limit: int) -> bytes:
        length = req.content_length
        if length is not None and length > limit:
            self.reject("too_large", f"{length} bytes")
            raise self.too_large(limit)
        body: bytes = req.bounded_stream.read(limit + 1)
        if len(body) > limit:
            self.reject("too_large", f"over {limit} bytes")
            raise self.too_large(limit)
        return body

    @staticmethod
    def too_large(limit: int) -> falcon.HTTPError:
        return falcon.HTTPContentTooLarge(
            title="Body too large",
            description=f"The request body is larger than the {limit} bytes allowed.",
        )

    def reject(self, reason: str, detail: str = "") -> None:
        """Count and log a refused request; no event id is trusted yet."""
        self.relay.metrics.rejected(reason)
        log.warning(
            "event_id=- outcome=rejected reason=%s%s",
            reason,
            f" detail={detail!r}" if detail else "",
        )


class HealthResource:
    """Answer 200 while the relay can keep events, 503 otherwise."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        report: dict[str, Any] = self.relay.health()
        resp.media = report
        if report["status"] != "ok":
            resp.status = falcon.HTTP_503


class MetricsResource:
    """Expose the relay's counters in the Prometheus text format."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type, resp.data = self.relay.metrics.render()


def create_app(relay: Relay) -> falcon.App:
    """Build the Falcon app serving one relay."""
    app = falcon.App(cors_enable=False)
    app.req_options.strip_url_path_trailing_slash = True
    app.add_route(relay.config.server.path, WebhookResource(relay))
    app.add_route("/healthz", HealthResource(relay))
    app.add_route("/metrics", MetricsResource(relay))
    return app
