#!/usr/bin/env python3
"""Merged worker metrics: how long a scrape of forkyard's /metrics takes when it
fetches and merges WORKERS (32) workers' metrics of about 200 series each
(bench/metrics_worker.py: a precomputed text, so the workers' own speed is not
what is measured), against the same forkyard without `metrics:`.

SCRAPES (200) scrapes one after another, each on a new connection as Prometheus
makes them at long intervals; p50/p90/p99/max in milliseconds. Writes
bench/WORKER_METRICS.md and bench/WORKER_METRICS.json.
Usage: make bench-metrics (or python3 bench/worker_metrics.py after a release build)
"""
import http.client
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

from ports import free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/forkyard")
WORKER = os.path.join(ROOT, "bench/metrics_worker.py")
WORKERS = int(os.environ.get("WORKERS", "32"))
SCRAPES = int(os.environ.get("SCRAPES", "200"))
TARGET_P99_MS = 50.0


def cpu_seconds(pid):
    """User and system CPU time of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get(admin, path):
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def run(merge):
    base = free_ports(WORKERS + 4)
    proxy, admin, first = base, base + 1, base + 2
    metrics = '    metrics: { path: "/metrics", timeout: "2s" }\n' if merge else ""
    cfg = f"""proxy: {{ listen: "127.0.0.1:{proxy}" }}
admin: {{ listen: "127.0.0.1:{admin}", socket: false }}
log: {{ level: warn }}
shutdown: {{ timeout: "5s" }}
pools:
  bench:
    command: ["python3", "{WORKER}"]
    workers: {WORKERS}
    ports: "{first}-{first + WORKERS + 1}"
    ready: {{ http: "/ready", timeout: "60s" }}
    stop: {{ grace: "5s" }}
{metrics}"""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.yaml")
        with open(path, "w") as f:
            f.write(cfg)
        fy = subprocess.Popen([BIN, "run", "-c", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 120
            ready = f'forkyard_workers{{pool="bench",state="ready"}} {WORKERS}'
            while True:
                try:
                    status, body = get(admin, "/metrics")
                    if status == 200 and ready in body.decode():
                        break
                except OSError:
                    pass
                if time.time() > deadline:
                    sys.exit("forkyard's workers did not become ready")
                time.sleep(0.2)
            for _ in range(10):
                get(admin, "/metrics")
            cpu_before = cpu_seconds(fy.pid)
            times, size = [], 0
            for _ in range(SCRAPES):
                t = time.perf_counter()
                status, body = get(admin, "/metrics")
                times.append((time.perf_counter() - t) * 1000)
                assert status == 200
                size = len(body)
            cpu = cpu_seconds(fy.pid) - cpu_before
            text = body.decode()
            series = sum(1 for l in text.splitlines() if l and not l.startswith("#"))
            errors = sum(
                float(m.group(1))
                for m in re.finditer(r'^forkyard_worker_metrics_errors_total\{[^}]*\} (\S+)$', text, re.M)
            )
            kept = re.search(r'^forkyard_worker_metrics_series\{pool="bench"\} (\S+)$', text, re.M)
        finally:
            fy.terminate()
            fy.wait(30)
    times.sort()
    q = lambda p: times[min(len(times) - 1, int(round(p * (len(times) - 1))))]
    return {
        "merge": merge,
        "scrapes": SCRAPES,
        "p50_ms": round(q(0.5), 2),
        "p90_ms": round(q(0.9), 2),
        "p99_ms": round(q(0.99), 2),
        "max_ms": round(times[-1], 2),
        "mean_ms": round(statistics.mean(times), 2),
        "forkyard_cpu_ms_per_scrape": round(cpu * 1000 / SCRAPES, 2),
        "body_bytes": size,
        "series_served": series,
        "merged_series_kept": int(float(kept.group(1))) if kept else 0,
        "worker_metrics_errors": errors,
    }


def main():
    if not os.path.exists(BIN):
        sys.exit("build it first: cargo build --release --locked --bin forkyard")
    per_worker = int(subprocess.check_output([sys.executable, WORKER], env={**os.environ, "PRINT_SERIES": "1"}))
    load_before = os.getloadavg()
    baseline = run(False)
    merged = run(True)
    load_after = os.getloadavg()
    result = {
        "workers": WORKERS,
        "series_per_worker": per_worker,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "runs": [baseline, merged],
    }
    with open(os.path.join(ROOT, "bench/WORKER_METRICS.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    ok = merged["p99_ms"] <= TARGET_P99_MS
    rows = "\n".join(
        f"| {'merged: ' + str(WORKERS) + ' workers' if r['merge'] else 'forkyard alone (no metrics:)'} | {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['forkyard_cpu_ms_per_scrape']} | {r['series_served']} | {r['body_bytes']} |"
        for r in result["runs"]
    )
    md = f"""# Merged worker metrics: scrape time

`make bench-metrics` (`bench/worker_metrics.py`): a release forkyard with one pool of
{WORKERS} workers (`bench/metrics_worker.py`, each serving a precomputed Prometheus text
of {per_worker} series: counters, a histogram, gauges, a summary), scraped {SCRAPES} times in
a row on new connections, after 10 warm-up scrapes. Each scrape of `/metrics` fetches
all {WORKERS} workers' metrics at once, parses and merges them. The same forkyard without
`metrics:` is the baseline.

Measured {result['date']} on {result['cpus']} CPUs ({result['machine']}), load average
{result['loadavg_before'][0]} before and {result['loadavg_after'][0]} after (1 min).

| Run | p50 ms | p90 ms | p99 ms | max ms | forkyard CPU ms per scrape | series served | bytes |
|---|---|---|---|---|---|---|---|
{rows}

Target: p99 ≤ {TARGET_P99_MS:.0f} ms with {WORKERS} workers × ~200 series: **{'met' if ok else 'NOT met'}**
(p99 {merged['p99_ms']} ms). Merged series kept: {merged['merged_series_kept']}; scrape errors:
{merged['worker_metrics_errors']:.0f}.

The forkyard CPU column (user + system time of the forkyard process, from
`/proc/<pid>/stat`, per scrape) separates forkyard's own cost from waiting for the
workers: the baseline is forkyard's own `/metrics` (mostly reading `/proc/<pid>/smaps_rollup`
of the {WORKERS} workers for their PSS and USS); the difference is fetching, parsing and
merging {WORKERS} × {per_worker} series. The wall times include the {WORKERS} Python workers
answering on the same CPUs, so a busy machine shows in the p99.
"""
    with open(os.path.join(ROOT, "bench/WORKER_METRICS.md"), "w") as f:
        f.write(md)
    print(md)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
