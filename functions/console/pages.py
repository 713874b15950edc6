"""The console's pages (API.md §9): each calls the same service as its /v1 endpoint and
renders it; nothing here computes a figure of its own."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

from core.config import settings
from core.domain import documents, errors
from core.domain.canonical import rfc3339
from core.services import (
    audit,
    console_sessions,
    corrections,
    dead_letters,
    event_explorer,
    pricing,
    quarantine,
    stats,
)
from core.services import regions as region_service
from core.services import usage as usage_service
from core.services.catalog import coupons, customers, metrics, subscriptions
from core.services.console_sessions import Session
from core.services.invoicing import views as invoices
from core.services.reconciliation import period_parity
from functions.console import web
from functions.http import FunctionApp, Reply, Request

LINE_EVENTS_SHOWN_MAX = 5000


def register(app: FunctionApp) -> None:
    """The console's routes on the api function (HTML pages: session-authenticated, form
    bodies, not part of the API document)."""
    pages = [
        ("/dashboard", "GET", overview, False),
        ("/dashboard/live.json", "GET", live, False),
        ("/dashboard/customers", "GET", customer_list, False),
        ("/dashboard/customers/<customer_id>", "GET", customer, False),
        ("/dashboard/customers/<customer_id>/parity", "GET", parity, False),
        ("/dashboard/invoices/<invoice_id>", "GET", invoice, False),
        (
            "/dashboard/invoices/<invoice_id>/lines/<int:line>/events.json",
            "GET",
            line_events,
            False,
        ),
        ("/dashboard/events", "GET", events, False),
        ("/dashboard/metrics", "GET", metric_list, False),
        ("/dashboard/metrics/<key>", "GET", metric, False),
        ("/dashboard/metrics/<key>/release", "POST", release, True),
        ("/dashboard/coupons", "GET", coupon_list, False),
        ("/dashboard/corrections", "GET", correction_list, False),
        ("/dashboard/corrections/<correction_id>", "GET", correction, False),
        ("/dashboard/corrections/<correction_id>/apply", "POST", apply_correction, True),
        ("/dashboard/corrections/<correction_id>/revert", "POST", revert_correction, True),
        ("/dashboard/dead-letters", "GET", dead_letter_list, False),
        ("/dashboard/dead-letters/<int:letter_id>/redeliver", "POST", redeliver, True),
        ("/dashboard/audit", "GET", audit_log, False),
        ("/dashboard/regions", "GET", regions, False),
        ("/dashboard/logout", "POST", logout, True),
    ]
    for rule, method, handler, changes in pages:
        app.route(rule, [method], scope=None, page=True)(web.page(handler, changes=changes))
    app.route("/dashboard/login", ["POST"], scope=None, page=True)(login)
    app.route("/dashboard/static/<path:asset>", ["GET"], scope=None, page=True)(web.static_file)


def login(request: Request) -> Reply:
    """Start a session with a read or admin API key."""
    secret = web.form(request).get("api_key", "")
    try:
        session, cookie = console_sessions.log_in(secret, request.request_id)
    except (errors.Unauthenticated, errors.Forbidden) as error:
        status = 403 if isinstance(error, errors.Forbidden) else 401
        return web.render(
            "login.html.j2", status=status, session=None, active="", error=error.detail
        )
    del session
    return web.redirect("/dashboard", **{"Set-Cookie": web.session_cookie(cookie)})


def logout(request: Request, session: Session) -> Reply:
    return web.redirect("/dashboard", **{"Set-Cookie": web.cleared_cookie()})


def _tiles(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """The four tiles, formatted once, here: the page and its live refresh show these."""

    def tile(key: str, label: str, figure: dict[str, Any], shown: Any) -> dict[str, Any]:
        change = figure["change"]
        return {
            "key": key,
            "label": label,
            "value": shown(figure["value"]),
            "previous": shown(figure["previous"]),
            "change": "no change to compare" if change is None else f"{change * 100:+.1f} %",
            "direction": "flat" if not change else ("up" if change > 0 else "down"),
        }

    revenue = figures["period_revenue"]["by_currency"]
    currency = next(iter(revenue), None)
    money = (
        revenue[currency]
        if currency
        else {"value": Decimal(0), "previous": Decimal(0), "change": None}
    )
    return [
        tile("events_ingested", "Events ingested", figures["events_ingested"], web._number),
        tile("active_subscriptions", "Subscriptions", figures["active_subscriptions"], web._number),
        tile(
            "period_revenue",
            "Period revenue" + (f" ({currency})" if currency else ""),
            money,
            lambda value: documents.format_amount(value, currency or "USD"),
        ),
        tile(
            "ingest_latency_p95_ms",
            "P95 latency",
            figures["ingest_latency_p95_ms"],
            lambda value: "—" if value is None else f"{value} ms",
        ),
    ]


def overview(request: Request, session: Session) -> Reply:
    figures = stats.overview()
    window = figures["window"]
    daily = stats.daily(start=window["start"], end=window["end"])
    currencies = sorted({row["currency"] for row in daily["revenue"]})
    currency = currencies[0] if currencies else None
    days = _days(window["start"], min(window["end"], web.now()))
    events_by_day = {row["day"]: row["events"] for row in daily["events"]}
    revenue_by_day = {
        row["day"]: row["total"] for row in daily["revenue"] if row["currency"] == currency
    }
    chart = {
        "events": {
            "days": [day.timestamp() for day in days],
            "values": [events_by_day.get(day, 0) for day in days],
        },
        "revenue": {
            "days": [day.timestamp() for day in days],
            # a chart coordinate, never money on a money path (the tiles show the amounts)
            "values": [float(revenue_by_day.get(day, Decimal(0))) for day in days],
        },
    }
    return web.render(
        "overview.html.j2",
        session=session,
        active="Overview",
        stats=figures,
        tiles=_tiles(figures),
        revenue_basis=stats.REVENUE_BASIS,
        chart_data=chart,
        chart_currency=currency,
        base_url=request.raw.host_url.rstrip("/"),
        now_text=rfc3339(web.now().replace(microsecond=0)),
    )


def _days(start: datetime, end: datetime) -> list[datetime]:
    """Every UTC day of the window up to now (a chart shows the empty days too)."""
    first = start.replace(hour=0, minute=0, second=0, microsecond=0)
    count = max(1, min(400, (end - first).days + 1))
    return [first + timedelta(days=n) for n in range(count)]


def live(request: Request, session: Session) -> Reply:
    """The overview's tiles as JSON, for its live refresh (the same service as /v1/stats)."""
    figures = stats.overview()
    answer = {"tiles": _tiles(figures), "as_of_clock": figures["as_of"].strftime("%H:%M:%S UTC")}
    return Reply(answer, headers=web.page_headers())


