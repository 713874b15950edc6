"""API keys: create (secret shown once), list, revoke, authenticate, bootstrap."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from core import auth
from core.adapters.postgres import api_keys as rows
from core.adapters.postgres.database import get_database
from core.domain.errors import (
    AbaxusError,
    FieldError,
    Forbidden,
    NotFound,
    Unauthenticated,
    ValidationFailed,
)
from core.services import audit
from core.services.caller import SYSTEM, Caller
from core.services.listing import paginate

log = logging.getLogger(__name__)

NAME_CHARS_MAX = 200


@dataclass(frozen=True)
class CreatedKey:
    key: dict[str, Any]
    secret: str


def public_view(row: dict[str, Any]) -> dict[str, Any]:
    """A key as the API shows it: never the hash, never the secret."""
    return {
        "id": row["id"],
        "name": row["name"],
        "scopes": list(row["scopes"]),
        "team": row["team"],
        "prefix": row["prefix"],
        "created_at": row["created_at"],
        "revoked_at": row["revoked_at"],
    }


def _validate(name: str, scopes: Sequence[str]) -> list[str]:
    errors: list[FieldError] = []
    if not name.strip() or len(name) > NAME_CHARS_MAX:
        errors.append(FieldError(("body", "name"), f"1 to {NAME_CHARS_MAX} characters"))
    unknown = [scope for scope in scopes if scope not in auth.SCOPES]
    if not scopes or unknown:
        errors.append(FieldError(("body", "scopes"), f"one or more of {', '.join(auth.SCOPES)}"))
    if errors:
        raise ValidationFailed("invalid API key", errors=errors)
    return sorted(set(scopes))


def create_key(
    caller: Caller,
    *,
    name: str,
    scopes: Sequence[str],
    secret: str | None = None,
    team: str | None = None,
) -> CreatedKey:
    clean_scopes = _validate(name, scopes)
    secret = secret or auth.new_secret()
    with get_database().transaction() as connection:
        row = rows.insert_key(
            connection,
            key_id=auth.new_key_id(),
            name=name.strip(),
            scopes=clean_scopes,
            prefix=auth.lookup_prefix(secret),
            secret_sha256=auth.secret_sha256(secret),
            created_at=datetime.now(UTC),
            team=team,
        )
        view = public_view(row)
        audit.record(
            connection,
            caller,
            action="api_key.created",
            entity="api_key",
            entity_id=row["id"],
            state=view,
        )
    return CreatedKey(view, secret)


def list_keys(*, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    with get_database().transaction() as connection:
        page, next_cursor = paginate(
            lambda after, n: rows.page(connection, after_id=after, limit=n),
            cursor=cursor,
            limit=limit,
            key="id",
        )
    return [public_view(row) for row in page], next_cursor


def revoke_key(caller: Caller, key_id: str) -> dict[str, Any]:
    with get_database().transaction() as connection:
        before = rows.get(connection, key_id)
        if before is None:
            raise NotFound(f"no API key {key_id!r}")
        row = rows.revoke(connection, key_id, datetime.now(UTC))
        assert row is not None
        view = public_view(row)
        if before["revoked_at"] is None:
            audit.record(
                connection,
                caller,
                action="api_key.revoked",
                entity="api_key",
                entity_id=key_id,
                state=view,
            )
    return view


def authenticate(secret: str, request_id: str | None = None) -> Caller:
    """The caller behind a bearer secret; Unauthenticated if unknown or revoked."""
    _check_format(secret)
    with get_database().transaction() as connection:
        candidates = rows.find_by_prefix(connection, auth.lookup_prefix(secret))
    return _match(secret, candidates, request_id)


def authorize_all(
    connection: Connection, secrets: Sequence[str], scope: str
) -> dict[str, Caller | AbaxusError]:
    """Many bearer secrets at once, in the caller's transaction (one statement): for each,
    its caller, or the error its request answers (401 unknown or revoked, 403 without
    `scope`). Group commit authenticates its concurrent requests this way."""
    verdicts: dict[str, Caller | AbaxusError] = {}
    wanted = []
    for secret in set(secrets):
        try:
            _check_format(secret)
            wanted.append(secret)
        except Unauthenticated as error:
            verdicts[secret] = error
    found = rows.find_by_prefixes(connection, sorted({auth.lookup_prefix(s) for s in wanted}))
    by_prefix: dict[str, list[dict[str, Any]]] = {}
    for row in found:
        by_prefix.setdefault(row["prefix"], []).append(row)
    for secret in wanted:
        try:
            caller = _match(secret, by_prefix.get(auth.lookup_prefix(secret), []), None)
        except Unauthenticated as error:
            verdicts[secret] = error
            continue
        verdicts[secret] = scope_error(caller, scope) or caller
    return verdicts


def scope_error(caller: Caller, scope: str) -> Forbidden | None:
    """The 403 a request answers when its key lacks `scope`; None when it has it."""
    if auth.allows(caller.scopes, scope):
        return None
    return Forbidden(f"this API key lacks the {scope!r} scope", code="insufficient_scope")


def _check_format(secret: str) -> None:
    if not secret.startswith(auth.SECRET_PREFIX) or len(secret) > auth.SECRET_CHARS_MAX:
        raise Unauthenticated("unknown API key")


def _match(secret: str, candidates: Sequence[dict[str, Any]], request_id: str | None) -> Caller:
    for row in candidates:
        if auth.secret_matches(secret, row["secret_sha256"]):
            if row["revoked_at"] is not None:
                raise Unauthenticated("API key revoked", code="api_key_revoked")
            return Caller(
                row["id"],
                frozenset(row["scopes"]),
                request_id,
                name=row["name"],
                team=row["team"],
            )
    raise Unauthenticated("unknown API key")


def ensure_key(secret: str, *, name: str, scopes: Sequence[str]) -> dict[str, Any]:
    """Make `secret` exist as a key (ABAXUS_BOOTSTRAP_KEY); idempotent across restarts."""
    if not secret.startswith(auth.SECRET_PREFIX) or len(secret) < 24:
        raise ValidationFailed(
            f"ABAXUS_BOOTSTRAP_KEY must start with {auth.SECRET_PREFIX!r} and be >= 24 characters"
        )
    with get_database().transaction() as connection:
        existing = rows.find_by_hash(connection, auth.secret_sha256(secret))
    if existing is not None:
        return public_view(existing)
    return create_key(SYSTEM, name=name, scopes=scopes, secret=secret).key


def create_first_admin_key(name: str) -> CreatedKey | None:
    """A new admin key if no active key exists at all (first start of a dev system)."""
    with get_database().transaction() as connection:
        if rows.count_active(connection) > 0:
            return None
    return create_key(SYSTEM, name=name, scopes=[auth.SCOPE_ADMIN])
