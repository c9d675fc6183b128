#!/usr/bin/env python3
"""Preload figures (`make bench-preload`): one app that holds about 200 MB of Python
objects after import (bench/preload_app.py), 8 workers with 4 server threads each,
run side by side in one run as

  - forkyard exec      : every worker a fresh `waitress-serve` process
  - forkyard preload   : `preload:` with waitress, gc_freeze on (the default)
  - forkyard preload, no gc_freeze
  - gunicorn --preload : gthread workers, 4 threads
  - gunicorn           : the same without --preload

For each it measures
  - the total PSS of all workers plus their parent (forkyard's preloader, or
    gunicorn's arbiter), from /proc/<pid>/smaps_rollup: at boot (all 8 ready), and
    after 10,000 requests spread over the workers (random items, keep-alive);
  - kill -9 of a worker to its replacement answering: forkyard: a GET on the
    killed worker's own endpoint (its slot's port) until a new pid answers;
    gunicorn (one shared socket): GETs until a pid that was not there answers.
    Median of KILLS (default 12) kills, each of a different worker where possible;
  - start to the first 200 (through forkyard's proxy, or gunicorn's port).

And, for forkyard preload: a rolling restart (`POST /pools/web/restart`) under a
steady load: failed requests, and p99 during the restart against p99 before it.

The forkyard pools use `restart: { backoff_min: 5ms }` and a crash-loop breaker
that does not trip on the deliberate kills, so the kill figure measures the
replacement, not the backoff policy (whose default first delay is 100 ms).

Writes bench/PRELOAD.md (and bench/PRELOAD.json). Needs `make build` and
`make venv` (gunicorn and waitress from PyPI); run it on a quiet machine.
"""
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from ports import free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/forkyard")
VENV = os.path.join(ROOT, "target/venv")
PY = os.path.join(VENV, "bin/python")
BENCH = os.path.join(ROOT, "bench")
WORKERS = 8
THREADS = 4
REQUESTS = int(os.environ.get("REQUESTS", "10000"))
KILLS = int(os.environ.get("KILLS", "12"))
CLIENTS = 8


def get(port, path="/", timeout=10.0, host="127.0.0.1"):
    """(status, json body) of one GET on a new connection, or None."""
    try:
        c = http.client.HTTPConnection(host, port, timeout=timeout)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, json.loads(body) if r.status == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        return None


def pss(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def mib(n):
    return n / (1024 * 1024)


class Load:
    """CLIENTS keep-alive clients GETting random items until stopped."""

    def __init__(self, port, limit=None):
        self.port, self.limit = port, limit
        self.ok = 0
        self.failed = []
        self.latencies = []  # (time sent, seconds)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(CLIENTS)]
        for t in self.threads:
            t.start()

    def client(self):
        conn = None
        while not self.stop.is_set():
            with self.lock:
                if self.limit is not None and self.ok + len(self.failed) >= self.limit:
                    return
            path = f"/item/{random.randrange(1_000_000)}"
            sent = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("GET", path)
                r = conn.getresponse()
                r.read()
                took = time.monotonic() - sent
                with self.lock:
                    if r.status == 200:
                        self.ok += 1
                        self.latencies.append((sent, took))
                    else:
                        self.failed.append(f"status {r.status}")
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                with self.lock:
                    self.failed.append(repr(e))
                if conn is not None:
                    conn.close()
                conn = None

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        return self


def p99(values):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * 0.99))] if values else float("nan")


# -- forkyard --------------------------------------------------------------------


