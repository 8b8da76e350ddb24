"""The STOMP link to the message brokers, as a statechart.

The chart decides which broker address to try next and how long to wait before the
next round; the sender thread (adapters/stomp_sender.py) does the waiting and the
socket work and reports back with events. Keeping the decisions here, without a clock
or a socket, lets them be tested exhaustively.

Failover: addresses are tried in the order configured, one after the other without
waiting; when a whole round failed, the link backs off (0.1 s doubling per failed
round, capped at 5 s) and starts a new round from the first address. A lost
connection also starts over from the first address, which is the preferred broker.
"""

from __future__ import annotations

from collections.abc import Sequence

from statemachine import State, StateMachine

BASE_DELAY = 0.1
"""Seconds to wait after the first failed round or a lost connection."""
MAX_DELAY = 5.0
"""No wait is longer: a broker that comes back is used within this time."""


def backoff_delay(failed_rounds: int, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> float:
    """Capped exponential delay after `failed_rounds` (>= 1) rounds failed in a row."""
    if failed_rounds <= 0:
        return 0.0
    # The exponent is bounded so that huge counts cannot overflow a float.
    return min(cap, base * 2.0 ** min(failed_rounds - 1, 64))


class BrokerLink(StateMachine):
    """Which broker to connect to and when; reads no clock, opens no socket."""

    disconnected = State(initial=True)
    connecting = State()
    connected = State()
    backing_off = State()
    stopped = State(final=True)

    connect = disconnected.to(connecting)
    connection_succeeded = connecting.to(connected, on="reset_rounds")
    connection_failed = connecting.to(
        connecting, cond="more_addresses_this_round", on="try_next_address"
    ) | connecting.to(backing_off, on="end_round")
    connection_lost = connected.to(backing_off, on="start_over")
    retry = backing_off.to(connecting)
    stop = (
        disconnected.to(stopped)
        | connecting.to(stopped)
        | connected.to(stopped)
        | backing_off.to(stopped)
    )

    def __init__(
        self,
        addresses: Sequence[tuple[str, int]],
        base_delay: float = BASE_DELAY,
        max_delay: float = MAX_DELAY,
    ) -> None:
        if not addresses:
            raise ValueError("a broker link needs at least one broker address")
        if not 0 < base_delay <= max_delay:
            raise ValueError("backoff delays must satisfy 0 < base_delay <= max_delay")
        self.addresses: tuple[tuple[str, int], ...] = tuple(addresses)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.index = 0
        """Position in `addresses` of the broker being tried or used."""
        self.failed_rounds = 0
        """Rounds over all addresses that failed since the last successful connection."""
        self.delay = 0.0
        """Seconds the sender waits in backing_off before sending `retry`."""
        super().__init__()

    @property
    def address(self) -> tuple[str, int]:
        """The broker to connect to now (in connecting) or connected to."""
        return self.addresses[self.index]

    # guards
    def more_addresses_this_round(self) -> bool:
        return self.index + 1 < len(self.addresses)

    # actions
    def try_next_address(self) -> None:
        self.index += 1

    def end_round(self) -> None:
        self.failed_rounds += 1
        self.index = 0
        self.delay = backoff_delay(self.failed_rounds, self.base_delay, self.max_delay)

    def start_over(self) -> None:
        self.index = 0
        self.failed_rounds = 0
        self.delay = self.base_delay

    def reset_rounds(self) -> None:
        self.failed_rounds = 0
        self.delay = 0.0
