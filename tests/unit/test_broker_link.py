"""The broker link chart: failover order and backoff delays, without clock or socket."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statemachine.exceptions import TransitionNotAllowed

from icat_servers.statecharts.broker_link import BASE_DELAY, MAX_DELAY, BrokerLink, backoff_delay

A = ("broker-a", 61613)
B = ("broker-b", 61614)
C = ("broker-c", 61615)


def test_starts_disconnected_and_tries_first_address() -> None:
    link = BrokerLink([A, B])
    assert link.disconnected.is_active
    link.connect()
    assert link.connecting.is_active
    assert link.address == A


def test_failover_tries_each_address_in_order_without_waiting_then_backs_off() -> None:
    link = BrokerLink([A, B, C])
    link.connect()
    tried = [link.address]
    link.connection_failed()
    assert link.connecting.is_active and link.delay == 0.0
    tried.append(link.address)
    link.connection_failed()
    tried.append(link.address)
    link.connection_failed()
    assert tried == [A, B, C]
    assert link.backing_off.is_active
    assert link.delay == BASE_DELAY
    link.retry()
    assert link.address == A


def test_backoff_doubles_per_failed_round_up_to_the_cap() -> None:
    link = BrokerLink([A])
    link.connect()
    delays = []
    for _ in range(10):
        link.connection_failed()
        delays.append(link.delay)
        link.retry()
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0, 5.0]


def test_success_resets_backoff_and_keeps_the_address_that_answered() -> None:
    link = BrokerLink([A, B])
    link.connect()
    link.connection_failed()  # A refused
    link.connection_succeeded()  # B answered
    assert link.connected.is_active
    assert link.address == B
    assert link.failed_rounds == 0


def test_lost_connection_waits_briefly_and_starts_over_at_first_address() -> None:
    link = BrokerLink([A, B])
    link.connect()
    link.connection_failed()
    link.connection_succeeded()
    link.connection_lost()
    assert link.backing_off.is_active
    assert link.delay == BASE_DELAY
    link.retry()
    assert link.address == A


def test_events_outside_their_state_are_refused() -> None:
    link = BrokerLink([A])
    with pytest.raises(TransitionNotAllowed):
        link.retry()
    with pytest.raises(TransitionNotAllowed):
        link.connection_lost()
    link.connect()
    with pytest.raises(TransitionNotAllowed):
        link.connect()


def test_stop_is_final_from_any_state() -> None:
    for steps in (
        [],
        ["connect"],
        ["connect", "connection_succeeded"],
        ["connect", "connection_failed"],
    ):
        link = BrokerLink([A])
        for step in steps:
            link.send(step)
        link.stop()
        assert link.stopped.is_active
        assert link.current_state.final
        with pytest.raises(TransitionNotAllowed):
            link.send("connect")


def test_no_address_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="at least one broker"):
        BrokerLink([])


def test_backoff_delay_function() -> None:
    assert backoff_delay(0) == 0.0
    assert backoff_delay(1) == BASE_DELAY
    assert backoff_delay(10**9) == MAX_DELAY


outcomes = st.lists(st.sampled_from(["fail", "succeed", "lose"]), max_size=200)


@settings(max_examples=300, deadline=None)
@given(n_addresses=st.integers(min_value=1, max_value=5), outcomes=outcomes)
def test_delays_stay_in_bounds_and_addresses_are_tried_in_order(
    n_addresses: int, outcomes: list[str]
) -> None:
    """Drive the chart like the sender does, with arbitrary broker behaviour."""
    addresses = [(f"h{i}", 61613 + i) for i in range(n_addresses)]
    link = BrokerLink(addresses)
    link.connect()
    expected_index = 0  # the address the next connection attempt must use
    for outcome in outcomes:
        if link.connecting.is_active:
            assert link.address == addresses[expected_index]
            if outcome == "succeed":
                link.connection_succeeded()
                assert link.connected.is_active
                assert link.delay == 0.0
            else:
                link.connection_failed()
                expected_index = (expected_index + 1) % n_addresses
                if expected_index == 0:
                    assert link.backing_off.is_active
                else:
                    assert link.connecting.is_active
        elif link.connected.is_active and outcome == "lose":
            link.connection_lost()
            expected_index = 0
        if link.backing_off.is_active:
            assert BASE_DELAY <= link.delay <= MAX_DELAY
            link.retry()
            assert link.address == addresses[0]
        assert 0.0 <= link.delay <= MAX_DELAY


@given(st.integers(min_value=1, max_value=10**6))
def test_backoff_is_monotonic_and_capped(rounds: int) -> None:
    assert BASE_DELAY <= backoff_delay(rounds) <= MAX_DELAY
    assert backoff_delay(rounds) <= backoff_delay(rounds + 1)
