"""The app of `make bench-preload`: a read-mostly catalog that holds about 200 MB of
Python objects after import (BENCH_ITEMS items, default 400,000), like an app that
loads reference data or a model at import.

GET /item/<n>  JSON of item n (and the answering pid)
GET /          the same for item 0
"""
import json
import os

ITEMS = int(os.environ.get("BENCH_ITEMS", "400000"))

CATALOG = {
    i: {"id": i, "name": f"item-{i}", "price": i * 0.01, "tags": ["a", f"t{i % 97}"]}
    for i in range(ITEMS)
}


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    try:
        n = int(path.rsplit("/", 1)[1]) % ITEMS if path.startswith("/item/") else 0
    except ValueError:
        n = 0
    item = CATALOG[n]
    body = json.dumps({"pid": os.getpid(), "item": item}).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
