#!/usr/bin/env python3
"""A minimal receiver of Hopper's completion webhooks, showing how to verify them.

Hopper POSTs a JSON body with these headers:

    Hopper-Event: job.finished (body {"event", "job"})
                  or document.finished (body {"event", "document"})
    Hopper-Delivery: <delivery id; the same id on every retry of one delivery>
    Hopper-Timestamp: <unix seconds>
    Hopper-Signature: v2=<hex HMAC-SHA256(secret, "<delivery>.<timestamp>.<raw body>")>

The secret is your tenant's own (`whsec_...`): read it with an admin key from
`GET /v1/webhooks/secret` (Hopper derives it from its master secret; you never see
that one, and no other tenant's secret verifies your deliveries). Use it as is, as
the HMAC key.

Verify with the raw body bytes (before any JSON parsing), compare in constant time, and
refuse timestamps more than 5 minutes away from your clock, so that a captured delivery
cannot be replayed later. The delivery id is signed too, so a copy re-labelled with
another Hopper-Delivery fails. Deliveries are retried until a 2xx answer, so
deduplicate by Hopper-Delivery.

    HOPPER_WEBHOOK_TENANT_SECRET=whsec_... python3 docs/webhook_receiver.py --port 9000
        [--log FILE]       where to append one JSON line per request (stdout by default)
        [--fail-first N]   answer 503 to the first N valid deliveries (to see retries)

A verified delivery is logged as {"verified": true, ...} and answered 204; a refused
one as {"verified": false, "delivery": ...} and answered 401. Standard library only.
Tested by tests/tests/webhooks.rs.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.server
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

TOLERANCE_S = 300
SCHEME = "v2"


def signature(secret: bytes, delivery: str, timestamp: int, body: bytes) -> str:
    """Compute the Hopper-Signature value of one delivery."""
    signed = f"{delivery}.{timestamp}.".encode() + body
    return f"{SCHEME}=" + hmac.new(secret, signed, hashlib.sha256).hexdigest()


def verify(
    secret: bytes,
    delivery: str | None,
    timestamp: str | None,
    given: str | None,
    body: bytes,
    now: float,
) -> bool:
    """Check the signature over delivery id, timestamp and body, and the timestamp.

    True only when the signature matches and the timestamp is within TOLERANCE_S.
    """
    if delivery is None or timestamp is None or given is None:
        return False
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > TOLERANCE_S:
        return False
    return hmac.compare_digest(signature(secret, delivery, ts, body), given.strip())


class Receiver:
    """What the request handler shares: the secret, the log and what it has seen."""

    def __init__(self, secret: bytes, log: IO[str], fail_first: int) -> None:
        """Verify with `secret`, log to `log`, answer 503 to `fail_first` at first."""
        self.secret = secret
        self.log = log
        self.to_fail = fail_first
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def write(self, line: dict[str, Any]) -> None:
        """Append one JSON line to the log."""
        with self.lock:
            self.log.write(json.dumps(line) + "\n")
            self.log.flush()


def handler(receiver: Receiver) -> type[http.server.BaseHTTPRequestHandler]:
    """Make a request handler class bound to `receiver`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            delivery = self.headers.get("hopper-delivery")
            ok = verify(
                receiver.secret,
                delivery,
                self.headers.get("hopper-timestamp"),
                self.headers.get("hopper-signature"),
                body,
                time.time(),
            )
            if not ok:
                receiver.write({"verified": False, "delivery": delivery})
                self.answer(401)
                return
            with receiver.lock:
                fail = receiver.to_fail > 0
                receiver.to_fail -= int(fail)
                duplicate = delivery in receiver.seen
                if not fail and delivery is not None:
                    receiver.seen.add(delivery)
            if fail:
                self.answer(503)
                return
            event: dict[str, Any] = json.loads(body)
            job: dict[str, Any] = event.get("job") or {}
            document: dict[str, Any] = event.get("document") or {}
            receiver.write(
                {
                    "verified": True,
                    "duplicate": duplicate,
                    "delivery": delivery,
                    "event": self.headers.get("hopper-event"),
                    "job": job.get("id"),
                    "state": job.get("state"),
                    "document": document.get("id"),
                    "status": document.get("status"),
                }
            )
            self.answer(204)

        def answer(self, status: int) -> None:
            self.send_response(status)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            """Keep quiet: the log holds one line per delivery."""

    return Handler


def serve(port: int, receiver: Receiver) -> None:
    """Serve on 127.0.0.1:`port` until killed."""
    address = ("127.0.0.1", port)
    http.server.ThreadingHTTPServer(address, handler(receiver)).serve_forever()


def main() -> None:
    """Parse the arguments and serve."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", default="-")
    ap.add_argument("--fail-first", type=int, default=0)
    args = ap.parse_args()
    secret = os.environ["HOPPER_WEBHOOK_TENANT_SECRET"].encode()
    if args.log == "-":
        serve(args.port, Receiver(secret, sys.stdout, args.fail_first))
        return
    with Path(args.log).open("a", encoding="utf-8") as log:
        serve(args.port, Receiver(secret, log, args.fail_first))


if __name__ == "__main__":
    main()
