"""Event ingestion through the real `ingest` app, against real PostgreSQL."""

import json
import threading
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import reload_settings
from core.domain.events import parse_event
from core.observability import REGISTRY
from core.services import api_keys
from core.services import ingest as ingestion
from core.services.caller import SYSTEM
from tests.asgi_client import create_app
from tests.conftest import PROJECT_ROOT, bearer, truncate_all
from tests.fixtures.samples import create_metric

MAIN = str(PROJECT_ROOT / "functions" / "main.py")
NOW = datetime.now(UTC).replace(microsecond=0)


def _event(key, value=1, *, customer="cust_acme", metric="api_calls", at=None, **extra):
    return {
        "customer_id": customer,
        "metric_key": metric,
        "value": value,
        "timestamp": (at or NOW - timedelta(minutes=1)).isoformat(),
        "idempotency_key": key,
        **extra,
    }


@pytest.fixture
def ingest(db):
    create_metric("api_calls")
    client = create_app(target="ingest", source=MAIN).test_client()
    client.environ_base.update(
        {
            "HTTP_AUTHORIZATION": "Bearer "
            + api_keys.create_key(SYSTEM, name="producer", scopes=["events:write"]).secret
        }
    )
    return client


def _stored(
    db, sql="SELECT idempotency_key, value::text, customer_id FROM events ORDER BY idempotency_key"
):
    with psycopg.connect(db) as connection:
        return connection.execute(sql).fetchall()


def test_a_single_event_is_accepted_once_then_a_duplicate(ingest, db):
    first = ingest.post("/v1/events", json=_event("k1", "2.5"))
    again = ingest.post("/v1/events", json=_event("k1", "2.5"))
    assert first.status_code == again.status_code == 202
    assert first.get_json()["status"] == "accepted" and again.get_json()["status"] == "duplicate"
    assert first.get_json()["id"] == again.get_json()["id"] and first.get_json()["id"].startswith(
        "evt_"
    )
    assert _stored(db) == [("k1", "2.5000000000", "cust_acme")]


def test_same_key_other_content_is_a_409_and_the_stored_event_is_untouched(ingest, db):
    ingest.post("/v1/events", json=_event("k1", 1))
    conflict = ingest.post("/v1/events", json=_event("k1", 2))
    assert conflict.status_code == 409 and conflict.get_json()["code"] == "idempotency_conflict"
    assert _stored(db) == [("k1", "1.0000000000", "cust_acme")]


def test_invalid_single_events_are_422_with_their_code(ingest, db):
    assert ingest.post("/v1/events", json=_event("k1", "NaN")).get_json()["code"] == "invalid_value"
    unknown = ingest.post("/v1/events", json=_event("k2", metric="no_such_metric"))
    assert unknown.status_code == 422 and unknown.get_json()["code"] == "unknown_metric"
    future = ingest.post(
        "/v1/events", json=_event("k3", at=datetime.now(UTC) + timedelta(minutes=10))
    )
    assert future.get_json()["code"] == "timestamp_in_future"
    assert (
        ingest.post(
            "/v1/events", data=b'{"value": NaN}', content_type="application/json"
        ).status_code
        == 400
    )
    assert _stored(db) == []


def test_a_mixed_batch_answers_in_order_and_stores_only_what_is_valid(ingest, db):
    ingest.post("/v1/events", json=_event("old", 5))
    batch = [
        _event("a", 1),
        _event("bad", "Infinity"),
        _event("old", 5),  # duplicate of a stored event
        _event("old", 6),  # conflicts with it
        _event("b", 2),
        _event("a", 1),  # duplicate within the batch
        _event("b", 3),  # conflict within the batch
        _event("c", metric="archived_or_unknown"),
    ]
    response = ingest.post("/v1/events/batch", json={"events": batch})
    assert response.status_code == 207
    body = response.get_json()
    assert [(r["index"], r["status"], r["outcome"]) for r in body["results"]] == [
        (0, 202, "accepted"),
        (1, 422, "invalid"),
        (2, 200, "duplicate"),
        (3, 409, "conflict"),
        (4, 202, "accepted"),
        (5, 200, "duplicate"),
        (6, 409, "conflict"),
        (7, 422, "invalid"),
    ]
    assert (
        body["results"][1]["code"] == "invalid_value"
        and body["results"][7]["code"] == "unknown_metric"
    )
    assert body["results"][1]["idempotency_key"] == "bad"  # echoed when readable
    assert body["results"][5]["id"] == body["results"][0]["id"]
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 2, 4)
    assert [k for k, _, _ in _stored(db)] == ["a", "b", "old"]
    with psycopg.connect(db) as connection:
        jobs = connection.execute("SELECT queue, kind, payload FROM jobs ORDER BY id").fetchall()
    assert jobs == [("aggregate", "fold", {"events": 1}), ("aggregate", "fold", {"events": 2})]


