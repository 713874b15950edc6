"""Recompute an exact usage summary's checksum from the raw events (Python stdlib only).

    python tools/usage_checksum.py URL API_KEY CUSTOMER_ID METRIC_KEY FROM TO

Each counted event's digest: SHA-256 of `idempotency_key TAB timestamp TAB value LF`
as a 256-bit big-endian integer. Per meter version, the digests are summed (mod 2^256);
the checksum is the SHA-256 of one line per version with events, ascending:
`version TAB event_count TAB digest_sum_as_64_hex_digits LF`. An event counts under the
metric version in force at its timestamp, if its properties pass that version's filters
(booleans as true/false, numbers and strings as written).
"""

import hashlib
import json
import sys
import urllib.parse
import urllib.request
from datetime import datetime


def get(base_url, api_key, path):
    if not base_url.startswith(("http://", "https://")):
        raise SystemExit("URL must be http:// or https://")
    headers = {"Authorization": f"Bearer {api_key}"}
    request = urllib.request.Request(base_url + path, headers=headers)  # noqa: S310 - scheme checked
    with urllib.request.urlopen(request) as response:  # noqa: S310 - scheme checked
        return json.load(response)


def instant(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))  # compare instants, not strings


def property_text(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return None if value is None or isinstance(value, dict | list) else str(value)


def checksum(base_url, api_key, *, customer, metric, start, end):
    versions = get(base_url, api_key, f"/v1/metrics/{metric}")["versions"]
    events, cursor = [], ""
    while cursor is not None:
        query = {
            "customer_id": customer,
            "metric_key": metric,
            "from": start,
            "to": end,
            "limit": 1000,
        }
        page = get(
            base_url,
            api_key,
            "/v1/events?"
            + urllib.parse.urlencode({**query, **({"cursor": cursor} if cursor else {})}),
        )
        events, cursor = events + page["data"], page["next_cursor"]
    per_version = {}  # version -> (event count, sum of digests)
    for event in events:
        at = instant(event["timestamp"])
        version = next(
            (
                v
                for v in versions
                if instant(v["effective_from"]) <= at
                and (v["effective_to"] is None or at < instant(v["effective_to"]))
            ),
            None,
        )
        if version and all(
            property_text(event["properties"].get(k)) in allowed
            for k, allowed in version["filters"].items()
        ):
            line = f"{event['idempotency_key']}\t{event['timestamp']}\t{event['value']}\n"
            digest = int.from_bytes(hashlib.sha256(line.encode()).digest(), "big")
            count, total = per_version.get(version["version"], (0, 0))
            per_version[version["version"]] = (count + 1, total + digest)
    lines = "".join(
        f"{v}\t{count}\t{total % 2**256:064x}\n"
        for v, (count, total) in sorted(per_version.items())
    )
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


if __name__ == "__main__":
    url, key, customer_id, metric_key, window_start, window_end = sys.argv[1:7]
    print(
        checksum(
            url, key, customer=customer_id, metric=metric_key, start=window_start, end=window_end
        )
    )
