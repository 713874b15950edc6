"""Multi-region aggregation over PostgreSQL logical replication (API.md §10), against real
embedded clusters on loopback: a central and two regions, each on its own PostgreSQL and
its own dev server (`abaxus dev --regions`' topology), the central subscribed to both."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from playwright.sync_api import sync_playwright

from core.domain.meters import DIGEST_MODULUS
from core.services import runtime
from functions.regions_dev import Node, Topology
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS

KEY = "abx_regions_e2e_admin_key_0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
EU, US = "eu-west-1", "us-east-1"
SETTLE_SECONDS = 60


def free_ports(count: int) -> int:
    """A first port with `count` free ports from it."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as taken:
                    taken.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise AssertionError("no free block of ports")


def wait_until(condition: Callable[[], Any], what: str, seconds: float = SETTLE_SECONDS) -> Any:
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds}s: {what} (last: {last!r})")


def sql(node: Node, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(node.database_url, autocommit=True) as connection:
        cursor = connection.execute(query, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def api(node: Node, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, node.base_url + path, headers=AUTH, timeout=30, **kwargs)


def ok(response: requests.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


class Regions:
    """The running topology and what the tests do with it."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        assert topology.central is not None
        self.central = topology.central
        self.region = {node.name: node for node in topology.nodes if node.role == "region"}

    def attach(self) -> None:
        for name, node in self.region.items():
            ok(
                api(
                    self.central,
                    "POST",
                    "/v1/regions",
                    json={"region": name, "connection": node.database_url},
                ),
                201,
            )

    def regions(self) -> dict[str, dict[str, Any]]:
        return {r["region"]: r for r in ok(api(self.central, "GET", "/v1/regions"))["data"]}

    def subscription(self, region: str) -> str:
        return f"abaxus_central_from_{region.replace('-', '_')}"

    def receive(self, region: str, enabled: bool) -> None:
        verb = "ENABLE" if enabled else "DISABLE"
        sql(self.central, f"ALTER SUBSCRIPTION {self.subscription(region)} {verb}")

    def folded(self, region: str) -> int:
        return int(self.regions()[region]["events"])

    def wait_folded(self, expected: dict[str, int]) -> None:
        wait_until(
            lambda: all(self.folded(r) == n for r, n in expected.items()),
            f"central folded {expected}",
        )

    def wait_complete_past(self, instant: datetime, *regions: str) -> None:
        def past() -> bool:
            known = self.regions()
            return all(
                known[r]["complete_until"] is not None
                and datetime.fromisoformat(known[r]["complete_until"]) > instant
                for r in regions
            )

        wait_until(past, f"{regions} complete past {instant}")

    def restart_central(self, **env: str) -> None:
        node = self.central
        assert node.process is not None
        node.process.terminate()
        node.process.wait(timeout=30)
        self.topology.nodes.remove(node)
        self.topology.serve(node, {"ABAXUS_REGION": "central", **env})

    def ingest(self, region: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        body = ok(
            api(self.region[region], "POST", "/v1/events/batch", json={"events": events}), 207
        )
        return list(body["results"])

    def one(self, region: str, event: dict[str, Any]) -> requests.Response:
        return api(self.region[region], "POST", "/v1/events", json=event)


METRIC = {
    "key": "api_calls",
    "name": "API calls",
    "unit": "call",
    "aggregation": "sum",
    "effective_from": "2026-01-01T00:00:00Z",
}


def create_metric(central: Node) -> None:
    """The metric every test bills (`api_calls`, a sum), created at a central."""
    ok(api(central, "POST", "/v1/metrics", json=METRIC), 201)


def event(
    customer: str, key: str, value: str, at: datetime, metric: str = "api_calls"
) -> dict[str, Any]:
    return {
        "customer_id": customer,
        "metric_key": metric,
        "value": value,
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "idempotency_key": key,
    }


def start_topology(base: Path, env: dict[str, str]) -> Topology:
    topology = Topology(
        base,
        [EU, US],
        free_ports(3),
        env={
            "ABAXUS_BOOTSTRAP_KEY": KEY,
            "ABAXUS_HEARTBEAT_SECONDS": "0.5",
            "ABAXUS_REGION_STALL_SECONDS": "3",
            "ABAXUS_LOG_LEVEL": "WARNING",
            "ABAXUS_DEV_TICKS": "false",
            "THREADS": "4",
            **env,
        },
        output=(base / "servers.log").open("w"),
    )
    try:
        topology.start(runtime.start_replicating_database)
    except BaseException:
        topology.stop()
        raise
    return topology


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Regions]:
    base = tmp_path_factory.mktemp("regions")
    topology = start_topology(base, {})
    try:
        regions = Regions(topology)
        regions.attach()
        create_metric(regions.central)
        ok(
            api(
                regions.central,
                "POST",
                "/v1/price-plans",
                json={
                    "code": "usage",
                    "name": "Usage",
                    "currency": "USD",
                    "interval": "month",
                    "charges": [
                        {"metric_key": "api_calls", "model": "per_unit", "unit_price": "0.01"}
                    ],
                },
            ),
            201,
        )
        for region in (EU, US):  # the catalog replicates to each region
            wait_until(
                lambda r=region: (
                    api(regions.region[r], "GET", "/v1/metrics/api_calls").status_code == 200
                ),
                f"the metric at {region}",
            )
        yield regions
    finally:
        topology.stop()
        for name in ("central", EU, US):
            runtime.stop_replicating_database(base / name)


def customer(regions: Regions, customer_id: str, *, subscribe: bool = False) -> str | None:
    ok(
        api(
            regions.central,
            "POST",
            "/v1/customers",
            json={
                "id": customer_id,
                "name": customer_id,
                "currency": "USD",
                "billing_provider": "manual",
            },
        ),
        201,
    )
    for region in (EU, US):
        wait_until(
            lambda r=region: (
                api(regions.region[r], "GET", f"/v1/customers/{customer_id}").status_code == 200
            ),
            f"{customer_id} at {region}",
        )
    if not subscribe:
        return None
    created = ok(
        api(
            regions.central,
            "POST",
            "/v1/subscriptions",
            json={
                "customer_id": customer_id,
                "plan_code": "usage",
                "starts_at": "2026-11-01T00:00:00Z",
            },
        ),
        201,
    )
    return str(created["id"])


def exact(
    regions: Regions, customer_id: str, start: datetime, end: datetime, mode: str = "exact"
) -> dict[str, Any]:
    return ok(
        api(
            regions.central,
            "GET",
            "/v1/usage/summary",
            params={
                "customer_id": customer_id,
                "metric_key": "api_calls",
                "from": start.isoformat(),
                "to": end.isoformat(),
                "mode": mode,
            },
        )
    )


def recomputed_checksum(regions: Regions, customer_id: str) -> str:
    """The usage checksum (core/domain/meters.usage_checksum, one meter version) from the
    union of both regions' raw events, one copy per idempotency key."""
    digests: dict[str, int] = {}
    for node in regions.region.values():
        for key, digest in sql(
            node,
            "SELECT idempotency_key, digest FROM events WHERE customer_id = %s",
            (customer_id,),
        ):
            digests[str(key)] = int(digest)
    line = f"1\t{len(digests)}\t{sum(digests.values()) % DIGEST_MODULUS:064x}\n"
    return "sha256:" + hashlib.sha256(line.encode("ascii")).hexdigest()


# -- convergence ------------------------------------------------------------------------------


def test_two_regions_ingesting_concurrently_converge_at_the_central(world: Regions) -> None:
    customer(world, "cust_conv")
    now = datetime.now(UTC).replace(microsecond=0)
    accepted: dict[str, list[Decimal]] = {EU: [], US: []}
    before = {region: world.folded(region) for region in (EU, US)}

    def produce(region: str) -> None:
        for batch in range(8):
            events = [
                event(
                    "cust_conv",
                    f"{region}-{batch}-{i}",
                    f"{(i % 7) + 1}.25",
                    now - timedelta(minutes=batch, seconds=i),
                )
                for i in range(60)
            ]
            for result, sent in zip(world.ingest(region, events), events, strict=True):
                assert result["outcome"] == "accepted", result
                accepted[region].append(Decimal(sent["value"]))

    with ThreadPoolExecutor(max_workers=2) as pool:
        for done in [pool.submit(produce, region) for region in (EU, US)]:
            done.result()
    assert len(accepted[EU]) == len(accepted[US]) == 480

    world.wait_folded({r: before[r] + len(accepted[r]) for r in (EU, US)})
    start, end = now - timedelta(hours=1), now + timedelta(minutes=1)
    summary = exact(world, "cust_conv", start, end)
    assert Decimal(summary["value"]) == sum(accepted[EU]) + sum(accepted[US])
    assert summary["event_count"] == 960
    assert summary["checksum"] == recomputed_checksum(world, "cust_conv")
    realtime = wait_until(
        lambda: (
            (s := exact(world, "cust_conv", start, end, "realtime"))["event_count"] == 960 and s
        ),
        "real-time usage at the central",
    )
    assert Decimal(realtime["value"]) == Decimal(summary["value"])
    assert {r["region"] for r in realtime["regions"]} == {EU, US}
    assert all(r["as_of"] is not None for r in realtime["regions"])
    # the window is still open: never complete
    assert summary["complete"] is False
    # a window both regions have completed is complete
    closed = exact(world, "cust_conv", start, now)
    world.wait_complete_past(now, EU, US)
    closed = exact(world, "cust_conv", start, now)
    assert closed["complete"] is True and closed["regions_lacking"] == []


# -- completeness and the policies ------------------------------------------------------------


def test_a_stalled_region_holds_invoices_under_wait_then_they_issue(world: Regions) -> None:
    subscription = customer(world, "cust_wait", subscribe=True)
    now = datetime.now(UTC)
    before = {r: world.folded(r) for r in (EU, US)}
    world.ingest(
        EU, [event("cust_wait", f"w-eu-{i}", "3", now - timedelta(minutes=10)) for i in range(3)]
    )
    world.ingest(
        US, [event("cust_wait", f"w-us-{i}", "2", now - timedelta(minutes=9)) for i in range(2)]
    )
    world.wait_folded({EU: before[EU] + 3, US: before[US] + 2})

    world.receive(EU, enabled=False)
    try:
        world.ingest(
            EU,
            [
                event("cust_wait", f"w-eu-late-{i}", "5", now - timedelta(minutes=5))
                for i in range(2)
            ],
        )
        time.sleep(2.0)
        period_end = datetime.now(UTC) - timedelta(seconds=1)
        world.wait_complete_past(period_end, US)  # the streaming region has passed it
        stalled = world.regions()[EU]
        assert stalled["status"] == "stalled"
        time.sleep(1.0)
        later = world.regions()[EU]
        assert later["lag_seconds"] > stalled["lag_seconds"]  # a growing lag
        assert world.regions()[US]["status"] == "streaming"
        body = {
            "subscription_id": subscription,
            "period_start": (now - timedelta(hours=1)).isoformat(),
            "period_end": period_end.isoformat(),
        }
        refused = api(world.central, "POST", "/v1/invoices", json=body)
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "region_incomplete"
        assert EU in refused.json()["detail"] and US not in refused.json()["detail"]
        summary = exact(world, "cust_wait", now - timedelta(hours=1), period_end)
        assert summary["complete"] is False and summary["regions_lacking"] == [EU]
    finally:
        world.receive(EU, enabled=True)

    world.wait_complete_past(period_end, EU)
    world.wait_folded({EU: before[EU] + 5})
    draft = ok(api(world.central, "POST", "/v1/invoices", json=body), 201)
    assert draft["complete"] is True and draft["regions_lacking"] == []
    issued = ok(api(world.central, "POST", f"/v1/invoices/{draft['id']}/issue"))
    usage_line = next(line for line in issued["lines"] if line["type"] == "usage")
    assert Decimal(usage_line["quantity"]) == Decimal("23")  # 3x3 + 2x2 + 2x5: every region
    assert Decimal(issued["total"]) == Decimal("0.23")
    assert issued["complete"] is True


def test_bill_available_issues_incomplete_and_late_arrivals_become_adjustments(
    world: Regions,
) -> None:
    world.restart_central(ABAXUS_REGION_POLICY="bill_available")
    try:
        subscription = customer(world, "cust_avail", subscribe=True)
        now = datetime.now(UTC)
        before = {r: world.folded(r) for r in (EU, US)}
        world.ingest(EU, [event("cust_avail", "a-eu-0", "4", now - timedelta(minutes=10))])
        world.ingest(US, [event("cust_avail", "a-us-0", "6", now - timedelta(minutes=10))])
        world.wait_folded({EU: before[EU] + 1, US: before[US] + 1})

        world.receive(EU, enabled=False)
        try:
            # two late copies, each in its own transaction at the region
            for i, value in enumerate(("7", "9")):
                response = world.one(
                    EU, event("cust_avail", f"a-eu-late-{i}", value, now - timedelta(minutes=3))
                )
                assert response.status_code == 202, response.text
            time.sleep(2.0)
            period_end = datetime.now(UTC) - timedelta(seconds=1)
            world.wait_complete_past(period_end, US)  # the streaming region has passed it
            body = {
                "subscription_id": subscription,
                "period_start": (now - timedelta(hours=1)).isoformat(),
                "period_end": period_end.isoformat(),
            }
            draft = ok(api(world.central, "POST", "/v1/invoices", json=body), 201)
            assert draft["complete"] is False and draft["regions_lacking"] == [EU]
            issued = ok(api(world.central, "POST", f"/v1/invoices/{draft['id']}/issue"))
            assert issued["complete"] is False and issued["regions_lacking"] == [EU]
            assert Decimal(issued["total"]) == Decimal("0.10")  # 4 + 6 available
        finally:
            world.receive(EU, enabled=True)

        world.wait_folded({EU: before[EU] + 3})

        def late_usage() -> list[dict[str, Any]]:
            found = ok(
                api(world.central, "GET", "/v1/adjustments", params={"customer_id": "cust_avail"})
            )
            return [a for a in found["data"] if a["kind"] == "late_usage"]

        adjustments = wait_until(
            lambda: (
                (found := late_usage())
                and sum(Decimal(a["amount_delta"]) for a in found) == Decimal("0.16")
                and found
            ),
            "late-usage adjustments for the events that arrived after the issue",
        )
        assert all(a["original_invoice_id"] == issued["id"] for a in adjustments)
        assert sum(Decimal(a["quantity_delta"]) for a in adjustments) == Decimal("16")
        time.sleep(2.0)  # folding again records nothing more: one count per event
        assert late_usage() == adjustments
        invoice = ok(api(world.central, "GET", f"/v1/invoices/{issued['id']}"))
        assert invoice["complete"] is False and Decimal(invoice["total"]) == Decimal("0.10")
    finally:
        world.restart_central()


# -- cross-region duplicates --------------------------------------------------------------


def test_one_key_accepted_in_both_regions_counts_once_whichever_replicates_first(
    world: Regions,
) -> None:
    customer(world, "cust_dup")
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=1), now + timedelta(minutes=1)
    ids: dict[tuple[str, str], str] = {}

    def accept_in_both(key: str, value: str) -> None:
        for region in (EU, US):  # the EU copy is received first: it is the one that counts
            response = world.one(region, event("cust_dup", key, value, now - timedelta(minutes=1)))
            assert response.status_code == 202, response.text
            ids[(key, region)] = response.json()["id"]

    # K1: the US copy replicates first, then the earlier EU copy displaces it
    before = {r: world.folded(r) for r in (EU, US)}
    world.receive(EU, enabled=False)
    world.receive(US, enabled=False)
    try:
        accept_in_both("dup-k1", "7")
        world.receive(US, enabled=True)
        world.wait_folded({US: before[US] + 1})
        assert Decimal(exact(world, "cust_dup", start, end)["value"]) == Decimal("7")
    finally:
        world.receive(US, enabled=True)
        world.receive(EU, enabled=True)
    world.wait_folded({EU: before[EU] + 1})

    # K2: the EU copy replicates first, then the US copy
    world.receive(EU, enabled=False)
    world.receive(US, enabled=False)
    try:
        accept_in_both("dup-k2", "7")
        world.receive(EU, enabled=True)
        world.wait_folded({EU: before[EU] + 2})
    finally:
        world.receive(EU, enabled=True)
        world.receive(US, enabled=True)
    world.wait_folded({US: before[US] + 2})

    summary = exact(world, "cust_dup", start, end)
    assert Decimal(summary["value"]) == Decimal("14") and summary["event_count"] == 2
    assert summary["checksum"] == recomputed_checksum(world, "cust_dup")
    wait_until(  # the displaced copy's rollups are rebuilt by its refold job
        lambda: Decimal(exact(world, "cust_dup", start, end, "realtime")["value"]) == Decimal("14"),
        "real-time usage counts each key once",
    )
    duplicates = [
        d
        for d in ok(api(world.central, "GET", "/v1/regions/duplicates"))["data"]
        if d["customer_id"] == "cust_dup"
    ]
    assert sorted((d["idempotency_key"], d["region"], d["event_id"]) for d in duplicates) == [
        ("dup-k1", US, ids[("dup-k1", US)]),
        ("dup-k2", US, ids[("dup-k2", US)]),
    ]
    for duplicate in duplicates:  # the same winner in both orders: the earlier EU copy
        assert duplicate["counted"] == {
            "region": EU,
            "event_id": ids[(duplicate["idempotency_key"], EU)],
        }


# -- schema changes ---------------------------------------------------------------------------


def test_replication_keeps_running_across_a_migration_in_the_documented_order(
    world: Regions,
) -> None:
    customer(world, "cust_mig")
    now = datetime.now(UTC)
    before = world.folded(EU)
    eu = world.region[EU]
    # 1. the central first: what it receives may now carry the column
    sql(world.central, "ALTER TABLE events ADD COLUMN IF NOT EXISTS migration_note text")
    world.ingest(EU, [event("cust_mig", "mig-1", "1", now)])  # a region on the older revision
    world.wait_folded({EU: before + 1})
    # 2. then the region
    sql(eu, "ALTER TABLE events ADD COLUMN IF NOT EXISTS migration_note text DEFAULT 'v2'")
    world.ingest(EU, [event("cust_mig", "mig-2", "1", now)])
    world.wait_folded({EU: before + 2})
    # 3. then its publication carries the new column
    columns = "id, customer_id, metric_key, value, timestamp, properties, idempotency_key, content_sha256, digest, received_at, region, correction_id, migration_note"
    sql(
        eu,
        f"ALTER PUBLICATION abaxus_events SET TABLE events ({columns}), region_heartbeats (region, beat_at), event_partitions",
    )
    world.ingest(EU, [event("cust_mig", "mig-3", "1", now)])
    world.wait_folded({EU: before + 3})
    notes = dict(
        sql(
            world.central,
            "SELECT idempotency_key, migration_note FROM events WHERE customer_id = 'cust_mig'",
        )
    )
    assert notes == {"mig-1": None, "mig-2": None, "mig-3": "v2"}
    errors = sql(
        world.central,
        "SELECT apply_error_count, sync_error_count FROM pg_stat_subscription_stats WHERE subname = %s",
        (world.subscription(EU),),
    )
    assert errors == [(0, 0)]
    assert world.regions()[EU]["status"] == "streaming"
    assert Decimal(
        exact(world, "cust_mig", now - timedelta(hours=1), now + timedelta(minutes=1))["value"]
    ) == Decimal("3")


# -- the console --------------------------------------------------------------------------


def test_the_central_console_shows_both_regions_converging(world: Regions) -> None:
    """The console's regions page at the central (what `abaxus dev --regions` shows): both
    regions streaming, with the events folded from each, in a real headless Chromium."""
    folded = {r: world.folded(r) for r in (EU, US)}
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(world.central.base_url + "/dashboard")
            page.get_by_label("API key").fill(KEY)
            page.get_by_role("button", name="Log in").click()
            page.goto(world.central.base_url + "/dashboard/regions")
            rows = {
                row.get_attribute("data-region"): row.inner_text()
                for row in page.locator("#regions tbody tr").all()
            }
            assert set(rows) == {EU, US}
            for region, text in rows.items():
                assert "streaming" in text and str(folded[region]) in text, text
            assert "ABAXUS_REGION_POLICY=wait" in page.content()
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "regions-central.png"), full_page=True)
            page.wait_for_timeout(5500)  # the page reloads itself: still there, still live
            assert page.locator("#regions tbody tr").count() == 2
        finally:
            browser.close()
    assert errors == []