def customer_list(request: Request, session: Session) -> Reply:
    query = request.query("q") or None
    found, next_cursor = customers.list_customers(
        cursor=request.query("cursor"), limit=50, search=query
    )
    return web.render(
        "customers.html.j2",
        session=session,
        active="Customers",
        customers=found,
        q=query,
        next_cursor=next_cursor,
    )


def customer(request: Request, session: Session) -> Reply:
    customer_id = request.params["customer_id"]
    found = customers.get_customer(customer_id)
    subscribed, _ = subscriptions.list_subscriptions(
        customer_id=customer_id, cursor=None, limit=100
    )
    usage = []
    for subscription in subscribed:
        period = subscription.get("current_period")
        if period and subscription["status"] == "active":
            usage += usage_service.summaries(
                mode="realtime",
                customer_id=customer_id,
                start=documents.instant(period["start"]),
                end=documents.instant(period["end"]),
            )
    discounts = {s["id"]: coupons.list_discounts(s["id"]) for s in subscribed}
    billed, _ = invoices.list_invoices(customer_id=customer_id, status=None, cursor=None, limit=100)
    adjusted, _ = invoices.list_adjustments(customer_id=customer_id, cursor=None, limit=200)
    return web.render(
        "customer.html.j2",
        session=session,
        active="Customers",
        customer=found,
        subscriptions=subscribed,
        discounts=discounts,
        usage=usage,
        invoices=sorted(billed, key=lambda i: i["period"]["start"], reverse=True),
        adjustments=adjusted,
    )


