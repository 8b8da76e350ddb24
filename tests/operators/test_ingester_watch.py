"""Nobody consumes the queue: the broker confirmed, yet the registrations pile up.

The devices browse their queue on the session ActiveMQ and ask a Jolokia stand-in for
the consumer count (Debian's ActiveMQ ships no Jolokia), every half second here.
"""

from __future__ import annotations

import queue
import re
import uuid
from collections.abc import Callable

import pytest
import tango

from tests.e2e_delivery.conftest import Beamline, unique_proposal, wait_delivered, wait_until
from tests.operators.conftest import Jolokia
from tests.services.activemq import ActiveMQ, drain

pytestmark = pytest.mark.slow

WARNING = re.compile(
    r"the ICAT ingester has not taken 1 registration that the broker confirmed since "
    r"\d\d:\d\d; the queue has no consumer: is it running\?"
)


def test_registrations_left_in_the_queue_are_told_then_forgotten_once_taken(
    beamline_factory: Callable[..., Beamline], activemq: ActiveMQ, jolokia: Jolokia
) -> None:
    queue_name = f"/queue/op.ingest.{uuid.uuid4().hex[:8]}"
    beamline = beamline_factory(
        "opingest",
        start=False,
        queue_urls=[activemq.url],
        queue=queue_name,
        icatplus=None,
        manager_properties={"ingesterGraceTime": ["2"], "jolokiaPort": [str(jolokia.port)]},
    )
    for server in (beamline.meta_server, beamline.manager_server):
        server.environment = {**server.environment, "ICAT_SERVERS_INGESTER_PERIOD": "0.5"}
    beamline.start()
    meta, manager = beamline.meta, beamline.manager
    events: queue.SimpleQueue[int] = queue.SimpleQueue()

    def seen(event: tango.EventData) -> None:
        if not event.err and event.attr_value is not None:
            events.put(int(event.attr_value.value))

    manager.subscribe_event("waitingInBroker", tango.EventType.CHANGE_EVENT, seen)

    meta.write_attribute("proposal", unique_proposal("in"))
    meta.write_attribute("sample", "lysozyme")
    manager.write_attribute("datasetName", "untaken_0001")
    manager.command_inout("StartDataset")
    manager.command_inout("EndDataset")
    wait_delivered(manager)
    wait_until(lambda: manager.read_attribute("waitingInBroker").value == 1, 10, "1 in queue")
    assert manager.read_attribute("ingesterConsumers").value == 0
    assert "the ICAT ingester" not in manager.status()  # not before the grace time
    wait_until(lambda: WARNING.search(manager.status()), 10, "the warning in Status")
    assert manager.state() == tango.DevState.STANDBY  # a warning, not a FAULT
    # the MetaExperiment watches its own: the investigation message, no Jolokia there
    wait_until(lambda: meta.read_attribute("waitingInBroker").value == 1, 10, "meta's 1")
    assert meta.read_attribute("ingesterConsumers").value == -1
    path, authorization = jolokia.asked[-1]
    assert path == (
        "/api/jolokia/read/org.apache.activemq:type=Broker,brokerName=metadata,"
        f"destinationType=Queue,destinationName={queue_name.removeprefix('/queue/')}"
        "/ConsumerCount"
    )
    assert authorization == "Basic dXNlcjp1c2Vy"  # user:user, as pyicat-plus asks

    jolokia.consumers = 1
    taken = drain(activemq.port, queue_name, expect=2, idle=0.5)  # browsing took nothing
    assert sorted("<tns:dataset" in body for _, body in taken) == [False, True]
    wait_until(lambda: manager.read_attribute("waitingInBroker").value == 0, 10, "0 in queue")
    wait_until(lambda: "the ICAT ingester" not in manager.status(), 5, "the warning gone")
    wait_until(lambda: meta.read_attribute("waitingInBroker").value == 0, 10, "meta's 0")
    wait_until(lambda: manager.read_attribute("ingesterConsumers").value == 1, 5, "1 consumer")
    pushed = []
    while not events.empty():
        pushed.append(events.get())
    assert 1 in pushed and pushed[-1] == 0, pushed
