"""CloudEvents out: binary mode to K_SINK (a Knative broker, or the dev server's local one).

Emitting is a notification, never the record of work: the work is durable in PostgreSQL
(the job queue) before anything is emitted, so a failed or skipped emit only delays it
until the next tick. Hence failures are logged and counted, not raised.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import requests
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from core.domain import delivery
from core.observability import cloudevents_emitted

log = logging.getLogger(__name__)

EMIT_ATTEMPTS_MAX = 4
EMIT_TIMEOUT_SECONDS = 10.0


class _RetryableStatus(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"sink answered {status}")
        self.status = status


class Bus:
    def __init__(
        self,
        sink: str | None,
        *,
        source: str,
        overrides: Mapping[str, Any] | None = None,
        attempts: int = EMIT_ATTEMPTS_MAX,
        wait_multiplier_seconds: float = 0.2,
    ) -> None:
        self.sink = sink
        self.source = source
        self.extensions = dict((overrides or {}).get("extensions", {}))
        self.attempts = attempts
        self.wait_multiplier_seconds = wait_multiplier_seconds
        self.session = requests.Session()

    def build(
        self,
        type_: str,
        data: Any,
        *,
        subject: str | None = None,
        event_id: str | None = None,
        source: str | None = None,
    ) -> CloudEvent:
        attributes: dict[str, Any] = {
            "type": type_,
            "source": source or self.source,
            "id": event_id or str(uuid.uuid4()),
            "datacontenttype": "application/json",
        }
        if subject is not None:
            attributes["subject"] = subject
        attributes.update(self.extensions)
        return CloudEvent(attributes, data)

    def emit(
        self,
        type_: str,
        data: Any,
        *,
        subject: str | None = None,
        event_id: str | None = None,
        source: str | None = None,
    ) -> bool:
        """Send one event; True once the sink accepted it. Use a deterministic `event_id`
        so that consumers can recognise a re-emitted event as the same one."""
        event = self.build(type_, data, subject=subject, event_id=event_id, source=source)
        if not self.sink:
            log.info("no K_SINK: event not sent", extra={"ce_type": type_, "ce_id": event["id"]})
            cloudevents_emitted.labels(type_, "skipped").inc()
            return False
        headers, body = to_binary(event)
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(self.attempts),
                wait=wait_exponential(multiplier=self.wait_multiplier_seconds, max=5),
                retry=retry_if_exception_type((requests.RequestException, _RetryableStatus)),
                reraise=False,
            ):
                with attempt:
                    self._post(headers, body)
        except RetryError as error:
            log.error(
                "event not delivered to K_SINK after %d attempts",
                self.attempts,
                extra={
                    "ce_type": type_,
                    "ce_id": event["id"],
                    "error": str(error.last_attempt.exception()),
                },
            )
            cloudevents_emitted.labels(type_, "failed").inc()
            return False
        except _FinalStatus as error:
            log.error(
                "K_SINK refused event",
                extra={"ce_type": type_, "ce_id": event["id"], "status": error.status},
            )
            cloudevents_emitted.labels(type_, "failed").inc()
            return False
        cloudevents_emitted.labels(type_, "sent").inc()
        return True

    def resend(self, headers: Mapping[str, str], body: bytes) -> bool:
        """Send a CloudEvent exactly as it was received once (binary or structured mode,
        its own id: a redelivered event is recognised by its consumers); True once the
        sink accepted it. Knative's error extensions and hop-by-hop headers are dropped."""
        if not self.sink:
            return False
        kept = {
            name: value
            for name, value in headers.items()
            if (name.lower().startswith("ce-") and not name.lower().startswith("ce-knativeerror"))
            or name.lower() == "content-type"
        }
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(self.attempts),
                wait=wait_exponential(multiplier=self.wait_multiplier_seconds, max=5),
                retry=retry_if_exception_type((requests.RequestException, _RetryableStatus)),
                reraise=True,
            ):
                with attempt:
                    self._post(kept, body)
        except (requests.RequestException, _RetryableStatus, _FinalStatus) as error:
            log.error("dead letter not re-sent", extra={"error": type(error).__name__})
            return False
        return True

    def _post(self, headers: dict[str, str], body: bytes | None) -> None:
        assert self.sink is not None
        response = self.session.post(
            self.sink, headers=headers, data=body, timeout=EMIT_TIMEOUT_SECONDS
        )
        status = response.status_code
        if 200 <= status < 300:
            return
        if delivery.retryable(status):
            raise _RetryableStatus(status)
        raise _FinalStatus(status)


class _FinalStatus(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"sink answered {status}")
        self.status = status


def overrides_from_json(value: str | None) -> dict[str, Any]:
    """K_CE_OVERRIDES as injected by a SinkBinding: {"extensions": {...}}."""
    if not value:
        return {}
    parsed = json.loads(value)
    return parsed if isinstance(parsed, dict) else {}