class Server:
    """A server under test, run as self.proc."""

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Forkyard(Server):
    def __init__(self, name, pool_yaml):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="forkyard-bench-")
        base = free_ports(2)
        self.proxy, self.admin = base, base + 1
        self.first_port = free_ports(WORKERS + 4)
        config = f"""proxy: {{ listen: "127.0.0.1:{self.proxy}" }}
admin: {{ listen: "127.0.0.1:{self.admin}" }}
log: {{ level: warn }}
pools:
  web:
{pool_yaml}
    workers: {WORKERS}
    ports: "{self.first_port}-{self.first_port + WORKERS + 3}"
    cwd: "{BENCH}"
    ready: {{ http: "/item/1", timeout: "120s", interval: "5ms" }}
    restart: {{ backoff_min: "5ms", backoff_max: "1s", crash_loop: {{ failures: 1000, window: "60s" }} }}
    stop: {{ grace: "5s" }}
"""
        path = os.path.join(self.dir, "config.yaml")
        with open(path, "w") as f:
            f.write(config)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [BIN, "run", "-c", path],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, "log"), "w"),
            cwd=ROOT,
        )
        self.front = self.proxy

    def status(self):
        r = get(self.admin, "/status")
        return r[1] if r else None

    def workers(self):
        s = self.status() or {"pools": [{"workers": [], "preloaders": []}]}
        return s["pools"][0]

    def ready_count(self):
        return sum(1 for w in self.workers()["workers"] if w["state"] == "ready")

    def pids(self):
        pool = self.workers()
        return [w["pid"] for w in pool["workers"] if w["pid"]] + [
            p["pid"] for p in pool.get("preloaders", []) if p["pid"]
        ]

    def kill_one(self, i):
        """Kill slot i's worker; seconds until a new pid answers on its endpoint."""
        w = [w for w in self.workers()["workers"] if w["slot"] == i % WORKERS][0]
        old, port = w["pid"], w["port"]
        t0 = time.monotonic()
        os.kill(old, signal.SIGKILL)
        while True:
            r = get(port, "/item/1", timeout=5)
            if r and r[0] == 200 and r[1]["pid"] != old:
                return time.monotonic() - t0
            if time.monotonic() - t0 > 30:
                return float("nan")
            time.sleep(0.0005)

    def settle(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.ready_count() == WORKERS:
                return
            time.sleep(0.05)

    def restart(self):
        c = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=300)
        c.request("POST", "/pools/web/restart")
        r = c.getresponse()
        return r.status, r.read().decode()


# -- gunicorn --------------------------------------------------------------------


class Gunicorn(Server):
    def __init__(self, name, preload):
        self.name = name
        self.front = free_ports(1)
        argv = [
            os.path.join(VENV, "bin/gunicorn"),
            "--workers", str(WORKERS), "--worker-class", "gthread", "--threads", str(THREADS),
            "--bind", f"127.0.0.1:{self.front}", "--chdir", BENCH, "--log-level", "warning",
        ]
        if preload:
            argv.append("--preload")
        argv.append("preload_app:app")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def pids(self):
        return [self.proc.pid] + children(self.proc.pid)

    def settle(self):
        # Every worker answered once (gthread workers accept from one socket).
        deadline = time.monotonic() + 120
        seen = set()
        while time.monotonic() < deadline:
            kids = set(children(self.proc.pid))
            r = get(self.front, "/item/1", timeout=5)
            if r and r[0] == 200:
                seen.add(r[1]["pid"])
            if len(kids) == WORKERS and kids <= seen:
                return
            time.sleep(0.002)

    def kill_one(self, i):
        kids = children(self.proc.pid)
        old = kids[i % len(kids)]
        before = set(kids)
        t0 = time.monotonic()
        os.kill(old, signal.SIGKILL)
        while True:
            r = get(self.front, "/item/1", timeout=5)
            if r and r[0] == 200 and r[1]["pid"] not in before:
                return time.monotonic() - t0
            if time.monotonic() - t0 > 30:
                return float("nan")


def first_200(server):
    while True:
        r = get(server.front, "/item/1", timeout=5)
        if r and r[0] == 200:
            return time.monotonic() - server.started
        if server.proc.poll() is not None:
            raise SystemExit(f"{server.name} exited during boot")
        time.sleep(0.002)


