#!/usr/bin/env python3
"""A minimal receiver of Hopper's completion webhooks, showing how to verify them.

Hopper POSTs a JSON body with these headers:

    Hopper-Event: job.finished (body {"event", "job"}) or document.finished (body {"event", "document"})
    Hopper-Delivery: <delivery id; the same id on every retry of one delivery>
    Hopper-Timestamp: <unix seconds>
    Hopper-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>

Verify with the raw body bytes (before any JSON parsing), compare in constant time, and
refuse timestamps more than 5 minutes away from your clock, so that a captured delivery
cannot be replayed later. Deliveries are retried until a 2xx answer, so deduplicate by
Hopper-Delivery.

    HOPPER_WEBHOOK_SECRET=... python3 docs/webhook_receiver.py --port 9000 [--log FILE]
        [--fail-first N]   answer 503 to the first N valid deliveries (to see retries)

Each verified delivery is appended to the log (stdout by default) as one JSON line.
Standard library only. Tested by tests/tests/webhooks.rs.
"""
import argparse
import hashlib
import hmac
import http.server
import json
import os
import sys
import time

TOLERANCE_S = 300


def verify(secret: bytes, timestamp: str, signature: str, body: bytes, now: float) -> bool:
    """True when the signature matches and the timestamp is fresh."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(now - ts) > TOLERANCE_S:
        return False
    expected = "v1=" + hmac.new(secret, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature or "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", default="-")
    ap.add_argument("--fail-first", type=int, default=0)
    args = ap.parse_args()
    secret = os.environ["HOPPER_WEBHOOK_SECRET"].encode()
    log = sys.stdout if args.log == "-" else open(args.log, "a", buffering=1)
    seen = set()
    state = {"to_fail": args.fail_first}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            ok = verify(secret, self.headers.get("hopper-timestamp"),
                        self.headers.get("hopper-signature"), body, time.time())
            if not ok:
                self.send_response(401)
                self.end_headers()
                return
            if state["to_fail"] > 0:
                state["to_fail"] -= 1
                self.send_response(503)
                self.end_headers()
                return
            delivery = self.headers.get("hopper-delivery")
            duplicate = delivery in seen
            seen.add(delivery)
            event = json.loads(body)
            log.write(json.dumps({"verified": True, "duplicate": duplicate, "delivery": delivery,
                                  "event": self.headers.get("hopper-event"),
                                  "job": event.get("job", {}).get("id"),
                                  "state": event.get("job", {}).get("state"),
                                  "document": event.get("document", {}).get("id"),
                                  "status": event.get("document", {}).get("status")}) + "\n")
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_):
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
