"""Corrections (API.md §19): backfill without breaking invoices.

A correction is opened for a metric (and a customer, or all) and a window; events are
posted into it (staged: their keys claimed forever, counted for nothing yet) and, for an
`amend`, stored events are retracted by key. `preview` shows, exactly and changing
nothing, what applying it would do to every billing period it touches; `apply` does it in
one transaction, `revert` undoes it in one transaction.

Apply and revert, in one transaction each:
1. the correction row is locked and its status checked (open -> applied -> reverted);
2. the metric's fold lock is taken exclusively (as a refold does): folds, refolds and other
   corrections of the metric wait, so the rollups rebuilt below see every fold either
   committed or not started;
3. the subscriptions of the customers concerned are locked FOR NO KEY UPDATE (as issuing
   does): an issue in progress commits first and its invoice gets an adjustment; an issue
   that starts later re-prices under the correction; the change is stamped with the clock
   once the locks are held;
4. staged events move into `events`, marked with the correction (apply); the status
   changes (what `Supersession` reads);
5. the rollups of the window's hours are rebuilt for the metric (and customer), so real
   time and exact agree at once;
6. every binding invoice of the window's periods gets, per charge of the metric, the
   difference between its billed usage (with earlier adjustments) and the exact price of
   the events that count now — an adjustment of kind `correction` with the checksums of
   the events the correction added to that period and those it superseded; drafts of the
   window are re-priced.
So for each customer, metric and billed period: invoice + adjustments = the exact price of
the events that count now.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from core.adapters.postgres import corrections as rows
from core.adapters.postgres import customers as customer_rows
from core.adapters.postgres import events as event_rows
from core.adapters.postgres import invoices as invoice_rows
from core.adapters.postgres import metrics as metric_rows
from core.adapters.postgres import rollups
from core.adapters.postgres import usage as usage_rows
from core.adapters.postgres.database import get_database
from core.config import settings
from core.domain.canonical import decimal_text
from core.domain.contracts import (
    may_change,
    owner_of,
    require_owner,
    violation_detail,
    violation_errors,
)
from core.domain.corrections import (
    NewCorrection,
    events_checksum,
    require_status,
)
from core.domain.errors import Conflict, FieldError, NotFound, ValidationFailed
from core.domain.events import Invalid, UsageEvent, month_starts, parse_event
from core.domain.invoices import status
from core.domain.meters import MeterVersion
from core.domain.periods import Interval, Period, period_containing
from core.services import audit, pricing
from core.services.caller import Caller
from core.services.contracts import compile_rows
from core.services.ingest import Outcome, against_stored, settle_repeats, within_batch
from core.services.invoicing import lifecycle
from core.services.invoicing.adjustments import CorrectionCause, adjust_late_usage
from core.services.invoicing.views import adjustment_view
from core.services.listing import paginate
from core.services.usage import AGGREGATE_QUEUE, FOLD_JOB, meter_versions

STAGED_PER_CORRECTION_MAX = 2_000_000


def new_id() -> str:
    return "cor_" + secrets.token_hex(8)


def view(row: dict[str, Any], staged: int, retracted: int) -> dict[str, Any]:
    return {
        "id": row["id"],
        "metric_key": row["metric_key"],
        "customer_id": row["customer_id"],
        "from": row["window_start"],
        "to": row["window_end"],
        "mode": row["mode"],
        "reason": row["reason"],
        "status": row["status"],
        "events": staged,
        "retracted": retracted,
        "created_by": row["created_by"],
        "created_at": row["created_at"],
        "applied_at": row["applied_at"],
        "applied_by": row["applied_by"],
        "reverted_at": row["reverted_at"],
        "reverted_by": row["reverted_by"],
    }


def _shown(connection: Connection, row: dict[str, Any]) -> dict[str, Any]:
    return view(row, *rows.counts(connection, row["id"]))


def _owner_check(connection: Connection, caller: Caller, metric_key: str) -> None:
    versions = metric_rows.versions(connection, [metric_key])[metric_key]
    require_owner(caller.scopes, caller.team, metric_key, versions, "correct the usage")


def create(caller: Caller, body: NewCorrection) -> dict[str, Any]:
    with get_database().transaction() as connection:
        metric = metric_rows.get(connection, body.metric_key)
        if metric is None or metric["archived_at"] is not None:
            raise ValidationFailed(
                f"no metric {body.metric_key!r} (or it is archived)",
                code="unknown_metric",
                errors=[FieldError(("body", "metric_key"), "unknown or archived metric")],
            )
        _owner_check(connection, caller, body.metric_key)
        if body.customer_id is not None and customer_rows.get(connection, body.customer_id) is None:
            raise ValidationFailed(
                f"no customer {body.customer_id!r}",
                code="unknown_customer",
                errors=[FieldError(("body", "customer_id"), "unknown customer")],
            )
        row = rows.insert_correction(
            connection,
            {
                "id": new_id(),
                "metric_key": body.metric_key,
                "customer_id": body.customer_id,
                "window_start": body.start,
                "window_end": body.end,
                "mode": body.mode,
                "reason": body.reason,
                "status": "open",
                "created_by": caller.actor,
            },
        )
        shown = view(row, 0, 0)
        audit.record(
            connection,
            caller,
            action="correction.opened",
            entity="correction",
            entity_id=row["id"],
            state=shown,
            changes={"reason": body.reason, "mode": body.mode},
        )
    return shown


def get(correction_id: str) -> dict[str, Any]:
    with get_database().transaction() as connection:
        row = rows.get(connection, correction_id)
        if row is None:
            raise NotFound(f"no correction {correction_id!r}")
        return _shown(connection, row)


def list_corrections(
    *, metric_key: str | None, status_: str | None, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    with get_database().transaction() as connection:
        page, next_cursor = paginate(
            lambda after, n: rows.page(
                connection, metric_key=metric_key, status=status_, after=after, limit=n
            ),
            cursor=cursor,
            limit=limit,
            key="id",
        )
        return [_shown(connection, row) for row in page], next_cursor


def _open(connection: Connection, caller: Caller, correction_id: str) -> dict[str, Any]:
    row = rows.get(connection, correction_id, lock=True)
    if row is None:
        raise NotFound(f"no correction {correction_id!r}")
    _owner_check(connection, caller, row["metric_key"])
    require_status(row, "open", "changed")
    return row


def _misfit(row: dict[str, Any], event: UsageEvent) -> str | None:
    """Why an event cannot be posted into this correction, or None."""
    if event.metric_key != row["metric_key"]:
        return f"the correction is for {row['metric_key']!r}"
    if row["customer_id"] is not None and event.customer_id != row["customer_id"]:
        return f"the correction is for customer {row['customer_id']!r}"
    if not row["window_start"] <= event.timestamp < row["window_end"]:
        return "the timestamp is outside the correction's window"
    return None


def add_events(caller: Caller, correction_id: str, raw_events: Sequence[Any]) -> list[Outcome]:
    """Stage events in an open correction, with per-event outcomes exactly as a batch's
    (§5): accepted (staged), duplicate or conflict (the key is taken, forever), invalid."""
    config = settings()
    now = datetime.now(UTC)
    parsed = [
        parse_event(
            raw,
            now=now,
            pseudonymized_keys=config.pseudonymized_keys,
            pseudonym_secret=(config.abaxus_pseudonym_secret or "").encode(),
        )
        for raw in raw_events
    ]
    with get_database().transaction() as connection:
        row = _open(connection, caller, correction_id)
        # The events replace usage: the metric's contract holds for them as for any event
        # (a violation is refused; a correction quarantines nothing).
        book = compile_rows(
            metric_rows.versions(connection, [row["metric_key"]])[row["metric_key"]]
        )
        checked: list[UsageEvent | Invalid] = []
        for item in parsed:
            if isinstance(item, Invalid):
                checked.append(item)
                continue
            problem = _misfit(row, item)
            if problem is not None:
                checked.append(
                    Invalid(
                        "outside_correction",
                        problem,
                        (FieldError(("timestamp",), problem),),
                        item.idempotency_key,
                    )
                )
                continue
            version, contract = book.at(item.timestamp)
            violations = [] if contract is None else contract.check(item.value, item.properties)
            if violations:
                checked.append(
                    Invalid(
                        "contract_violation",
                        violation_detail(row["metric_key"], version, violations),
                        violation_errors(violations),
                        item.idempotency_key,
                    )
                )
                continue
            checked.append(item)
        outcomes, firsts, repeats = within_batch(checked)
        staged, _ = rows.counts(connection, correction_id)
        if staged + len(firsts) > STAGED_PER_CORRECTION_MAX:
            raise ValidationFailed(
                f"a correction holds at most {STAGED_PER_CORRECTION_MAX} events",
                code="correction_too_large",
            )
        if firsts:
            event_rows.ensure_partitions(
                get_database().maintenance_engine, month_starts(e.timestamp for _, e in firsts)
            )
            ids = ["evt_" + secrets.token_hex(12) for _ in firsts]
            claimed = rows.stage(
                connection, correction_id, event_rows.events_json([e for _, e in firsts], ids)
            )
            earlier = event_rows.stored_keys(
                connection,
                [e.idempotency_key for _, e in firsts if e.idempotency_key not in claimed],
            )
            for (index, event), event_id in zip(firsts, ids, strict=True):
                key = event.idempotency_key
                if key in claimed:
                    outcomes[index] = Outcome(index, "accepted", key, event_id)
                else:
                    outcomes[index] = against_stored(index, event, earlier[key])
        settle_repeats(outcomes, repeats)
        result = [outcomes[index] for index in range(len(parsed))]
        audit.record(
            connection,
            caller,
            action="correction.events_posted",
            entity="correction",
            entity_id=correction_id,
            state=_shown(connection, rows.get(connection, correction_id) or row),
            changes={"staged": sum(o.outcome == "accepted" for o in result)},
        )
    return result


def retract(caller: Caller, correction_id: str, keys: Sequence[str]) -> dict[str, Any]:
    """Name stored events an `amend` supersedes (each of the correction's metric, customer
    and window); all or nothing."""
    with get_database().transaction() as connection:
        row = _open(connection, caller, correction_id)
        if row["mode"] != "amend":
            raise Conflict(
                f"correction {correction_id} replaces its window: only an amend retracts events",
                code="correction_not_amend",
            )
        wanted = sorted(set(keys) - rows.retracted_keys(connection, correction_id))
        found = rows.stored_events(connection, wanted)
        problems = []
        for key in wanted:
            event = found.get(key)
            if event is None:
                problems.append(
                    FieldError(("body", "idempotency_keys"), f"{key!r}: no stored event")
                )
                continue
            if (
                event["metric_key"] != row["metric_key"]
                or (row["customer_id"] is not None and event["customer_id"] != row["customer_id"])
                or not row["window_start"] <= event["timestamp"] < row["window_end"]
            ):
                problems.append(
                    FieldError(
                        ("body", "idempotency_keys"),
                        f"{key!r}: not an event of the correction's metric, customer and window",
                    )
                )
        if problems:
            raise ValidationFailed(
                f"{len(problems)} key(s) name no event this correction can retract",
                code="not_retractable",
                errors=problems[:100],
            )
        rows.retract(connection, correction_id, found)
        shown = _shown(connection, row)
        audit.record(
            connection,
            caller,
            action="correction.events_retracted",
            entity="correction",
            entity_id=correction_id,
            state=shown,
            changes={"retracted": len(found)},
        )
        return shown


# -- what a correction touches --------------------------------------------------------------


def _customers(connection: Connection, row: dict[str, Any]) -> list[str]:
    if row["customer_id"] is not None:
        return [row["customer_id"]]
    return rows.customers_in_window(connection, row)


def _subscriptions(
    connection: Connection, customers: Sequence[str], *, lock: bool
) -> list[dict[str, Any]]:
    """The customers' subscriptions with their plan's interval; with `lock`, FOR NO KEY
    UPDATE in id order — the lock issuing takes, so no invoice of theirs is drafted, issued
    or voided while a correction changes what their periods count, and no late-usage fold
    of theirs interleaves with it."""
    return rows.subscriptions_of(connection, customers, lock=lock)


def _billing_periods(subscription: dict[str, Any], start: datetime, end: datetime) -> list[Period]:
    """The subscription's billing periods that overlap [start, end)."""
    begin = max(start, subscription["starts_at"])
    stop = end if subscription["ends_at"] is None else min(end, subscription["ends_at"])
    found = []
    instant = begin
    while instant < stop:
        period = period_containing(
            subscription["anchor_at"], Interval(subscription["interval"]), instant
        )
        if subscription["ends_at"] is not None and subscription["ends_at"] < period.end:
            period = Period(period.start, subscription["ends_at"])
        found.append(period)
        instant = period.end
    return found


