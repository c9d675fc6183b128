#!/usr/bin/env python3
"""The "realistic" benchmark backend: a small Python JSON API (standard library only).

Each request parses the query, builds a response object from a little in-memory
data, and serialises it: a few hundred microseconds of Python per request, like a
thin real handler, with HTTP/1.1 keep-alive. Usage: app.py PORT
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

ITEMS = [{"id": i, "name": "item-%d" % i, "price": round(i * 1.37, 2), "tags": ["a", "b", "c"][: i % 3 + 1]} for i in range(50)]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urlparse(self.path)
        q = parse_qs(url.query)
        limit = int(q.get("limit", ["10"])[0])
        items = [dict(it, total=it["price"] * 2) for it in ITEMS[:limit]]
        body = json.dumps({"path": url.path, "count": len(items), "items": items}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()
