"""Console sessions: a signed, expiring cookie that names the API key a person logged in
with, and a CSRF token for every state-changing form.

The cookie holds the key's id and a random CSRF token, signed (HMAC, itsdangerous) with a
secret kept in PostgreSQL — one per database, so every pod of the api function accepts
every other's sessions — and timestamped: older than ABAXUS_CONSOLE_SESSION_SECONDS, it is
refused. Every request looks the key up again, so revoking a key ends its sessions at once,
and its scopes are the session's (a `read` key's session changes nothing)."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

from core import auth
from core.adapters.postgres import api_keys as key_rows
from core.adapters.postgres import console as rows
from core.adapters.postgres.database import get_database
from core.config import settings
from core.domain.errors import Forbidden, Unauthenticated
from core.services import api_keys
from core.services.caller import Caller

SALT = "abaxus-console-session"
CONSOLE_SCOPES = frozenset({auth.SCOPE_READ, auth.SCOPE_ADMIN})
_secret: str | None = None


@dataclass(frozen=True)
class Session:
    caller: Caller
    csrf: str

    @property
    def admin(self) -> bool:
        return auth.SCOPE_ADMIN in self.caller.scopes


def _serializer() -> URLSafeTimedSerializer:
    global _secret  # noqa: PLW0603 - read once per process, the same in every process
    if _secret is None:
        with get_database().transaction() as connection:
            _secret = rows.signing_secret(connection, secrets.token_urlsafe(48))
    return URLSafeTimedSerializer(_secret, salt=SALT)


def log_in(secret: str, request_id: str | None = None) -> tuple[Session, str]:
    """A new session for the key behind `secret` (read or admin), and its cookie value."""
    caller = api_keys.authenticate(secret.strip(), request_id)
    if not caller.scopes & CONSOLE_SCOPES:
        raise Forbidden(
            "the console needs a key with the read or admin scope", code="insufficient_scope"
        )
    csrf = secrets.token_urlsafe(24)
    cookie = _serializer().dumps({"key": caller.api_key_id, "csrf": csrf})
    return Session(caller, csrf), cookie


def resume(cookie: str | None, request_id: str | None = None) -> Session | None:
    """The session a cookie carries, or None (absent, forged, expired, key revoked)."""
    if not cookie:
        return None
    try:
        data = _serializer().loads(cookie, max_age=settings().abaxus_console_session_seconds)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("key"), str):
        return None
    with get_database().transaction() as connection:
        row = key_rows.get(connection, data["key"])
    if row is None or row["revoked_at"] is not None:
        return None
    caller = Caller(
        row["id"], frozenset(row["scopes"]), request_id, name=row["name"], team=row["team"]
    )
    return Session(caller, str(data["csrf"]))


def check_csrf(session: Session, token: str | None) -> None:
    if not token or not hmac.compare_digest(token, session.csrf):
        raise Forbidden("the form's CSRF token does not match this session", code="csrf_failed")


def require_admin(session: Session) -> None:
    if not session.admin:
        raise Forbidden("this needs an admin session", code="insufficient_scope")


def unauthenticated() -> Unauthenticated:
    return Unauthenticated("log in to the console", code="console_login_required")
