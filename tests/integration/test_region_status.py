"""A central's view of its regions without replication running (API.md §10): the status
and completeness read from the heartbeats it holds, `region.stalled` announced once per
stall over the real bus, and what GET /v1/regions answers in one database (`all`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from core.adapters.postgres.database import get_database
from core.config import reload_settings
from core.services import api_keys, completeness, notify, regions
from core.services.caller import SYSTEM
from tests.contract.http_servers import Recorder, serve
from tests.integration.catalog_client import Api


def _sql(statement: str, **params: Any) -> None:
    with get_database().transaction() as connection:
        connection.execute(text(statement), params)


@pytest.fixture
def central(db, monkeypatch):
    monkeypatch.setenv("ABAXUS_ROLE", "central")
    monkeypatch.setenv("ABAXUS_REGION_STALL_SECONDS", "30")
    reload_settings()
    now = datetime.now(UTC)
    for region in ("eu-west-1", "us-east-1"):
        _sql(
            "INSERT INTO regions (region, subscription, publication, connection) "
            "VALUES (:r, :s, 'abaxus_events', 'host=nowhere')",
            r=region,
            s="abaxus_central_from_" + region.replace("-", "_"),
        )
    # eu-west-1: a heartbeat a second ago; us-east-1: its newest is 5 minutes old
    _sql(
        "INSERT INTO region_heartbeats (region, beat_at, arrived_at) VALUES "
        "('eu-west-1', :fresh, :fresh), ('us-east-1', :old, :old)",
        fresh=now - timedelta(seconds=1),
        old=now - timedelta(minutes=5),
    )
    yield now
    monkeypatch.delenv("ABAXUS_ROLE")
    reload_settings()


def test_a_region_without_heartbeats_is_stalled_and_announced_once(central, monkeypatch):
    now = central
    recorder = Recorder()
    with serve(recorder) as sink:
        monkeypatch.setenv("K_SINK", sink)
        reload_settings()
        monkeypatch.setattr(notify, "_bus", None)
        try:
            # no subscription exists in this database: both read as not receiving (stalled)
            assert sorted(regions.check_regions()) == ["eu-west-1", "us-east-1"]
            assert sorted(regions.check_regions()) == ["eu-west-1", "us-east-1"]  # again
        finally:
            monkeypatch.delenv("K_SINK")
            reload_settings()
            notify._bus = None
    announced = [json.loads(body) for _, body in recorder.received]
    assert sorted(a["region"] for a in announced) == ["eu-west-1", "us-east-1"]  # once each
    us = next(a for a in announced if a["region"] == "us-east-1")
    assert datetime.fromisoformat(us["complete_until"]) < now - timedelta(minutes=4)
    assert us["lag_seconds"] >= 300
    types = {h.get("Ce-Type") or h.get("ce-type") for h, _ in recorder.received}
    assert types == {"dev.abaxus.region.stalled.v1"}


def test_completeness_names_the_region_behind(central):
    now = central
    with get_database().transaction() as connection:
        behind = completeness.completeness(connection, now - timedelta(minutes=1))
        both = completeness.completeness(connection, now - timedelta(minutes=10))
    assert behind.complete is False and behind.lacking == ("us-east-1",)
    assert behind.complete_until is not None
    assert behind.complete_until <= now - timedelta(minutes=5)
    assert both.complete is True and both.lacking == ()
    assert both.complete_until == now - timedelta(minutes=10)


def test_one_database_lists_its_own_region_always_complete(db):
    admin = Api(api_keys.create_key(SYSTEM, name="admin", scopes=["admin"]).secret)
    (local,) = admin.get("/v1/regions")["data"]
    assert local["region"] == "local" and local["status"] == "streaming"
    assert local["lag_seconds"] == 0.0 and local["attached"] is True
    refused = admin.post("/v1/regions", {"region": "eu-west-1", "connection": "host=x"}, expect=421)
    assert refused["code"] == "not_central"


def test_detaching_keeps_what_a_region_sent_and_refuses_to_attach_it_again(central):
    from functions_framework import create_app as create_wsgi_app

    from tests.conftest import PROJECT_ROOT, bearer

    secret = api_keys.create_key(SYSTEM, name="admin", scopes=["admin"]).secret
    api = create_wsgi_app(target="api", source=str(PROJECT_ROOT / "functions" / "main.py"))
    client = api.test_client()
    headers = bearer(secret)
    _sql("INSERT INTO region_counts (region, events) VALUES ('us-east-1', 42)")
    detached = client.delete("/v1/regions/us-east-1", headers=headers)
    assert detached.status_code == 200, detached.get_json()
    body = detached.get_json()
    assert body["status"] == "detached" and body["attached"] is False and body["events"] == 42
    listed = client.get("/v1/regions", headers=headers).get_json()["data"]
    assert [r["region"] for r in listed] == ["eu-west-1"]
    again = client.post(
        "/v1/regions", json={"region": "us-east-1", "connection": "host=x"}, headers=headers
    )
    assert again.status_code == 409 and again.get_json()["code"] == "region_detached"
    unknown = client.delete("/v1/regions/ap-south-1", headers=headers)
    assert unknown.status_code == 404 and unknown.get_json()["code"] == "unknown_region"
    unreachable = client.post(
        "/v1/regions",
        json={"region": "ap-south-1", "connection": "host=/nonexistent dbname=abaxus"},
        headers=headers,
    )
    assert unreachable.status_code == 422 and unreachable.get_json()["code"] == "region_unreachable"
    with get_database().transaction() as connection:
        audited = (
            connection.execute(
                text("SELECT action FROM audit_log WHERE entity = 'region' ORDER BY id")
            )
            .scalars()
            .all()
        )
    assert audited == ["region.detached"]
