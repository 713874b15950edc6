"""CloudEvent types ABAXUS sends and receives (ARCHITECTURE.md, "Functions and the events")."""

from __future__ import annotations

USAGE_REPORTED = "dev.abaxus.usage.reported.v1"
EVENTS_INGESTED = "dev.abaxus.events.ingested.v1"
AGGREGATE_TICK = "dev.abaxus.aggregate.tick.v1"
BILLING_TICK = "dev.abaxus.billing.tick.v1"
INVOICE_REQUESTED = "dev.abaxus.invoice.requested.v1"
CALCULATION_COMPLETED = "dev.abaxus.calculation.completed.v1"
INVOICE_ISSUED = "dev.abaxus.invoice.issued.v1"
PAYMENT_SUCCEEDED = "dev.abaxus.payment.succeeded.v1"
PAYMENT_FAILED = "dev.abaxus.payment.failed.v1"

# A Knative PingSource cannot choose its event type: its events are this type, with source
# /apis/v1/namespaces/<namespace>/pingsources/<name>. The Trigger on that source routes a
# ping to the one function it ticks, which treats it as its tick.
KNATIVE_PING = "dev.knative.sources.ping"
REGION_STALLED = "dev.abaxus.region.stalled.v1"
SUBSCRIPTION_CHANGED = "dev.abaxus.subscription.changed.v1"
