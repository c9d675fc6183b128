#!/usr/bin/env python3
"""Lifecycle figures for forkyard on this machine (release build, python workers):

  - crash to replacement serving: kill -9 a ready worker, time until its slot is
    ready again (back in the load balancer) with a new pid, polled every 5 ms;
  - SIGTERM to exit, idle: a started, ready forkyard with no traffic;
  - SIGTERM to exit, busy: 16 keep-alive clients hammering GET / and 4 requests
    in flight that take 1 s each; every one of them must still be answered.

Medians over ROUNDS runs (env, default 5). Usage: python3 bench/lifecycle.py
"""
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from ports import free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/forkyard")
WORKER = os.path.join(ROOT, "tests/fixtures/worker.py")
ROUNDS = int(os.environ.get("ROUNDS", "5"))


def start(tmp):
    base = free_ports(16)
    proxy, admin = base, base + 1
    cfg = f"""proxy: {{ listen: "127.0.0.1:{proxy}" }}
admin: {{ listen: "127.0.0.1:{admin}" }}
log: {{ level: warn }}
shutdown: {{ timeout: "10s" }}
pools:
  web:
    command: ["python3", "{WORKER}"]
    workers: 4
    ports: "{base + 2}-{base + 12}"
    ready: {{ http: "/ready", timeout: "30s", interval: "10ms" }}
    restart: {{ backoff_min: "50ms", backoff_max: "1s" }}
    stop: {{ grace: "5s" }}
"""
    path = os.path.join(tmp, "config.yaml")
    with open(path, "w") as f:
        f.write(cfg)
    fy = subprocess.Popen([BIN, "run", "-c", path], stderr=open(os.path.join(tmp, "fy.log"), "a"))
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1).status == 200:
                st = status(admin)
                if st["pools"][0]["workers_ready"] == 4:
                    return fy, proxy, admin
        except Exception:
            pass
        time.sleep(0.02)
    fy.kill()
    raise SystemExit("forkyard did not become ready; see " + tmp)


def status(admin):
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=2))


def stop_and_time(fy):
    t0 = time.monotonic()
    fy.send_signal(signal.SIGTERM)
    code = fy.wait(60)
    return (time.monotonic() - t0) * 1000, code


def get(proxy, path, sock=None):
    s = sock or socket.create_connection(("127.0.0.1", proxy), timeout=30)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    f = s.makefile("rb")
    line = f.readline()
    length = 0
    while True:
        h = f.readline()
        if h in (b"\r\n", b""):
            break
        k, _, v = h.decode().partition(":")
        if k.lower() == "content-length":
            length = int(v)
    f.read(length)
    return int(line.split()[1]), s


def crash_to_ready(tmp):
    fy, proxy, admin = start(tmp)
    times = []
    try:
        for _ in range(ROUNDS):
            w = next(w for w in status(admin)["pools"][0]["workers"] if w["state"] == "ready")
            port, pid = w["port"], w["pid"]
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            while True:
                ws = [x for x in status(admin)["pools"][0]["workers"] if x["port"] == port]
                if any(x["state"] == "ready" and x["pid"] != pid for x in ws):
                    times.append((time.monotonic() - t0) * 1000)
                    break
                if time.monotonic() - t0 > 30:
                    raise SystemExit("no replacement within 30 s")
                time.sleep(0.005)
    finally:
        stop_and_time(fy)
    return times


def sigterm_idle(tmp):
    fy, _, _ = start(tmp)
    ms, code = stop_and_time(fy)
    assert code == 0, code
    return ms


def sigterm_busy(tmp):
    fy, proxy, _ = start(tmp)
    stop = threading.Event()
    counts = {"ok": 0, "err": 0, "slow_ok": 0, "slow_err": 0}
    lock = threading.Lock()

    def hammer():
        sock = None
        while not stop.is_set():
            try:
                code, sock = get(proxy, "/", sock)
                with lock:
                    counts["ok" if code == 200 else "err"] += 1
            except Exception:
                sock = None
                # After SIGTERM the listener closes: new connections are refused.
                if not stop.is_set():
                    time.sleep(0.01)

    def slow():
        try:
            code, s = get(proxy, "/sleep?s=1")
            s.close()
            with lock:
                counts["slow_ok" if code == 200 else "slow_err"] += 1
        except Exception:
            with lock:
                counts["slow_err"] += 1

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # let the load run before the signal
    slows = [threading.Thread(target=slow) for _ in range(4)]
    for t in slows:
        t.start()
    time.sleep(0.2)  # the slow requests are in flight
    ms, code = stop_and_time(fy)
    stop.set()
    for t in threads + slows:
        t.join()
    assert code == 0, code
    return ms, counts


def main():
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    with tempfile.TemporaryDirectory() as tmp:
        crash = crash_to_ready(tmp)
        idle = [sigterm_idle(tmp) for _ in range(ROUNDS)]
        busy = [sigterm_busy(tmp) for _ in range(ROUNDS)]
    print(f"machine: {os.cpu_count()} CPUs, {os.uname().release}; rounds: {ROUNDS}")
    print(f"crash to replacement ready (ms): median {statistics.median(crash):.0f}, all {[round(x) for x in crash]}")
    print(f"SIGTERM to exit, idle (ms): median {statistics.median(idle):.0f}, all {[round(x) for x in idle]}")
    bms = [b[0] for b in busy]
    print(f"SIGTERM to exit, busy with 4 x 1 s requests in flight (ms): median {statistics.median(bms):.0f}, all {[round(x) for x in bms]}")
    for ms, c in busy:
        print(f"  busy run: {c['ok']} GETs ok, {c['err']} non-200; slow requests {c['slow_ok']} ok, {c['slow_err']} failed")


if __name__ == "__main__":
    main()
