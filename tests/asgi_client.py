"""The Flask test client's calls (`post(path, json=..., data=..., headers=...,
content_type=...)`, `environ_base`, `get_json()`) over an ASGI function — the ingest
function is one — through Starlette's TestClient: the real ASGI application, no server."""

from __future__ import annotations

import json as jsonlib
from typing import Any

from functions_framework import create_app as create_function_app
from starlette.testclient import TestClient


def create_app(*, target: str, source: str) -> AsgiApp:
    """functions-framework's app for `target` (Starlette for an ASGI function)."""
    return AsgiApp(create_function_app(target=target, source=source))


class AsgiApp:
    def __init__(self, app: Any) -> None:
        self.app = app

    def test_client(self) -> AsgiClient:
        return AsgiClient(self.app)


class AsgiResponse:
    def __init__(self, response: Any) -> None:
        self._response = response
        self.status_code: int = response.status_code
        self.headers = response.headers
        self.data: bytes = response.content

    def get_json(self) -> Any:
        return self._response.json()


class AsgiClient:
    def __init__(self, app: Any) -> None:
        self._client = TestClient(app)
        self.environ_base: dict[str, str] = {}  # HTTP_* entries become headers, as in Flask

    def open(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> AsgiResponse:
        sent = {  # names in lower case: a header given here replaces the base's
            name[len("HTTP_") :].replace("_", "-").lower(): value
            for name, value in self.environ_base.items()
            if name.startswith("HTTP_")
        }
        sent.update({name.lower(): value for name, value in (headers or {}).items()})
        if content_type is not None:
            sent["content-type"] = content_type
        content = data.encode() if isinstance(data, str) else data
        if json is not None:
            content = jsonlib.dumps(json, default=str).encode()
            sent.setdefault("content-type", "application/json")
        return AsgiResponse(self._client.request(method, path, content=content, headers=sent))

    def post(self, path: str, **kwargs: Any) -> AsgiResponse:
        return self.open("POST", path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> AsgiResponse:
        return self.open("GET", path, **kwargs)
