"""Ingestion: validate, deduplicate forever, store durably, hand off to aggregation.

One transaction per request: the idempotency keys, the events and the aggregation job
commit together, so a 202 means stored and a retry can never count twice. Outcomes:
accepted (new), duplicate (same key, same content: the stored event's id), conflict (same
key, other content: nothing changes), invalid (with a stable code)."""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from dateutil.relativedelta import relativedelta

from core import auth
from core.adapters import queue
from core.adapters.postgres import corrections as correction_rows
from core.adapters.postgres import events as rows
from core.adapters.postgres.database import Database, after_commit, get_database, get_group_database
from core.config import settings
from core.domain import event_types
from core.domain.contracts import violation_detail, violation_errors
from core.domain.errors import AbaxusError, FieldError, Unavailable, ValidationFailed
from core.domain.events import Invalid, UsageEvent, month_starts, parse_event
from core.domain.pagination import decode_cursor, encode_cursor
from core.domain.residency import home_elsewhere
from core.observability import events_ingested, ingest_batch_size, ingest_duration
from core.services import api_keys, contracts, notify
from core.services.aggregation import AGGREGATE_QUEUE, FOLD_JOB
from core.services.caller import Caller
from core.services.group_commit import AsyncGroupCommit

# One job per transaction hands its new events to aggregation; its payload counts them.
FOLD_HANDOFF = queue.CountedJob(AGGREGATE_QUEUE, FOLD_JOB, count_key="events")

STATUS = {"accepted": 202, "quarantined": 202, "duplicate": 200, "conflict": 409, "invalid": 422}
# A store statement that finds a metric's catalog changed since its events were checked
# stores nothing; they are checked again against the new versions, at most this often.
CONTRACT_RECHECKS_MAX = 5


class Outcome(NamedTuple):
    """What became of one event. A tuple: a batch builds 500 of them, 3x faster than
    frozen dataclasses (`position` is its index in the request: `index` is a tuple method)."""

    position: int
    outcome: str
    idempotency_key: str | None = None
    id: str | None = None
    code: str | None = None
    detail: str | None = None
    errors: tuple[FieldError, ...] = ()

    def result(self) -> dict[str, Any]:
        """One entry of a batch response."""
        entry: dict[str, Any] = {
            "index": self.position,
            "status": STATUS[self.outcome],
            "outcome": self.outcome,
        }
        if self.idempotency_key is not None:
            entry["idempotency_key"] = self.idempotency_key
        if self.id is not None:
            entry["id"] = self.id
        if self.code is not None:
            entry["code"] = self.code
        if self.detail is not None:
            entry["detail"] = self.detail
        if self.errors:
            entry["errors"] = [
                {"loc": list(error.loc), "msg": error.msg, "type": error.type}
                for error in self.errors
            ]
        return entry


def _new_event_ids(count: int) -> list[str]:
    """`count` random event ids (96 bits each) from one read of the system's CSPRNG, the
    source `secrets` uses, instead of one system call per event."""
    text = secrets.token_hex(12 * count)
    return ["evt_" + text[start : start + 24] for start in range(0, 24 * count, 24)]


def settle_repeats(outcomes: dict[int, Outcome], repeats: dict[int, int]) -> None:
    """A later event of a batch with the key of an earlier one: that one's duplicate (or
    its conflict or refusal), once the earlier one's outcome is known."""
    for index, first in repeats.items():
        original = outcomes[first]
        outcomes[index] = Outcome(
            index,
            "duplicate"
            if original.outcome in {"accepted", "duplicate", "quarantined"}
            else original.outcome,
            original.idempotency_key,
            original.id,
            original.code,
            original.detail,
        )


def within_batch(
    parsed: Sequence[UsageEvent | Invalid],
) -> tuple[dict[int, Outcome], list[tuple[int, UsageEvent]], dict[int, int]]:
    """Invalid events, the first event of each key, and later events pointing at the first."""
    outcomes: dict[int, Outcome] = {}
    firsts: dict[str, tuple[int, UsageEvent]] = {}
    repeats: dict[int, int] = {}
    for index, item in enumerate(parsed):
        if isinstance(item, Invalid):
            outcomes[index] = Outcome(
                index,
                "invalid",
                item.idempotency_key,
                code=item.code,
                detail=item.detail,
                errors=item.errors,
            )
        elif item.idempotency_key in firsts:
            first_index, first = firsts[item.idempotency_key]
            if first.content_sha256 == item.content_sha256:
                repeats[index] = first_index
            else:
                outcomes[index] = Outcome(
                    index,
                    "conflict",
                    item.idempotency_key,
                    code="idempotency_conflict",
                    detail="same idempotency_key as an earlier event of this batch, other content",
                )
        else:
            firsts[item.idempotency_key] = (index, item)
    return outcomes, list(firsts.values()), repeats


