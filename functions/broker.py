"""The dev server's local broker: Knative Eventing's behaviour on one machine.

- Ingress: accepts a CloudEvent (binary or structured), finds the Triggers in knative/
  whose filters match, and records one delivery job per subscriber in PostgreSQL before
  answering 202, so an accepted event survives a restart.
- Delivery: POSTs the event, as received, to the subscriber function over HTTP, at least
  once. Like Knative's broker filter it treats 2xx with an empty body as delivered, 2xx
  with a CloudEvent as a reply (published back to the broker), a non-empty 2xx that is not
  a CloudEvent as a failed delivery, and retries 404/408/409/429/5xx and network errors
  with the Trigger's delivery spec (retry count, linear or exponential backoff); any other
  4xx is final. An undeliverable event stays in the jobs table as `dead`.
- PingSources: fires their schedules as `dev.knative.sources.ping` events.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from cloudevents.http import from_http

from core.adapters.queue import GiveUp, Job, RetryLater
from core.domain import delivery
from core.services import jobs
from functions.topology import PingSchedule, Subscription, Topology

log = logging.getLogger("abaxus.broker")

QUEUE = "broker"
DELIVERY_TIMEOUT_DEFAULT = timedelta(seconds=60)
IDLE_POLL_SECONDS = 0.5
DEAD_LETTER_DATA_BYTES_MAX = 1024


def is_cloudevent(headers: Mapping[str, str]) -> bool:
    lowered = {k.lower(): v for k, v in headers.items()}
    content_type = lowered.get("content-type", "").lower()
    return "ce-specversion" in lowered or content_type.startswith("application/cloudevents+json")


def classify(status: int, headers: Mapping[str, str], body: bytes) -> str:
    """What Knative's broker makes of a subscriber's answer: delivered, reply, retry, failed."""
    if 200 <= status < 300:
        if not body:
            return "delivered"
        return "reply" if is_cloudevent(headers) else "retry"
    if delivery.retryable(status):
        return "retry"
    return "failed"


def _event_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in headers.items()
        if k.lower().startswith("ce-") or k.lower() == "content-type"
    }


class LocalBroker:
    def __init__(self, topology: Topology, function_url: Callable[[str], str]) -> None:
        self.topology = topology
        self.function_url = function_url
        self._subscriptions = {s.trigger: s for s in topology.subscriptions}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._local = threading.local()
        self._threads: list[threading.Thread] = []

    # -- ingress -------------------------------------------------------------------

    def publish(
        self, headers: Mapping[str, str], body: bytes, *, dedupe_key: str | None = None
    ) -> int:
        """Route one CloudEvent; returns how many deliveries were recorded. Raises the
        SDK's error for something that is not a CloudEvent."""
        event = from_http(dict(headers), body)
        attributes = {k: str(v) for k, v in event.get_attributes().items()}
        subscribers = self.topology.subscribers(attributes)
        kept_headers = _event_headers(headers)
        encoded = base64.b64encode(body).decode("ascii")
        jobs.enqueue_all(
            QUEUE,
            [
                jobs.NewJob(
                    kind="deliver",
                    payload={
                        "trigger": s.trigger,
                        "function": s.function,
                        "ce_id": attributes["id"],
                        "ce_type": attributes["type"],
                        "headers": kept_headers,
                        "body": encoded,
                    },
                    dedupe_key=None if dedupe_key is None else f"{dedupe_key}:{s.trigger}",
                    max_attempts=s.delivery.retry + 1,
                )
                for s in subscribers
            ],
            on_commit=self._wake.set,
        )
        log.info(
            "event accepted",
            extra={
                "ce_id": attributes["id"],
                "ce_type": attributes["type"],
                "triggers": [s.trigger for s in subscribers],
            },
        )
        return len(subscribers)

    # -- delivery ------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def deliver(self, job: Job) -> None:
        payload = job.payload
        subscription: Subscription | None = self._subscriptions.get(payload["trigger"])
        if subscription is None:
            raise GiveUp(f"trigger {payload['trigger']!r} no longer exists in knative/")
        timeout = (subscription.delivery.timeout or DELIVERY_TIMEOUT_DEFAULT).total_seconds()
        retry_delay = subscription.delivery.delay(job.attempts + 1)
        try:
            response = self._session().post(
                self.function_url(subscription.function),
                headers=payload["headers"],
                data=base64.b64decode(payload["body"]),
                timeout=timeout,
            )
        except requests.RequestException as error:
            if job.attempts + 1 >= job.max_attempts:
                self._to_dead_letter(
                    subscription, payload, code="unreachable", data=str(error).encode()
                )
            raise RetryLater(
                f"delivery to {subscription.function} failed: {error}", retry_delay
            ) from error
        outcome = classify(response.status_code, response.headers, response.content)
        last_attempt = job.attempts + 1 >= job.max_attempts
        if outcome == "failed" or (outcome == "retry" and last_attempt):
            self._to_dead_letter(
                subscription, payload, code=str(response.status_code), data=response.content
            )
        log.info(
            "delivery",
            extra={
                "ce_id": payload["ce_id"],
                "trigger": subscription.trigger,
                "status": response.status_code,
                "outcome": outcome,
            },
        )
        if outcome == "reply":
            self.publish(response.headers, response.content)
        elif outcome == "retry":
            raise RetryLater(
                f"{subscription.function} answered {response.status_code}", retry_delay
            )
        elif outcome == "failed":
            raise GiveUp(
                f"{subscription.function} answered {response.status_code}: {response.text[:500]}"
            )

    def _to_dead_letter(
        self, subscription: Subscription, payload: dict[str, Any], *, code: str, data: bytes
    ) -> None:
        """Knative's dead-letter delivery: the event as received, plus why it failed."""
        target = subscription.delivery.dead_letter
        if target is None:
            return  # no sink: the event stays in the jobs table as a dead job
        service, path = target
        function = self.topology.functions_by_service[service]
        url = self.function_url(function).rstrip("/") + path
        headers = dict(payload["headers"])
        binary = any(name.lower() == "ce-specversion" for name in headers)
        why = {
            "knativeerrordest": self.function_url(subscription.function),
            "knativeerrorcode": code,
            "knativeerrordata": base64.b64encode(data[:DEAD_LETTER_DATA_BYTES_MAX]).decode(),
        }
        # Binary mode carries them as extensions; structured mode (left byte-identical)
        # as headers the sink also reads.
        headers.update({(f"ce-{k}" if binary else f"X-Abaxus-{k}"): v for k, v in why.items()})
        body = base64.b64decode(payload["body"])
        response = self._session().post(url, headers=headers, data=body, timeout=30)
        if not 200 <= response.status_code < 300:
            raise RetryLater(
                f"dead-letter sink answered {response.status_code}", timedelta(seconds=5)
            )
        log.error(
            "event dead-lettered",
            extra={"ce_id": payload["ce_id"], "trigger": subscription.trigger, "code": code},
        )

    def run_deliveries_once(self, limit: int = 10) -> int:
        return jobs.work(QUEUE, {"deliver": self.deliver}, limit=limit).claimed

    def _delivery_loop(self) -> None:
        while not self._stop.is_set():
            try:
                claimed = self.run_deliveries_once(limit=1)
            except Exception:
                log.exception("broker delivery loop error")
                claimed = 0
                self._stop.wait(1.0)
            if claimed == 0:
                self._wake.wait(IDLE_POLL_SECONDS)
                self._wake.clear()

    # -- ping sources ------------------------------------------------------------------

    def fire(self, ping: PingSchedule, minute: datetime) -> None:
        event_id = f"{ping.name}-{minute.strftime('%Y%m%dT%H%MZ')}"
        headers = {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-source": ping.source,
            "ce-type": "dev.knative.sources.ping",
            "ce-time": minute.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "content-type": ping.content_type,
        }
        self.publish(headers, ping.data.encode("utf-8"), dedupe_key=f"ping:{event_id}")

    def fire_due(self, minute: datetime, *, catch_up: bool = False) -> list[str]:
        """Fire every ping source whose schedule matches `minute` (with `catch_up`: every
        one, whatever its schedule); the names fired."""
        fired = []
        for ping in self.topology.pings:
            try:
                if catch_up or ping.fires_at(minute):
                    self.fire(ping, minute)
                    fired.append(ping.name)
            except Exception:
                log.exception("ping source failed", extra={"ping": ping.name})
        return fired

    def _ping_loop(self) -> None:
        # The first minute after start fires every source once: a dev machine that was off
        # or asleep missed its ticks (all of them are idempotent), and a new user sees the
        # billing cycle run without waiting for the top of the hour.
        last: datetime | None = None
        while not self._stop.is_set():
            minute = datetime.now(UTC).replace(second=0, microsecond=0)
            if minute != last:
                self.fire_due(minute, catch_up=last is None)
                last = minute
            self._stop.wait(1.0)

    # -- lifecycle -----------------------------------------------------------------

    def start(self, *, deliverers: int = 2, pings: bool = True) -> None:
        targets: list[Callable[[], None]] = [self._delivery_loop] * deliverers
        if pings:
            targets.append(self._ping_loop)
        for index, target in enumerate(targets):
            thread = threading.Thread(target=target, name=f"abaxus-broker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=5)