def measure(server):
    out = {"mode": server.name}
    out["first_200_s"] = first_200(server)
    server.settle()
    time.sleep(2)
    out["pss_boot"] = sum(pss(p) for p in server.pids())
    load = Load(server.front, limit=REQUESTS)
    for t in load.threads:
        t.join()
    out["requests_ok"], out["requests_failed"] = load.ok, len(load.failed)
    time.sleep(1)
    out["pss_after"] = sum(pss(p) for p in server.pids())
    kills = []
    for i in range(KILLS):
        kills.append(server.kill_one(i))
        server.settle()
        time.sleep(0.2)
    out["kills_s"] = kills
    out["kill_median_s"] = statistics.median(kills)
    return out


def rolling_restart(fy):
    fy.settle()
    load = Load(fy.front)
    time.sleep(5)
    t_restart = time.monotonic()
    status, body = fy.restart()
    t_done = time.monotonic()
    time.sleep(1)
    load.finish()
    steady = [took for sent, took in load.latencies if sent < t_restart]
    during = [took for sent, took in load.latencies if t_restart <= sent <= t_done]
    return {
        "status": status,
        "reply": body.strip(),
        "restart_s": t_done - t_restart,
        "ok": load.ok,
        "failed": len(load.failed),
        "failures": load.failed[:5],
        "p99_steady_ms": p99(steady) * 1000,
        "p99_during_ms": p99(during) * 1000,
        "requests_during": len(during),
    }


def main():
    for path in (BIN, os.path.join(VENV, "bin/gunicorn"), os.path.join(VENV, "bin/waitress-serve")):
        if not os.path.exists(path):
            raise SystemExit(f"missing {path}: run `make build venv` first")
    preload = lambda freeze: f"""    preload:
      app: "preload_app:app"
      python: "{PY}"
      server: waitress
      server_options: {{ threads: {THREADS} }}
      gc_freeze: {str(freeze).lower()}"""
    exec_pool = f"""    command: ["{VENV}/bin/waitress-serve", "--listen=127.0.0.1:{{port}}", "--threads={THREADS}", "preload_app:app"]"""
    modes = [
        ("forkyard exec", lambda: Forkyard("forkyard exec", exec_pool)),
        ("forkyard preload (gc_freeze)", lambda: Forkyard("forkyard preload (gc_freeze)", preload(True))),
        ("forkyard preload (no gc_freeze)", lambda: Forkyard("forkyard preload (no gc_freeze)", preload(False))),
        ("gunicorn --preload", lambda: Gunicorn("gunicorn --preload", True)),
        ("gunicorn", lambda: Gunicorn("gunicorn", False)),
    ]
    results, restart = [], None
    for name, make in modes:
        print(f"== {name}", flush=True)
        server = make()
        try:
            r = measure(server)
            print(f"   boot PSS {mib(r['pss_boot']):.0f} MiB, after {REQUESTS} requests "
                  f"{mib(r['pss_after']):.0f} MiB, kill->answer median {r['kill_median_s']*1000:.1f} ms, "
                  f"first 200 after {r['first_200_s']:.2f} s", flush=True)
            if name == "forkyard preload (gc_freeze)":
                restart = rolling_restart(server)
                print(f"   rolling restart: {restart['failed']} failed, p99 {restart['p99_steady_ms']:.1f} ms "
                      f"steady / {restart['p99_during_ms']:.1f} ms during", flush=True)
            results.append(r)
        finally:
            server.stop()
    write(results, restart)


