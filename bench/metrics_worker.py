#!/usr/bin/env python3
"""A worker for bench/worker_metrics.py: serves GET /metrics with a precomputed
Prometheus text of about 200 series (a counter, a histogram, a gauge and a summary
with label sets, values that differ per worker) on 127.0.0.1:$FORKYARD_PORT, and
"ok" on any other path. Its own speed is not what is measured."""
import os
import socket

SLOT = int(os.environ.get("FORKYARD_WORKER", "0"))
ROUTES = ["/r%d" % i for i in range(12)]


def body():
    lines = []
    lines += ["# HELP bench_requests_total Requests served.", "# TYPE bench_requests_total counter"]
    for r in ROUTES:
        for code in ("200", "404", "500", "503"):
            lines.append('bench_requests_total{route="%s",code="%s"} %d' % (r, code, 1000 + SLOT))
    lines += ["# HELP bench_latency_seconds Latency.", "# TYPE bench_latency_seconds histogram"]
    for r in ROUTES[:6]:
        n = 0
        for le in ("0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf"):
            n += SLOT + 1
            lines.append('bench_latency_seconds_bucket{route="%s",le="%s"} %d' % (r, le, n))
        lines.append('bench_latency_seconds_sum{route="%s"} %f' % (r, n * 0.01))
        lines.append('bench_latency_seconds_count{route="%s"} %d' % (r, n))
    lines += ["# HELP bench_in_flight Requests in flight.", "# TYPE bench_in_flight gauge"]
    for r in ROUTES:
        for kind in ("read", "write", "wait"):
            lines.append('bench_in_flight{route="%s",kind="%s"} %d' % (r, kind, SLOT))
    lines += ["# HELP bench_db_seconds DB time.", "# TYPE bench_db_seconds summary"]
    for r in ROUTES:
        lines.append('bench_db_seconds{route="%s",quantile="0.5"} 0.01' % r)
        lines.append('bench_db_seconds{route="%s",quantile="0.99"} 0.1' % r)
        lines.append('bench_db_seconds_sum{route="%s"} %d' % (r, SLOT))
        lines.append('bench_db_seconds_count{route="%s"} %d' % (r, SLOT))
    lines += ["# HELP bench_info Build.", "# TYPE bench_info gauge", 'bench_info{version="1.2.3"} 1']
    lines += ["# HELP bench_up Up.", "# TYPE bench_up gauge", "bench_up 1"]
    return ("\n".join(lines) + "\n").encode()


BODY = body()
SERIES = sum(1 for l in BODY.decode().splitlines() if l and not l.startswith("#"))


def response(data):
    head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
    return (head % len(data)).encode() + data


METRICS = response(BODY)
OK = response(b"ok\n")


def serve(port):
    """One connection at a time, one request each (forkyard's scrapes and probes
    send `Connection: close`): as little Python as possible per answer."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    while True:
        conn, _ = listener.accept()
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            parts = data.split(b" ", 2)
            conn.sendall(METRICS if len(parts) > 1 and parts[1] == b"/metrics" else OK)
        except OSError:
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    if os.environ.get("PRINT_SERIES"):
        print(SERIES)
    else:
        serve(int(os.environ["FORKYARD_PORT"]))
