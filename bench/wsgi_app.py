"""A tiny WSGI and ASGI app for the stall benchmark (bench/bench.py, `stall`):
the same small JSON answer from waitress, gunicorn and uvicorn."""
import json

BODY = json.dumps({"message": "hello", "items": list(range(20))}).encode()


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})