def _affected(
    connection: Connection, subscription: dict[str, Any], start: datetime, end: datetime
) -> list[tuple[Period, dict[str, Any]]]:
    """Every period of the subscription that [start, end) touches, with what carries a
    change of it: its live invoice (whatever period it was drafted for — an issued one:
    an adjustment; a draft: re-priced), else the billing period, open (counted live)."""
    live = invoice_rows.overlapping(connection, subscription["id"], start, end)
    found: list[tuple[Period, dict[str, Any]]] = []
    for invoice in live:
        binding = status.binding(invoice["status"])
        found.append(
            (
                Period(invoice["period_start"], invoice["period_end"]),
                {
                    "carried_by": "adjustment" if binding else "draft",
                    "invoice_id": invoice["id"],
                    "number": invoice["number"] if binding else None,
                },
            )
        )
    for period in _billing_periods(subscription, start, end):
        if not any(i["period_start"] < period.end and period.start < i["period_end"] for i in live):
            found.append(
                (period, {"carried_by": "open_period", "invoice_id": None, "number": None})
            )
    return sorted(found, key=lambda item: item[0].start)


def _metric_usage(
    connection: Connection, subscription_id: str, period: Period, metric: str
) -> tuple[Decimal, Decimal] | None:
    """(quantity, amount) the exact price of the period gives the metric's charges now;
    None when the subscription's plan does not bill the metric."""
    context = pricing.context_for(connection, subscription_id, period)
    lines = [
        line
        for line in pricing.compute(connection, context)["lines"]
        if line.get("metric_key") == metric
    ]
    if not lines:
        return None
    return (
        sum((Decimal(line["quantity"]) for line in lines), Decimal(0)),
        sum((Decimal(line["amount"]) for line in lines), Decimal(0)),
    )