Producer = str | None | Sequence[str | None]


def ingest(
    raw_events: Sequence[Any],
    *,
    now: datetime | None = None,
    database: Database | None = None,
    producer: Producer = None,
) -> list[Outcome]:
    """`producer`: who sent the events — the API key's name over HTTP, the CloudEvent's
    `source` — one for all of them, or one per event; a contract's `producers` names them."""
    started = time.perf_counter()
    config = settings()
    now = now or datetime.now(UTC)
    secret = (config.abaxus_pseudonym_secret or "").encode()
    pseudonymized = config.pseudonymized_keys  # a property that splits a string: once per call
    parsed = [
        parse_event(raw, now=now, pseudonymized_keys=pseudonymized, pseudonym_secret=secret)
        for raw in raw_events
    ]
    outcomes, firsts, repeats = within_batch(parsed)
    database = database or get_database()
    if firsts:
        rows.ensure_partitions(
            database.maintenance_engine, month_starts(e.timestamp for _, e in firsts)
        )
        with database.transaction() as connection:
            _store(
                connection,
                firsts,
                outcomes,
                region=config.abaxus_region,
                producers=_producers(producer, len(parsed)),
            )
    settle_repeats(outcomes, repeats)
    result = [outcomes[index] for index in range(len(parsed))]
    for name, count in Counter(outcome.outcome for outcome in result).items():
        events_ingested.labels(name).inc(count)
    ingest_batch_size.observe(len(parsed))
    ingest_duration.observe(time.perf_counter() - started)
    return result


def _residency(
    connection: Any, firsts: list[tuple[int, UsageEvent]], outcomes: dict[int, Outcome]
) -> tuple[list[tuple[int, UsageEvent]], dict[str, str]]:
    """With ABAXUS_ENFORCE_RESIDENCY, the events of customers homed in another zone are
    refused (wrong_region, naming the home region: API.md §10) and not stored; the others
    go on. With zones configured, each kept event's customer's zone (customer -> zone),
    stored with the event: a region publishes each zone's events only to that zone's
    central. One lookup of the batch's customers, in the storing transaction."""
    config = settings()
    zones = config.residency_zones
    if not config.abaxus_enforce_residency and not zones:
        return firsts, {}
    here = config.abaxus_region
    homes = rows.customer_regions(connection, sorted({e.customer_id for _, e in firsts}))
    kept = []
    for index, event in firsts:
        home = homes.get(event.customer_id)
        if config.abaxus_enforce_residency and home_elsewhere(home, here, zones):
            outcomes[index] = Outcome(
                index,
                "invalid",
                event.idempotency_key,
                code="wrong_region",
                detail=f"customer {event.customer_id!r} is homed in {home}: send its events "
                f"there (this is {here})",
                errors=(FieldError(("customer_id",), f"homed in {home}"),),
            )
        else:
            kept.append((index, event))
    return kept, {
        customer: zones.get(home, home) for customer, home in homes.items() if home in zones
    }


def _producers(producer: Producer, count: int) -> Sequence[str | None]:
    if producer is None or isinstance(producer, str):
        return [producer] * count
    return producer


def _check_contracts(
    firsts: list[tuple[int, UsageEvent]],
    ids: Sequence[str],
    producers: Sequence[str | None],
) -> tuple[dict[int, Outcome], list[rows.Quarantined]]:
    """Each event against the contract of the metric version in force at its timestamp
    (API.md §18): the refused (producer_not_allowed, contract_violation under `reject`),
    by position, and those to hold in quarantine."""
    refused: dict[int, Outcome] = {}
    held: list[rows.Quarantined] = []
    if not contracts.BOOK.any_contract({event.metric_key for _, event in firsts}):
        return refused, held
    metrics = {key: contracts.BOOK.metric(key) for key in {e.metric_key for _, e in firsts}}
    for (index, event), event_id in zip(firsts, ids, strict=True):
        version, contract = metrics[event.metric_key].at(event.timestamp)
        if contract is None or version is None:
            continue
        key = event.idempotency_key
        if contract.passes(event.value, event.properties) and contract.producer_allowed(
            producers[index]
        ):
            continue
        if not contract.producer_allowed(producers[index]):
            refused[index] = Outcome(
                index,
                "invalid",
                key,
                code="producer_not_allowed",
                detail=f"this producer may not emit {event.metric_key!r} events (its contract "
                "names who may)",
                errors=(FieldError(("metric_key",), "not a producer of this metric"),),
            )
            continue
        violations = contract.check(event.value, event.properties)
        if not violations:
            continue
        if contract.quarantines:
            held.append(
                rows.Quarantined(
                    event_id,
                    version,
                    json.dumps([v.view() for v in violations]),
                    producers[index],
                )
            )
        else:
            refused[index] = Outcome(
                index,
                "invalid",
                key,
                code="contract_violation",
                detail=violation_detail(event.metric_key, version, violations),
                errors=violation_errors(violations),
            )
    return refused, held


