#!/usr/bin/env python3
"""A small example web app for forkyard: Python standard library only.

forkyard starts one copy per worker slot with --port set to the slot's port, and
sets FORKYARD_POOL, FORKYARD_WORKER and FORKYARD_PORT in the environment.

    GET /         a greeting naming the worker that answered
    GET /healthz  200 "ok" (usable as a ready probe: ready: { http: "/healthz" })
"""
import argparse
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "forkyard-example/1"

    def do_GET(self):
        if self.path == "/healthz":
            self._send(200, "text/plain", b"ok\n")
            return
        body = json.dumps(
            {
                "message": "hello from forkyard's example app",
                "pool": os.environ.get("FORKYARD_POOL"),
                "worker": os.environ.get("FORKYARD_WORKER"),
                "pid": os.getpid(),
                "path": self.path,
                "forwarded_for": self.headers.get("X-Forwarded-For"),
            }
        ).encode() + b"\n"
        self._send(200, "application/json", body)

    def _send(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        # Head and body in one send: end_headers() alone would send the head first,
        # and Nagle's algorithm would then hold the body until the client's ACK
        # (up to 40 ms with delayed ACKs).
        self._headers_buffer.append(b"\r\n" + body)
        self.flush_headers()

    def log_message(self, fmt, *args):
        # One line per request on stderr; forkyard labels it with pool and worker.
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True

    def stop(_signum, _frame):
        # shutdown() blocks until serve_forever returns, so call it from another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print("example app worker %s listening on %s:%d" % (os.environ.get("FORKYARD_WORKER"), args.host, args.port), flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
