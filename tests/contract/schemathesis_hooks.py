"""Schemathesis hooks for tests/contract/test_schemathesis.py (SCHEMATHESIS_HOOKS).

An Idempotency-Key names one request: a client never sends the same key with another
request, and ABAXUS refuses one that does (422 idempotency_key_reused) — a rule about
pairs of requests that no schema of a single request can state. Schemathesis draws keys
from the schema and draws the same few ("0", "00", …) for many requests, so most of its
valid POSTs would stop at that refusal and never reach the route. Each valid key it
generates for a valid request is made unique here, as a client's would be; invalid
requests (an invalid key among them) are sent as generated, to be refused.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import schemathesis

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
SUFFIX_CHARS_MAX = 12
_serial = itertools.count(1)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.meta is not None and case.meta.generation.mode.is_negative:
        return  # sent as generated: an edit would make schemathesis take it for a valid case
    headers = case.headers or {}
    for name, value in list(headers.items()):
        if (
            name.lower() == "idempotency-key"
            and isinstance(value, str)
            and IDEMPOTENCY_KEY.match(value)
        ):
            headers[name] = f"{value[: 255 - SUFFIX_CHARS_MAX]}.{next(_serial)}"
