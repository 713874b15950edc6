"""What PostgreSQL itself enforces, checked with raw SQL, and the audit chain."""

import threading
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
import sqlalchemy
from sqlalchemy import inspect, text

from core.adapters import queue
from core.adapters.postgres.database import (
    Database,
    driver_rows,
    get_database,
    get_group_database,
    reset_database,
    sqlalchemy_url,
)
from core.adapters.postgres.embedded import create_database, drop_database
from core.adapters.postgres.migrate import head_revision, upgrade_to_head
from core.adapters.postgres.tables import metadata
from core.config import reload_settings
from core.domain.errors import Unavailable
from core.services import api_keys, audit, health
from core.services.caller import SYSTEM
from tests.conftest import _with_database


def _raw(url):
    return psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True)


def _refused(connection, statement):
    with pytest.raises(psycopg.Error) as caught:
        connection.execute(statement)
    assert caught.value.sqlstate == "AB001", caught.value
    return str(caught.value)


def test_the_database_refuses_deleting_api_keys_and_any_change_to_the_audit_log(db):
    api_keys.create_key(SYSTEM, name="k", scopes=["read"])
    with _raw(db) as connection:
        assert "DELETE on api_keys is refused" in _refused(connection, "DELETE FROM api_keys")
        _refused(connection, "TRUNCATE api_keys CASCADE")
        _refused(connection, "DELETE FROM audit_log")
        _refused(connection, "UPDATE audit_log SET actor = 'someone else'")
        _refused(connection, "TRUNCATE audit_log")
        assert connection.execute("SELECT count(*) FROM api_keys").fetchone() == (1,)
        assert connection.execute("SELECT count(*) FROM audit_log").fetchone() == (1,)


def test_every_key_mutation_writes_one_chained_audit_row(db):
    created = api_keys.create_key(
        SYSTEM.__class__("key_admin", frozenset({"admin"}), "req-1"), name="k", scopes=["read"]
    )
    api_keys.revoke_key(SYSTEM, created.key["id"])
    api_keys.revoke_key(SYSTEM, created.key["id"])  # already revoked: no second row
    with get_database().transaction() as connection:
        rows = connection.execute(text("SELECT * FROM audit_log ORDER BY id")).all()
    assert [(r.action, r.entity_id) for r in rows] == [
        ("api_key.created", created.key["id"]),
        ("api_key.revoked", created.key["id"]),
    ]
    assert (rows[0].actor, rows[0].request_id) == ("key_admin", "req-1")
    assert rows[1].prev_sha256 == rows[0].row_sha256
    report = audit.verify()
    assert report.ok and report.rows_checked == 2


def test_audit_verify_names_the_first_row_altered_behind_the_api(db):
    for n in range(3):
        api_keys.create_key(SYSTEM, name=f"k{n}", scopes=["read"])
    with _raw(db) as connection:
        connection.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update")
        connection.execute("UPDATE audit_log SET actor = 'mallory' WHERE id = 2")
        connection.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update")
    report = audit.verify()
    assert not report.ok
    assert report.first_break is not None and report.first_break.row_id == 2


def test_core_table_descriptions_match_the_migrated_schema(db):
    inspector = inspect(get_database().engine)
    for table in metadata.sorted_tables:
        migrated = {column["name"] for column in inspector.get_columns(table.name)}
        assert migrated == set(table.columns.keys()), table.name


def test_concurrent_migrations_do_not_race(admin_url):
    name = "abaxus_test_concurrent_migrate"
    drop_database(admin_url, name)
    create_database(admin_url, name)
    url = _with_database(admin_url, name)
    results, failures = [], []

    def migrate():
        try:
            results.append(upgrade_to_head(url))
        except Exception as error:
            failures.append(error)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and results == [head_revision()] * 3
    drop_database(admin_url, name)


def test_readiness_fails_on_a_database_without_the_schema(admin_url, database_url, monkeypatch):
    name = "abaxus_test_unmigrated"
    drop_database(admin_url, name)
    create_database(admin_url, name)
    monkeypatch.setenv("DATABASE_URL", _with_database(admin_url, name))
    reload_settings()
    reset_database()
    try:
        ready, detail = health.readiness()
        assert not ready and detail["schema"] == "behind" and detail["revision"] is None
    finally:
        monkeypatch.setenv("DATABASE_URL", database_url)
        reload_settings()
        reset_database()
        drop_database(admin_url, name)
    assert health.readiness()[0]


