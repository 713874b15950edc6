"""Prometheus metrics: one registry for the process, named abaxus_*."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)

http_requests = Counter(
    "abaxus_http_requests",
    "HTTP requests answered, by function, route template, method and status.",
    ["function", "route", "method", "status"],
    registry=REGISTRY,
)
http_request_duration = Histogram(
    "abaxus_http_request_duration_seconds",
    "Time to answer an HTTP request, by function and route template.",
    ["function", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
cloudevents_received = Counter(
    "abaxus_cloudevents_received",
    "CloudEvents received by a function, by type and outcome.",
    ["function", "type", "outcome"],
    registry=REGISTRY,
)
cloudevents_emitted = Counter(
    "abaxus_cloudevents_emitted",
    "CloudEvents sent to K_SINK, by type and outcome (sent, failed, skipped).",
    ["type", "outcome"],
    registry=REGISTRY,
)
jobs_finished = Counter(
    "abaxus_jobs_finished",
    "Queue jobs that ended an attempt, by queue, kind and outcome (done, retry, dead).",
    ["queue", "kind", "outcome"],
    registry=REGISTRY,
)

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


def render_metrics() -> bytes:
    return generate_latest(REGISTRY)


events_ingested = Counter(
    "abaxus_events",
    "Usage events received, by outcome (accepted, duplicate, conflict, invalid).",
    ["outcome"],
    registry=REGISTRY,
)
ingest_batch_size = Histogram(
    "abaxus_ingest_batch_size",
    "Events per ingestion transaction: a batch, or a group-committed set of single events.",
    buckets=(1, 10, 50, 100, 250, 500),
    registry=REGISTRY,
)
ingest_duration = Histogram(
    "abaxus_ingest_duration_seconds",
    "Time to validate, deduplicate and durably store one ingestion request.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
events_folded = Counter(
    "abaxus_events_folded",
    "Usage events folded into real-time rollups.",
    registry=REGISTRY,
)
fold_duration = Histogram(
    "abaxus_fold_duration_seconds",
    "Time to fold one batch of ingestion jobs into the rollups.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
region_lag = Gauge(
    "abaxus_region_lag_seconds",
    "A central's lag behind each region: now minus the newest heartbeat received from it "
    "(-1 before the first; API.md §10).",
    ["region"],
    registry=REGISTRY,
)
region_complete_until = Gauge(
    "abaxus_region_complete_until_timestamp_seconds",
    "Up to when every event a region received is known at this central.",
    ["region"],
    registry=REGISTRY,
)
usage_parity_drift = Gauge(
    "abaxus_usage_parity_drift",
    "Last reconciliation: sum over sampled customers of |real-time - exact| usage in the "
    "window, per metric, where nothing was left to fold (0 = dashboard and invoice agree).",
    ["metric_key"],
    registry=REGISTRY,
)
usage_parity_mismatches = Gauge(
    "abaxus_usage_parity_mismatches",
    "Last reconciliation: sampled customers whose real-time and exact usage of the metric "
    "disagree (values, event counts or groups) with nothing left to fold.",
    ["metric_key"],
    registry=REGISTRY,
)
usage_parity_checked = Gauge(
    "abaxus_usage_parity_checked_timestamp_seconds",
    "When the last reconciliation compared real-time and exact usage.",
    registry=REGISTRY,
)
