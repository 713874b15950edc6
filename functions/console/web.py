"""What every console answer shares: the templates and their filters, the security
headers, the session around a page, the vendored static files, form bodies."""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2
from werkzeug.security import safe_join

from core.config import settings
from core.domain import documents, errors
from core.domain.canonical import decimal_text, rfc3339
from core.services import console_sessions
from core.services.console_sessions import Session
from functions.http import Reply, Request, status_of

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
COOKIE = "abaxus_session"
HTML = "text/html; charset=utf-8"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
Page = Callable[[Request, Session], Reply]


@cache
def asset_version(name: str) -> str:
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]


def static_url(name: str) -> str:
    """A content-addressed URL: cached for a year, a new version is a new URL."""
    return f"/dashboard/static/{name}?v={asset_version(name)}"


def _instant(value: Any) -> datetime:
    return documents.instant(value)


def _number(value: Any) -> str:
    if value is None:
        return "—"
    number = Decimal(str(value))
    text = decimal_text(number)
    whole, _, fraction = text.partition(".")
    sign = "-" if whole.startswith("-") else ""
    grouped = f"{int(whole.lstrip('-')):,}"
    return sign + grouped + (f".{fraction}" if fraction else "")


def _last_day(value: Any) -> str:
    return documents.format_day((_instant(value) - timedelta(microseconds=1)).date())


ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
ENVIRONMENT.globals["static"] = static_url
ENVIRONMENT.filters.update(
    {
        "day": lambda value: documents.format_day(_instant(value).date()),
        "last_day": _last_day,
        "clock": lambda value: _instant(value).strftime("%H:%M:%S UTC"),
        "clock_day": lambda value: _instant(value).strftime("%Y-%m-%d %H:%M UTC"),
        "iso": lambda value: rfc3339(_instant(value)),
        "money": lambda value, currency: documents.format_amount(value, currency) + f" {currency}",
        "number": _number,
    }
)


def render(template: str, status: int = 200, **context: Any) -> Reply:
    html = ENVIRONMENT.get_template(template).render(**context)
    return Reply(html, status=status, content_type=HTML, headers=page_headers())


def page_headers() -> dict[str, str]:
    return {**SECURITY_HEADERS, "Cache-Control": "no-store"}


def session_cookie(value: str) -> str:
    seconds = settings().abaxus_console_session_seconds
    secure = "; Secure" if settings().abaxus_console_secure_cookie else ""
    return (
        f"{COOKIE}={value}; Path=/dashboard; Max-Age={seconds}; HttpOnly; SameSite=Strict{secure}"
    )


def cleared_cookie() -> str:
    secure = "; Secure" if settings().abaxus_console_secure_cookie else ""
    return f"{COOKIE}=; Path=/dashboard; Max-Age=0; HttpOnly; SameSite=Strict{secure}"


def form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (the console's forms), first values."""
    parsed = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in parsed.items()}


def redirect(location: str, **headers: str) -> Reply:
    return Reply(None, status=303, headers={**page_headers(), "Location": location, **headers})


def page(handler: Page, *, changes: bool = False) -> Callable[[Request], Reply]:
    """A console page: its session (none: the login form), its CSRF check when it
    changes something, and its errors as a page of their own with their status."""

    def serve(request: Request) -> Reply:
        session = console_sessions.resume(request.raw.cookies.get(COOKIE), request.request_id)
        if session is None:
            if request.raw.method == "GET" and request.raw.path.rstrip("/") == "/dashboard":
                return render("login.html.j2", session=None, active="", error=None)
            if request.raw.method == "GET" and not request.raw.path.endswith(".json"):
                return redirect("/dashboard")
            return _error(401, "Log in first", "Your session ended: log in again.", None)
        try:
            if changes:
                console_sessions.check_csrf(session, form(request).get("csrf"))
            return handler(request, session)
        except errors.AbaxusError as error:
            return _error(status_of(error), error.title, error.detail, session)

    serve.__name__ = handler.__name__
    serve.__doc__ = handler.__doc__
    return serve


def _error(status: int, title: str, detail: str, session: Session | None) -> Reply:
    return render(
        "error.html.j2",
        status=status,
        session=session,
        active="",
        title=title,
        detail=detail,
        code=status,
    )


def static_file(request: Request) -> Reply:
    """A vendored or console asset, cached for a year (its URL names its content)."""
    name = request.params["asset"]
    path = safe_join(str(STATIC), name)
    if path is None or not Path(path).is_file():
        raise errors.NotFound(f"no asset {name!r}")
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type.endswith("javascript"):
        content_type += "; charset=utf-8"
    return Reply(
        Path(path).read_bytes(),
        content_type=content_type,
        headers={
            **SECURITY_HEADERS,
            "Cache-Control": "public, max-age=31536000, immutable",
        },
    )


def now() -> datetime:
    return datetime.now(UTC)
