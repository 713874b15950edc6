"""Residency (API.md §10): a customer's `region` pins where its raw events live. Regions
are grouped into zones (`ABAXUS_RESIDENCY_ZONES`, e.g. `eu=eu-west-1,eu-central-1;
us=us-east-1`); with enforcement on, an ingest region takes the events of a customer homed
in its own zone (or in itself, without zones) and of customers with no home, and refuses
the others, naming the home region."""

from __future__ import annotations

from collections.abc import Mapping


def parse_zones(text: str) -> dict[str, str]:
    """region -> zone from `zone=region,region;zone=region`; a malformed text or a region
    in two zones is a ValueError (the settings refuse to start)."""
    zones: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        zone, sep, regions = part.partition("=")
        if not sep or not zone.strip():
            raise ValueError(f"{part!r} is not zone=region,region")
        for region in filter(None, (r.strip() for r in regions.split(","))):
            if region in zones:
                raise ValueError(f"region {region!r} is in two zones")
            zones[region] = zone.strip()
    return zones


def home_elsewhere(home: str | None, here: str, zones: Mapping[str, str]) -> bool:
    """Whether a customer homed in `home` must not have its events ingested in `here`."""
    if home is None or home == here:
        return False
    if not zones:
        return True
    return zones.get(home, home) != zones.get(here, here)