def _store(
    connection: Any,
    firsts: list[tuple[int, UsageEvent]],
    outcomes: dict[int, Outcome],
    *,
    region: str,
    producers: Sequence[str | None],
) -> None:
    """Store the first event of each key in one statement (`rows.store`): accepted when its
    key is new, quarantined when it broke a quarantining contract, duplicate or conflict
    against the stored event when its key is not new, unknown_metric when its metric is
    unknown or archived (then nothing of it is stored); refused by its metric's contract
    (then nothing of it is stored either)."""
    firsts, zones = _residency(connection, firsts, outcomes)
    keys = {event.metric_key for _, event in firsts}
    contracts.BOOK.ensure(connection, keys)
    all_ids = _new_event_ids(len(firsts))
    for _ in range(CONTRACT_RECHECKS_MAX):
        refused, held = _check_contracts(firsts, all_ids, producers)
        storable = [
            (pair, event_id)
            for pair, event_id in zip(firsts, all_ids, strict=True)
            if pair[0] not in refused
        ]
        stored = rows.store(
            connection,
            [event for (_, event), _ in storable],
            [event_id for _, event_id in storable],
            FOLD_HANDOFF,
            region=region,
            stamps=contracts.BOOK.latest(keys),
            quarantine=held,
            zones=zones,
        )
        if stored.fresh:
            break
        contracts.BOOK.reload(connection, keys)  # a new version committed: check again
    else:
        raise Unavailable(
            "the metrics' definitions kept changing while these events were stored; retry",
            code="catalog_changing",
        )
    outcomes.update(refused)
    firsts_by_index = dict(firsts)
    quarantined = {q.event_id for q in held}
    firsts = [pair for pair, _ in storable]
    ids = [event_id for _, event_id in storable]
    events = [event for _, event in firsts]
    earlier = rows.stored_keys(
        connection,
        [
            e.idempotency_key
            for e in events
            if e.metric_key in stored.active and e.idempotency_key not in stored.claimed
        ]
        + [outcome.idempotency_key for outcome in refused.values() if outcome.idempotency_key],
    )
    for index, outcome in refused.items():
        # A resend of an event stored before its contract changed is still its duplicate.
        found = earlier.get(outcome.idempotency_key or "")
        if found is not None:
            outcomes[index] = against_stored(index, firsts_by_index[index], found)
    for (index, event), event_id in zip(firsts, ids, strict=True):
        key = event.idempotency_key
        if event.metric_key not in stored.active:
            outcomes[index] = Outcome(
                index,
                "invalid",
                key,
                code="unknown_metric",
                detail=f"metric_key {event.metric_key!r} is unknown or archived",
                errors=(FieldError(("metric_key",), "unknown or archived metric"),),
            )
        elif key in stored.claimed:
            outcomes[index] = Outcome(
                index, "quarantined" if event_id in quarantined else "accepted", key, event_id
            )
        else:
            outcomes[index] = against_stored(index, event, earlier[key])
    if stored.moved + stored.held != len(stored.claimed) or (stored.job_id is None) != (
        stored.moved == 0
    ):
        # The invariant, checked before anything commits.
        raise RuntimeError(f"ingest moved {stored.moved} events, expected {len(stored.claimed)}")
    job_id = stored.job_id
    if job_id is not None:
        after_commit(
            lambda: notify.emit_later(
                event_types.EVENTS_INGESTED,
                {"job_id": job_id},
                event_id=f"ingest-job-{job_id}",
                coalesce=True,
            )
        )