def test_a_retried_batch_hands_nothing_new_to_aggregation(ingest, db):
    """The hand-off job is enqueued in the statement that stores the events: one job per
    batch with new events, counting them and named on each of them; none for a retry."""
    batch = [_event(f"r{n}") for n in range(3)]
    first = ingest.post("/v1/events/batch", json={"events": batch}).get_json()
    retry = ingest.post("/v1/events/batch", json={"events": batch}).get_json()
    partly = ingest.post("/v1/events/batch", json={"events": [*batch, _event("r3")]}).get_json()
    assert (first["accepted"], retry["accepted"], retry["duplicates"]) == (3, 0, 3)
    assert (partly["accepted"], partly["duplicates"]) == (1, 3)
    with psycopg.connect(db) as connection:
        jobs = connection.execute("SELECT id, payload FROM jobs ORDER BY id").fetchall()
        owners = connection.execute(
            "SELECT idempotency_key, ingest_job_id FROM events ORDER BY idempotency_key"
        ).fetchall()
    assert [payload for _, payload in jobs] == [{"events": 3}, {"events": 1}]
    (first_job, _), (second_job, _) = jobs
    assert owners == [("r0", first_job), ("r1", first_job), ("r2", first_job), ("r3", second_job)]


def test_texts_that_mean_something_to_json_or_sql_are_stored_exactly(ingest, db):
    """The batch reaches PostgreSQL as one JSON text assembled by ABAXUS: a backslash, a
    quote, `\\N`, `\\.`, `\\u0041` as text, a tab, a newline or a carriage return in a
    key or a property is stored as sent, and the stored hashes are the ones parse_event
    took."""
    awkward = [
        "back\\slash",
        "\\N",
        "\\.",
        "tab\there",
        "line\nbreak",
        "cr\rx",
        '"quoted"',
        "it's",
        "\\u0041 is not A",
        "caf\u00e9 \U0001f9fe",
    ]
    at = datetime(2026, 3, 17, 14, 0, 0, 123400, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    batch = [
        _event(
            f"k\\{n}\\N",
            "-0.0000000001" if n % 2 else "12.50",
            at=at if n == 0 else None,
            properties={"nested": {"\\key": text}, "list": [text, "\\\\"]},
        )
        for n, text in enumerate(awkward)
    ]
    body = ingest.post("/v1/events/batch", json={"events": batch}).get_json()
    assert body["accepted"] == len(awkward), body
    with psycopg.connect(db) as connection:
        stored = connection.execute(
            "SELECT idempotency_key, properties, value::text, timestamp, content_sha256, digest "
            "FROM events ORDER BY idempotency_key"
        ).fetchall()
    now = datetime.now(UTC)
    expected = sorted(
        (parse_event(event, now=now) for event in batch), key=lambda e: e.idempotency_key
    )
    assert [row[0] for row in stored] == [e.idempotency_key for e in expected]
    assert [row[1] for row in stored] == [e.properties for e in expected]
    assert [row[2] for row in stored] == [
        "-0.0000000001" if e.value < 0 else "12.5000000000" for e in expected
    ]
    assert [row[3] for row in stored] == [e.timestamp for e in expected]
    assert stored[0][3] == datetime(2026, 3, 17, 8, 30, 0, 123400, tzinfo=UTC)
    assert [(row[4], int(row[5])) for row in stored] == [
        (e.content_sha256, e.digest) for e in expected
    ]
    again = ingest.post("/v1/events/batch", json={"events": batch}).get_json()
    assert (again["accepted"], again["duplicates"]) == (0, len(awkward))


# Any text a producer may send in a property: every character but NUL and lone surrogates.
_ANY_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=8)
_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.decimals(
        allow_nan=False, allow_infinity=False, places=4, min_value=-(10**6), max_value=10**6
    ),
    _ANY_TEXT,
)
_PROPERTIES = st.dictionaries(
    _ANY_TEXT,
    st.one_of(
        _SCALAR, st.lists(_SCALAR, max_size=3), st.dictionaries(_ANY_TEXT, _SCALAR, max_size=3)
    ),
    max_size=4,
)
# Printable characters (what str.isprintable accepts: every category but these, and the
# space), drawn directly: filtering random text would trip Hypothesis's filter health check.
_KEY = st.text(
    st.characters(exclude_categories=["Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"])
    | st.just(" "),
    min_size=1,
    max_size=40,
)
_VALUE = st.one_of(
    st.integers(-(10**9), 10**9),
    st.decimals(
        allow_nan=False, allow_infinity=False, places=10, min_value=-(10**9), max_value=10**9
    ),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        st.tuples(_KEY, _VALUE, _PROPERTIES, st.integers(0, 10**6)),
        min_size=1,
        max_size=6,
        unique_by=lambda fields: fields[0],
    )
)
def test_any_valid_event_is_stored_exactly_as_it_was_parsed(database_url, fields):
    """Whatever characters a key or a property holds, the one JSON text the store statement
    receives brings them to PostgreSQL unchanged: the stored key, value, instant and
    properties are parse_event's, and so are the hashes stored beside them (a resend is a
    duplicate of each)."""
    truncate_all(database_url)
    create_metric("api_calls")
    now = datetime.now(UTC)
    batch = [
        _event(key, str(value), at=now - timedelta(milliseconds=ms), properties=properties)
        for key, value, properties, ms in fields
    ]
    assert {o.outcome for o in ingestion.ingest(batch, now=now)} == {"accepted"}
    with psycopg.connect(database_url) as connection:
        stored = connection.execute(
            "SELECT idempotency_key, value, timestamp, properties::text, content_sha256, "
            "digest FROM events ORDER BY idempotency_key"
        ).fetchall()
    expected = sorted((parse_event(e, now=now) for e in batch), key=lambda e: e.idempotency_key)
    assert [row[0] for row in stored] == [e.idempotency_key for e in expected]
    assert [row[1] for row in stored] == [e.value for e in expected]
    assert [row[2] for row in stored] == [e.timestamp for e in expected]
    # Stored as their canonical JSON (a non-integer number as its exact text): jsonb may
    # reorder keys and spacing, never a character.
    assert [json.loads(row[3]) for row in stored] == [
        json.loads(e.properties_json) for e in expected
    ]
    assert [(row[4], int(row[5])) for row in stored] == [
        (e.content_sha256, e.digest) for e in expected
    ]
    assert {o.outcome for o in ingestion.ingest(batch, now=now)} == {"duplicate"}


