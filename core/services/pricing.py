"""Calculate: a subscription's exact usage in a period, priced under its plan version with
its overrides, as immutable, checksummed lines traceable to the raw events.

The same function serves a preview (`POST /v1/pricing/calculate`), an invoice
(`invoice.requested`) and `abaxus verify calculation`: there is no second way to price.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from core.adapters.postgres import calculations as rows
from core.adapters.postgres import corrections as correction_rows
from core.adapters.postgres import metrics as metric_rows
from core.adapters.postgres import plans as plan_rows
from core.adapters.postgres import subscriptions as subscription_rows
from core.adapters.postgres import usage as usage_rows
from core.adapters.postgres.database import get_database
from core.domain.canonical import canonical_json
from core.domain.errors import FieldError, NotFound, ValidationFailed
from core.domain.invoices.freshness import fingerprint
from core.domain.meters import MeterVersion, usage_checksum
from core.domain.pagination import decode_cursor, encode_cursor
from core.domain.periods import Interval, Period, period_containing
from core.domain.pricing.charges import CHARGE_ADAPTER, OverrideError, apply_overrides
from core.domain.pricing.engine import LineInput, lines, sha256
from core.domain.pricing.priced import PricingError, Usage
from core.domain.pricing.terms import Terms, effective_terms
from core.services import completeness
from core.services.catalog.subscriptions import current_period
from core.services.usage import meter_versions

PERIOD_DAYS_MAX = 400
DAY = timedelta(days=1)


def _day(billing: Period, instant: datetime) -> int:
    """Which day of the billing period an instant falls in (0-based, 24-hour days from the
    period's start); the period's end is its day count, a started last day counting in full."""
    if instant >= billing.end:
        return max(0, math.ceil((billing.end - billing.start) / DAY))
    return max(0, math.floor((instant - billing.start) / DAY))


def _days(billing: Period, part: Period | None) -> int:
    """The days of the billing period a part of it covers. The day an instant falls in
    belongs to the side that starts there: a subscription starting mid-day bills that day,
    one ending mid-day does not, so the two sides of a plan change add up to the period."""
    return 0 if part is None else _day(billing, part.end) - _day(billing, part.start)


def _clip(part: Period | None, start: datetime | None) -> Period | None:
    """The part of `part` from `start` on (None when nothing is left)."""
    if part is None or start is None or start <= part.start:
        return part
    return Period(start, part.end) if start < part.end else None


@dataclass(frozen=True)
class Context:
    subscription: dict[str, Any]
    plan: dict[str, Any]
    period: Period
    coverage: Period | None  # the part of the period the subscription covers
    billing: Period  # the whole billing period `period` is part of (days are counted in it)
    terms: Terms

    @property
    def billable(self) -> Period | None:
        """The coverage after the trial: what flat fees and commitments bill."""
        return _clip(self.coverage, self.subscription["trial_ends_at"])

    @property
    def usage_window(self) -> Period | None:
        """The coverage whose usage is billed (during a trial only if the plan says so)."""
        return self.coverage if self.terms.trial_bills_usage else self.billable

    def trial(self) -> dict[str, Any] | None:
        """The trial as the calculation states it, when it touches the period."""
        ends = self.subscription["trial_ends_at"]
        if ends is None or self.coverage is None or ends <= self.coverage.start:
            return None
        return {"ends_at": ends, "bills_usage": self.terms.trial_bills_usage}


def _context(
    connection: Connection,
    subscription_id: str,
    period_start: datetime | None,
    period_end: datetime | None,
    now: datetime,
) -> Context:
    subscription = subscription_rows.get(connection, subscription_id)
    if subscription is None:
        raise NotFound(f"no subscription {subscription_id!r}", code="unknown_subscription")
    plan = plan_rows.version(connection, subscription["plan_code"], subscription["plan_version"])
    assert plan is not None  # a foreign key guarantees it
    if (period_start is None) != (period_end is None):
        raise ValidationFailed(
            "give both period_start and period_end, or neither (the current period)",
            errors=[FieldError(("body", "period_end"), "both or neither")],
        )
    if period_start is None or period_end is None:
        found = current_period(subscription, Interval(plan["interval"]), now)
        if found is None:
            raise ValidationFailed(
                "the subscription has ended: name the period to calculate",
                code="no_current_period",
                errors=[FieldError(("body", "period_start"), "required after the end")],
            )
        period = found
    else:
        period = Period(period_start, period_end)
    if period.end <= period.start:
        raise ValidationFailed(
            "period_end must be after period_start",
            errors=[FieldError(("body", "period_end"), "not after period_start")],
        )
    if period.end - period.start > timedelta(days=PERIOD_DAYS_MAX):
        raise ValidationFailed(
            f"a period covers at most {PERIOD_DAYS_MAX} days",
            errors=[FieldError(("body", "period_end"), "period too long")],
        )
    start = max(period.start, subscription["starts_at"])
    end = min(period.end, subscription["ends_at"] or period.end)
    coverage = Period(start, end) if start < end else None
    return Context(
        subscription,
        plan,
        period,
        coverage,
        billing=_billing_period(subscription, Interval(plan["interval"]), period),
        terms=effective_terms(plan["terms"], subscription["terms"]),
    )


def _billing_period(subscription: dict[str, Any], interval: Interval, period: Period) -> Period:
    """The billing period a priced period is (part of): a period cut short by the
    subscription's end or start still counts its days out of the whole period; a period
    that is no billing period of the subscription (a preview of any span) is its own."""
    anchor = subscription["anchor_at"]
    if period.start < anchor:
        return period
    billing = period_containing(anchor, interval, period.start)
    inside = billing.start <= period.start and period.end <= billing.end
    return (
        billing if inside and period.start in (billing.start, subscription["starts_at"]) else period
    )


def _charges(context: Context) -> list[Any]:
    charges = [CHARGE_ADAPTER.validate_python(c) for c in context.plan["charges"]]
    try:
        return apply_overrides(charges, list(context.subscription["overrides"]))
    except OverrideError as error:  # validated at subscription time; kept honest here
        raise ValidationFailed(str(error), code="invalid_override") from error


def _scan(
    connection: Connection, context: Context, metric_key: str, versions: list[MeterVersion]
) -> usage_rows.ScanResult:
    coverage = context.usage_window
    if coverage is None:
        return usage_rows.ScanResult([], usage_checksum({}), Decimal(0), 0)
    return usage_rows.scan(
        connection,
        customer_id=context.subscription["customer_id"],
        metric_key=metric_key,
        versions=versions,
        start=coverage.start,
        end=coverage.end,
    )


def _usage_lines(
    connection: Connection, context: Context, charge: Any, days: tuple[int, int]
) -> list[LineInput]:
    """One line for a metric charge; one per meter version when the versions in the
    period aggregate differently (their usage has no common number)."""
    key = charge.metric_key
    versions = meter_versions(connection, key)
    coverage = context.usage_window
    in_period = [
        v
        for v in versions
        if coverage is not None and usage_rows.window_of(v, coverage.start, coverage.end)
    ]
    uniform = len({(v.aggregation, v.unique_property, v.percentile) for v in in_period}) <= 1
    parts = [in_period] if uniform else [[v] for v in in_period]
    items = []
    for part in parts or [[]]:
        result = _scan(connection, context, key, part)
        by_version = {v.version: v for v in part}
        counted = sorted({g.version for g in result.groups})
        groups = tuple(
            (dict(zip(by_version[g.version].group_by, g.group, strict=True)), g.value)
            for g in sorted(
                result.groups, key=lambda g: (g.version, tuple(x or "" for x in g.group))
            )
        )
        latest = counted[-1] if counted else (part[-1].version if part else None)
        assert result.total is not None  # uniform by construction
        items.append(
            LineInput(
                charge,
                Usage(result.total, groups, days[0], days[1]),
                metric_key=key,
                meter_version=latest,
                meter_versions=tuple(counted),
                event_count=result.event_count,
                events_checksum="sha256:" + result.checksum,
            )
        )
    return items


def compute(connection: Connection, context: Context) -> dict[str, Any]:
    subscription, plan, period = context.subscription, context.plan, context.period
    coverage = context.coverage
    days = (_days(context.billing, context.billing), _days(context.billing, context.billable))
    items: list[LineInput] = []
    for charge in _charges(context):
        if charge.model == "flat_fee":
            items.append(LineInput(charge, Usage(Decimal(1), (), days[0], days[1])))
        else:
            items.extend(_usage_lines(connection, context, charge, days))
    try:
        priced, total = lines(items, plan["currency"])
    except PricingError as error:
        raise ValidationFailed(str(error), code=error.code) from error
    inputs = {
        "subscription_id": subscription["id"],
        "customer_id": subscription["customer_id"],
        "plan_code": subscription["plan_code"],
        "plan_version": subscription["plan_version"],
        "overrides": subscription["overrides"],
        "period": {"start": period.start, "end": period.end},
        "coverage": None if coverage is None else {"start": coverage.start, "end": coverage.end},
        **_terms_inputs(context, days),
        "lines": [
            {
                "charge": item.charge.label,
                "metric_key": item.metric_key,
                "meter_versions": list(item.meter_versions),
                "event_count": item.event_count,
                "events_checksum": item.events_checksum,
            }
            for item in items
        ],
    }
    inputs_sha256 = sha256(inputs)
    body: dict[str, Any] = {
        "id": "calc_" + inputs_sha256.removeprefix("sha256:")[:32],
        "subscription_id": subscription["id"],
        "customer_id": subscription["customer_id"],
        "plan_code": subscription["plan_code"],
        "plan_version": subscription["plan_version"],
        "period": inputs["period"],
        "coverage": inputs["coverage"],
        "currency": plan["currency"],
        "consistency": "exact",
        **_terms_inputs(context, days),
        "lines": priced,
        "subtotal": total,
        "total": total,
        "inputs_checksum": inputs_sha256,
    }
    body["checksum"] = sha256(body)
    # Stored and returned as JSON values: numbers as their canonical strings.
    return dict(json.loads(canonical_json(body)))


def _terms_inputs(context: Context, days: tuple[int, int]) -> dict[str, Any]:
    """The trial and the commitment of the period, when it has them (left out otherwise,
    so a calculation without terms is what it always was, checksum included). The
    commitment states the days it is prorated by: those the flat fees bill."""
    found: dict[str, Any] = {}
    trial = context.trial()
    if trial is not None:
        found["trial"] = trial
    commitment = context.terms.commitment()
    if commitment is not None:
        found["commitment"] = commitment | {"period_days": days[0], "billed_days": days[1]}
    return found


def context_for(connection: Connection, subscription_id: str, period: Period) -> Context:
    """What a calculation of this subscription's period reads (invoices price and re-price
    their period with it)."""
    return _context(connection, subscription_id, period.start, period.end, datetime.now(UTC))


def calculate(
    subscription_id: str,
    *,
    period_start: datetime | None = None,
    period_end: datetime | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Price a subscription's period; the same inputs give the same stored calculation."""
    now = now or datetime.now(UTC)
    with get_database().transaction() as connection:
        context = _context(connection, subscription_id, period_start, period_end, now)
        stored = store(connection, context, fingerprint=inputs_fingerprint(connection, context))
        return _with_completeness(connection, stored)


