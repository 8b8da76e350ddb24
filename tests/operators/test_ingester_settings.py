"""The ingester watch's words and its one property, without services."""

from __future__ import annotations

import time

import pytest

from icat_servers.adapters.ingester import IngesterView, jolokia_url, period_from_environment
from icat_servers.icatcore import config
from icat_servers.icatcore.errors import ConfigurationError

BASE = {"beamlineID": ["id00"]}


def test_ingester_grace_time_defaults_to_120_s_and_is_read_as_seconds() -> None:
    assert config.meta_experiment(BASE).delivery.ingester_grace_time == 120.0
    parsed = config.meta_experiment({**BASE, "ingesterGraceTime": ["2.5"]})
    assert parsed.delivery.ingester_grace_time == 2.5


@pytest.mark.parametrize("value", ["soon", "0", "-3", "nan", "inf"])
def test_an_ingester_grace_time_that_is_not_seconds_names_the_property(value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"ingesterGraceTime .* write e\.g\. 120"):
        config.meta_experiment({**BASE, "ingesterGraceTime": [value]})


def test_the_warning_says_how_many_since_when_and_whether_anyone_consumes() -> None:
    since = time.mktime((2026, 12, 4, 14, 2, 30, 0, 0, -1))
    assert IngesterView(waiting_in_broker=5).warning() == ""
    assert IngesterView(waiting_in_broker=5, overdue=3, overdue_since=since).warning() == (
        "the ICAT ingester has not taken 3 registrations that the broker confirmed since "
        "14:02: is it running?"
    )
    alone = IngesterView(waiting_in_broker=1, consumers=0, overdue=1, overdue_since=since)
    assert "1 registration that" in alone.warning()
    assert "; the queue has no consumer: is it running?" in alone.warning()


def test_jolokia_is_asked_as_pyicat_plus_asks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert jolokia_url("broker", 8778, "/queue/icatIngest") == (
        "http://broker:8778/api/jolokia/read/org.apache.activemq:type=Broker,"
        "brokerName=metadata,destinationType=Queue,destinationName=icatIngest/ConsumerCount"
    )
    monkeypatch.setenv("ICAT_SERVERS_INGESTER_PERIOD", "0.5")
    assert period_from_environment() == 0.5
    monkeypatch.setenv("ICAT_SERVERS_INGESTER_PERIOD", "often")
    assert period_from_environment() == 30.0
