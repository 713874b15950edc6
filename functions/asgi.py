"""WSGI applications answered from an event loop: the ingest function is an ASGI function
whose routes other than grouped single events are the same Flask-based `FunctionApp` as
every other function's, and the dev server serves the other functions beside it.

A request's body is read on the loop, the WSGI application runs in a thread of one pool
per process (`THREADS` of them: requests hold a database connection each, the pool is
`THREADS + 2`), and its buffered answer goes back through the loop. ABAXUS never streams
a response, so the whole body is collected in the thread.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from core.config import settings

Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_pool: ThreadPoolExecutor | None = None
_pool_pid = 0


def pool() -> ThreadPoolExecutor:
    """The process's request threads (made after a fork, never inherited)."""
    global _pool, _pool_pid  # noqa: PLW0603 - one pool per process
    if _pool is None or _pool_pid != os.getpid():
        _pool = ThreadPoolExecutor(settings().threads, thread_name_prefix="wsgi")
        _pool_pid = os.getpid()
    return _pool


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def route_path(scope: Mapping[str, Any]) -> str:
    """The request's path below the app's mount point (`root_path`)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def environ(scope: Mapping[str, Any], body: bytes) -> dict[str, Any]:
    """The WSGI environ of an ASGI HTTP request (PEP 3333): `root_path` is SCRIPT_NAME
    and the rest of the path PATH_INFO, as latin-1 strings of the path's UTF-8 bytes."""
    script_name = scope.get("root_path", "").encode("utf-8").decode("latin-1")
    path = route_path(scope).encode("utf-8").decode("latin-1")
    server = scope.get("server") or ("localhost", 80)
    result: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path,
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    client = scope.get("client")
    if client:
        result["REMOTE_ADDR"] = client[0]
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        key = name if name in {"CONTENT_TYPE", "CONTENT_LENGTH"} else f"HTTP_{name}"
        result[key] = f"{result[key]},{value}" if key in result else value
    return result


def call(app: WsgiApp, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """Run a WSGI application to the end (in a request thread): status, headers, body."""
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        answer["status"], answer["headers"] = int(status.split(" ", 1)[0]), headers
        return answer.setdefault("written", []).append

    chunks = app(environ, start_response)
    try:
        body = b"".join([*answer.get("written", []), *chunks])
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return answer["status"], answer["headers"], body


async def run_wsgi(
    app: WsgiApp, scope: Mapping[str, Any], body: bytes
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A WSGI application's answer to an ASGI HTTP request, run in a request thread:
    status, ASGI headers, body."""
    loop = asyncio.get_running_loop()
    status, headers, content = await loop.run_in_executor(pool(), call, app, environ(scope, body))
    return status, raw_headers(headers, content), content


def raw_headers(headers: list[tuple[str, str]], body: bytes) -> list[tuple[bytes, bytes]]:
    """WSGI headers as ASGI's, with a Content-Length."""
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    if not any(name == b"content-length" for name, _ in raw):
        raw.append((b"content-length", str(len(body)).encode()))
    return raw


async def serve_wsgi(app: WsgiApp, scope: Mapping[str, Any], receive: Receive, send: Send) -> None:
    """Answer an ASGI HTTP request with a WSGI application run in a request thread."""
    status, headers, body = await run_wsgi(app, scope, await read_body(receive))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
