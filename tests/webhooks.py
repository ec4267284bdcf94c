"""A tenant's webhook receiver on 127.0.0.1, and driving deliveries to it through the pump."""

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import app as app_module
from chalicelib import outbox, webhook_delivery
from chalicelib.billing import calendar
from devtools.pump import Pump, bindings_for


@dataclass
class Received:
    headers: dict
    body: bytes
    at: float


@dataclass
class Receiver:
    """Answers with ``statuses`` in turn (the last one for ever after), after ``delay_s``; keeps every request."""

    statuses: list[int] = field(default_factory=lambda: [200])
    delay_s: float = 0.0
    body: bytes = b"ok"
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append(Received(dict(self.headers.items()), body, time.monotonic()))
                status = receiver.statuses[min(len(receiver.requests), len(receiver.statuses)) - 1]
                time.sleep(receiver.delay_s)
                self.send_response(status)
                self.send_header("Content-Length", str(len(receiver.body)))
                self.end_headers()
                self.wfile.write(receiver.body)

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def pump_until(messaging, done, timeout_s: float = 30.0) -> None:
    """Run the consumers, the outbox sweep and the webhook retry schedule as deployed, until ``done()``."""
    pump = Pump(bindings_for(app_module, messaging.queues), wait_seconds=0)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        outbox.sweep()
        pump.drain(timeout=5)
        webhook_delivery.retry_due(calendar.utcnow())
        if done():
            return
        time.sleep(0.2)
    raise AssertionError("the pump did not get there in time")


def sent_emails() -> list[dict]:
    """What moto's SES sent, oldest first."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    sent = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    return [{"subject": m.subject, "body": m.body, "destinations": m.destinations, "source": m.source} for m in sent]
