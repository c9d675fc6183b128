#!/usr/bin/env python3
"""Side-by-side proxy benchmark: direct, forkyard, nginx and HAProxy in front of
the same backends, interleaved over several rounds. Run it with `make bench`.

Backends (shared by every target, started once):
  static  two nginx instances answering `return 200` (1 worker process each)
  python  two copies of bench/app.py, a small JSON API in Python

forkyard cannot proxy to processes it does not supervise, so its pool runs
placeholder processes (`sleep`) on the backends' slots and the TCP ready probe
finds the shared backends already listening there: every proxy talks to exactly
the same backend processes.

For each run it records wrk's requests/s and p50/p99 latency, the proxy's CPU time
(utime+stime of all its processes from /proc) divided by the requests served, and
the proxy's RSS after the run. Medians over the rounds go to bench/RESULTS.md.

Two more scenarios:
  stall   Python servers that write a response's head and body in two sends
          without TCP_NODELAY (http.server, waitress, gunicorn sync and gthread,
          uvicorn): p50 under keep-alive load direct and through forkyard, beside
          nginx (the 40 ms delayed-ACK stall)
  idle    RSS growth per idle keep-alive client connection (IDLE_CONNS, one GET
          each, then idle) of forkyard, nginx and HAProxy

Environment: ROUNDS (5), SECONDS (5), CONNS (32), SCENARIOS ("static python stall idle"),
FORKYARD (./target/release/forkyard), QUICK=1 (1-thread targets only), and
VARIANTS="name=/path/to/forkyard ..." to add other forkyard builds (1 thread) to
the same interleaved rounds, for measuring one optimisation at a time.
"""
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
SECONDS = int(os.environ.get("SECONDS", "5"))
CONNS = int(os.environ.get("CONNS", "32"))
SCENARIOS = os.environ.get("SCENARIOS", "static python stall idle").split()
VENV_PY = os.path.join(ROOT, "target/venv/bin/python3")
IDLE_CONNS = int(os.environ.get("IDLE_CONNS", "2000"))
FORKYARD = os.environ.get("FORKYARD", os.path.join(ROOT, "target/release/forkyard"))
PLAIN = os.path.join(ROOT, "target/release/examples/plain_pingora")
CLK_TCK = os.sysconf("SC_CLK_TCK")
BASE = 24000 + (os.getpid() % 50) * 20

TMP = tempfile.mkdtemp(prefix="forkyard-bench-")
PROCS = []


def port(n):
    return BASE + n


def start(argv, **kw):
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, **kw)
    PROCS.append(p)
    return p


def wait_http(p, path="/", timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            s = socket.create_connection(("127.0.0.1", p), timeout=1)
            s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if s.recv(12).startswith(b"HTTP/1.1 200"):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"nothing answered 200 on port {p}")