def test_readiness_fails_when_the_database_is_unreachable(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    reload_settings()
    reset_database()
    try:
        ready, detail = health.readiness()
        assert not ready and detail["database"] == "unreachable"
    finally:
        monkeypatch.setenv("DATABASE_URL", database_url)
        reload_settings()
        reset_database()


def test_jsonb_round_trips_decimals_without_floats(db):
    with get_database().transaction() as connection:
        job_id = queue.enqueue(connection, "t", "k", {"amount": Decimal("0.1000000001")})
        payload = connection.execute(
            text("SELECT payload FROM jobs WHERE id = :i"), {"i": job_id}
        ).scalar()
    assert payload == {"amount": "0.1000000001"}


def test_events_stored_before_digests_get_the_same_digest_ingestion_computes(admin_url):
    """Revision 0005 computes, in SQL, the digests of events stored before it; they must
    equal what ingestion computes in Python, or old events would break checksums."""
    from alembic import command

    from core.adapters.postgres.migrate import alembic_config
    from core.domain.meters import event_digest

    name = "abaxus_test_digest_backfill"
    drop_database(admin_url, name)
    create_database(admin_url, name)
    url = _with_database(admin_url, name)
    rows = [
        ("k-1", datetime(2026, 3, 1, 12, 0, tzinfo=UTC), Decimal("1.5000000000")),
        ("ключ-é", datetime(2026, 3, 2, 0, 0, 0, 250000, tzinfo=UTC), Decimal("-0.0000000001")),
        ("k-3", datetime(2026, 3, 3, 23, 59, 59, 5, tzinfo=UTC), Decimal("1200")),
    ]
    try:
        engine = sqlalchemy.create_engine(sqlalchemy_url(url), poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0004")
            connection.commit()
        engine.dispose()
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("SELECT abaxus_ensure_event_partition('2026-03-01')")
            for key, at, value in rows:
                connection.execute(
                    "INSERT INTO events (id, customer_id, metric_key, value, timestamp, "
                    "idempotency_key, content_sha256, region, ingest_job_id) "
                    "VALUES (%s, 'c', 'm', %s, %s, %s, 'x', 'local', 1)",
                    (f"ev_{key}", value, at, key),
                )
        assert upgrade_to_head(url) == head_revision()
        with psycopg.connect(url) as connection:
            stored = dict(
                connection.execute("SELECT idempotency_key, digest FROM events").fetchall()
            )
            # The protection is back on after the backfill.
            with pytest.raises(psycopg.Error) as caught:
                connection.execute("UPDATE events SET region = 'x'")
            assert caught.value.sqlstate == "AB001"
        assert stored == {key: Decimal(event_digest(key, at, value)) for key, at, value in rows}
    finally:
        drop_database(admin_url, name)


def test_a_statement_run_by_psycopg_itself_fails_as_sqlalchemy_would(db):
    """driver_rows (the ingestion hot path's statements) bypasses SQLAlchemy's results, not
    its error handling: a lost connection is Unavailable (503) and the pool replaces it; a
    statement's own error stays a DBAPIError of SQLAlchemy's, and nothing is committed."""
    database = Database(db, pool_size=1, statement_timeout_ms=5000)
    try:
        with database.transaction() as connection:
            assert driver_rows(connection, "SELECT %(n)s::int + 1, 'x'", {"n": 41}) == [(42, "x")]
            pid = driver_rows(connection, "SELECT pg_backend_pid()", {})[0][0]
        with psycopg.connect(db, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", [pid])
        with pytest.raises(Unavailable) as lost, database.transaction() as connection:
            driver_rows(connection, "SELECT 1", {})
        assert lost.value.code == "database_unavailable"
        with database.transaction() as connection:  # the pool's one connection was replaced
            assert driver_rows(connection, "SELECT pg_backend_pid()", {})[0][0] != pid

        with pytest.raises(sqlalchemy.exc.ProgrammingError), database.transaction() as connection:
            connection.exec_driver_sql("INSERT INTO metrics (key) VALUES ('kept_out')")
            driver_rows(connection, "SELECT no_such_column FROM metrics", {})
        with (
            pytest.raises(sqlalchemy.exc.OperationalError) as cancelled,
            database.transaction() as connection,
        ):
            connection.exec_driver_sql("SET LOCAL statement_timeout = 50")
            driver_rows(connection, "SELECT pg_sleep(2)", {})
        assert cancelled.value.orig.sqlstate == "57014"  # a query error, not Unavailable
        with database.transaction() as connection:
            assert driver_rows(connection, "SELECT count(*) FROM metrics", {}) == [(0,)]
    finally:
        database.dispose()


def test_the_group_commit_pool_plans_its_constant_statements_once(db):
    """The group's key lookup was planned anew on every run (custom plans); its pool
    uses generic plans. The main pool, serving every other query, is left to choose."""
    with get_group_database().transaction() as connection:
        assert driver_rows(connection, "SHOW plan_cache_mode", {}) == [("force_generic_plan",)]
    with get_database().transaction() as connection:
        assert driver_rows(connection, "SHOW plan_cache_mode", {}) == [("auto",)]


def test_metrics_with_filters_are_refolded_so_their_excluded_events_are_counted(admin_url):
    """Revision 0016 starts counting the events filters exclude; for events stored before
    it, it enqueues a refold of every metric with filters, from its first version on."""
    from alembic import command

    from core.adapters.postgres.migrate import alembic_config

    name = "abaxus_test_excluded_backfill"
    drop_database(admin_url, name)
    create_database(admin_url, name)
    url = _with_database(admin_url, name)
    try:
        engine = sqlalchemy.create_engine(sqlalchemy_url(url), poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0015")
            connection.commit()
        engine.dispose()
        with psycopg.connect(url, autocommit=True) as connection:
            for key, filters in (("filtered", '{"region": ["eu"]}'), ("plain", "{}")):
                connection.execute("INSERT INTO metrics (key) VALUES (%s)", (key,))
                for version, start in ((1, "2026-02-01T00:00:00Z"), (2, "2026-05-01T00:00:00Z")):
                    connection.execute(
                        "INSERT INTO metric_versions (metric_key, version, name, unit, "
                        "aggregation, filters, effective_from) VALUES (%s, %s, 'n', 'u', 'sum', "
                        "%s, %s)",
                        (key, version, filters if version == 2 else "{}", start),
                    )
        assert upgrade_to_head(url) == head_revision()
        with psycopg.connect(url) as connection:
            jobs = connection.execute(
                "SELECT queue, kind, payload FROM jobs WHERE kind = 'refold'"
            ).fetchall()
        assert [(queue, kind, payload["metric_key"]) for queue, kind, payload in jobs] == [
            ("aggregate", "refold", "filtered")
        ]
        assert datetime.fromisoformat(jobs[0][2]["since"]) == datetime(2026, 2, 1, tzinfo=UTC)
    finally:
        drop_database(admin_url, name)
