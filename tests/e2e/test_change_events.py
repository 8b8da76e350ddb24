"""Change events: what a GUI subscribed to the devices sees when the MetaExperiment changes."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator

import pytest
import tango

from tests.e2e.conftest import MANAGER, META, OFF, ON, STANDBY, Beamline

pytestmark = pytest.mark.slow  # real processes: `-m "not slow"` skips them

MANAGER_ATTRIBUTES = ("State", "proposal", "sampleName", "datasetName")
META_ATTRIBUTES = ("proposal", "sample")


class Recorder:
    """Every change event received, by (device, attribute), in arrival order."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], list[object]] = defaultdict(list)
        self.errors: list[str] = []
        self.changed = threading.Condition()

    def push_event(self, event: tango.EventData) -> None:
        with self.changed:
            if event.err:
                self.errors.append(event.errors[0].desc)
            else:
                # tango://host:port/domain/family/member/attribute
                *_, domain, family, member, attribute = event.attr_name.lower().split("/")
                device = f"{domain}/{family}/{member}"
                self.values[(device, attribute)].append(event.attr_value.value)
            self.changed.notify_all()

    def mark(self) -> dict[tuple[str, str], int]:
        with self.changed:
            return {key: len(values) for key, values in self.values.items()}

    def wait(
        self, device: str, attribute: str, value: object, since: dict[tuple[str, str], int]
    ) -> None:
        """Until `value` arrives for the attribute after `since` (events are asynchronous)."""
        key = (device.lower(), attribute.lower())
        deadline = time.monotonic() + 5.0
        with self.changed:
            while value not in self.values[key][since.get(key, 0) :]:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no change event {device}/{attribute} = {value!r}; got "
                        f"{self.values[key][since.get(key, 0) :]!r}, errors {self.errors}"
                    )
                self.changed.wait(left)


@pytest.fixture
def events(beamline: Beamline) -> Iterator[Recorder]:
    recorder = Recorder()
    proxies = {
        MANAGER: tango.DeviceProxy(beamline.trl(MANAGER)),
        META: tango.DeviceProxy(beamline.trl(META)),
    }
    subscriptions = [
        (
            proxies[device],
            proxies[device].subscribe_event(name, tango.EventType.CHANGE_EVENT, recorder),
        )
        for device, names in ((MANAGER, MANAGER_ATTRIBUTES), (META, META_ATTRIBUTES))
        for name in names
    ]
    try:
        yield recorder
    finally:
        for proxy, subscription in subscriptions:
            proxy.unsubscribe_event(subscription)


def only_the_first_dataset_name_refusal(errors: list[str]) -> bool:
    """Subscribed in OFF, datasetName's first event is the read refusal (SPEC), then values."""
    return errors == [f"datasetName cannot be read in OFF: no proposal; write proposal on {META}"]


def test_subscribing_gives_the_current_values(beamline: Beamline, events: Recorder) -> None:
    nothing: dict[tuple[str, str], int] = {}
    events.wait(MANAGER, "State", OFF, nothing)
    events.wait(MANAGER, "proposal", "", nothing)
    events.wait(META, "proposal", "", nothing)
    assert only_the_first_dataset_name_refusal(events.errors)


def test_writes_on_the_meta_experiment_reach_subscribers_of_both(
    beamline: Beamline, events: Recorder
) -> None:
    since = events.mark()
    beamline.meta.write_attribute("proposal", "hg700")
    events.wait(META, "proposal", "hg700", since)
    events.wait(META, "sample", "please enter", since)
    events.wait(MANAGER, "proposal", "hg700", since)
    events.wait(MANAGER, "sampleName", "please enter", since)
    events.wait(MANAGER, "State", STANDBY, since)

    since = events.mark()
    beamline.meta.write_attribute("sample", "lysozyme")
    events.wait(META, "sample", "lysozyme", since)
    events.wait(MANAGER, "sampleName", "lysozyme", since)

    since = events.mark()
    beamline.manager.write_attribute("datasetName", "sample_0001")
    events.wait(MANAGER, "datasetName", "sample_0001", since)
    events.wait(MANAGER, "State", ON, since)

    since = events.mark()
    beamline.meta.write_attribute("sample", "thaumatin")  # clears the dataset name
    events.wait(MANAGER, "sampleName", "thaumatin", since)
    events.wait(MANAGER, "datasetName", "", since)
    events.wait(MANAGER, "State", STANDBY, since)

    since = events.mark()
    beamline.meta.write_attribute("proposal", "")
    events.wait(META, "proposal", "", since)
    events.wait(META, "sample", "", since)
    events.wait(MANAGER, "proposal", "", since)
    events.wait(MANAGER, "State", OFF, since)
    assert only_the_first_dataset_name_refusal(events.errors)
