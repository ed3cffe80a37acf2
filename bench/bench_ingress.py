"""Measure the relay's durable 2xx against a bare Falcon app, in one run.

Starts `ovoko-relay serve` (SQLite in WAL mode, fsync per commit, commits
grouped) and bench/bare_app.py (token check, answer 200, nothing stored), loads
each with the same client on loopback — wrk when installed, else a Python
client — and prints requests/s, p50 and p99 for both and the ratios.

    python bench/bench_ingress.py [--seconds 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOKEN = "bench-token-0123456789"
PATH = "/webhooks/ovoko"
THREADS = 8

WRK_SCRIPT = """
local counter = 0
local next_id = 0
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end
function request()
  counter = counter + 1
  local body = string.format(
    '{"event_id":"%s-%d-%d","event_type":"part.status.changed",' ..
    '"timestamp":"2023-01-12T14:17:20+02:00",' ..
    '"event_data":{"part_id":"15","status":"sold","external_id":"WH-1002"}}',
    run_id, tid, counter)
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["X-Ovoko-Token"] = token,
  }, body)
end
"""

# Logging stays at its default (INFO, one line per request and per delivery),
# written to a file, as an operator would run it.
RELAY_CONFIG = """
server: {{threads: {threads}}}
auth: {{tokens: ["{token}"]}}
storage: {{path: {db}}}
actions:
  note: {{plugin: log}}
rules:
  - name: Benchmark rule
    when: {{status: {status}}}
    do:
      - action: note
        message: "Part {{{{ data.part_id }}}} {{{{ data.status }}}}"
"""
# The load sends `sold` events: the first setup matches none of them (each is
# stored and dispatched), the second delivers one log message for each.
SETUPS = {
    "ovoko-relay (no rule)": "written_off",
    "ovoko-relay (1 delivery)": "sold",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not start")


def start_relay(workdir: Path, status: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    workdir.mkdir()
    config = workdir / "relay.yaml"
    config.write_text(
        RELAY_CONFIG.format(
            threads=THREADS, token=TOKEN, db=workdir / "relay.sqlite3", status=status
        )
    )
    with open(workdir / "relay.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ovoko_relay", "serve", "--config", str(config),
             "--port", str(port)],
            stderr=log,
        )  # fmt: skip
    wait_listening(port, proc)
    return proc, port


def start_bare() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "bare_app.py"), str(port), str(THREADS)]
    )
    wait_listening(port, proc)
    return proc, port


def load_wrk(port: int, seconds: int, connections: int) -> dict[str, float]:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    header = f'run_id = "{uuid.uuid4()}"\ntoken = "{TOKEN}"\n'
    script.write_text(header + WRK_SCRIPT)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-s", str(script), f"http://127.0.0.1:{port}{PATH}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    script.unlink()
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"{non2xx.group(1)} answers were not 2xx:\n{out}")
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),
        "p99": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),
    }


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def load_python(port: int, seconds: int, connections: int) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    run_id = uuid.uuid4()

    def client(number: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        mine, count = [], 0
        while time.monotonic() < stop:
            count += 1
            body = json.dumps({
                "event_id": f"{run_id}-{number}-{count}",
                "event_type": "part.status.changed",
                "timestamp": "2023-01-12T14:17:20+02:00",
                "event_data": {"part_id": "15", "status": "sold"},
            })  # fmt: skip
            started = time.perf_counter()
            headers = {"Content-Type": "application/json", "X-Ovoko-Token": TOKEN}
            conn.request("POST", PATH, body, headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                raise SystemExit(f"answer {answer.status}")
            mine.append((time.perf_counter() - started) * 1000)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cuts = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / seconds, "p50": cuts[49], "p99": cuts[98]}


def measure(start, seconds: int, connections: int, load) -> dict[str, float]:
    proc, port = start()
    try:
        load(port, 2, connections)  # warm up
        return load(port, seconds, connections)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client", choices=["wrk", "python"], default=None)
    args = parser.parse_args()

    client = args.client or ("wrk" if shutil.which("wrk") else "python")
    load = load_wrk if client == "wrk" else load_python
    runs: dict[str, list[dict[str, float]]] = {"bare Falcon (baseline)": []}
    runs.update({name: [] for name in SETUPS})
    with tempfile.TemporaryDirectory() as tmp:
        # Rounds interleave the setups, so drift in the machine hits them alike.
        for number in range(args.rounds):
            runs["bare Falcon (baseline)"].append(
                measure(start_bare, args.seconds, args.connections, load)
            )
            for name, status in SETUPS.items():
                workdir = Path(tmp) / f"{number}-{status}"
                runs[name].append(
                    measure(
                        lambda w=workdir, s=status: start_relay(w, s),
                        args.seconds,
                        args.connections,
                        load,
                    )
                )

    medians = {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for name, results in runs.items()
    }
    base = medians["bare Falcon (baseline)"]
    print(
        f"\nclient: {client}, {args.connections} connections, {args.seconds} s x "
        f"{args.rounds} rounds (medians), {os.cpu_count()} cores, "
        f"waitress threads {THREADS}"
    )
    print(f"{'':28}{'requests/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'x rps':>8}{'x p99':>8}")  # fmt: skip
    for name, m in medians.items():
        print(
            f"{name:28}{m['rps']:11.0f}{m['p50']:9.2f}{m['p99']:9.2f}"
            f"{m['rps'] / base['rps']:8.2f}{m['p99'] / base['p99']:8.2f}"
        )


if __name__ == "__main__":
    main()
