"""The delivery line of Status, in words a person reads at once."""

from __future__ import annotations

from icat_servers.adapters.delivery import DeliveryHealth


def health(datasets: int, investigations: int, created: float | None) -> DeliveryHealth:
    return DeliveryHealth(
        undelivered=datasets + investigations,
        undelivered_datasets=datasets,
        oldest_created=created,
        last_error="broker localhost:61613 refused the connection",
        broker_connected=False,
        set_aside=0,
        icat_enabled=True,
        icatplus_enabled=False,
        icat_waiting=datasets + investigations,
        broker_address="localhost:61613",
        broker_error="broker localhost:61613 refused the connection",
        broker_failing_since=None,
    )


def test_an_investigation_message_is_called_so() -> None:
    line = health(0, 1, 1000.0).status_line(1003.0)
    assert line.startswith("1 investigation message waiting: broker localhost:61613"), line
    assert "dataset" not in line and "other ICAT" not in line


def test_datasets_and_investigations_are_both_counted_and_the_age_grows() -> None:
    waiting = health(2, 1, 1000.0)
    assert waiting.status_line(1010.0).startswith("2 datasets and 1 investigation message")
    assert "oldest waiting for 10 s" in waiting.status_line(1010.0)
    assert "oldest waiting for 250 s" in waiting.status_line(1250.0)
