"""API key bootstrap and the `abaxus` command line against the test database."""

import os
import re
import subprocess
import sys

import pytest

from core.config import reload_settings
from core.domain.errors import ValidationFailed
from core.services import api_keys, runtime
from core.services.caller import SYSTEM

BOOTSTRAP = "abx_bootstrap_secret_for_tests_0123456789"


def _run_cli(*args, **env):
    return subprocess.run(
        [sys.executable, "-m", "functions.cli", *args],
        env={**os.environ, "ABAXUS_LOG_LEVEL": "WARNING", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bootstrap_key_exists_as_admin_and_is_idempotent(db, monkeypatch):
    monkeypatch.setenv("ABAXUS_BOOTSTRAP_KEY", BOOTSTRAP)
    config = reload_settings()
    try:
        assert runtime.ensure_bootstrap_key(config)
        assert runtime.ensure_bootstrap_key(config)
    finally:
        monkeypatch.delenv("ABAXUS_BOOTSTRAP_KEY")
        reload_settings()
    caller = api_keys.authenticate(BOOTSTRAP)
    assert caller.scopes == frozenset({"admin"})
    keys, _ = api_keys.list_keys(cursor=None, limit=100)
    assert [k["name"] for k in keys] == ["bootstrap"]
    # a system that has a key gets no extra dev key
    assert runtime.create_dev_key() is None


def test_a_weak_bootstrap_key_is_refused(db):
    with pytest.raises(ValidationFailed, match="ABAXUS_BOOTSTRAP_KEY"):
        api_keys.ensure_key("short", name="bootstrap", scopes=["admin"])


def test_the_first_dev_key_is_created_once(db):
    created = runtime.create_dev_key()
    assert created is not None and created.key["scopes"] == ["admin"]
    assert runtime.create_dev_key() is None


def test_a_revoked_only_system_gets_a_new_dev_key(db):
    created = api_keys.create_key(SYSTEM, name="old", scopes=["admin"])
    api_keys.revoke_key(SYSTEM, created.key["id"])
    assert runtime.create_dev_key() is not None


def test_cli_keys_create_prints_a_secret_that_authenticates(db):
    result = _run_cli(
        "keys", "create", "--name", "ops", "--scope", "read", "--scope", "events:write"
    )
    assert result.returncode == 0, result.stderr
    secret = re.search(r"secret: (abx_\S+)", result.stdout).group(1)
    assert api_keys.authenticate(secret).scopes == frozenset({"read", "events:write"})


def test_cli_migrate_and_audit_verify(db):
    migrated = _run_cli("migrate", ABAXUS_BOOTSTRAP_KEY=BOOTSTRAP)
    assert migrated.returncode == 0, migrated.stderr
    assert "schema at head" in migrated.stdout
    assert api_keys.authenticate(BOOTSTRAP).scopes == frozenset({"admin"})
    verified = _run_cli("audit", "verify")
    assert verified.returncode == 0
    assert verified.stdout.startswith("ok: 1 audit rows")


def test_cli_refuses_an_unknown_scope(db):
    result = _run_cli("keys", "create", "--name", "x", "--scope", "root")
    assert result.returncode == 2 and "invalid choice" in result.stderr
