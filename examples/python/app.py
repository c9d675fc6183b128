"""A minimal WSGI app for the Python getting-started guide (docs/getting-started/python.md).

Served by waitress or gunicorn, one process per forkyard worker slot:
    waitress-serve --listen=127.0.0.1:9001 app:app
    gunicorn --bind 127.0.0.1:9001 --workers 1 app:app
"""
import json
import os


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\n"]
    body = json.dumps(
        {
            "hello": "from a Python worker",
            "pool": os.environ.get("FORKYARD_POOL"),
            "worker": os.environ.get("FORKYARD_WORKER"),
            "pid": os.getpid(),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
