"""What the Knative manifests in knative/ declare, read for the dev server's local broker:
Services (-> function target), Triggers (filters, subscriber, delivery), the Broker's
delivery defaults and PingSources. The manifests are the only routing table."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

DURATION = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> timedelta:
    """ISO 8601 durations as Knative uses them (PT0.5S, PT1M, P1D)."""
    match = DURATION.match(text)
    if match is None or text in {"P", "PT"}:
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    parts = {name: float(value) for name, value in match.groupdict().items() if value}
    return timedelta(**parts)


@dataclass(frozen=True)
class Delivery:
    retry: int = 0
    backoff_policy: str = "exponential"
    backoff_delay: timedelta = timedelta(seconds=0.2)
    timeout: timedelta | None = None
    # deadLetterSink as (Knative Service name, path); None: undeliverable events stay dead jobs
    dead_letter: tuple[str, str] | None = None

    def delay(self, retry_number: int) -> timedelta:
        """Knative's schedule: linear = delay * n, exponential = delay * 2^n."""
        if self.backoff_policy == "linear":
            return self.backoff_delay * retry_number
        return self.backoff_delay * (2 ** min(retry_number, 20))

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | None, default: Delivery | None = None) -> Delivery:
        base = default or cls()
        if not spec:
            return base
        return cls(
            retry=int(spec.get("retry", base.retry)),
            backoff_policy=str(spec.get("backoffPolicy", base.backoff_policy)),
            backoff_delay=parse_duration(spec["backoffDelay"])
            if "backoffDelay" in spec
            else base.backoff_delay,
            timeout=parse_duration(spec["timeout"]) if "timeout" in spec else base.timeout,
            dead_letter=_dead_letter(spec["deadLetterSink"])
            if "deadLetterSink" in spec
            else base.dead_letter,
        )


ATTRIBUTE_DIALECTS: dict[str, Callable[[str, str], bool]] = {
    "exact": lambda actual, wanted: actual == wanted,
    "prefix": str.startswith,
    "suffix": str.endswith,
}


def _dead_letter(sink: Mapping[str, Any]) -> tuple[str, str]:
    ref = sink.get("ref") or {}
    if ref.get("kind") != "Service":
        raise ValueError(f"the local broker delivers dead letters to a Service ref, not {sink}")
    return str(ref["name"]), str(sink.get("uri", "/"))


def _dialect_matches(dialect: str, value: Any, attributes: Mapping[str, str]) -> bool:
    if dialect in ATTRIBUTE_DIALECTS:
        compare = ATTRIBUTE_DIALECTS[dialect]
        return all(
            name in attributes and compare(attributes[name], wanted)
            for name, wanted in value.items()
        )
    nested = {
        "all": lambda: all(filter_matches(item, attributes) for item in value),
        "any": lambda: any(filter_matches(item, attributes) for item in value),
        "not": lambda: not filter_matches(value, attributes),
    }
    if dialect not in nested:
        raise ValueError(f"the local broker does not evaluate the {dialect!r} filter dialect")
    return nested[dialect]()


def filter_matches(expression: Mapping[str, Any], attributes: Mapping[str, str]) -> bool:
    return all(_dialect_matches(d, v, attributes) for d, v in expression.items())


@dataclass(frozen=True)
class Subscription:
    trigger: str
    function: str
    attribute_filter: Mapping[str, str]
    filters: tuple[Mapping[str, Any], ...]
    delivery: Delivery

    def matches(self, attributes: Mapping[str, str]) -> bool:
        # Knative: `filters` (the new dialects) overrides `filter` when both are set.
        if self.filters:
            return all(filter_matches(item, attributes) for item in self.filters)
        return all(attributes.get(k) == v for k, v in self.attribute_filter.items() if v != "")


@dataclass(frozen=True)
class PingSchedule:
    name: str
    schedule: str
    source: str
    data: str
    content_type: str

    def fires_at(self, minute: datetime) -> bool:
        return cron_matches(self.schedule, minute)


