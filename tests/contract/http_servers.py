"""Real HTTP servers on loopback for contract tests (werkzeug for WSGI apps, uvicorn for
ASGI ones such as the dev server), each in a thread of the test process."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


@contextmanager
def serve(app: Callable) -> Iterator[str]:
    """Serve a WSGI app on a free loopback port; yields its base URL."""
    holder = {"app": app}
    # late-bound: a test may swap the app after learning the port
    server = make_server(
        "127.0.0.1",
        0,
        lambda e, s: holder["app"](e, s),  # noqa: PLW0108
        threaded=True,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


@contextmanager
def serve_asgi(app: Callable) -> Iterator[str]:
    """Serve an ASGI app (late-bound, as `serve`) with uvicorn on a free loopback port."""
    import uvicorn

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))

    async def asgi(scope, receive, send):  # a coroutine function: what uvicorn serves
        await app(scope, receive, send)

    config = uvicorn.Config(
        asgi, interface="asgi3", lifespan="off", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[listener])), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


@dataclass
class Recorder:
    """A subscriber/sink that answers a scripted list of (status, headers, body) and
    records what it received."""

    answers: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def __call__(self, environ, start_response):
        request = Request(environ)
        self.received.append((dict(request.headers), request.get_data()))
        status, headers, body = self.answers.pop(0) if self.answers else (202, {}, b"")
        return Response(body, status=status, headers=headers)(environ, start_response)