def store(
    connection: Connection, context: Context, *, fingerprint: str | None = None
) -> dict[str, Any]:
    """Price the context's period and keep the calculation (an existing one with the same
    inputs is returned as stored, byte for byte). `fingerprint`, taken before pricing, is
    kept with a new calculation: a draft can then use it without pricing again."""
    body = compute(connection, context)
    stored = rows.get(connection, body["id"])
    if stored is not None:
        return stored
    rows.insert_once(
        connection,
        {
            "id": body["id"],
            "subscription_id": context.subscription["id"],
            "customer_id": body["customer_id"],
            "period_start": context.period.start,
            "period_end": context.period.end,
            "inputs_sha256": body["inputs_checksum"],
            "checksum": body["checksum"],
            "body": body,
            "inputs_fingerprint": fingerprint,
        },
    )
    found = rows.get(connection, body["id"])
    assert found is not None
    return found


def inputs_fingerprint(connection: Connection, context: Context) -> str:
    """What the period would be priced from, without pricing it (core/domain/invoices/
    freshness.py): equal fingerprints, equal calculation."""
    keys = sorted({c.metric_key for c in _charges(context) if c.model != "flat_fee"})
    coverage = context.usage_window
    versions = metric_rows.versions(connection, keys) if keys else {}
    counts = (
        {}
        if coverage is None or not keys
        else usage_rows.event_counts(
            connection, context.subscription["customer_id"], keys, coverage.start, coverage.end
        )
    )
    return fingerprint(
        subscription=context.subscription,
        period=(context.period.start, context.period.end),
        coverage=None if coverage is None else (coverage.start, coverage.end),
        event_counts=counts,
        meter_versions={
            key: [(row["version"], row["effective_from"]) for row in versions[key]] for key in keys
        },
        corrections=correction_rows.states(connection, keys) if keys else {},
    )


