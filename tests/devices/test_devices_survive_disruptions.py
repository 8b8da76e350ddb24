"""Init, kill -9 and late link messages between the session's calls: the real devices
show, after each, what the model shows, with no wait and no retry by the client."""

from __future__ import annotations

import tango
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.devices.conftest import MANAGER, META, Beamline
from tests.devices.tango_session import TangoSession, wait_for
from tests.disruptions import DisruptableSubject, DisruptedRules


class DisruptedSession(TangoSession):
    def __init__(self, beamline: Beamline) -> None:
        super().__init__(META, MANAGER, beamline.outbox())
        self.beamline = beamline
        self.captured = ""

    def capture(self) -> None:
        """An answer of the MetaExperiment as it is now, to be delivered late."""
        self.captured = self.meta.command_inout("Follow", MANAGER)

    def disrupt(self, kind: str) -> None:
        if kind == "init manager":
            self.manager.command_inout("Init")
        elif kind == "init meta":
            self.meta.command_inout("Init")
        elif kind == "restart manager":
            self.beamline.manager_server.restart()
        elif kind == "restart meta":
            self.beamline.meta_server.restart()
        elif self.captured:
            self.manager.command_inout("ExperimentChanged", self.captured)
        self.capture()


def test_devices_follow_the_model_through_init_restarts_and_late_answers(
    beamline: Beamline,
) -> None:
    wait_for(lambda: MANAGER in (tango.DeviceProxy(META).followers or ()))
    session = DisruptedSession(beamline)

    class Rules(DisruptedRules):
        def make_subject(self) -> DisruptableSubject:
            session.begin()
            session.capture()
            return session

    run_state_machine_as_test(
        Rules,
        settings=settings(
            max_examples=15,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
