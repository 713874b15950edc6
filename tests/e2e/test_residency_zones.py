"""Residency across two zones (API.md §10) with real logical replication: an EU zone and a
US zone, each with its own central, and the regions eu-west-1 and us-east-1. Each region
replicates its own zone's catalog and the other zone's directory of customer homes (ids
and home regions, nothing else); each central subscribes to both regions' publication of
its zone. An EU customer's events are refused by the US region, and no row of an EU
customer ever reaches the US central (and the other way round)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from core.services import runtime
from functions.regions_dev import Node, Topology
from tests.e2e.test_regions import (
    EU,
    KEY,
    US,
    api,
    create_metric,
    event,
    free_ports,
    ok,
    sql,
    wait_until,
)

ZONES = "eu=eu-west-1;us=us-east-1"


class Zones:
    def __init__(self, topology: Topology, nodes: dict[str, Node]) -> None:
        self.topology = topology
        self.node = nodes


@pytest.fixture(scope="module")
def zones(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zones]:
    base = tmp_path_factory.mktemp("zones")
    port = free_ports(4)
    topology = Topology(
        base,
        [],
        port,
        env={
            "ABAXUS_BOOTSTRAP_KEY": KEY,
            "ABAXUS_RESIDENCY_ZONES": ZONES,
            "ABAXUS_HEARTBEAT_SECONDS": "0.5",
            "ABAXUS_LOG_LEVEL": "WARNING",
            "ABAXUS_DEV_TICKS": "false",
            "THREADS": "4",
        },
        output=(base / "servers.log").open("w"),
    )
    names = ["central-eu", "central-us", EU, US]
    try:
        urls = {name: runtime.start_replicating_database(base / name) for name in names}
        nodes = {
            "central-eu": Node("central-eu", "central", port, urls["central-eu"]),
            "central-us": Node("central-us", "central", port + 1, urls["central-us"]),
            EU: Node(EU, "region", port + 2, urls[EU]),
            US: Node(US, "region", port + 3, urls[US]),
        }
        for zone in ("eu", "us"):
            topology.serve(
                nodes[f"central-{zone}"],
                {"ABAXUS_REGION": f"central-{zone}", "ABAXUS_ZONE": zone},
            )
        for region, own, other in ((EU, "eu", "us"), (US, "us", "eu")):
            topology.serve(
                nodes[region],
                {
                    "ABAXUS_REGION": region,
                    "ABAXUS_ENFORCE_RESIDENCY": "true",
                    "ABAXUS_CENTRAL_URL": nodes[f"central-{own}"].base_url,
                    "ABAXUS_CATALOG_CONNECTION": urls[f"central-{own}"],
                    "ABAXUS_DIRECTORY_CONNECTIONS": urls[f"central-{other}"],
                },
            )
        for zone in ("eu", "us"):
            central = nodes[f"central-{zone}"]
            for region in (EU, US):
                ok(
                    api(
                        central,
                        "POST",
                        "/v1/regions",
                        json={"region": region, "connection": urls[region]},
                    ),
                    201,
                )
            create_metric(central)
        yield Zones(topology, nodes)
    finally:
        topology.stop()
        for name in names:
            runtime.stop_replicating_database(base / name)


def homes(node: Node, customer_id: str) -> list[tuple[Any, ...]]:
    return sql(node, "SELECT region FROM customer_homes WHERE customer_id = %s", (customer_id,))


def test_each_zone_keeps_its_customers_events_and_the_other_zone_never_sees_them(
    zones: Zones,
) -> None:
    node = zones.node
    customer = {"currency": "USD", "billing_provider": "manual"}
    # A central keeps its own zone's customers only.
    refused = api(
        node["central-us"],
        "POST",
        "/v1/customers",
        json={"id": "cust_eu", "name": "EU clinic", "region": EU, **customer},
    )
    assert refused.status_code == 421, refused.text
    assert refused.json()["code"] == "wrong_region" and "'eu'" in refused.json()["detail"]
    ok(
        api(
            node["central-eu"],
            "POST",
            "/v1/customers",
            json={"id": "cust_eu", "name": "EU clinic", "region": EU, **customer},
        ),
        201,
    )
    ok(
        api(
            node["central-us"],
            "POST",
            "/v1/customers",
            json={"id": "cust_us", "name": "US clinic", "region": US, **customer},
        ),
        201,
    )
    # Each region learns both homes: its own zone's customer with the catalog, the other
    # zone's from that zone's directory (no name, no contact details).
    for region in (EU, US):
        wait_until(
            lambda r=region: homes(node[r], "cust_eu") == [(EU,)], f"cust_eu home at {region}"
        )
        wait_until(
            lambda r=region: homes(node[r], "cust_us") == [(US,)], f"cust_us home at {region}"
        )
        wait_until(
            lambda r=region: api(node[r], "GET", "/v1/metrics/api_calls").status_code == 200,
            f"the catalog at {region}",
        )
    assert sql(node[US], "SELECT count(*) FROM customers WHERE id = 'cust_eu'") == [(0,)]
    assert sql(node[EU], "SELECT count(*) FROM customers WHERE id = 'cust_us'") == [(0,)]

    now = datetime.now(UTC)
    # The US region refuses the EU customer's event, naming its home region; and back.
    wrong = api(node[US], "POST", "/v1/events", json=event("cust_eu", "eu-at-us", "5", now))
    assert wrong.status_code == 421, wrong.text
    assert wrong.json()["code"] == "wrong_region" and EU in wrong.json()["detail"]
    wrong = api(node[EU], "POST", "/v1/events", json=event("cust_us", "us-at-eu", "5", now))
    assert wrong.status_code == 421 and US in wrong.json()["detail"]
    # Each at home is accepted and reaches its own zone's central.
    for region, customer_id, value in ((EU, "cust_eu", "3"), (US, "cust_us", "4")):
        accepted = api(
            node[region],
            "POST",
            "/v1/events",
            json=event(customer_id, f"{customer_id}-1", value, now),
        )
        assert accepted.status_code == 202, accepted.text

    def usage(central: str, customer_id: str) -> Decimal:
        body = ok(
            api(
                node[central],
                "GET",
                "/v1/usage/summary",
                params={
                    "customer_id": customer_id,
                    "metric_key": "api_calls",
                    "from": (now - timedelta(hours=1)).isoformat(),
                    "to": (now + timedelta(minutes=1)).isoformat(),
                    "mode": "exact",
                },
            )
        )
        return Decimal(body["value"])

    wait_until(lambda: usage("central-eu", "cust_eu") == Decimal("3"), "EU usage at the EU central")
    wait_until(lambda: usage("central-us", "cust_us") == Decimal("4"), "US usage at the US central")
    # Both centrals are streaming from both regions (heartbeats go to every zone's central).
    for central in ("central-eu", "central-us"):
        states = {
            r["region"]: r["status"] for r in ok(api(node[central], "GET", "/v1/regions"))["data"]
        }
        assert states == {EU: "streaming", US: "streaming"}

    # An out-of-zone event the region holds (stored before residency was enforced, say)
    # is published to its own zone's central only: the row filters, not the ingest check.
    sql(
        node[EU],
        "INSERT INTO events (id, customer_id, metric_key, value, timestamp, idempotency_key, "
        "content_sha256, digest, region, ingest_job_id, zone) VALUES ('evt_held_us', 'cust_us', "
        "'api_calls', 6, %s, 'held-us', repeat('0', 64), 1, 'eu-west-1', 0, 'us')",
        (now,),
    )
    wait_until(
        lambda: usage("central-us", "cust_us") == Decimal("10"), "the US central receives it"
    )
    time.sleep(1.0)
    for central, other in (("central-us", "cust_eu"), ("central-eu", "cust_us")):
        for table, column in (
            ("events", "customer_id"),
            ("customers", "id"),
            ("customer_homes", "customer_id"),
            ("region_event_keys", "customer_id"),
        ):
            rows = sql(node[central], f"SELECT count(*) FROM {table} WHERE {column} = %s", (other,))
            assert rows == [(0,)], f"{central} holds {other} in {table}"
