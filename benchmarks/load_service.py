"""Load test of `vae-anomaly serve` on loopback: throughput and latency, single-row and 1,000-row requests.

Starts the server in its own process (or targets --url), then drives it from this process with a
bounded number of concurrent keep-alive connections, a bounded number of requests, and a time cap.
Prints throughput (requests/s, rows/s), p50/p99 latency and the count of failed requests.

    python benchmarks/load_service.py [-m model.onnx] [--concurrency 4] [--requests 2000] [--big-requests 100]

Without -m it fits a small model on the bundled cardio data first (needs the [train] extra).
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drive(host: str, port: int, bodies: list[bytes], concurrency: int, max_seconds: float):
    """Send every body once over `concurrency` connections; return (latencies, failures, wall seconds)."""
    latencies, failures, lock = [], [0], threading.Lock()
    queue = list(range(len(bodies)))
    deadline = time.monotonic() + max_seconds

    def worker():
        conn = http.client.HTTPConnection(host, port, timeout=60)
        while time.monotonic() < deadline:
            with lock:
                if not queue:
                    break
                i = queue.pop()
            t = time.perf_counter()
            try:
                conn.request("POST", "/score", bodies[i], {"content-type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except OSError:
                ok = False
                conn = http.client.HTTPConnection(host, port, timeout=60)
            with lock:
                latencies.append(time.perf_counter() - t)
                failures[0] += not ok
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return np.array(latencies), failures[0], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", type=Path)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--requests", type=int, default=2000, help="single-row requests")
    ap.add_argument("--big-requests", type=int, default=100, help="1,000-row requests")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-seconds", type=float, default=120.0, help="cap per phase")
    args = ap.parse_args()

    from vae_anomaly.evaluation.datasets import (
        bundled_path,
        load_labelled,
        semi_supervised_split,
    )

    X, y = load_labelled(bundled_path("cardio"))
    tmp = tempfile.TemporaryDirectory()
    model = args.model
    if model is None:
        from vae_anomaly.training.export import export_model
        from vae_anomaly.training.train import TrainConfig, train

        tr, _ = semi_supervised_split(y, 0)
        model = Path(tmp.name) / "model.onnx"
        export_model(train(X[tr], config=TrainConfig(epochs=30)), model)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "vae_anomaly.cli.main", "serve", "-m", str(model),
                               "--port", str(port), "--workers", str(args.workers)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/healthz")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not start: {server.stderr.read().decode()}") from None
                time.sleep(0.2)
        rng = np.random.default_rng(0)
        from vae_anomaly import Scorer

        width = Scorer(model).n_features
        rows = (X if X.shape[1] == width else rng.standard_normal((2000, width))).astype(np.float32).tolist()
        single = [json.dumps({"rows": [rows[i]]}).encode() for i in rng.integers(0, len(rows), args.requests)]
        big = [json.dumps({"rows": [rows[i] for i in rng.integers(0, len(rows), 1000)]}).encode()
               for _ in range(args.big_requests)]
        print(f"server: 1 process, {args.workers} worker(s); client: {args.concurrency} concurrent connections")
        print("| request | requests | failed | requests/s | rows/s | p50 ms | p99 ms |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for label, bodies, n_rows in (("1 row", single, 1), ("1,000 rows", big, 1000)):
            drive("127.0.0.1", port, bodies[:20], args.concurrency, 30)  # warm-up
            lat, failed, wall = drive("127.0.0.1", port, bodies, args.concurrency, args.max_seconds)
            print(f"| {label} | {len(lat)} | {failed} | {len(lat) / wall:,.0f} | {len(lat) * n_rows / wall:,.0f} | "
                  f"{np.percentile(lat, 50) * 1e3:.1f} | {np.percentile(lat, 99) * 1e3:.1f} |", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
        tmp.cleanup()


if __name__ == "__main__":
    main()
