"""The shared HTTP plumbing, through functions-framework's own app for each target."""

import hashlib
import json
import threading

import pytest
from functions_framework import create_app
from sqlalchemy import text

from core.adapters.postgres.database import get_database
from core.services import api_keys
from core.services.caller import SYSTEM
from tests.conftest import PROJECT_ROOT, bearer

MAIN = str(PROJECT_ROOT / "functions" / "main.py")
PROBE = str(PROJECT_ROOT / "tests" / "fixtures" / "probe_function.py")


@pytest.fixture
def api(db):
    return create_app(target="api", source=MAIN).test_client()


def _key(scopes):
    return api_keys.create_key(SYSTEM, name="k", scopes=scopes).secret


def _problem(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    body = response.get_json(force=True)
    assert body["status"] == status and body["code"] == code
    assert body["request_id"] == response.headers["X-Request-Id"]
    assert {"type", "title", "detail", "errors"} <= body.keys()
    return body


# -- auth -------------------------------------------------------------------------------


def test_no_key_is_401_with_a_bearer_challenge(api):
    response = api.get("/v1/api-keys")
    _problem(response, 401, "unauthenticated")
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_unknown_key_is_401(api):
    _problem(api.get("/v1/api-keys", headers=bearer("abx_" + "x" * 40)), 401, "unauthenticated")


def test_read_key_cannot_create_keys_and_ingest_key_cannot_read(api):
    _problem(
        api.post(
            "/v1/api-keys", json={"name": "n", "scopes": ["read"]}, headers=bearer(_key(["read"]))
        ),
        403,
        "insufficient_scope",
    )
    _problem(
        api.get("/v1/api-keys", headers=bearer(_key(["events:write"]))), 403, "insufficient_scope"
    )
    assert api.get("/v1/api-keys", headers=bearer(_key(["read"]))).status_code == 200


def test_created_secret_is_shown_once_works_and_revocation_is_immediate(api, admin_secret):
    created = api.post(
        "/v1/api-keys",
        json={"name": "producer-eu", "scopes": ["read"]},
        headers=bearer(admin_secret),
    )
    assert created.status_code == 201
    body = created.get_json()
    secret = body["secret"]
    assert (
        secret.startswith("abx_") and body["prefix"] == secret[:12] and body["scopes"] == ["read"]
    )
    listed = api.get("/v1/api-keys", headers=bearer(secret)).get_json()["data"]
    assert {k["id"] for k in listed} >= {body["id"]}
    assert all("secret" not in k and "secret_sha256" not in k for k in listed)
    revoked = api.delete(f"/v1/api-keys/{body['id']}", headers=bearer(admin_secret))
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"] is not None
    _problem(api.get("/v1/api-keys", headers=bearer(secret)), 401, "api_key_revoked")


def test_revoking_an_unknown_key_is_404(api, admin_secret):
    _problem(api.delete("/v1/api-keys/key_nope", headers=bearer(admin_secret)), 404, "not_found")


def test_key_list_paginates_in_a_stable_order(api, admin_secret):
    for n in range(4):
        api_keys.create_key(SYSTEM, name=f"k{n}", scopes=["read"])
    first = api.get("/v1/api-keys?limit=2", headers=bearer(admin_secret)).get_json()
    second = api.get(
        f"/v1/api-keys?limit=2&cursor={first['next_cursor']}", headers=bearer(admin_secret)
    ).get_json()
    third = api.get(
        f"/v1/api-keys?limit=2&cursor={second['next_cursor']}", headers=bearer(admin_secret)
    ).get_json()
    ids = [k["id"] for page in (first, second, third) for k in page["data"]]
    assert len(ids) == 5 and ids == sorted(ids) and third["next_cursor"] is None


# -- idempotency ---------------------------------------------------------------------------


def _count_keys():
    with get_database().transaction() as connection:
        return connection.execute(text("SELECT count(*) FROM api_keys")).scalar()


def test_replay_returns_the_first_response_and_creates_nothing_new(api, admin_secret):
    headers = {**bearer(admin_secret), "Idempotency-Key": "create-producer-1"}
    payload = {"name": "producer", "scopes": ["events:write"]}
    first = api.post("/v1/api-keys", json=payload, headers=headers)
    again = api.post("/v1/api-keys", json=payload, headers=headers)
    assert first.status_code == again.status_code == 201
    # The secret is shown once: the replay is the first answer without it, and says so.
    assert again.get_json() == {k: v for k, v in first.get_json().items() if k != "secret"}
    assert again.headers["Abaxus-Secret-Redacted"] == "secret"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert _count_keys() == 2  # the admin key and one created key


def test_same_key_with_another_body_is_422(api, admin_secret):
    headers = {**bearer(admin_secret), "Idempotency-Key": "k-1"}
    api.post("/v1/api-keys", json={"name": "a", "scopes": ["read"]}, headers=headers)
    _problem(
        api.post("/v1/api-keys", json={"name": "b", "scopes": ["read"]}, headers=headers),
        422,
        "idempotency_key_reused",
    )
    assert _count_keys() == 2


def test_an_error_answer_is_stored_and_replayed_too(api, admin_secret):
    headers = {**bearer(admin_secret), "Idempotency-Key": "k-invalid"}
    first = api.post("/v1/api-keys", json={"name": "a", "scopes": ["root"]}, headers=headers)
    again = api.post("/v1/api-keys", json={"name": "a", "scopes": ["root"]}, headers=headers)
    _problem(first, 422, "validation_error")
    assert again.status_code == 422 and again.headers["Idempotent-Replayed"] == "true"


def test_while_the_first_request_is_in_flight_a_retry_gets_409(api, admin_secret):
    caller = api_keys.authenticate(admin_secret)
    digest = hashlib.sha256(f"{caller.api_key_id}\x00inflight-1".encode()).digest()
    lock_key = int.from_bytes(digest[:8], "big", signed=True)
    holding, release = threading.Event(), threading.Event()

    def first_request_in_flight():
        with get_database().engine.connect() as connection, connection.begin():
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key})
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=first_request_in_flight)
    thread.start()
    try:
        assert holding.wait(10)
        headers = {**bearer(admin_secret), "Idempotency-Key": "inflight-1"}
        _problem(
            api.post("/v1/api-keys", json={"name": "x", "scopes": ["read"]}, headers=headers),
            409,
            "idempotency_request_in_flight",
        )
    finally:
        release.set()
        thread.join()
    assert _count_keys() == 1