def _settle(
    connection: Connection,
    caller: Caller,
    row: dict[str, Any],
    subscriptions: list[dict[str, Any]],
    before: list[MeterVersion],
    *,
    applying: bool,
) -> list[dict[str, Any]]:
    """Steps 5 and 6 of the module's doc, for a correction whose status just changed;
    `before` is the metric's meters as they counted before the change."""
    metric = row["metric_key"]
    after = meter_versions(connection, metric)
    rollups.refold_window(
        connection,
        metric,
        after,
        customer_id=row["customer_id"],
        start=row["window_start"],
        end=row["window_end"],
        fold_queue=AGGREGATE_QUEUE,
        fold_kind=FOLD_JOB,
    )
    created: list[dict[str, Any]] = []
    for subscription in subscriptions:
        for period, carrier in _affected(
            connection, subscription, row["window_start"], row["window_end"]
        ):
            if carrier["carried_by"] == "adjustment":
                added, superseded = usage_rows.changed_events(
                    connection,
                    customer_id=subscription["customer_id"],
                    metric_key=metric,
                    start=max(period.start, row["window_start"]),
                    end=min(period.end, row["window_end"]),
                    before=before,
                    after=after,
                    new_in_after=row["id"] if applying else None,
                )
                before_ids = {
                    a["id"]
                    for a in invoice_rows.adjustments_around(connection, carrier["invoice_id"])
                }
                adjust_late_usage(
                    connection,
                    carrier["invoice_id"],
                    metric,
                    cause=CorrectionCause(
                        row["id"],
                        row["reason"],
                        events_checksum(added),
                        events_checksum(superseded),
                    ),
                )
                created.extend(
                    adjustment_view(a)
                    for a in invoice_rows.adjustments_around(connection, carrier["invoice_id"])
                    if a["id"] not in before_ids
                )
            elif carrier["carried_by"] == "draft":
                lifecycle.refresh(caller, carrier["invoice_id"])
    return created


