"""The worked examples of the documentation are executed: each ```http request block of
docs/concepts.md's worked examples is sent, in order, to the function that owns its path
(the real WSGI and ASGI apps, on the real PostgreSQL), and the ```json response block after
it must hold: the status, and every field it shows (a subset: ids and instants the reader
cannot know are left out of the documentation, lists are compared item by item)."""

import json
import re
from datetime import UTC, datetime, timedelta

from dateutil.relativedelta import relativedelta
from functions_framework import create_app as create_wsgi_app

from core.services import aggregation, api_keys
from core.services.caller import SYSTEM
from functions.routes import owner_of
from tests.asgi_client import create_app as create_asgi_app
from tests.conftest import PROJECT_ROOT

MAIN = str(PROJECT_ROOT / "functions" / "main.py")
CONCEPTS = PROJECT_ROOT / "docs" / "concepts.md"
EXAMPLE = re.compile(
    r"```http\n(?P<request>.*?)```\n```json response (?P<status>\d{3})\n(?P<response>.*?)```",
    re.DOTALL,
)


def _section(text, heading):
    start = text.index(heading)
    following = text.find("\n## ", start + len(heading))
    return text[start : following if following != -1 else len(text)]


def _steps(section):
    steps = []
    for match in EXAMPLE.finditer(section):
        head, _, body = match["request"].partition("\n\n")
        request_line, *header_lines = head.strip().splitlines()
        method, path = request_line.split(" ", 1)
        headers = dict(line.split(": ", 1) for line in header_lines)
        steps.append((method, path, headers, body.strip(), int(match["status"]), match["response"]))
    return steps


def _holds(expected, actual, where="$", captured=None):
    """Every field `expected` shows is in `actual` with that value; a `$NAME` the example
    has not defined yet names the value found there (an id the reader cannot know), for
    the requests after it."""
    if captured is not None and isinstance(expected, str) and re.fullmatch(r"\$[A-Z_]+", expected):
        captured[expected] = actual
        return
    if isinstance(expected, dict):
        assert isinstance(actual, dict), (where, actual)
        for key, value in expected.items():
            assert key in actual, (f"{where}.{key} missing", actual)
            _holds(value, actual[key], f"{where}.{key}", captured)
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), (where, actual)
        for index, (item, got) in enumerate(zip(expected, actual, strict=True)):
            _holds(item, got, f"{where}[{index}]", captured)
    else:
        assert expected == actual, (where, expected, actual)


class Functions:
    def __init__(self):
        self.clients = {}

    def client(self, path):
        owner = owner_of(path.split("?", 1)[0])
        assert owner is not None, path
        if owner not in self.clients:
            create = create_asgi_app if owner == "ingest" else create_wsgi_app
            self.clients[owner] = create(target=owner, source=MAIN).test_client()
        return self.clients[owner]


def _variables(admin_secret):
    now = datetime.now(UTC).replace(microsecond=0)
    month_start = now.replace(day=1, hour=0, minute=0, second=0)
    last_month = month_start - relativedelta(months=1)
    bug_hour = last_month + timedelta(days=2, hours=10)

    def key(name, scopes, team=None):
        return api_keys.create_key(SYSTEM, name=name, scopes=scopes, team=team).secret

    def instant(value):
        return value.isoformat().replace("+00:00", "Z")

    return {
        "$ADMIN": admin_secret,
        "$GATEWAY": key("gateway", ["events:write"]),
        "$OWNER": key("gateway-owner", ["read", "corrections:write"], "team-gateway"),
        "$BILLING": key("billing-ops", ["corrections:write"], "team-billing"),
        # between the month's start and now, whenever the suite runs
        "$RECENT": instant(month_start + (now - month_start) / 2),
        "$MONTH_START": instant(month_start),
        "$NEXT_MONTH": instant(month_start + relativedelta(months=1)),
        "$LAST_MONTH": instant(last_month),
        "$LAST_MONTH_MORNING": instant(last_month + timedelta(days=2, hours=8)),
        "$LAST_MONTH_BUG": instant(bug_hour + timedelta(minutes=15)),
        "$BUG_HOUR": instant(bug_hour),
        "$BUG_HOUR_END": instant(bug_hour + timedelta(hours=1)),
    }


def _fill(text, variables):
    for name in sorted(variables, key=len, reverse=True):
        text = text.replace(name, variables[name])
    return text


# Run in this order, on one database: each continues the one before.
EXAMPLES = (
    "### Worked example: a producer bug, quarantined and released",
    "### Worked example: an hour of wrong values, replaced after the invoice was issued",
    "### Worked example: simulating a price change",
)


def test_the_worked_examples_of_the_concepts_run_as_written(admin_secret):
    text = CONCEPTS.read_text()
    steps = [step for heading in EXAMPLES for step in _steps(_section(text, heading))]
    assert len(steps) >= 15, "the examples' request and response blocks were not found"
    variables = _variables(admin_secret)
    functions = Functions()
    for number, (method, written, headers, body, status, expected) in enumerate(steps, 1):
        path = _fill(written, variables)
        sent = {name: _fill(value, variables) for name, value in headers.items()}
        payload = json.loads(_fill(body, variables)) if body else None
        client = functions.client(path)
        response = (
            client.get(path, headers=sent)
            if method == "GET"
            else client.post(path, json=payload, headers=sent)
        )
        answer = response.get_json()
        assert response.status_code == status, (number, method, path, answer)
        _holds(json.loads(_fill(expected, variables)), answer, f"step {number}", variables)
        aggregation.drain()  # what the aggregator does between the documented steps