def parity(request: Request, session: Session) -> Reply:
    report = period_parity(
        customer_id=request.params["customer_id"],
        start=request.required_instant("from"),
        end=request.required_instant("to"),
    )
    return web.render("parity.html.j2", session=session, active="Customers", parity=report)


def invoice(request: Request, session: Session) -> Reply:
    found = invoices.get_invoice(request.params["invoice_id"])
    return web.render(
        "invoice.html.j2",
        session=session,
        active="Customers",
        invoice=found,
        explained=invoices.explain(found["id"]),
    )


def line_events(request: Request, session: Session) -> Reply:
    """Every event behind an invoice line (up to a bound), in the order its checksum is
    taken, for the page to recompute that checksum."""
    found = invoices.get_invoice(request.params["invoice_id"])
    calculation_id = found["calculation_id"]
    if calculation_id is None:
        raise errors.NotFound("this invoice has no usage lines")
    listed: list[dict[str, Any]] = []
    cursor = None
    while True:
        page, cursor = pricing.line_events(
            calculation_id, int(request.params["line"]), cursor=cursor, limit=500
        )
        listed += page
        if cursor is None or len(listed) >= LINE_EVENTS_SHOWN_MAX:
            break
    line = next(line for line in found["lines"] if line["line"] == int(request.params["line"]))
    total = int(line.get("event_count") or 0)
    return Reply(
        {
            "events": [
                {
                    "idempotency_key": event["idempotency_key"],
                    "timestamp": event["timestamp"],
                    "value": event["value"],
                    "meter_version": event["meter_version"],
                }
                for event in listed[:LINE_EVENTS_SHOWN_MAX]
            ],
            "total": total,
            "truncated": total > LINE_EVENTS_SHOWN_MAX,
        },
        headers=web.page_headers(),
    )


def events(request: Request, session: Session) -> Reply:
    query: dict[str, str] = {
        name: value
        for name in ("customer_id", "metric_key", "from", "to")
        if (value := request.query(name))
    }
    found: list[dict[str, Any]] = []
    next_cursor = None
    error = None
    if query.get("customer_id"):
        try:
            found, next_cursor = event_explorer.explain(
                customer_id=query["customer_id"],
                metric_key=query.get("metric_key"),
                start=request.instant("from"),
                end=request.instant("to"),
                cursor=request.query("cursor"),
                limit=100,
            )
        except errors.ValidationFailed as failure:
            error = failure.detail
    return web.render(
        "events.html.j2",
        session=session,
        active="Events",
        query=query,
        events=found,
        counted=sum(1 for event in found if event["counted"]),
        next_cursor=next_cursor,
        error=error,
    )


def metric_list(request: Request, session: Session) -> Reply:
    found, _ = metrics.list_metrics(cursor=None, limit=200)
    return web.render(
        "metrics.html.j2",
        session=session,
        active="Metrics",
        metrics=found,
        held=quarantine.held_counts(),
    )


QUARANTINE_SHOWN_MAX = 200


def metric(request: Request, session: Session) -> Reply:
    """A metric's owner, producers, contract per version, and its quarantine."""
    shown = metrics.get_metric(request.params["key"])
    held, next_cursor = quarantine.list_held(
        metric_key=shown["key"],
        customer_id=None,
        released=False,
        cursor=None,
        limit=QUARANTINE_SHOWN_MAX,
    )
    latest_owner = (shown["versions"][-1]["contract"] or {}).get("owner")
    return web.render(
        "metric.html.j2",
        session=session,
        active="Metrics",
        metric=shown,
        held=held,
        more=next_cursor is not None,
        may_release=quarantine.may_release(session.caller, latest_owner),
        notice=request.query("notice"),
    )


