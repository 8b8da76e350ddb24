"""The chart's rules drive the real devices: after every call, device and chart agree."""

from __future__ import annotations

import tango
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.devices.conftest import MANAGER, META, Beamline
from tests.devices.tango_session import TangoSession, wait_for
from tests.rules import BeamlineRules, Subject


def test_devices_follow_the_chart_step_by_step(beamline: Beamline) -> None:
    wait_for(lambda: MANAGER in (tango.DeviceProxy(META).followers or ()))
    session = TangoSession(META, MANAGER, beamline.outbox())

    class DeviceRules(BeamlineRules):
        def make_subject(self) -> Subject:
            session.begin()
            return session

    run_state_machine_as_test(
        DeviceRules,
        settings=settings(
            max_examples=25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