def write(results, restart):
    by = {r["mode"]: r for r in results}
    exec_r = by["forkyard exec"]
    one_worker = exec_r["pss_boot"] / WORKERS
    pre = by["forkyard preload (gc_freeze)"]
    gpre = by["gunicorn --preload"]
    rows = []
    for r in results:
        rows.append(
            f"| {r['mode']} | {mib(r['pss_boot']):.0f} | {mib(r['pss_after']):.0f} | "
            f"{r['kill_median_s']*1000:.1f} | {r['first_200_s']:.2f} | {r['requests_failed']} |"
        )

    def verdict(ok):
        return "met" if ok else "**missed**"

    targets = [
        ("total PSS at boot ≤ 1.5 × one exec-mode worker",
         f"{mib(pre['pss_boot']):.0f} MiB vs 1.5 × {mib(one_worker):.0f} = {mib(1.5*one_worker):.0f} MiB "
         f"({pre['pss_boot']/one_worker:.2f} ×)", pre["pss_boot"] <= 1.5 * one_worker),
        (f"total PSS after {REQUESTS:,} requests ≤ 2.5 × one exec-mode worker (gc_freeze)",
         f"{mib(pre['pss_after']):.0f} MiB vs {mib(2.5*one_worker):.0f} MiB ({pre['pss_after']/one_worker:.2f} ×)",
         pre["pss_after"] <= 2.5 * one_worker),
        ("no more than gunicorn --preload (boot, after)",
         f"{mib(pre['pss_boot']):.0f} vs {mib(gpre['pss_boot']):.0f} MiB; {mib(pre['pss_after']):.0f} vs {mib(gpre['pss_after']):.0f} MiB",
         pre["pss_boot"] <= gpre["pss_boot"] and pre["pss_after"] <= gpre["pss_after"]),
        ("kill → replacement answering ≤ 30 ms median",
         f"{pre['kill_median_s']*1000:.1f} ms", pre["kill_median_s"] <= 0.030),
    ]
    if restart:
        targets.append(("rolling restart under load: 0 failed requests",
                        f"{restart['failed']} failed of {restart['ok'] + restart['failed']}", restart["failed"] == 0))
        targets.append(("rolling restart: p99 during ≤ 2 × steady p99",
                        f"{restart['p99_during_ms']:.1f} ms vs 2 × {restart['p99_steady_ms']:.1f} ms",
                        restart["p99_during_ms"] <= 2 * restart["p99_steady_ms"]))
    uname = os.uname()
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        "# Preload figures",
        "",
        f"`make bench-preload` ({os.path.relpath(__file__, ROOT)}) on {cpu}, {os.cpu_count()} CPUs, "
        f"{uname.sysname} {uname.release}, Python {sys.version.split()[0]} (the venv's for the app); "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"One app holding about 200 MB of Python objects after import (`bench/preload_app.py`), "
        f"{WORKERS} workers with {THREADS} server threads (waitress under forkyard, gthread under gunicorn). "
        f"PSS is summed over the workers and their parent (forkyard's preloader, gunicorn's arbiter; "
        f"forkyard's own process is not counted), from `/proc/<pid>/smaps_rollup`. "
        f"One exec-mode worker at boot: {mib(one_worker):.0f} MiB.",
        "",
        f"| mode | total PSS at boot (MiB) | after {REQUESTS:,} requests (MiB) | kill → replacement answering, median of {KILLS} (ms) | start → first 200 (s) | failed requests |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "## Targets",
        "",
        "| target | figure | |",
        "|---|---|---|",
        *[f"| {t} | {fig} | {verdict(ok)} |" for t, fig, ok in targets],
        "",
    ]
    if restart:
        lines += [
            "## Rolling restart under load",
            "",
            f"`POST /pools/web/restart` of the preload pool (gc_freeze) while {CLIENTS} keep-alive clients "
            f"GET random items: it took {restart['restart_s']:.2f} s ({restart['requests_during']} requests during it), "
            f"{restart['failed']} failed; p99 {restart['p99_steady_ms']:.1f} ms in the 5 s before, "
            f"{restart['p99_during_ms']:.1f} ms during. Reply: `{restart['reply']}`.",
            "",
        ]
    lines += [
        "Notes: the kill figure for forkyard is measured on the killed worker's own endpoint; for gunicorn, "
        "whose workers share one socket, as the first answer from a pid that was not there before. "
        "The forkyard pools set `restart.backoff_min: 5ms` (default 100 ms) and a crash-loop breaker "
        "that the deliberate kills do not trip.",
        "",
    ]
    with open(os.path.join(BENCH, "PRELOAD.md"), "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(BENCH, "PRELOAD.json"), "w") as f:
        json.dump({"results": results, "rolling_restart": restart}, f, indent=2)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
