"""Measure delivery: 2xx-to-arrival latency and how fast a backlog drains.

Starts a loopback receiver (its own process) and `ovoko-relay serve` with one
rule forwarding every event to it through the `http` plugin, then:

1. latency: posts events one at a time and takes, for each, the time from the
   relay's 2xx to the event's arrival at the receiver (p50, p99); beside it,
   the floor: the same client posting straight to the receiver.
2. drain: fills a fresh store with a backlog of pending deliveries, starts the
   relay on it and times first to last arrival (deliveries/s); beside it, the
   same number of posts sent straight to the receiver by as many threads as
   the relay has workers, each on a new connection as the plugin does.

    python bench/bench_delivery.py [--events 300] [--backlog 10000] [--workers 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TOKEN = "bench-token-0123456789"
PATH = "/webhooks/ovoko"

RELAY_CONFIG = """
auth: {{tokens: ["{token}"]}}
storage: {{path: {db}}}
logging: {{level: WARNING}}
delivery: {{workers: {workers}}}
actions:
  forward: {{plugin: http, url: "http://127.0.0.1:{receiver}/hook"}}
rules:
  - name: Forward
    do:
      - action: forward
"""


# -- the receiver, run as `bench_delivery.py --receiver PORT` -----------------


def run_receiver(port: int) -> None:
    """Record when each event_id arrives; GET /arrivals returns them as JSON."""
    arrivals: dict[str, float] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            now = time.monotonic()
            event_id = json.loads(body)["event_id"]
            with lock:
                arrivals.setdefault(event_id, now)
            self.answer(b"ok")

        def do_GET(self) -> None:
            with lock:
                data = json.dumps(arrivals).encode()
            self.answer(data)

        def do_DELETE(self) -> None:
            with lock:
                arrivals.clear()
            self.answer(b"ok")

        def answer(self, data: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.request_queue_size = 1024
    server.serve_forever()


class ReceiverClient:
    def __init__(self, port: int) -> None:
        self.port = port

    def call(self, method: str) -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request(method, "/arrivals")
        data = conn.getresponse().read()
        conn.close()
        return data

    def arrivals(self) -> dict[str, float]:
        return json.loads(self.call("GET"))

    def clear(self) -> None:
        self.call("DELETE")

    def wait_for(self, count: int, timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while True:
            arrived = self.arrivals()
            if len(arrived) >= count:
                return arrived
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(arrived)} of {count} arrived")
            time.sleep(0.2)


# -- processes ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit("process did not start listening")


def start_receiver() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--receiver", str(port)])
    wait_listening(port, proc)
    return proc, port


def start_relay(
    workdir: Path, receiver: int, workers: int
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = workdir / "relay.yaml"
    config.write_text(
        RELAY_CONFIG.format(
            token=TOKEN,
            db=workdir / "relay.sqlite3",
            workers=workers,
            receiver=receiver,
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ovoko_relay", "serve", "--config", str(config),
         "--host", "127.0.0.1", "--port", str(port)],
    )  # fmt: skip
    wait_listening(port, proc)
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(30)


# -- measurements -------------------------------------------------------------


def event_body(event_id: str) -> str:
    return json.dumps({
        "event_id": event_id,
        "event_type": "part.status.changed",
        "timestamp": "2023-01-12T14:17:20+02:00",
        "event_data": {"part_id": "15", "status": "sold", "external_id": "WH-1"},
    })  # fmt: skip


def post(port: int, path: str, body: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "POST", path, body, {"Content-Type": "application/json", "X-Ovoko-Token": TOKEN}
    )
    answer = conn.getresponse()
    answer.read()
    conn.close()
    if answer.status != 200:
        raise SystemExit(f"{path} answered {answer.status}")


def latencies(
    port: int, path: str, receiver: ReceiverClient, count: int
) -> list[float]:
    """Post ``count`` events one by one; return ms from the 2xx to each arrival.

    For the receiver itself (the floor) the clock starts when the request is
    sent, since its answer comes after the arrival.
    """
    receiver.clear()
    direct = path == "/hook"
    run = uuid.uuid4()
    started: dict[str, float] = {}
    for number in range(count):
        event_id = f"latency-{run}-{number}"
        sent = time.monotonic()
        post(port, path, event_body(event_id))
        started[event_id] = sent if direct else time.monotonic()
        time.sleep(0.005)
    arrived = receiver.wait_for(count, timeout=60)
    return [(arrived[k] - started[k]) * 1000 for k in started]


def fill_backlog(db: Path, count: int) -> None:
    """Store ``count`` processed events, each with one pending delivery."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ovoko_relay.store import Store

    store = Store(str(db), write_timeout=120)
    now = time.time()

    def insert(conn: Any) -> None:
        conn.executemany(
            "INSERT INTO events (event_id, event_type, event_time, received_at,"
            " body, processed_at) VALUES (?, 'part.status.changed', ?, ?, ?, ?)",
            [
                (f"backlog-{n}", "2023-01-12T14:17:20+02:00", now,
                 event_body(f"backlog-{n}"), now)
                for n in range(count)
            ],
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO deliveries (event_id, rule, step, action, plugin, status,"
            " due_at, created_at, updated_at)"
            " VALUES (?, 'Forward', 0, 'forward', 'http', 'pending', ?, ?, ?)",
            [(f"backlog-{n}", now, now, now) for n in range(count)],
        )

    store.write(insert)
    store.close()


def direct_drain(
    port: int, receiver: ReceiverClient, count: int, threads: int
) -> float:
    """Post ``count`` events straight to the receiver; return posts per second."""
    receiver.clear()
    numbers = iter(range(count))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                number = next(numbers, None)
            if number is None:
                return
            post(port, "/hook", event_body(f"direct-{number}"))

    started = time.monotonic()
    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return count / (time.monotonic() - started)


def relay_drain(
    workdir: Path, receiver_port: int, count: int, workers: int
) -> tuple[float, float]:
    """Drain a stored backlog; return deliveries/s and seconds from launch."""
    receiver = ReceiverClient(receiver_port)
    receiver.clear()
    fill_backlog(workdir / "relay.sqlite3", count)
    launched = time.monotonic()
    proc, _ = start_relay(workdir, receiver_port, workers)
    try:
        arrived = receiver.wait_for(count, timeout=600)
    finally:
        stop(proc)
    first, last = min(arrived.values()), max(arrived.values())
    return (count - 1) / (last - first), last - launched


def quantiles(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100)
    return cuts[49], cuts[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        run_receiver(args.receiver)
        return

    receiver_proc, receiver_port = start_receiver()
    receiver = ReceiverClient(receiver_port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            proc, relay_port = start_relay(Path(tmp), receiver_port, args.workers)
            try:
                latencies(relay_port, PATH, receiver, 20)  # warm up
                relay_lat = latencies(relay_port, PATH, receiver, args.events)
            finally:
                stop(proc)
            floor_lat = latencies(receiver_port, "/hook", receiver, args.events)

        floor_rate = direct_drain(receiver_port, receiver, args.backlog, args.workers)
        with tempfile.TemporaryDirectory() as tmp:
            relay_rate, total = relay_drain(
                Path(tmp), receiver_port, args.backlog, args.workers
            )
    finally:
        stop(receiver_proc)

    relay_p50, relay_p99 = quantiles(relay_lat)
    floor_p50, floor_p99 = quantiles(floor_lat)
    print(
        f"\n{args.events} events one by one, {args.backlog} backlog, "
        f"{args.workers} workers, {os.cpu_count()} cores\n"
        f"{'latency to arrival':38}{'p50 ms':>10}{'p99 ms':>10}\n"
        f"{'  receiver hit directly (floor)':38}{floor_p50:10.2f}{floor_p99:10.2f}\n"
        f"{'  relay: 2xx -> arrival':38}{relay_p50:10.2f}{relay_p99:10.2f}\n"
        f"{'drain':38}{'per s':>10}\n"
        f"{'  receiver hit directly (ceiling)':38}{floor_rate:10.0f}\n"
        f"{'  relay: backlog, first to last':38}{relay_rate:10.0f}"
        f"   ({total:.1f} s from launch)\n"
        f"{'  relay / direct':38}{relay_rate / floor_rate:10.2f}"
    )


if __name__ == "__main__":
    main()