def _clock(connection: Connection) -> datetime:
    """The instant of the change, read once the locks are held (not the transaction's
    start): an issue that committed before the apply got its locks priced before it, so
    the events behind its lines are listed as they stood then."""
    found: datetime = connection.exec_driver_sql("SELECT clock_timestamp()").scalar_one()
    return found


def _transaction_start(connection: Connection) -> datetime:
    """now(): the instant a preview's view receives the staged events at."""
    found: datetime = connection.exec_driver_sql("SELECT now()").scalar_one()
    return found


def _transition(caller: Caller, correction_id: str, *, applying: bool) -> dict[str, Any]:
    with get_database().transaction() as connection:
        row = rows.get(connection, correction_id, lock=True)
        if row is None:
            raise NotFound(f"no correction {correction_id!r}")
        _owner_check(connection, caller, row["metric_key"])
        require_status(
            row, "open" if applying else "applied", "applied" if applying else "reverted"
        )
        # The order every writer takes: the metric's fold lock, then the subscriptions.
        rollups.lock_metrics(connection, [row["metric_key"]], exclusive=True)
        subscriptions = _subscriptions(connection, _customers(connection, row), lock=True)
        before = meter_versions(connection, row["metric_key"])
        at = _clock(connection)
        if applying:
            staged = rows.staged_window(connection, correction_id)
            if staged:
                event_rows.ensure_partitions(
                    get_database().maintenance_engine, month_starts(e["timestamp"] for e in staged)
                )
                job = rows.record_job(connection, correction_id)
                moved = rows.move_into_events(
                    connection,
                    correction_id,
                    region=settings().abaxus_region,
                    job=job,
                    received_at=at,
                )
                if moved != len(staged):
                    raise RuntimeError(f"moved {moved} staged events, expected {len(staged)}")
            row = rows.change(
                connection,
                correction_id,
                {"status": "applied", "applied_at": at, "applied_by": caller.actor},
            )
        else:
            row = rows.change(
                connection,
                correction_id,
                {"status": "reverted", "reverted_at": at, "reverted_by": caller.actor},
            )
        adjustments = _settle(connection, caller, row, subscriptions, before, applying=applying)
        shown = _shown(connection, row)
        money: dict[str, Decimal] = {}
        for adjustment in adjustments:
            money[adjustment["currency"]] = (
                money.get(adjustment["currency"], Decimal(0)) + adjustment["amount_delta"]
            )
        audit.record(
            connection,
            caller,
            action="correction.applied" if applying else "correction.reverted",
            entity="correction",
            entity_id=correction_id,
            state=shown,
            changes={
                "reason": row["reason"],
                "events": shown["events"],
                "retracted": shown["retracted"],
                "adjustments": len(adjustments),
                "money": {
                    currency: decimal_text(amount) for currency, amount in sorted(money.items())
                },
            },
        )
        return {**shown, "adjustments": adjustments}


