"""The web console at /dashboard, served by the api function: server-rendered pages
(Jinja2, autoescaped) over the same service calls as the /v1 endpoints — never a second
computation — plus a little JavaScript (live tiles, charts, the events behind a line with
their checksum recomputed in the page). Every asset is in this package (air-gapped).

Sessions: a signed, expiring, HttpOnly, SameSite=Strict cookie (Secure with
ABAXUS_CONSOLE_SECURE_COOKIE), a CSRF token in every form that changes something, a strict
Content-Security-Policy with no inline script (core/services/console_sessions.py)."""

from __future__ import annotations

from functions.console.pages import register

__all__ = ["register"]
