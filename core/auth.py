"""API key secrets: how they look, how they are stored, which scopes allow what.

A secret is `abx_` + 40 url-safe characters (240 bits). Only its SHA-256 is stored, with
its first 12 characters as an indexed prefix, so a lookup reads one or two rows and the
comparison is constant-time. The secret itself is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SECRET_PREFIX = "abx_"  # noqa: S105 - the public prefix of every secret, not a secret
SECRET_RANDOM_BYTES = 30
LOOKUP_PREFIX_CHARS = 12
SECRET_CHARS_MAX = 200

SCOPE_EVENTS_WRITE = "events:write"
SCOPE_READ = "read"
SCOPE_ADMIN = "admin"
# A new version of a metric (a contract change) and corrections of its usage, for keys of
# the team that owns the metric (API.md §18); admin keys may do both for any metric.
SCOPE_CORRECTIONS_WRITE = "corrections:write"
SCOPES = (SCOPE_EVENTS_WRITE, SCOPE_READ, SCOPE_ADMIN, SCOPE_CORRECTIONS_WRITE)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_RANDOM_BYTES)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def lookup_prefix(secret: str) -> str:
    return secret[:LOOKUP_PREFIX_CHARS]


def secret_matches(secret: str, stored_sha256: str) -> bool:
    return hmac.compare_digest(secret_sha256(secret), stored_sha256)


def allows(granted: frozenset[str] | set[str], needed: str) -> bool:
    """`admin` allows everything; otherwise the exact scope is needed
    (`read` does not allow ingestion, `events:write` allows nothing else)."""
    return SCOPE_ADMIN in granted or needed in granted