def against_stored(index: int, event: UsageEvent, stored: tuple[str, str]) -> Outcome:
    """An event whose key is stored already: its duplicate, or a conflict."""
    sha256, event_id = stored
    if sha256 == event.content_sha256:
        return Outcome(index, "duplicate", event.idempotency_key, event_id)
    return Outcome(
        index,
        "conflict",
        event.idempotency_key,
        event_id,
        code="idempotency_conflict",
        detail="an event with this key and other content is stored; it was not changed",
    )


@dataclass(frozen=True)
class _Grouped:
    api_key: str
    raw_event: Any


def _ingest_group(items: Sequence[_Grouped]) -> list[Outcome | AbaxusError]:
    """One transaction for a group of single events: their requests' keys are checked
    together (one statement, in the same transaction as the events), and the events of
    the keys that may ingest are written together. A refused key's event is not read."""
    database = get_group_database()
    with database.transaction() as connection:
        verdicts = api_keys.authorize_all(
            connection, [item.api_key for item in items], auth.SCOPE_EVENTS_WRITE
        )
        refused = {key: v for key, v in verdicts.items() if isinstance(v, AbaxusError)}
        allowed = [item for item in items if item.api_key not in refused]
        names = [verdicts[item.api_key] for item in allowed]
        outcomes = iter(
            ingest(
                [item.raw_event for item in allowed],
                database=database,
                producer=[name.name if isinstance(name, Caller) else None for name in names],
            )
        )
    # In order: a refused request gets its key's error, the others their events' outcomes.
    return [refused[item.api_key] if item.api_key in refused else next(outcomes) for item in items]


_single_events = AsyncGroupCommit(_ingest_group)


def ingest_single(raw_event: Any, *, producer: str | None = None) -> Outcome:
    """One event of an already authenticated request, written in the caller's transaction
    (an Idempotency-Key record, for one, must commit atomically with it)."""
    (outcome,) = ingest([raw_event], producer=producer)
    return outcome


async def ingest_single_async(raw_event: Any, *, api_key: str) -> Outcome:
    """One event of a request answered on an event loop, grouped with the process's
    concurrent single events into one transaction that also checks their keys (the
    request's bearer secret, not yet checked: 401/403 raised here), written by one thread
    of the process while the requests wait on the loop."""
    result = await _single_events.submit(_Grouped(api_key, raw_event))
    if isinstance(result, AbaxusError):  # the request's key was refused
        raise result
    return result


def list_events(
    *,
    customer_id: str,
    metric_key: str | None,
    start: datetime | None,
    end: datetime | None,
    cursor: str | None,
    limit: int,
    include_superseded: bool = False,
) -> tuple[list[dict[str, Any]], str | None]:
    """A customer's events in (timestamp, id) order: those that count, or with
    `include_superseded` every stored one, each with the correction superseding it."""
    position = decode_cursor(cursor)
    after = None
    if position is not None:
        try:
            after = (datetime.fromisoformat(position["ts"]), str(position["id"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValidationFailed(
                "cursor is not one this API returned", code="invalid_cursor"
            ) from error
    with get_database().transaction() as connection:
        superseded = {
            key: correction_rows.supersession(connection, key)
            for key in correction_rows.corrected_metrics(connection, metric_key)
        }
        page = rows.page(
            connection,
            customer_id=customer_id,
            metric_key=metric_key,
            start=start,
            end=end,
            after=after,
            limit=limit + 1,
            hide={} if include_superseded else superseded,
        )
    for event in page:
        found = superseded.get(event["metric_key"])
        event["superseded_by"] = (
            None
            if found is None
            else found.superseded_by(
                customer_id=event["customer_id"],
                timestamp=event["timestamp"],
                received_at=event["received_at"],
                idempotency_key=event["idempotency_key"],
                correction_id=event.pop("correction_id"),
            )
        )
        event.pop("correction_id", None)
    more = len(page) > limit
    page = page[:limit]
    next_cursor = (
        encode_cursor({"ts": page[-1]["timestamp"].isoformat(), "id": page[-1]["id"]})
        if more and page
        else None
    )
    return page, next_cursor


def ensure_partitions_ahead(now: datetime | None = None, months_ahead: int = 2) -> None:
    """Create this month's and the next months' partitions before any event needs them."""
    now = now or datetime.now(UTC)
    first = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    rows.ensure_partitions(
        get_database().maintenance_engine,
        {first + relativedelta(months=k) for k in range(months_ahead + 1)},
    )
