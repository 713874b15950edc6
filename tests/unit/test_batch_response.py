"""The batch endpoint writes its 207 body itself: it must be exactly what encoding the
results' dicts gives."""

from hypothesis import given
from hypothesis import strategies as st

from core.domain.errors import FieldError
from core.services.ingest import Outcome
from functions.http import to_json
from functions.ingest import batch_response

_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_OUTCOME = st.one_of(
    st.builds(lambda k, i: ("accepted", k, i, None, None), _TEXT, _TEXT),
    st.builds(lambda k, i: ("duplicate", k, i, None, None), _TEXT, _TEXT),
    st.builds(lambda k, i: ("quarantined", k, i, None, None), _TEXT, _TEXT),
    st.builds(lambda k, i, d: ("conflict", k, i, "idempotency_conflict", d), _TEXT, _TEXT, _TEXT),
    st.builds(lambda k, c, d: ("invalid", k, None, c, d), st.none() | _TEXT, _TEXT, _TEXT),
)


def _expected(outcomes):
    names = ("accepted", "duplicate", "quarantined")
    counts = {name: sum(o.outcome == name for o in outcomes) for name in names}
    return to_json(
        {
            "results": [o.result() for o in outcomes],
            "accepted": counts["accepted"],
            "duplicates": counts["duplicate"],
            "quarantined": counts["quarantined"],
            "rejected": len(outcomes) - sum(counts.values()),
        }
    )


def test_a_mixed_batch_with_awkward_keys_is_written_as_its_dicts_encode():
    outcomes = [
        Outcome(0, "accepted", "k-0", "evt_1"),
        Outcome(1, "duplicate", 'quo"te \\ é ✓ \u2028 \x7f', "evt_2"),
        Outcome(5, "quarantined", "k-5", "evt_5"),
        Outcome(2, "conflict", "k-2", "evt_3", "idempotency_conflict", "other content"),
        Outcome(3, "invalid", None, code="invalid_value", detail="value must be exact"),
        Outcome(
            4, "invalid", "k-4", None, "unknown_metric", "metric 'x'", (FieldError(("m",), "x"),)
        ),
    ]
    body = batch_response(outcomes)
    assert body == _expected(outcomes)
    assert body.startswith(b'{"results": [{"index": 0, "status": 202, "outcome": "accepted"')


@given(st.lists(_OUTCOME, min_size=1, max_size=20))
def test_any_batch_is_written_as_its_dicts_encode(drawn):
    outcomes = [
        Outcome(n, outcome, key, event_id, code, detail)
        for n, (outcome, key, event_id, code, detail) in enumerate(drawn)
    ]
    assert batch_response(outcomes) == _expected(outcomes)
