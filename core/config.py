"""Deployment settings, read once from the environment (the only place that reads it)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.domain.residency import parse_zones

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every knob ABAXUS reads. Names are the environment variables (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    # PostgreSQL: a server URL, or unset for the embedded server under data_dir.
    database_url: str | None = None
    abaxus_data_dir: Path = Path(".abaxus")
    # Pool per process; keep it >= THREADS so no request waits for a connection.
    abaxus_db_pool_size: int = Field(default=0, ge=0, le=200)
    abaxus_statement_timeout_ms: int = Field(default=30_000, ge=100, le=3_600_000)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    threads: int = Field(default=8, ge=1, le=256)

    # Where CloudEvents go (Knative SinkBinding injects it; the dev server points it at its broker).
    k_sink: str | None = None
    k_service: str | None = None

    abaxus_bootstrap_key: str | None = None
    abaxus_region: str = "local"
    # API.md §10: `all` (one region, everything), `region` (ingest and the read API against
    # the region's database; catalog writes answer 421 naming ABAXUS_CENTRAL_URL) or
    # `central` (aggregation, pricing, invoicing, charging and the catalog).
    abaxus_role: Literal["all", "region", "central"] = "all"
    abaxus_central_url: str | None = None
    # Residency (API.md §10): refuse events of customers homed in another zone (421).
    abaxus_enforce_residency: bool = False
    abaxus_residency_zones: str = ""
    # Regions (API.md §10). A central: what drafting and issuing do for a period some region
    # has not completed (`wait`: refuse 409 region_incomplete; `bill_available`: bill what
    # is there, `complete: false`, late arrivals become adjustments), and after how long
    # without a heartbeat arriving a region is `stalled`.
    abaxus_region_policy: Literal["wait", "bill_available"] = "wait"
    # A central's residency zone (default: ABAXUS_REGION's in ABAXUS_RESIDENCY_ZONES): it
    # subscribes to that zone's publication of each region and keeps that zone's customers.
    abaxus_zone: str | None = None
    abaxus_region_stall_seconds: int = Field(default=30, ge=2, le=86_400)
    # A region: how often it writes its heartbeat, and the libpq connection strings of the
    # central whose catalog it replicates and of other zones' centrals whose directory of
    # customer homes it replicates (`|`-separated).
    abaxus_heartbeat_seconds: float = Field(default=5.0, gt=0, le=3600)
    abaxus_catalog_connection: str | None = None
    abaxus_directory_connections: str = ""
    abaxus_log_level: str = "INFO"
    abaxus_knative_dir: Path = PROJECT_ROOT / "knative" / "base"
    # The dev server fires the PingSources of knative/ (ticks); tests may switch them off.
    abaxus_dev_ticks: bool = True
    # Whether the dev server's broker delivers CloudEvents (off: they wait, durable, in its
    # queue; bench/ingest.py measures the ingest function alone as a cluster runs it).
    abaxus_dev_deliveries: bool = True
    # After announcing events.ingested, a process waits this long before announcing more:
    # under a steady stream, real-time rollups trail ingestion by about this much.
    abaxus_notify_linger_seconds: float = Field(default=1.0, ge=0, le=60)

    request_body_bytes_max: int = Field(default=1024 * 1024, ge=1024)

    # Invoices: numbers are <prefix>-<year>-<6 digits>, gap-free per series; due dates
    # are issue + net terms (a customer's metadata.net_terms_days overrides the default).
    abaxus_invoice_prefix: str = Field(default="ABX", pattern=r"^[A-Z0-9]{1,10}$")
    abaxus_net_terms_days: int = Field(default=30, ge=0, le=365)
    # The billing cycle: a period is invoiced once it ended this many seconds ago (late
    # events inside the grace land on the invoice itself); drafts are issued at once.
    abaxus_invoice_grace: int = Field(default=3600, ge=0, le=30 * 86400)
    abaxus_auto_issue: bool = True

    # The console (/dashboard): how long a login lasts, and whether its cookie is marked
    # Secure (set it when the console is served over TLS, as it should be in a cluster).
    abaxus_console_session_seconds: int = Field(default=8 * 3600, ge=60, le=30 * 86400)
    abaxus_console_secure_cookie: bool = False

    # Retention of operational tables, pruned by the aggregate tick in bounded batches
    # (docs/operations.md, "Retention"). Idempotency records: a retry of a POST within
    # this window replays its first answer; at least a day (Stripe keeps 24 h), a week by
    # default, because ABAXUS's own producers retry queued work for days. The CloudEvent
    # inbox: far longer than the broker's redelivery window (minutes). Finished jobs:
    # done ones are kept a week for operators, dead ones (failures to look at) 90 days.
    # Dead letters: CloudEvents nobody could process, possibly usage: a year.
    abaxus_idempotency_retention_hours: int = Field(default=168, ge=24, le=24 * 3650)
    abaxus_inbox_retention_hours: int = Field(default=168, ge=24, le=24 * 3650)
    abaxus_done_jobs_retention_hours: int = Field(default=168, ge=1, le=24 * 3650)
    abaxus_dead_jobs_retention_days: int = Field(default=90, ge=1, le=3650)
    abaxus_dead_letter_retention_days: int = Field(default=365, ge=7, le=3650)

    # Invoice emails (sent on issue when SMTP_URL is set: smtp://[user:password@]host[:port],
    # or smtps:// for implicit TLS; smtp:// upgrades with STARTTLS when the server offers
    # it) and the seller shown on invoices.
    smtp_url: str | None = None
    abaxus_email_from: str = "billing@abaxus.invalid"
    abaxus_seller_name: str = "ABAXUS seller"
    abaxus_seller_address: str = ""
    abaxus_seller_email: str = ""

    # Charging. Stripe: the secret key, the API base (tests point it at a local server),
    # the webhook signing secret. Dunning: days between a failed attempt and the next
    # (bounded: after the last one the invoice stays payment_failed).
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None
    stripe_webhook_secret: str | None = None
    abaxus_dunning_days: str = Field(default="1,3,7", pattern=r"^\d{1,3}(,\d{1,3}){0,9}$")

    @property
    def dunning_days(self) -> list[int]:
        return [int(day) for day in self.abaxus_dunning_days.split(",")]

    # Parity reconciliation on every aggregate tick: the last N whole hours, for a random
    # sample of this many customers with usage in them.
    abaxus_parity_window_hours: int = Field(default=24, ge=1, le=24 * 400)
    abaxus_parity_sample_customers: int = Field(default=20, ge=0, le=10_000)

    # PHI / personal data: event property keys stored only as HMAC-SHA256 with this secret.
    abaxus_pseudonymize_properties: str = ""
    abaxus_pseudonym_secret: str | None = None

    @model_validator(mode="after")
    def _pseudonyms(self) -> Settings:
        parse_zones(self.abaxus_residency_zones)  # a malformed map refuses to start
        if self.pseudonymized_keys and len(self.abaxus_pseudonym_secret or "") < 32:
            raise ValueError(
                "ABAXUS_PSEUDONYMIZE_PROPERTIES needs ABAXUS_PSEUDONYM_SECRET (>= 32 characters)"
            )
        return self

    @property
    def zone(self) -> str | None:
        """This deployment's residency zone (ABAXUS_ZONE, else ABAXUS_REGION's), or None
        without zones."""
        zones = self.residency_zones
        if not zones:
            return None
        return self.abaxus_zone or zones.get(self.abaxus_region)

    @property
    def residency_zones(self) -> dict[str, str]:
        return parse_zones(self.abaxus_residency_zones)

    @property
    def pseudonymized_keys(self) -> frozenset[str]:
        return frozenset(
            k.strip() for k in self.abaxus_pseudonymize_properties.split(",") if k.strip()
        )

    @field_validator("abaxus_log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("ABAXUS_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        return value

    @property
    def pool_size(self) -> int:
        return self.abaxus_db_pool_size or self.threads + 2


@functools.lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings()


def reload_settings() -> Settings:
    """Forget the cached settings (tests and the dev server set variables before starting)."""
    settings.cache_clear()
    return settings()