def release(request: Request, session: Session) -> Reply:
    """Check the metric's held events again; count those that now pass (owner or admin)."""
    key = request.params["key"]
    done = quarantine.release(session.caller, key, None)
    notice = (
        f"Released {done['released']} event(s); {done['still_quarantined']} still break the "
        f"contract in force; {done['remaining']} held in all."
    )
    return web.redirect(f"/dashboard/metrics/{quote(key)}?" + urlencode({"notice": notice}))


def coupon_list(request: Request, session: Session) -> Reply:
    found, next_cursor = coupons.list_coupons(cursor=request.query("cursor"), limit=100)
    return web.render(
        "coupons.html.j2",
        session=session,
        active="Coupons",
        coupons=found,
        next_cursor=next_cursor,
    )


def correction_list(request: Request, session: Session) -> Reply:
    found, _ = corrections.list_corrections(
        metric_key=None, status_=None, cursor=request.query("cursor"), limit=200
    )
    return web.render(
        "corrections.html.j2", session=session, active="Corrections", corrections=found
    )


def correction(request: Request, session: Session) -> Reply:
    """A correction; while open, its exact preview as a table; apply or revert for the
    metric's owners and admins; the adjustments it recorded."""
    shown = corrections.get(request.params["correction_id"])
    preview = (
        corrections.preview(session.caller, shown["id"]) if shown["status"] == "open" else None
    )
    return web.render(
        "correction.html.j2",
        session=session,
        active="Corrections",
        correction=shown,
        preview=preview,
        adjustments=corrections.adjustments_of(shown["id"]),
        may_change=corrections.may_correct(session.caller, shown["metric_key"]),
        notice=request.query("notice"),
    )


def apply_correction(request: Request, session: Session) -> Reply:
    done = corrections.apply(session.caller, request.params["correction_id"])
    notice = f"Applied: {len(done['adjustments'])} adjustment(s) recorded on issued invoices."
    return web.redirect(
        f"/dashboard/corrections/{quote(done['id'])}?" + urlencode({"notice": notice})
    )


def revert_correction(request: Request, session: Session) -> Reply:
    done = corrections.revert(session.caller, request.params["correction_id"])
    notice = f"Reverted: {len(done['adjustments'])} adjustment(s) the other way."
    return web.redirect(
        f"/dashboard/corrections/{quote(done['id'])}?" + urlencode({"notice": notice})
    )


def dead_letter_list(request: Request, session: Session) -> Reply:
    letters, _ = dead_letters.list_dead_letters(ce_type=None, cursor=None, limit=200)
    return web.render(
        "dead_letters.html.j2",
        session=session,
        active="Dead letters",
        letters=letters,
        notice=request.query("notice"),
    )


def redeliver(request: Request, session: Session) -> Reply:
    """Re-send a dead letter through the bus (admin sessions only)."""
    console_sessions.require_admin(session)
    letter = dead_letters.redeliver(session.caller, int(request.params["letter_id"]))
    notice = f"Re-sent {letter['ce_type']} {letter['ce_id']}."
    return web.redirect("/dashboard/dead-letters?" + urlencode({"notice": notice}))


def audit_log(request: Request, session: Session) -> Reply:
    entries, next_cursor = audit.list_entries(
        entity=None, entity_id=None, cursor=request.query("cursor"), limit=100
    )
    return web.render(
        "audit.html.j2",
        session=session,
        active="Audit log",
        entries=entries,
        next_cursor=next_cursor,
    )


def regions(request: Request, session: Session) -> Reply:
    """What GET /v1/regions answers (regions.list_regions), with the policy in force."""
    config = settings()
    shown = region_service.list_regions() if config.abaxus_role != "region" else []
    duplicates = region_service.count_duplicates() if config.abaxus_role == "central" else 0
    return web.render(
        "regions.html.j2",
        session=session,
        active="Regions",
        region=config.abaxus_region,
        role=config.abaxus_role,
        policy=config.abaxus_region_policy,
        shown=shown,
        duplicates=duplicates,
    )
