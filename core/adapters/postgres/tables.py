"""SQLAlchemy Core descriptions of the tables the migrations create.

The migrations (SQL) are the source of truth for the schema; these objects only let the
adapters build statements. tests/integration/test_schema.py checks they agree.
"""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSON, JSONB

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("scopes", ARRAY(Text), nullable=False),
    Column("prefix", Text, nullable=False),
    Column("secret_sha256", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("team", Text),
)

idempotency_records = Table(
    "idempotency_records",
    metadata,
    Column("api_key_id", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("method", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("request_sha256", Text, nullable=False),
    Column("response_status", Integer, nullable=False),
    Column("response_headers", JSONB, nullable=False),
    Column("response_body", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("entity", Text, nullable=False),
    Column("entity_id", Text, nullable=False),
    Column("request_id", Text),
    Column("state_sha256", Text, nullable=False),
    Column("changes", JSONB),
    Column("prev_sha256", Text, nullable=False),
    Column("row_sha256", Text, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("queue", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("dedupe_key", Text),
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("run_after", DateTime(timezone=True), nullable=False),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
)

cloudevent_inbox = Table(
    "cloudevent_inbox",
    metadata,
    Column("function", Text, primary_key=True),
    Column("source", Text, primary_key=True),
    Column("id", Text, primary_key=True),
    Column("type", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

metrics = Table(
    "metrics",
    metadata,
    Column("key", Text, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("archived_at", DateTime(timezone=True)),
)

metric_versions = Table(
    "metric_versions",
    metadata,
    Column("metric_key", Text, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("unit", Text, nullable=False),
    Column("aggregation", Text, nullable=False),
    Column("unique_property", Text),
    Column("percentile", Numeric(20, 10, asdecimal=True)),
    Column("filters", JSONB, nullable=False),
    Column("group_by", ARRAY(Text), nullable=False),
    Column("effective_from", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("contract", JSONB),
)

price_plans = Table(
    "price_plans",
    metadata,
    Column("code", Text, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("archived_at", DateTime(timezone=True)),
)

plan_versions = Table(
    "plan_versions",
    metadata,
    Column("plan_code", Text, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("interval", Text, nullable=False),
    Column("charges", JSONB, nullable=False),
    Column("definition_sha256", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("terms", JSONB, nullable=False, server_default="{}"),
)

customers = Table(
    "customers",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("email", Text),
    Column("currency", Text, nullable=False),
    Column("region", Text),
    Column("billing_provider", Text, nullable=False),
    Column("provider_customer_id", Text),
    Column("payment_method", Text),
    Column("metadata", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("archived_at", DateTime(timezone=True)),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("customer_id", Text, nullable=False),
    Column("plan_code", Text, nullable=False),
    Column("plan_version", Integer, nullable=False),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True)),
    Column("overrides", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("canceled_at", DateTime(timezone=True)),
    Column("anchor_at", DateTime(timezone=True), nullable=False),
    Column("previous_subscription_id", Text),
    Column("changed_at", DateTime(timezone=True)),
    Column("terms", JSONB, nullable=False, server_default="{}"),
    Column("trial_ends_at", DateTime(timezone=True)),
)

coupons = Table(
    "coupons",
    metadata,
    Column("code", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("percent_off", Numeric(20, 10, asdecimal=True)),
    Column("amount_off", Numeric(20, 10, asdecimal=True)),
    Column("currency", Text),
    Column("duration", Text, nullable=False),
    Column("duration_periods", Integer),
    Column("metric_keys", ARRAY(Text)),
    Column("max_redemptions", Integer),
    Column("redeem_by", DateTime(timezone=True)),
    Column("redeemed", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("archived_at", DateTime(timezone=True)),
)

discounts = Table(
    "discounts",
    metadata,
    Column("id", Text, primary_key=True),
    Column("subscription_id", Text, nullable=False),
    Column("coupon_code", Text, nullable=False),
    Column("first_period_start", DateTime(timezone=True), nullable=False),
    Column("carried_from", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("removed_at", DateTime(timezone=True)),
)

closed_periods = Table(
    "closed_periods",
    metadata,
    Column("subscription_id", Text, primary_key=True),
    Column("period_start", DateTime(timezone=True), primary_key=True),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("invoice_id", Text, nullable=False),
    Column("closed_at", DateTime(timezone=True), nullable=False),
)

event_keys = Table(
    "event_keys",
    metadata,
    Column("idempotency_key", Text, primary_key=True),
    Column("content_sha256", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_timestamp", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Partitioned by RANGE (timestamp); the adapters use driver-level SQL for the hot path.
events = Table(
    "events",
    metadata,
    Column("id", Text, nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("metric_key", Text, nullable=False),
    Column("value", Numeric(20, 10, asdecimal=True), nullable=False),
    Column("timestamp", DateTime(timezone=True), nullable=False),
    Column("properties", JSONB, nullable=False),
    Column("idempotency_key", Text, nullable=False),
    Column("content_sha256", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("region", Text, nullable=False),
    Column("ingest_job_id", BigInteger, nullable=False),
    Column("zone", Text),
    Column("digest", Numeric(78, 0, asdecimal=True), nullable=False),
    Column("correction_id", Text),  # posted into this correction, counted once it applied
)

corrections = Table(
    "corrections",
    metadata,
    Column("id", Text, primary_key=True),
    Column("metric_key", Text, nullable=False),
    Column("customer_id", Text),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("window_end", DateTime(timezone=True), nullable=False),
    Column("mode", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("applied_at", DateTime(timezone=True)),
    Column("applied_by", Text),
    Column("reverted_at", DateTime(timezone=True)),
    Column("reverted_by", Text),
)

correction_events = Table(
    "correction_events",
    metadata,
    Column("id", Text, primary_key=True),
    Column("correction_id", Text, nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("metric_key", Text, nullable=False),
    Column("value", Numeric(20, 10, asdecimal=True), nullable=False),
    Column("timestamp", DateTime(timezone=True), nullable=False),
    Column("properties", JSONB, nullable=False),
    Column("idempotency_key", Text, nullable=False),
    Column("content_sha256", Text, nullable=False),
    Column("digest", Numeric(78, 0, asdecimal=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

correction_retractions = Table(
    "correction_retractions",
    metadata,
    Column("correction_id", Text, primary_key=True),
    Column("idempotency_key", Text, primary_key=True),
    Column("event_id", Text, nullable=False),
)


def _rollup_key() -> list[Column[object]]:
    return [
        Column("customer_id", Text, primary_key=True),
        Column("metric_key", Text, primary_key=True),
        Column("bucket_start", DateTime(timezone=True), primary_key=True),
        Column("version", Integer, primary_key=True),
        Column("group_values", ARRAY(Text), primary_key=True),
    ]


usage_rollups = Table(
    "usage_rollups",
    metadata,
    *_rollup_key(),
    Column("event_count", BigInteger, nullable=False),
    Column("total", Numeric(38, 10, asdecimal=True), nullable=False),
    Column("smallest", Numeric(20, 10, asdecimal=True), nullable=False),
    Column("largest", Numeric(20, 10, asdecimal=True), nullable=False),
    Column("last_timestamp", DateTime(timezone=True)),
    Column("last_key", Text),
    Column("last_value", Numeric(20, 10, asdecimal=True)),
    Column("digest_sum", Numeric(asdecimal=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

quarantined_events = Table(
    "quarantined_events",
    metadata,
    Column("id", Text, primary_key=True),
    Column("customer_id", Text, nullable=False),
    Column("metric_key", Text, nullable=False),
    Column("value", Numeric(20, 10, asdecimal=True), nullable=False),
    Column("timestamp", DateTime(timezone=True), nullable=False),
    Column("properties", JSONB, nullable=False),
    Column("idempotency_key", Text, nullable=False),
    Column("content_sha256", Text, nullable=False),
    Column("digest", Numeric(78, 0, asdecimal=True), nullable=False),
    Column("region", Text, nullable=False),
    Column("producer", Text),
    Column("metric_version", Integer, nullable=False),
    Column("violations", JSONB, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("checked_at", DateTime(timezone=True), nullable=False),
    Column("released_at", DateTime(timezone=True)),
    Column("released_by", Text),
)

usage_rollup_excluded = Table(
    "usage_rollup_excluded",
    metadata,
    Column("customer_id", Text, primary_key=True),
    Column("metric_key", Text, primary_key=True),
    Column("bucket_start", DateTime(timezone=True), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("event_count", BigInteger, nullable=False),
)

usage_rollup_distinct = Table(
    "usage_rollup_distinct",
    metadata,
    *_rollup_key(),
    Column("value_text", Text, primary_key=True),
)

usage_rollup_sketch = Table(
    "usage_rollup_sketch",
    metadata,
    *_rollup_key(),
    Column("sign", Integer, primary_key=True),
    Column("bin", Integer, primary_key=True),
    Column("event_count", BigInteger, nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("ce_id", Text, nullable=False),
    Column("ce_source", Text, nullable=False),
    Column("ce_type", Text, nullable=False),
    Column("error_dest", Text),
    Column("error_code", Text),
    Column("error_data", Text),
    Column("headers", JSONB, nullable=False),
    Column("body", LargeBinary, nullable=False),
)

calculations = Table(
    "calculations",
    metadata,
    Column("id", Text, primary_key=True),
    Column("subscription_id", Text, nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("inputs_sha256", Text, nullable=False),
    Column("checksum", Text, nullable=False),
    Column("body", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("inputs_fingerprint", Text),
)

invoice_series = Table(
    "invoice_series",
    metadata,
    Column("series", Text, primary_key=True),
    Column("last_number", BigInteger, nullable=False),
)

invoices = Table(
    "invoices",
    metadata,
    Column("id", Text, primary_key=True),
    Column("customer_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("subscription_id", Text),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("calculation_id", Text),
    Column("plan_code", Text),
    Column("plan_version", Integer),
    Column("currency", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("series", Text),
    Column("sequence", BigInteger),
    Column("number", Text),
    Column("lines", JSONB, nullable=False),
    Column("subtotal", Numeric(20, 10, asdecimal=True), nullable=False),
    Column("total", Numeric(20, 10, asdecimal=True), nullable=False),
    Column("credit_carried", Numeric(20, 10, asdecimal=True), nullable=False),
    Column("checksum", Text, nullable=False),
    Column("net_terms_days", Integer, nullable=False),
    Column("due_at", DateTime(timezone=True)),
    Column("issued_at", DateTime(timezone=True)),
    Column("paid_at", DateTime(timezone=True)),
    Column("voided_at", DateTime(timezone=True)),
    Column("void_reason", Text),
    Column("payment_reference", Text),
    Column("replaces", Text),
    Column("inputs_fingerprint", Text),
    Column("priced_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("complete", Boolean, nullable=False, server_default="true"),
    Column("regions_lacking", ARRAY(Text), nullable=False, server_default="{}"),
)

adjustments = Table(
    "adjustments",
    metadata,
    Column("id", Text, primary_key=True),
    Column("customer_id", Text, nullable=False),
    Column("subscription_id", Text),
    Column("kind", Text, nullable=False),
    Column("original_invoice_id", Text),
    Column("charge", Text),
    Column("metric_key", Text),
    Column("meter_version", Integer),
    Column("plan_version", Integer),
    Column("quantity_delta", Numeric(20, 10, asdecimal=True)),
    Column("amount_delta", Numeric(20, 10, asdecimal=True), nullable=False),
    Column("currency", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("applied_invoice_id", Text),
    Column("applied_at", DateTime(timezone=True)),
    Column("reverses", Text),
    Column("cancelled_at", DateTime(timezone=True)),
    Column("cancel_reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("correction_id", Text),
    Column("added_sha256", Text),
    Column("superseded_sha256", Text),
)

invoice_emails = Table(
    "invoice_emails",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("invoice_id", Text, nullable=False),
    Column("recipient", Text, nullable=False),
    Column("message_id", Text, nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=False),
)

payments = Table(
    "payments",
    metadata,
    Column("id", Text, primary_key=True),
    Column("invoice_id", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("provider", Text, nullable=False),
    Column("idempotency_key", Text, nullable=False),
    Column("provider_id", Text),
    Column("amount", Numeric(20, 10, asdecimal=True), nullable=False),
    Column("currency", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("error", Text),
    Column("reference", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

invoice_runs = Table(
    "invoice_runs",
    metadata,
    Column("id", Text, primary_key=True),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("issue", Boolean, nullable=False),
    Column("charge", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

invoice_run_items = Table(
    "invoice_run_items",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("subscription_id", Text, primary_key=True),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
)
