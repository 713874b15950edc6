"""The overview (`GET /v1/stats`, the console's tiles): accepted events, active
subscriptions, period revenue and ingest latency over a window and the one before it,
read from small tables and rollups — never from a scan of raw events.

Ingest latency: every process that serves `POST /v1/events*` counts its requests'
durations per minute in histogram buckets (in memory) and adds them to `ingest_latency`
every few seconds, so the p95 of a window combines every pod; PostgreSQL stays the only
state and Prometheus keeps its own histogram for operators."""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from core.adapters.postgres import stats as rows
from core.adapters.postgres.database import get_database
from core.domain.errors import FieldError, ValidationFailed
from core.domain.stats import Windows, bucket_of, change, percentile, windows

log = logging.getLogger(__name__)
FLUSH_SECONDS = 5.0
PENDING_MINUTES_MAX = 120  # a database outage longer than this loses the oldest counts
COMPACT_AFTER = timedelta(days=2)
P95 = Decimal("0.95")
REVENUE_BASIS = (
    "invoices (issued, paid, payment failed, and drafts) whose billing period starts in "
    "the window, by currency; drafts are live until issued"
)


class LatencyRecorder:
    """Per-minute latency buckets of this process, flushed to PostgreSQL by a thread of
    its own (started on first use in each process: none survives a fork)."""

    def __init__(self, flush_seconds: float = FLUSH_SECONDS) -> None:
        self._counts: dict[tuple[datetime, int], int] = {}
        self._lock = threading.Lock()
        self._flush_seconds = flush_seconds
        self._pid = 0

    def observe(self, seconds: float, at: datetime | None = None) -> None:
        moment = (at or datetime.now(UTC)).replace(second=0, microsecond=0)
        key = (moment, bucket_of(seconds * 1000))
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
        if self._pid != os.getpid():
            self._start()

    def _start(self) -> None:
        self._pid = os.getpid()
        threading.Thread(target=self._loop, name="latency-flush", daemon=True).start()

    def _loop(self) -> None:
        while True:
            threading.Event().wait(self._flush_seconds)
            try:
                self.flush()
            except Exception:  # the counts stay for the next round
                log.warning("ingest latencies not flushed; retrying", exc_info=True)

    def flush(self) -> int:
        """Add what was counted since the last flush; how many requests it added."""
        with self._lock:
            taken, self._counts = self._counts, {}
        if not taken:
            return 0
        try:
            with get_database().transaction() as connection:
                rows.add_latencies(connection, taken)
        except Exception:
            with self._lock:  # put them back (bounded: the oldest minutes go first)
                for key, count in taken.items():
                    self._counts[key] = self._counts.get(key, 0) + count
                minutes = sorted({minute for minute, _ in self._counts})
                for old in minutes[:-PENDING_MINUTES_MAX]:
                    for key in [k for k in self._counts if k[0] == old]:
                        del self._counts[key]
            raise
        return sum(taken.values())


ingest_latency = LatencyRecorder()


def _window(start: datetime | None, end: datetime | None, now: datetime) -> Windows:
    try:
        return windows(start, end, now)
    except ValueError as error:
        raise ValidationFailed(
            str(error), errors=[FieldError(("query", "to"), str(error))]
        ) from error


def _figure(value: Any, previous: Any) -> dict[str, Any]:
    return {"value": value, "previous": previous, "change": change(value, previous)}


def overview(
    *, start: datetime | None = None, end: datetime | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """`GET /v1/stats` (API.md §9)."""
    now = now or datetime.now(UTC)
    window = _window(start, end, now)
    with get_database().transaction() as connection:
        events = rows.events_received(connection, window.start, window.end)
        events_before = rows.events_received(connection, window.previous_start, window.previous_end)
        active = rows.active_subscriptions(connection, min(window.end, now))
        active_before = rows.active_subscriptions(connection, window.previous_end)
        revenue = rows.revenue(connection, window.start, window.end)
        revenue_before = rows.revenue(connection, window.previous_start, window.previous_end)
        latency = percentile(rows.latencies(connection, window.start, window.end), P95)
        latency_before = percentile(
            rows.latencies(connection, window.previous_start, window.previous_end), P95
        )
    currencies = sorted(set(revenue) | set(revenue_before))
    return {
        "window": {"start": window.start, "end": window.end},
        "previous": {"start": window.previous_start, "end": window.previous_end},
        "consistency": "eventual",
        "as_of": now,
        "events_ingested": _figure(events, events_before),
        "active_subscriptions": _figure(active, active_before),
        "period_revenue": {
            "basis": REVENUE_BASIS,
            "by_currency": {
                currency: _figure(
                    revenue.get(currency, Decimal(0)), revenue_before.get(currency, Decimal(0))
                )
                for currency in currencies
            },
        },
        "ingest_latency_p95_ms": _figure(latency, latency_before),
    }


def daily(*, start: datetime, end: datetime) -> dict[str, Any]:
    """Events per day (of receipt) and revenue per day (of issue) for the charts."""
    with get_database().transaction() as connection:
        events = rows.events_per_day(connection, start, end)
        revenue = rows.revenue_per_day(connection, start, end)
    return {
        "events": [{"day": day, "events": count} for day, count in events],
        "revenue": [
            {"day": day, "currency": currency, "total": total} for day, currency, total in revenue
        ],
    }


def compact(now: datetime | None = None) -> None:
    """Minutes older than two days become hours (the aggregate tick runs it)."""
    now = now or datetime.now(UTC)
    with get_database().transaction() as connection:
        rows.compact(connection, now - COMPACT_AFTER)