def apply(caller: Caller, correction_id: str) -> dict[str, Any]:
    return _transition(caller, correction_id, applying=True)


def revert(caller: Caller, correction_id: str) -> dict[str, Any]:
    return _transition(caller, correction_id, applying=False)


def preview(caller: Caller, correction_id: str) -> dict[str, Any]:
    """Exactly what applying would do, per customer and billing period — old and new
    quantity and amount of the metric, the difference and what carries it — priced as it
    is and through a temporary view of the events plus the staged ones, with the
    correction marked applied, in a savepoint that is rolled back: nothing changes, and
    nothing is locked beyond the savepoint (a read key cannot hold up applies or issues)."""
    with get_database().transaction() as connection:
        row = rows.get(connection, correction_id)
        if row is None:
            raise NotFound(f"no correction {correction_id!r}")
        require_status(row, "open", "previewed")
        periods = []
        for subscription in _subscriptions(connection, _customers(connection, row), lock=False):
            for period, carrier in _affected(
                connection, subscription, row["window_start"], row["window_end"]
            ):
                old = _metric_usage(connection, subscription["id"], period, row["metric_key"])
                if old is not None:
                    periods.append((subscription, period, carrier, old))
        trial = connection.begin_nested()
        try:
            with rows.events_with_staged(connection, correction_id):
                rows.change(
                    connection,
                    correction_id,
                    {
                        "status": "applied",
                        "applied_at": _transaction_start(connection),  # the view's received_at
                        "applied_by": caller.actor,
                    },
                )
                shown_periods = []
                for subscription, period, carrier, (old_quantity, old_amount) in periods:
                    new = _metric_usage(connection, subscription["id"], period, row["metric_key"])
                    new_quantity, new_amount = new or (Decimal(0), Decimal(0))
                    shown_periods.append(
                        {
                            "customer_id": subscription["customer_id"],
                            "subscription_id": subscription["id"],
                            "period": {"start": period.start, "end": period.end},
                            "old_quantity": old_quantity,
                            "new_quantity": new_quantity,
                            "quantity_difference": new_quantity - old_quantity,
                            "old_amount": old_amount,
                            "new_amount": new_amount,
                            "amount_difference": new_amount - old_amount,
                            **carrier,
                        }
                    )
        finally:
            trial.rollback()
        staged_count, retracted = rows.counts(connection, correction_id)
    return {
        "correction_id": correction_id,
        "metric_key": row["metric_key"],
        "events": staged_count,
        "retracted": retracted,
        "periods": shown_periods,
    }


