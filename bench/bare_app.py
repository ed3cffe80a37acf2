"""The baseline for bench_ingress: a Falcon app on waitress that checks a token."""

from __future__ import annotations

import hmac
import logging
import sys

import falcon
from waitress import serve

TOKEN = b"bench-token-0123456789"


class Bare:
    """Check the token and answer 200, storing nothing."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        given = (req.get_header("X-Ovoko-Token") or "").encode()
        if not hmac.compare_digest(given, TOKEN):
            raise falcon.HTTPUnauthorized(title="Not authorized")
        req.bounded_stream.read()
        resp.media = {"status": "accepted"}


def main() -> None:
    # Like the relay, keep waitress's "task queue depth" notes off the screen.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    app = falcon.App()
    app.add_route("/webhooks/ovoko", Bare())
    serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=int(sys.argv[2]))


if __name__ == "__main__":
    main()
