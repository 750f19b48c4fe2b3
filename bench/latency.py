#!/usr/bin/env python3
"""Open-loop latency probe for bench/tenant-isolation.sh.

Sends GET PATH to a registry at a fixed rate, each request on a kept-alive
connection of its own worker thread, with a bearer token from TOKEN_FILE
(a new one per request, in file order) or the same token every time
(--cached). Requests are started on schedule whatever earlier ones are
doing (open loop: a slow server does not slow the sender down), so a
stalled server shows up as latency, not as a lower rate.

Prints one JSON object: sent, statuses (status code -> count), and the
latency percentiles p50, p90, p99, max in microseconds.

Usage: latency.py URL PATH TOKEN_FILE RATE SECONDS [--cached] [--workers N]
"""
import http.client
import json
import queue
import sys
import threading
import time
import urllib.parse


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    cached = "--cached" in sys.argv
    workers = 8
    if "--workers" in sys.argv:
        workers = int(sys.argv[sys.argv.index("--workers") + 1])
        args.remove(str(workers))
    url, path, token_file, rate, seconds = args[0], args[1], args[2], float(args[3]), float(args[4])
    with open(token_file) as f:
        tokens = [line.strip() for line in f if line.strip()]
    count = int(rate * seconds)
    if not cached and count > len(tokens):
        sys.exit(f"{token_file}: {len(tokens)} tokens, {count} needed")
    target = urllib.parse.urlsplit(url)

    jobs: "queue.Queue[tuple[float, str] | None]" = queue.Queue()
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[str, int] = {}

    def worker() -> None:
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        while True:
            job = jobs.get()
            if job is None:
                return
            due, token = job
            try:
                conn.request("GET", path, headers={
                    "Authorization": f"Bearer {token}",
                    "Accept": "application/vnd.oci.image.manifest.v1+json",
                })
                resp = conn.getresponse()
                resp.read()
                status = str(resp.status)
            except OSError as e:
                status = type(e).__name__
                conn.close()
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            # From when the request was due: time spent waiting for a free
            # worker counts too, as it would for a real client.
            elapsed = time.perf_counter() - due
            with lock:
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    for i in range(count):
        due = start + i / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        jobs.put((due, tokens[0] if cached else tokens[i]))
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join()

    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e6, 1)

    print(json.dumps({
        "sent": count,
        "statuses": statuses,
        "p50_us": pct(0.50),
        "p90_us": pct(0.90),
        "p99_us": pct(0.99),
        "max_us": round(latencies[-1] * 1e6, 1),
    }))


if __name__ == "__main__":
    main()
