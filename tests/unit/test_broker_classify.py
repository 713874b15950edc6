import pytest

from functions.broker import classify


@pytest.mark.parametrize(
    ("status", "headers", "body", "outcome"),
    [
        (202, {}, b"", "delivered"),
        (200, {}, b"", "delivered"),
        (204, {}, b"", "delivered"),
        # functions-framework's default `200 OK text/html`: Knative's filter answers 502.
        (200, {"Content-Type": "text/html"}, b"OK", "retry"),
        (200, {"ce-specversion": "1.0", "ce-id": "1"}, b"{}", "reply"),
        (200, {"Content-Type": "application/cloudevents+json"}, b"{}", "reply"),
        (400, {}, b"bad", "failed"),
        (401, {}, b"", "failed"),
        (422, {}, b"", "failed"),
        (404, {}, b"", "retry"),
        (408, {}, b"", "retry"),
        (409, {}, b"", "retry"),
        (429, {}, b"", "retry"),
        (500, {}, b"", "retry"),
        (503, {}, b"", "retry"),
    ],
)
def test_subscriber_answers_are_classified_as_knatives_broker_does(status, headers, body, outcome):
    assert classify(status, headers, body) == outcome
