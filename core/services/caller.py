"""Who is asking: the authenticated API key and the request being served."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    api_key_id: str
    scopes: frozenset[str]
    request_id: str | None = None
    name: str | None = None  # the key's name: the producer a contract's `producers` names
    team: str | None = None  # the team the key belongs to: owners of metrics (API.md §18)

    @property
    def actor(self) -> str:
        return self.api_key_id


SYSTEM = Caller(api_key_id="system", scopes=frozenset({"admin"}), request_id=None)
