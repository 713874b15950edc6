"""Real HTTP servers on loopback for contract tests (werkzeug, one thread)."""

from __future__ import annotations

import threading
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