def retract_event(caller: Caller, idempotency_key: str, reason: str) -> dict[str, Any]:
    """The one-event shortcut: an amend correction of that event's metric and customer,
    around its timestamp, that retracts it — applied at once. Its key stays consumed."""
    with get_database().transaction() as connection:
        found = rows.stored_events(connection, [idempotency_key]).get(idempotency_key)
        if found is None:
            raise NotFound(f"no stored event with idempotency_key {idempotency_key!r}")
        opened = create(
            caller,
            NewCorrection.model_validate(
                {
                    "metric_key": found["metric_key"],
                    "customer_id": found["customer_id"],
                    "from": found["timestamp"],
                    "to": found["timestamp"] + timedelta(microseconds=1),
                    "mode": "amend",
                    "reason": reason,
                }
            ),
        )
        retract(caller, opened["id"], [idempotency_key])
        return apply(caller, opened["id"])


def adjustments_of(correction_id: str) -> list[dict[str, Any]]:
    """The adjustments a correction recorded (applying and reverting), oldest first."""
    with get_database().transaction() as connection:
        return [
            adjustment_view(row)
            for row in invoice_rows.adjustments_of_correction(connection, correction_id)
        ]


def may_correct(caller: Caller, metric_key: str) -> bool:
    with get_database().transaction() as connection:
        versions = metric_rows.versions(connection, [metric_key])[metric_key]
    return may_change(caller.scopes, caller.team, owner_of(versions))