@dataclass(frozen=True)
class Topology:
    namespace: str
    functions_by_service: Mapping[str, str]
    subscriptions: tuple[Subscription, ...]
    pings: tuple[PingSchedule, ...]

    def subscribers(self, attributes: Mapping[str, str]) -> list[Subscription]:
        return [s for s in self.subscriptions if s.matches(attributes)]


def _documents(knative_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    kustomization = yaml.safe_load((knative_dir / "kustomization.yaml").read_text())
    documents: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        for document in yaml.safe_load_all((knative_dir / resource).read_text()):
            if document:
                documents.append(document)
    return str(kustomization.get("namespace", "default")), documents


def _target_of(service: Mapping[str, Any]) -> str:
    for container in service["spec"]["template"]["spec"]["containers"]:
        for variable in container.get("env", []):
            if variable.get("name") == "FUNCTION_TARGET":
                return str(variable["value"])
    raise ValueError(f"Service {service['metadata']['name']} sets no FUNCTION_TARGET")


def load_topology(knative_dir: Path) -> Topology:
    namespace, documents = _documents(knative_dir)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for document in documents:
        by_kind.setdefault(document["kind"], []).append(document)
    services = {s["metadata"]["name"]: _target_of(s) for s in by_kind.get("Service", [])}
    for document in by_kind.get("Broker", []) + by_kind.get("Trigger", []):
        sink = (document.get("spec", {}).get("delivery") or {}).get("deadLetterSink")
        if sink is not None and _dead_letter(sink)[0] not in services:
            raise ValueError(
                f"{document['kind']} {document['metadata']['name']} "
                "dead-letters to an unknown Service"
            )
    brokers = {
        b["metadata"]["name"]: Delivery.parse(b.get("spec", {}).get("delivery"))
        for b in by_kind.get("Broker", [])
    }
    subscriptions = []
    for trigger in by_kind.get("Trigger", []):
        spec, name = trigger["spec"], trigger["metadata"]["name"]
        ref = spec["subscriber"]["ref"]
        if ref.get("kind") != "Service" or ref["name"] not in services:
            raise ValueError(
                f"Trigger {name} subscribes {ref}, which is no Service in {knative_dir}"
            )
        if spec["broker"] not in brokers:
            raise ValueError(
                f"Trigger {name} names broker {spec['broker']!r}, which is not declared"
            )
        subscription = Subscription(
            trigger=name,
            function=services[ref["name"]],
            attribute_filter=dict((spec.get("filter") or {}).get("attributes", {})),
            filters=tuple(spec.get("filters") or ()),
            delivery=Delivery.parse(spec.get("delivery"), brokers[spec["broker"]]),
        )
        subscription.matches({})  # reject unsupported dialects at load, not at delivery
        subscriptions.append(subscription)
    pings = tuple(
        PingSchedule(
            name=p["metadata"]["name"],
            schedule=p["spec"].get("schedule", "* * * * *"),
            source=f"/apis/v1/namespaces/{namespace}/pingsources/{p['metadata']['name']}",
            data=p["spec"].get("data", ""),
            content_type=p["spec"].get("contentType", "text/plain"),
        )
        for p in by_kind.get("PingSource", [])
    )
    return Topology(namespace, services, tuple(subscriptions), pings)


CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("weekday", 0, 6),
)


def _cron_field_matches(expression: str, value: int, low: int, high: int) -> bool:
    for part in expression.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            start, end = low, high
        elif "-" in base:
            start_text, end_text = base.split("-", 1)
            start, end = int(start_text), int(end_text)
        else:
            start = int(base)
            end = high if step_text else start
        if start <= value <= end and (value - start) % step == 0:
            return True
    return False


def cron_matches(schedule: str, minute: datetime) -> bool:
    """Five-field cron (minute hour day month weekday; *, a-b, a,b, */n), in UTC."""
    fields = schedule.split()
    if len(fields) != len(CRON_FIELDS):
        raise ValueError(f"cron schedule needs 5 fields: {schedule!r}")
    values = (minute.minute, minute.hour, minute.day, minute.month, (minute.weekday() + 1) % 7)
    return all(
        _cron_field_matches(text, value, low, high)
        for text, value, (_, low, high) in zip(fields, values, CRON_FIELDS, strict=True)
    )