def get_calculation(calculation_id: str) -> dict[str, Any]:
    with get_database().transaction() as connection:
        found = rows.get(connection, calculation_id)
        if found is None:
            raise NotFound(f"no calculation {calculation_id!r}")
        return _with_completeness(connection, found)


def _with_completeness(connection: Connection, calculation: dict[str, Any]) -> dict[str, Any]:
    """A calculation as the API answers it: with whether its period is complete here now
    (API.md §10: every region's events up to the period's end received)."""
    end = calculation["period"]["end"]
    if not isinstance(end, datetime):
        end = datetime.fromisoformat(str(end))
    return calculation | completeness.completeness(connection, end).view()


def line_events(
    calculation_id: str, line: int, *, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """The raw events behind a line, each with the meter version that counted it, in
    (timestamp, idempotency key) order: their digests recompute the line's checksum."""
    position = decode_cursor(cursor)
    after = None
    if position is not None:
        try:
            after = (datetime.fromisoformat(position["ts"]), str(position["key"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValidationFailed(
                "cursor is not one this API returned", code="invalid_cursor"
            ) from error
    with get_database().transaction() as connection:
        calculation = rows.get(connection, calculation_id)
        if calculation is None:
            raise NotFound(f"no calculation {calculation_id!r}")
        lines_ = calculation["lines"]
        if not 1 <= line <= len(lines_):
            raise NotFound(f"calculation {calculation_id} has lines 1 to {len(lines_)}")
        item = lines_[line - 1]
        coverage = calculation["coverage"]
        if item["metric_key"] is None or coverage is None:
            return [], None
        # The events the line billed: corrections applied after it was priced do not
        # change them (their adjustments carry the difference; API.md §19).
        priced_at = rows.created_at(connection, calculation_id)
        versions = [
            v
            for v in meter_versions(connection, item["metric_key"], as_of=priced_at)
            if v.version in item["meter_versions"]
        ]
        page = rows.counted_events(
            connection,
            customer_id=calculation["customer_id"],
            metric_key=item["metric_key"],
            versions=versions,
            start=_usage_start(calculation),
            end=datetime.fromisoformat(coverage["end"]),
            after=after,
            limit=limit + 1,
            received_by=priced_at,
        )
    more = len(page) > limit
    page = page[:limit]
    next_cursor = (
        encode_cursor({"ts": page[-1]["timestamp"].isoformat(), "key": page[-1]["idempotency_key"]})
        if more and page
        else None
    )
    return page, next_cursor


def _usage_start(calculation: dict[str, Any]) -> datetime:
    """Where the usage a calculation billed starts: its coverage, after a trial that does
    not bill usage."""
    start = datetime.fromisoformat(calculation["coverage"]["start"])
    trial = calculation.get("trial")
    if trial is not None and not trial["bills_usage"]:
        start = max(start, datetime.fromisoformat(trial["ends_at"]))
    return start


@dataclass(frozen=True)
class Verification:
    calculation_id: str
    ok: bool
    differences: list[str]


def verify(calculation_id: str) -> Verification:
    """Recompute a stored calculation from the raw events and the stored definitions."""
    stored = get_calculation(calculation_id)
    with get_database().transaction() as connection:
        context = _context(
            connection,
            stored["subscription_id"],
            datetime.fromisoformat(stored["period"]["start"]),
            datetime.fromisoformat(stored["period"]["end"]),
            datetime.now(UTC),
        )
        again = compute(connection, context)
    differences = []
    for number, (before, after) in enumerate(
        zip(stored["lines"], again["lines"], strict=False), start=1
    ):
        for field_name in sorted(set(before) | set(after)):
            if before.get(field_name) != after.get(field_name):
                differences.append(
                    f"line {number} ({before.get('charge')}): {field_name} stored "
                    f"{before.get(field_name)!r}, recomputed {after.get(field_name)!r}"
                )
    if len(stored["lines"]) != len(again["lines"]):
        differences.append(f"stored {len(stored['lines'])} lines, recomputed {len(again['lines'])}")
    for field_name in ("subtotal", "total", "checksum"):
        if stored[field_name] != again[field_name]:
            differences.append(
                f"{field_name}: stored {stored[field_name]!r}, recomputed {again[field_name]!r}"
            )
    if stored["id"] != again["id"]:
        differences.append(f"the inputs changed: they now identify {again['id']}")
    return Verification(calculation_id, not differences, differences)