def test_batch_size_limits_500_is_fine_501_is_413(ingest, db):
    ok = ingest.post("/v1/events/batch", json={"events": [_event(f"e{n}") for n in range(500)]})
    assert ok.status_code == 207 and ok.get_json()["accepted"] == 500
    too_many = ingest.post(
        "/v1/events/batch", json={"events": [_event(f"f{n}") for n in range(501)]}
    )
    assert too_many.status_code == 413 and too_many.get_json()["code"] == "batch_too_large"
    assert ingest.post("/v1/events/batch", json={"events": []}).get_json()["code"] == "empty_batch"
    assert ingest.post("/v1/events/batch", json=[_event("x")]).status_code == 422
    assert len(_stored(db)) == 500


def test_32_threads_posting_one_key_store_it_once(ingest, db):
    app = create_app(target="ingest", source=MAIN)
    secret = api_keys.create_key(SYSTEM, name="p2", scopes=["events:write"]).secret
    start, statuses = threading.Barrier(32), []

    def post():
        client = app.test_client()
        start.wait()
        response = client.post("/v1/events", json=_event("race"), headers=bearer(secret))
        statuses.append(
            (response.status_code, response.get_json()["status"], response.get_json()["id"])
        )

    threads = [threading.Thread(target=post) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(s for _, s, _ in statuses) == ["accepted"] + ["duplicate"] * 31
    assert len({event_id for _, _, event_id in statuses}) == 1
    assert len(_stored(db)) == 1


def test_an_ingest_key_can_only_ingest(ingest, db):
    listed = ingest.get("/v1/events?customer_id=cust_acme")
    assert listed.status_code == 403 and listed.get_json()["code"] == "insufficient_scope"
    reader = create_app(target="ingest", source=MAIN).test_client()
    read_key = api_keys.create_key(SYSTEM, name="r", scopes=["read"]).secret
    assert reader.post("/v1/events", json=_event("k"), headers=bearer(read_key)).status_code == 403
    assert reader.post("/v1/events", json=_event("k")).status_code == 401


def test_a_revoked_key_is_refused_at_once_on_the_grouped_single_event_path(ingest, db):
    from tests.integration.catalog_client import Api

    app = create_app(target="ingest", source=MAIN).test_client()
    created = api_keys.create_key(SYSTEM, name="soon-revoked", scopes=["events:write"])
    headers = bearer(created.secret)
    assert app.post("/v1/events", json=_event("before"), headers=headers).status_code == 202
    admin = Api(api_keys.create_key(SYSTEM, name="admin", scopes=["admin"]).secret)
    admin.delete(f"/v1/api-keys/{created.key['id']}")
    refused = app.post("/v1/events", json=_event("after"), headers=headers)
    assert refused.status_code == 401 and refused.get_json()["code"] == "api_key_revoked"
    # With an Idempotency-Key the request is authenticated before its transaction: the same.
    keyed = app.post(
        "/v1/events", json=_event("after2"), headers={**headers, "Idempotency-Key": "r-1"}
    )
    assert keyed.status_code == 401 and keyed.get_json()["code"] == "api_key_revoked"
    assert [key for key, _, _ in _stored(db)] == ["before"]


def test_an_unknown_key_hears_401_before_its_body_is_judged(ingest, db):
    app = create_app(target="ingest", source=MAIN).test_client()
    unknown = {"Authorization": "Bearer abx_" + "x" * 40, "Content-Type": "application/json"}
    malformed = app.post("/v1/events", data=b"{not json", headers=unknown)
    assert malformed.status_code == 401 and malformed.get_json()["code"] == "unauthenticated"
    reader = bearer(api_keys.create_key(SYSTEM, name="r", scopes=["read"]).secret)
    forbidden = app.post("/v1/events", data=b"{not json", headers=reader)
    assert forbidden.status_code == 403 and forbidden.get_json()["code"] == "insufficient_scope"
    valid = ingest.post("/v1/events", data=b"{not json", content_type="application/json")
    assert valid.status_code == 400 and valid.get_json()["code"] == "malformed_json"


def test_concurrent_single_events_with_mixed_keys_get_each_their_own_answer(ingest, db):
    """Groups formed from 48 concurrent requests: each key is judged for its own request."""
    app = create_app(target="ingest", source=MAIN)
    writer = api_keys.create_key(SYSTEM, name="w", scopes=["events:write"]).secret
    reader = api_keys.create_key(SYSTEM, name="r", scopes=["read"]).secret
    revoked = api_keys.create_key(SYSTEM, name="x", scopes=["events:write"])
    api_keys.revoke_key(SYSTEM, revoked.key["id"])
    keys = {"writer": writer, "reader": reader, "revoked": revoked.secret, "unknown": "abx_nope"}
    plan = [(name, f"{name}-{n}") for n in range(12) for name in keys]
    start, answers = threading.Barrier(len(plan)), {}

    def post(name, key):
        client = app.test_client()
        start.wait()
        response = client.post("/v1/events", json=_event(key), headers=bearer(keys[name]))
        answers[key] = (response.status_code, response.get_json().get("code"))

    threads = [threading.Thread(target=post, args=item) for item in plan]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = {
        "writer": (202, None),
        "reader": (403, "insufficient_scope"),
        "revoked": (401, "api_key_revoked"),
        "unknown": (401, "unauthenticated"),
    }
    assert answers == {key: expected[name] for name, key in plan}
    assert [key for key, _, _ in _stored(db)] == sorted(f"writer-{n}" for n in range(12))


def test_listing_events_pages_in_time_order_with_received_at(ingest, db):
    base = NOW - timedelta(days=1)
    ingest.post(
        "/v1/events/batch",
        json={"events": [_event(f"e{n}", n, at=base + timedelta(minutes=n)) for n in range(5)]},
    )
    ingest.post("/v1/events", json=_event("other", customer="cust_other"))
    reader = api_keys.create_key(SYSTEM, name="r", scopes=["read"]).secret
    first = ingest.get(
        "/v1/events?customer_id=cust_acme&limit=3", headers=bearer(reader)
    ).get_json()
    second = ingest.get(
        f"/v1/events?customer_id=cust_acme&limit=3&cursor={first['next_cursor']}",
        headers=bearer(reader),
    ).get_json()
    events = first["data"] + second["data"]
    assert [e["idempotency_key"] for e in events] == ["e0", "e1", "e2", "e3", "e4"]
    assert [e["value"] for e in events] == ["0", "1", "2", "3", "4"]
    assert all(e["received_at"].endswith("Z") and e["region"] == "local" for e in events)
    window = f"&from={(base + timedelta(minutes=1)).isoformat()}&to={(base + timedelta(minutes=3)).isoformat()}".replace(
        "+", "%2B"
    )
    ranged = ingest.get(
        f"/v1/events?customer_id=cust_acme{window}", headers=bearer(reader)
    ).get_json()["data"]
    assert [e["idempotency_key"] for e in ranged] == ["e1", "e2"]
    assert ingest.get("/v1/events", headers=bearer(reader)).get_json()["code"] == "validation_error"


def test_an_unknown_customer_is_stored_as_is(ingest, db):
    assert ingest.post("/v1/events", json=_event("k", customer="cust_not_yet")).status_code == 202
    assert _stored(db)[0][2] == "cust_not_yet"


def test_a_backfill_two_years_back_creates_its_partition(ingest, db):
    old = datetime.now(UTC) - timedelta(days=730)
    assert ingest.post("/v1/events", json=_event("backfill", at=old)).status_code == 202
    partition = f"events_{old.year:04d}_{old.month:02d}"
    with psycopg.connect(db) as connection:
        found = connection.execute(
            "SELECT tableoid::regclass::text FROM events WHERE idempotency_key = 'backfill'"
        ).fetchone()
    assert found == (partition,)


def test_pseudonymized_properties_are_never_stored_in_clear(ingest, db, monkeypatch):
    monkeypatch.setenv("ABAXUS_PSEUDONYMIZE_PROPERTIES", "patient_id,email")
    monkeypatch.setenv("ABAXUS_PSEUDONYM_SECRET", "a-deployment-secret-of-32-characters!")
    reload_settings()
    try:
        response = ingest.post(
            "/v1/events",
            json=_event(
                "phi", properties={"patient_id": "MRN-0042", "email": "jane@x.test", "scan": "mri"}
            ),
        )
        again = ingest.post(
            "/v1/events",
            json=_event(
                "phi", properties={"patient_id": "MRN-0042", "email": "jane@x.test", "scan": "mri"}
            ),
        )
    finally:
        monkeypatch.delenv("ABAXUS_PSEUDONYMIZE_PROPERTIES")
        monkeypatch.delenv("ABAXUS_PSEUDONYM_SECRET")
        reload_settings()
    assert response.status_code == 202 and again.get_json()["status"] == "duplicate"
    with psycopg.connect(db) as connection:
        (properties,) = connection.execute("SELECT properties FROM events").fetchone()
        dump = connection.execute(
            "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM events) t"
        ).fetchone()[0]
        keys_dump = connection.execute(
            "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM event_keys) t"
        ).fetchone()[0]
    assert properties["scan"] == "mri"
    assert properties["patient_id"].startswith("hmac-sha256:") and properties["email"].startswith(
        "hmac-sha256:"
    )
    assert "MRN-0042" not in dump + keys_dump and "jane@x.test" not in dump + keys_dump


def test_pseudonymizing_without_a_secret_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv("ABAXUS_PSEUDONYMIZE_PROPERTIES", "patient_id")
    with pytest.raises(ValueError, match="ABAXUS_PSEUDONYM_SECRET"):
        reload_settings()
    monkeypatch.delenv("ABAXUS_PSEUDONYMIZE_PROPERTIES")
    reload_settings()


# -- CloudEvents from in-cluster services ------------------------------------------------


def _usage(data, event_id="ce-1"):
    return CloudEvent(
        {
            "type": "dev.abaxus.usage.reported.v1",
            "source": "/svc/gateway",
            "id": event_id,
            "datacontenttype": "application/json",
        },
        data,
    )


@pytest.mark.parametrize("mode", [to_binary, to_structured], ids=["binary", "structured"])
def test_usage_reported_one_event_keyed_by_source_and_id_and_redelivery_is_a_duplicate(
    ingest, db, mode
):
    data = {k: v for k, v in _event("unused", "0.25").items() if k != "idempotency_key"}
    headers, body = mode(_usage(data))
    assert ingest.post("/", headers=headers, data=body).status_code == 202
    assert ingest.post("/", headers=headers, data=body).status_code == 202  # redelivered
    assert _stored(db) == [("/svc/gateway/ce-1", "0.2500000000", "cust_acme")]


def test_usage_reported_list_keys_each_event_by_its_index(ingest, db):
    items = [{k: v for k, v in _event("x", n).items() if k != "idempotency_key"} for n in (1, 2)]
    items.append(_event("explicit-key", 3))
    headers, body = to_binary(_usage(items, "ce-list"))
    assert ingest.post("/", headers=headers, data=body).status_code == 202
    assert [k for k, _, _ in _stored(db)] == [
        "/svc/gateway/ce-list/0",
        "/svc/gateway/ce-list/1",
        "explicit-key",
    ]


def test_an_invalid_usage_event_is_a_422_and_stores_nothing(ingest, db):
    items = [_event("good", 1), _event("bad", "NaN")]
    headers, body = to_binary(_usage(items, "ce-bad"))
    response = ingest.post("/", headers=headers, data=body)
    assert response.status_code == 422 and "invalid_value" in response.get_json()["detail"]
    assert _stored(db) == []


def _count(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_grouped_single_event_is_answered_on_the_event_loop_as_its_route_answers(
    ingest, db, monkeypatch
):
    """Single events without an Idempotency-Key are written by the process's group-commit
    thread while the request waits on the event loop. The answer is the one the route
    gives through FunctionApp (here: the same event with an Idempotency-Key): status, body,
    content type, request id; and each request is counted once."""

    grouped = []
    submit = ingestion._single_events.submit

    async def counted(item):
        grouped.append(item.raw_event["idempotency_key"])
        return await submit(item)

    monkeypatch.setattr(ingestion._single_events, "submit", counted)
    answered = {"function": "ingest", "route": "/v1/events", "method": "POST", "status": "202"}
    before = _count("abaxus_http_requests_total", **answered)
    conflicts = _count("abaxus_events_total", outcome="conflict")

    def both(event, request_id):
        on_loop = ingest.post("/v1/events", json=event, headers={"X-Request-Id": request_id})
        keyed = {"X-Request-Id": request_id + "-r", "Idempotency-Key": request_id}
        return on_loop, ingest.post("/v1/events", json=event, headers=keyed)

    on_loop, routed = both(_event("same"), "r-accept")  # accepted, then a duplicate
    assert (on_loop.status_code, routed.status_code) == (202, 202)
    assert on_loop.get_json()["status"] == "accepted" and routed.get_json()["status"] == "duplicate"
    compared = [(on_loop, routed, ("id", "idempotency_key"))]
    compared.append((*both(_event("same", "9"), "r-conflict"), ("status", "code", "title")))
    compared.append((*both(_event("bad", "NaN"), "r-invalid"), ("status", "code", "errors")))
    for on_loop, routed, fields in compared:
        assert on_loop.status_code == routed.status_code
        assert on_loop.headers["content-type"] == routed.headers["content-type"]
        assert on_loop.headers["x-request-id"] + "-r" == routed.headers["x-request-id"]
        assert set(on_loop.get_json()) == set(routed.get_json())
        assert [on_loop.get_json()[f] for f in fields] == [routed.get_json()[f] for f in fields]
    assert compared[1][0].status_code == 409 and compared[2][0].status_code == 422
    assert grouped == ["same", "same", "bad"]  # the keyless ones, through the group commit
    assert _count("abaxus_http_requests_total", **answered) == before + 2
    # once per request: re-running a refused event through the route would count it twice
    assert _count("abaxus_events_total", outcome="conflict") == conflicts + 2
    assert [key for key, _, _ in _stored(db)] == ["same"]