def test_concurrent_requests_with_one_key_create_exactly_once(db, admin_secret):
    app = create_app(target="api", source=MAIN)
    statuses, start = [], threading.Barrier(8)

    def post():
        client = app.test_client()
        start.wait()
        response = client.post(
            "/v1/api-keys",
            json={"name": "race", "scopes": ["read"]},
            headers={**bearer(admin_secret), "Idempotency-Key": "race-1"},
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(statuses) <= {201, 409} and 201 in statuses
    assert _count_keys() == 2


# -- problem+json for bad input -------------------------------------------------------------


def test_malformed_json_is_400(api, admin_secret):
    response = api.post(
        "/v1/api-keys",
        data=b'{"name": ',
        headers={**bearer(admin_secret), "Content-Type": "application/json"},
    )
    _problem(response, 400, "malformed_json")


def test_nan_and_infinity_are_not_numbers_here(api, admin_secret):
    response = api.post(
        "/v1/api-keys",
        data=b'{"name": NaN, "scopes": ["read"]}',
        headers={**bearer(admin_secret), "Content-Type": "application/json"},
    )
    _problem(response, 400, "malformed_json")


def test_wrong_shape_is_422_with_the_location_of_each_problem(api, admin_secret):
    body = _problem(
        api.post(
            "/v1/api-keys", json={"scopes": ["root"], "extra": 1}, headers=bearer(admin_secret)
        ),
        422,
        "validation_error",
    )
    locations = {tuple(error["loc"]) for error in body["errors"]}
    assert {("body", "name"), ("body", "scopes", 0), ("body", "extra")} <= locations


def test_unknown_route_is_404_and_wrong_method_405_with_allow(api, admin_secret):
    _problem(api.get("/v1/nothing-here", headers=bearer(admin_secret)), 404, "route_not_found")
    response = api.put("/v1/api-keys", headers=bearer(admin_secret))
    _problem(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "GET, HEAD, POST"


def test_body_over_one_mebibyte_is_413(api, admin_secret):
    big = json.dumps({"name": "x" * (1024 * 1024), "scopes": ["read"]})
    _problem(
        api.post(
            "/v1/api-keys",
            data=big,
            headers={**bearer(admin_secret), "Content-Type": "application/json"},
        ),
        413,
        "payload_too_large",
    )


def test_a_route_whose_issue_has_not_landed_says_501_honestly(admin_secret):
    client = create_app(target="probe", source=PROBE).test_client()
    body = _problem(client.get("/v1/later", headers=bearer(admin_secret)), 501, "not_implemented")
    assert "not implemented yet" in body["detail"]


def test_an_answer_is_rendered_through_its_model_and_an_undeclared_field_fails_loudly(db):
    client = create_app(target="probe", source=PROBE).test_client()
    assert client.get("/v1/priced").get_data() == b'{"amount": "12.34"}'
    body = _problem(client.get("/v1/priced?extra=1"), 500, "internal_error")
    assert "extra" not in body["detail"]


def test_a_handler_reading_an_undeclared_query_parameter_fails_loudly(db, caplog):
    client = create_app(target="probe", source=PROBE).test_client()
    _problem(client.get("/v1/undeclared?amount=1"), 500, "internal_error")
    record = next(r for r in caplog.records if r.getMessage() == "unhandled error")
    assert "'amount' is read but not declared" in str(record.exc_info[1])


def test_an_unexpected_exception_is_a_500_problem_with_the_request_id_logged(db, caplog):
    client = create_app(target="probe", source=PROBE).test_client()
    response = client.get("/v1/boom", headers={"X-Request-Id": "req-trace-42"})
    body = _problem(response, 500, "internal_error")
    assert body["request_id"] == "req-trace-42"
    assert "a bug" not in body["detail"]  # internals stay in the log
    record = next(r for r in caplog.records if r.getMessage() == "unhandled error")
    assert record.request_id == "req-trace-42" and record.exc_info is not None


def test_request_id_is_echoed_or_made(api):
    assert (
        api.get("/healthz", headers={"X-Request-Id": "abc-123"}).headers["X-Request-Id"]
        == "abc-123"
    )
    made = api.get("/healthz", headers={"X-Request-Id": "bad id with spaces"}).headers[
        "X-Request-Id"
    ]
    assert made.startswith("req_") and len(made) == 36


# -- operational endpoints ------------------------------------------------------------------


def test_health_ready_and_metrics_need_no_key(api):
    assert api.get("/healthz").get_json() == {"status": "ok", "function": "api"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["schema"] == "current"
    api.get("/v1/api-keys")  # a 401 to count
    metrics = api.get("/metrics")
    assert metrics.status_code == 200 and metrics.content_type.startswith("text/plain")
    text_body = metrics.get_data(as_text=True)
    assert (
        'abaxus_http_requests_total{function="api",method="GET",route="/v1/api-keys",status="401"}'
        in text_body
    )
    assert "abaxus_http_request_duration_seconds_bucket" in text_body