def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def children(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def cpu_ticks(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def rss_kib(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                m = re.search(r"VmRSS:\s+(\d+)", f.read())
                total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total


def to_ms(v):
    n = float(re.match(r"[\d.]+", v).group(0))
    return n / 1000 if v.endswith("us") else n * 1000 if v.endswith("s") and not v.endswith("ms") else n


def run_wrk(url):
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNS}", f"-d{SECONDS}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if errors or socket_errors:
        print(f"  warning: {url}: {errors.group(0) if errors else ''} {socket_errors.group(0) if socket_errors else ''}")
    return reqs, rps, p50, p99


# ---- backends ---------------------------------------------------------------

def nginx_backend(p):
    conf = write(f"backend-{p}.conf", f"""
worker_processes 1;
pid {TMP}/backend-{p}.pid;
error_log /dev/null;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{p} reuseport; location / {{ return 200 "ok\\n"; }} }}
}}
""")
    start(["nginx", "-c", conf, "-p", TMP, "-g", "daemon off;"])
    wait_http(p)


def python_backend(p):
    start([sys.executable, os.path.join(ROOT, "bench/app.py"), str(p)])
    wait_http(p)


# ---- proxies ------------------------------------------------------------------

def forkyard(listen, threads, backends, binary=FORKYARD):
    conf = write(f"forkyard-{listen}.yaml", f"""
proxy: {{ listen: "127.0.0.1:{listen}", threads: {threads} }}
admin: {{ listen: "127.0.0.1:{listen + 1}" }}
log: {{ level: warn }}
pools:
  web:
    command: ["sleep", "infinity"]
    workers: {len(backends)}
    ports: "{backends[0]}-{backends[-1]}"
    keepalive: 64
""")
    p = start([binary, "run", "-c", conf])
    wait_http(listen)
    return p


def plain_pingora(listen, backends):
    """A straightforward Pingora proxy with default settings (bench/plain_pingora.rs)."""
    p = start([PLAIN, f"127.0.0.1:{listen}"] + [f"127.0.0.1:{b}" for b in backends])
    wait_http(listen)
    return p


def nginx_proxy(listen, workers, backends):
    servers = "".join(f"server 127.0.0.1:{b};" for b in backends)
    conf = write(f"nginx-{listen}.conf", f"""
worker_processes {workers};
pid {TMP}/nginx-{listen}.pid;
error_log /dev/null;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  upstream app {{ {servers} keepalive 64; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{listen};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
  }}
}}
""")
    p = start(["nginx", "-c", conf, "-p", TMP, "-g", "daemon off;"])
    wait_http(listen)
    return p


def haproxy(listen, threads, backends):
    servers = "\n".join(f"  server b{i} 127.0.0.1:{b}" for i, b in enumerate(backends))
    conf = write(f"haproxy-{listen}.cfg", f"""
global
  nbthread {threads}
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option forwardfor
  http-reuse always
frontend fe
  bind 127.0.0.1:{listen}
  default_backend app
backend app
  balance roundrobin
{servers}
""")
    p = start(["haproxy", "-f", conf])
    wait_http(listen)
    return p


def versions():
    def first(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except OSError:
            return "?"
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        m = re.search(r"model name\s*:\s*(.*)", f.read())
        cpu = m.group(1) if m else cpu
    return {
        "forkyard": first([FORKYARD, "--version"]),
        "nginx": first(["nginx", "-v"]),
        "haproxy": first(["haproxy", "-v"]),
        "wrk": first(["wrk", "-v"]),
        "machine": f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}",
    }


def main():
    for tool in ("wrk", "nginx", "haproxy"):
        if not shutil.which(tool):
            raise SystemExit(f"needs {tool} (make bench installs it with apt-get)")
    if not os.path.exists(FORKYARD):
        raise SystemExit(f"no forkyard binary at {FORKYARD}; run cargo build --release")
    load_before = os.getloadavg()
    results = {}
    try:
        for si, scenario in enumerate(SCENARIOS):
            if scenario == "stall":
                results["_stall"] = stall(port(200))
                continue
            if scenario == "idle":
                results["_idle"] = idle(port(300))
                continue
            b = [port(si * 8 + 0), port(si * 8 + 1)]
            for bp in b:
                (nginx_backend if scenario == "static" else python_backend)(bp)
            lp = port(si * 8 + 2)
            targets = {
                "direct (1 backend)": (None, f"http://127.0.0.1:{b[0]}/"),
                "forkyard 1 thread": (forkyard(lp, 1, b), f"http://127.0.0.1:{lp}/"),
                "nginx 1 worker": (nginx_proxy(lp + 2, 1, b), f"http://127.0.0.1:{lp + 2}/"),
                "haproxy 1 thread": (haproxy(lp + 3, 1, b), f"http://127.0.0.1:{lp + 3}/"),
            }
            if os.path.exists(PLAIN):
                pp = port(60 + si)
                targets["plain Pingora 1 thread"] = (plain_pingora(pp, b), f"http://127.0.0.1:{pp}/")
            if not os.environ.get("QUICK"):
                targets.update({
                    "forkyard 2 threads": (forkyard(lp + 4, 2, b), f"http://127.0.0.1:{lp + 4}/"),
                    "nginx 2 workers": (nginx_proxy(lp + 6, 2, b), f"http://127.0.0.1:{lp + 6}/"),
                    "haproxy 2 threads": (haproxy(lp + 7, 2, b), f"http://127.0.0.1:{lp + 7}/"),
                })
            for vi, variant in enumerate(os.environ.get("VARIANTS", "").split()):
                vname, vpath = variant.split("=", 1)
                vport = port(100 + si * 20 + vi * 2)
                targets[f"variant {vname}"] = (forkyard(vport, 1, b, vpath), f"http://127.0.0.1:{vport}/")
            # Warm up every target once (connection pools, page cache).
            for name, (_, url) in targets.items():
                subprocess.run(["wrk", "-t1", f"-c{CONNS}", "-d1s", url], capture_output=True)
            runs = {name: [] for name in targets}
            for r in range(ROUNDS):
                for name, (proc, url) in targets.items():
                    pids = children(proc.pid) if proc else []
                    t0 = cpu_ticks(pids)
                    reqs, rps, p50, p99 = run_wrk(url)
                    cpu_us = (cpu_ticks(pids) - t0) * 1e6 / CLK_TCK / reqs if proc else None
                    rss = rss_kib(pids) / 1024 if proc else None
                    runs[name].append({"rps": rps, "p50": p50, "p99": p99, "cpu_us": cpu_us, "rss": rss})
                    print(f"[{scenario}] round {r + 1}/{ROUNDS} {name:20s} {rps:9.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
                          + (f"  cpu {cpu_us:5.1f} us/req  rss {rss:5.1f} MiB" if proc else ""), flush=True)
            results[scenario] = {
                name: {k: (statistics.median(x[k] for x in rs) if rs[0][k] is not None else None) for k in rs[0]}
                for name, rs in runs.items()
            }
            results[scenario]["_raw"] = runs
            for p in PROCS:
                try:
                    # Plain Pingora would sit out its 5-minute grace period.
                    os.killpg(p.pid, signal.SIGKILL if p.args[0] == PLAIN else signal.SIGTERM)
                except OSError:
                    pass
            for p in PROCS:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
            PROCS.clear()
    finally:
        for p in PROCS:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(TMP, ignore_errors=True)
    report(results, load_before, os.getloadavg())


def stop_all():
    for p in PROCS:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except OSError:
            pass
    for p in PROCS:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
    PROCS.clear()


def stall_servers(p):
    """(name, argv) of each Python server on port p."""
    py = VENV_PY if os.path.exists(VENV_PY) else sys.executable
    venv = os.path.dirname(py)
    bench = os.path.join(ROOT, "bench")
    return [
        ("http.server", [sys.executable, os.path.join(bench, "app.py"), str(p)]),
        ("waitress", [os.path.join(venv, "waitress-serve"), f"--listen=127.0.0.1:{p}", "--threads=4", "wsgi_app:app"]),
        ("gunicorn sync", [os.path.join(venv, "gunicorn"), "-w", "1", "-k", "sync", "-b", f"127.0.0.1:{p}", "wsgi_app:app"]),
        ("gunicorn gthread", [os.path.join(venv, "gunicorn"), "-w", "1", "-k", "gthread", "--threads", "4", "-b", f"127.0.0.1:{p}", "wsgi_app:app"]),
        ("uvicorn", [os.path.join(venv, "uvicorn"), "--port", str(p), "--log-level", "warning", "wsgi_app:asgi"]),
    ]


def stall(base):
    """p50 under keep-alive load: each Python server direct, through forkyard and
    through nginx."""
    out = {}
    for i, (name, argv) in enumerate(stall_servers(base)):
        bp = base + i * 10
        argv = [a.replace(str(base), str(bp)) for a in argv]
        if not os.path.exists(argv[0]):
            print(f"  stall: {name} is not installed ({argv[0]}); run make bench (it makes target/venv)")
            continue
        start(argv, cwd=os.path.join(ROOT, "bench"))
        wait_http(bp)
        fy = forkyard(bp + 2, 1, [bp])
        ng = nginx_proxy(bp + 4, 1, [bp])
        row = {}
        for target, url in (("direct", f"http://127.0.0.1:{bp}/"), ("forkyard", f"http://127.0.0.1:{bp + 2}/"),
                            ("nginx", f"http://127.0.0.1:{bp + 4}/")):
            subprocess.run(["wrk", "-t1", "-c8", "-d1s", url], capture_output=True)
            p50s, rpss = [], []
            for _ in range(3):
                out_wrk = subprocess.run(["wrk", "-t1", "-c8", f"-d{SECONDS}s", "--latency", url],
                                         capture_output=True, text=True).stdout
                m = re.search(r"^\s+50%\s+(\S+)", out_wrk, re.M)
                r = re.search(r"Requests/sec:\s+([\d.]+)", out_wrk)
                if m and r:
                    p50s.append(to_ms(m.group(1)))
                    rpss.append(float(r.group(1)))
            row[target] = {"p50": statistics.median(p50s) if p50s else None,
                           "rps": statistics.median(rpss) if rpss else None}
            print(f"[stall] {name:16s} {target:8s} p50 {fmt(row[target]['p50'], '.2f')} ms  {fmt(row[target]['rps'], '.0f')} req/s", flush=True)
        out[name] = row
        stop_all()
    return out


def open_idle(port_, n):
    """n keep-alive connections, each after one GET answered; returns the sockets."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port_), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
        while len(body) < length:
            body += s.recv(4096)
        socks.append(s)
    return socks


def idle(base):
    """RSS growth per idle keep-alive connection of each proxy."""
    b = [base, base + 1]
    for bp in b:
        nginx_backend(bp)
    targets = {
        "forkyard 1 thread": lambda p: forkyard(p, 1, b),
        "nginx 1 worker": lambda p: nginx_proxy(p, 1, b),
        "haproxy 1 thread": lambda p: haproxy(p, 1, b),
    }
    for variant in os.environ.get("VARIANTS", "").split():
        vname, vpath = variant.split("=", 1)
        targets[f"variant {vname}"] = lambda p, vpath=vpath: forkyard(p, 1, b, vpath)
    out = {}
    for i, (name, make) in enumerate(targets.items()):
        lp = base + 10 + i * 5
        proc = make(lp)
        # Warm: the first connections also size pools and buffers.
        warm = open_idle(lp, 50)
        for s in warm:
            s.close()
        time.sleep(1)
        pids = children(proc.pid)
        before = rss_kib(pids)
        socks = open_idle(lp, IDLE_CONNS)
        time.sleep(2)
        after = rss_kib(children(proc.pid))
        for s in socks:
            s.close()
        out[name] = {"before_kib": before, "after_kib": after, "per_conn_kib": (after - before) / IDLE_CONNS}
        print(f"[idle] {name:18s} {before} -> {after} KiB: {(after - before) / IDLE_CONNS:.2f} KiB per connection", flush=True)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
        PROCS.remove(proc)
    stop_all()
    return out


def fmt(v, spec):
    return "–" if v is None else format(v, spec)


def report(results, load_before, load_after, meta=None):
    v = versions()
    meta = meta or {"date": datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
                    "rounds": ROUNDS, "seconds": SECONDS, "conns": CONNS}
    lines = [
        "# forkyard benchmark results",
        "",
        f"Written by `make bench` (bench/bench.py) on {meta['date']}.",
        "",
        f"- Machine: {v['machine']}; load average before/after: "
        f"{load_before[0]:.2f}/{load_after[0]:.2f} (other work may share the machine).",
        f"- Versions: {v['forkyard']}; {v['nginx']}; {v['haproxy']}; {v['wrk']}.",
        f"- Load: `wrk -t1 -c{meta['conns']} -d{meta['seconds']}s`, {meta['rounds']} interleaved rounds (every target once per round); medians shown.",
        "- CPU µs/request: utime+stime of all the proxy's processes from /proc (10 ms ticks) ÷ requests served. RSS: after the run, all processes.",
        "- Backends are shared by every target: two nginx `return 200` instances (static) or two copies of bench/app.py (python).",
        "- `plain Pingora` is bench/plain_pingora.rs: a straightforward Pingora 0.9 proxy with default settings (round robin, nothing else), for reference.",
        "- Profile, optimisation steps and their effects: [PROFILE.md](PROFILE.md).",
        "",
    ]
    for scenario, res in results.items():
        if scenario == "_stall":
            lines += ["## Python workers that write head and body separately (the delayed-ACK stall)", "",
                      f"`wrk -t1 -c8 -d{meta['seconds']}s`, keep-alive, median of 3 runs each; one worker process each "
                      "(bench/app.py for http.server; bench/wsgi_app.py for the others).", "",
                      "| worker | direct p50 ms | forkyard p50 ms | nginx p50 ms | direct req/s | forkyard req/s | nginx req/s |",
                      "|---|---:|---:|---:|---:|---:|---:|"]
            for name, row in res.items():
                d, f, n = row.get("direct", {}), row.get("forkyard", {}), row.get("nginx", {})
                lines.append(f"| {name} | {fmt(d.get('p50'), '.2f')} | {fmt(f.get('p50'), '.2f')} | {fmt(n.get('p50'), '.2f')} | "
                             f"{fmt(d.get('rps'), '.0f')} | {fmt(f.get('rps'), '.0f')} | {fmt(n.get('rps'), '.0f')} |")
            stalled = [n for n, r in res.items() if (r.get("forkyard", {}).get("p50") or 0) >= 35]
            lines += ["", f"Target (no 40 ms stall through forkyard): {'met' if not stalled else '**missed** for ' + ', '.join(stalled)}", ""]
            continue
        if scenario == "_idle":
            lines += ["## Idle keep-alive client connections", "",
                      f"{IDLE_CONNS} client connections, one `GET /` each, then idle; RSS of all the proxy's processes before and after.", "",
                      "| proxy | RSS before KiB | RSS after KiB | KiB per idle connection |", "|---|---:|---:|---:|"]
            for name, row in res.items():
                lines.append(f"| {name} | {row['before_kib']} | {row['after_kib']} | {row['per_conn_kib']:.2f} |")
            f = res.get("forkyard 1 thread")
            if f:
                ok = f["per_conn_kib"] <= 8
                lines += ["", f"Target (≤ 8 KiB per idle connection): {'met' if ok else '**missed**'} ({f['per_conn_kib']:.2f} KiB)", ""]
            continue
        lines += [f"## {scenario} backends", "",
                  "| target | req/s | p50 ms | p99 ms | proxy CPU µs/req | proxy RSS MiB |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, m in res.items():
            if name.startswith("_"):
                continue
            lines.append(f"| {name} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {fmt(m['cpu_us'], '.1f')} | {fmt(m['rss'], '.1f')} |")
        lines += ["", "| ratio | req/s | p99 | CPU µs/req | RSS |", "|---|---:|---:|---:|---:|"]
        for t in ("1 thread", "2 threads"):
            if f"forkyard {t}" not in res:
                continue
            f = res[f"forkyard {t}"]
            for other in (("nginx 1 worker" if t == "1 thread" else "nginx 2 workers"), f"haproxy {t}"):
                o = res[other]
                lines.append(f"| forkyard {t} / {other} | {f['rps'] / o['rps']:.2f} | {f['p99'] / o['p99']:.2f} | "
                             f"{f['cpu_us'] / o['cpu_us']:.2f} | {f['rss'] / o['rss']:.2f} |")
        if "plain Pingora 1 thread" in res:
            f, o = res["forkyard 1 thread"], res["plain Pingora 1 thread"]
            lines.append(f"| forkyard 1 thread / plain Pingora 1 thread | {f['rps'] / o['rps']:.2f} | {f['p99'] / o['p99']:.2f} | "
                         f"{f['cpu_us'] / o['cpu_us']:.2f} | {f['rss'] / o['rss']:.2f} |")
        if "forkyard 2 threads" in res:
            for who, one, two in (("forkyard", "forkyard 1 thread", "forkyard 2 threads"),
                                  ("nginx", "nginx 1 worker", "nginx 2 workers"),
                                  ("haproxy", "haproxy 1 thread", "haproxy 2 threads")):
                lines.append(f"| {who}: 2 threads or workers / 1 (scaling) | {res[two]['rps'] / res[one]['rps']:.2f} | "
                             f"{res[two]['p99'] / res[one]['p99']:.2f} | {res[two]['cpu_us'] / res[one]['cpu_us']:.2f} | |")
        lines.append("")
        f, n = res.get("forkyard 1 thread"), res.get("nginx 1 worker")
        if f and n:
            def verdict(ok):
                return "met" if ok else "**missed**"
            lines += [
                "Targets (1 proxy thread, against nginx):",
                "",
                f"- CPU/request ≤ nginx: {verdict(f['cpu_us'] <= n['cpu_us'])} "
                f"({f['cpu_us']:.1f} vs {n['cpu_us']:.1f} µs, ratio {f['cpu_us'] / n['cpu_us']:.2f})",
                f"- req/s ≥ nginx: {verdict(f['rps'] >= n['rps'])} (ratio {f['rps'] / n['rps']:.2f})",
                f"- p99 ≤ nginx: {verdict(f['p99'] <= n['p99'])} ({f['p99']:.2f} vs {n['p99']:.2f} ms)",
                f"- RSS ≤ 32 MiB: {verdict(max(f['rss'], res.get('forkyard 2 threads', f)['rss']) <= 32)} "
                f"({f['rss']:.1f} MiB at 1 thread, {res.get('forkyard 2 threads', f)['rss']:.1f} MiB at 2)",
                "",
            ]
    path = os.environ.get("RESULTS", os.path.join(ROOT, "bench/RESULTS.md"))
    with open(path, "w") as f:
        f.write("\n".join(lines))
    with open(path.replace(".md", ".json"), "w") as f:
        json.dump({"versions": v, "results": results, "load_before": load_before, "load_after": load_after,
                   "meta": meta}, f, indent=1)
    print("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--report-only":
        # Rewrite RESULTS.md from the JSON of the last run (no measuring).
        with open(sys.argv[2]) as f:
            saved = json.load(f)
        report(saved["results"], tuple(saved.get("load_before", (0, 0, 0))), tuple(saved.get("load_after", (0, 0, 0))),
               saved.get("meta"))
    else:
        main()
