"""When a draft must be re-priced: its inputs fingerprint.

A draft is live until issued: refreshing or issuing it re-prices it from an exact
calculation — unless nothing it was priced from has changed, which this fingerprint
decides without scanning the period's events again. It covers what a calculation reads:
the subscription's plan version and overrides, the period and its coverage, and per metric
the meter versions in force and the **number of stored events** of the customer in the
coverage. A calculation keeps the fingerprint taken before it was priced, so a draft can
take the calculation `calculate` just made (the billing pipeline) without pricing again.

Why a count suffices: events are insert-only (the database refuses UPDATE and DELETE), so
the set of committed events in a window only grows; a later count equal to an earlier one
means the very same set. The fingerprint is taken *before* pricing (in an earlier
statement), so the priced set contains the fingerprinted one; an equal count later proves
all three equal. Any doubt re-prices: that is only slower, never wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from core.domain.pricing.engine import sha256


def fingerprint(
    *,
    subscription: Mapping[str, Any],
    period: tuple[datetime, datetime],
    coverage: tuple[datetime, datetime] | None,
    event_counts: Mapping[str, int],
    meter_versions: Mapping[str, Sequence[tuple[int, datetime]]],
    corrections: Mapping[str, Sequence[tuple[str, str]]] | None = None,
) -> str:
    return sha256(
        {
            "subscription_id": subscription["id"],
            "plan_code": subscription["plan_code"],
            "plan_version": subscription["plan_version"],
            "overrides": subscription["overrides"],
            "period": list(period),
            "coverage": None if coverage is None else list(coverage),
            "event_counts": dict(sorted(event_counts.items())),
            "meter_versions": {
                key: [list(version) for version in versions]
                for key, versions in sorted(meter_versions.items())
            },
            # Applied and reverted corrections per metric (API.md §19): a supersession
            # changes what counts without changing how many events are stored.
            **(
                {
                    "corrections": {
                        key: [list(found) for found in sorted(states)]
                        for key, states in sorted(corrections.items())
                        if states
                    }
                }
                if corrections and any(corrections.values())
                else {}
            ),
        }
    )
