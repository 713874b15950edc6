"""The dev server's connection balance: a worker accepts only while it holds no more
connections than every live sibling (shared memory, as the forked workers use it)."""

from __future__ import annotations

from functions.devworker import FREE, SLOTS, Balance


def test_slots_are_assigned_free_ones_first_and_released_on_exit() -> None:
    balance = Balance()
    first, second = balance.assign(), balance.assign()
    assert (first, second) == (0, 1)
    assert balance.counts[first] == 0 and balance.counts[2] == FREE
    balance.release(first)
    assert balance.counts[first] == FREE
    assert balance.assign() == first  # a respawned worker takes the freed slot


def test_only_the_least_loaded_worker_accepts() -> None:
    balance = Balance()
    a, b = balance.assign(), balance.assign()
    assert balance.may_accept(a, 0) and balance.may_accept(b, 0)  # ties both accept
    balance.counts[a] = 1
    assert not balance.may_accept(a, 1)  # ahead of b
    assert balance.may_accept(b, 0)
    balance.counts[b] = 1
    assert balance.may_accept(a, 1) and balance.may_accept(b, 1)


def test_an_exited_worker_does_not_hold_the_others_back() -> None:
    balance = Balance()
    a, b = balance.assign(), balance.assign()
    balance.counts[a], balance.counts[b] = 5, 0
    assert not balance.may_accept(a, 5)
    balance.release(b)  # b died with no connections: a is alone
    assert balance.may_accept(a, 5)


def test_a_worker_without_a_slot_accepts_unbalanced() -> None:
    balance = Balance()
    slots = [balance.assign() for _ in range(SLOTS)]
    assert None not in slots
    assert balance.assign() is None
    assert balance.may_accept(None, 1000)
