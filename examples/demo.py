"""`make demo`: the sidecar with the example plugins, fed by a small generator of monitoring points.

Starts `luna-plugins sidecar` on loopback (ports 8080, 8081, 9100, or free ones when those are
taken), posts a batch of `requests` points every half second as a service would, prints what to
curl, and stops the sidecar cleanly on Ctrl-C (or after --duration seconds).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
ROUTES = ["POST:/6/handlers/{id}/events", "GET:/6/handlers", "POST:/6/verifiers/{id}/verifications"]


def port_or_free(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, preferred))
        except OSError:
            sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def request(method: str, url: str, body: object | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def batch(size: int) -> dict[str, object]:
    now = time.time()
    points = []
    for _ in range(size):
        status = random.choices([200, 201, 400, 500], weights=[70, 20, 7, 3])[0]
        points.append(
            {
                "series": "requests",
                "eventTime": now,
                "tags": {"service": "handlers", "route": random.choice(ROUTES), "status_code": status},
                "fields": {
                    "request_id": f"{random.getrandbits(64):016x}",
                    "execution_time": random.expovariate(20),
                },
            }
        )
        if status >= 400:
            points.append(
                {
                    "series": "errors",
                    "eventTime": now,
                    "tags": {
                        "service": "handlers",
                        "route": points[-1]["tags"]["route"],
                        "error_code": 11000 + status,
                    },
                    "fields": {"request_id": points[-1]["fields"]["request_id"]},
                }
            )
    return {"points": points}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--duration", type=float, default=0, help="stop after this many seconds (0: until Ctrl-C)"
    )
    options = parser.parse_args()
    port, admin, metrics = port_or_free(8080), port_or_free(8081), port_or_free(9100)
    command = [
        str(Path(sys.executable).with_name("luna-plugins")),
        "sidecar",
        "--plugins-dir",
        str(HERE / "plugins"),
        "--active",
        "kettle,route_digest,http_forwarder",
        "--host",
        HOST,
        "--port",
        str(port),
        "--admin-port",
        str(admin),
        "--metrics-host",
        HOST,
        "--metrics-port",
        str(metrics),
    ]
    print("starting:", " ".join(command), flush=True)
    sidecar = subprocess.Popen(command)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and sidecar.poll() is None:
        try:
            if request("GET", f"http://{HOST}:{metrics}/readyz")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)
    else:
        print("the sidecar did not become ready", file=sys.stderr)
        sidecar.kill()
        return 1
    print(
        f"""
The sidecar is up with three example plugins. Try:
  curl http://{HOST}:{port}/kettle                      # background plugin route (class handler)
  curl -X POST http://{HOST}:{port}/kettle -d '{{"litres": 2}}'
  curl 'http://{HOST}:{port}/kettle/cups/2?sugar=1'     # path variable + query
  curl http://{HOST}:{port}/digest                      # event + background plugin working together
  curl http://{HOST}:{admin}/plugins                    # every plugin's state
  curl http://{HOST}:{metrics}/metrics | grep ^luna_    # Prometheus metrics
  curl -X POST http://{HOST}:{admin}/events/sending_event \\
       -d '{{"events": [{{"id": 1}}], "handlerId": "h1", "accountId": "a1"}}'
Edit a file in {HERE / "plugins"} and it reloads within a second. Ctrl-C stops everything.
""",
        flush=True,
    )
    started, sent, last_report = time.monotonic(), 0, time.monotonic()
    while not stop and sidecar.poll() is None:
        if options.duration and time.monotonic() - started >= options.duration:
            break
        status, text = request("POST", f"http://{HOST}:{admin}/events/monitoring_event", batch(20))
        if status == 202:
            sent += json.loads(text)["accepted"]
        else:
            print(f"intake answered {status}: {text}", file=sys.stderr)
        if time.monotonic() - last_report >= 5:
            print(f"generator: {sent} points sent so far", flush=True)
            last_report = time.monotonic()
        time.sleep(0.5)
    print(f"stopping (generator sent {sent} points)", flush=True)
    if sidecar.poll() is None:
        sidecar.send_signal(signal.SIGTERM)
    code = sidecar.wait(timeout=30)
    print(f"sidecar exited with {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
