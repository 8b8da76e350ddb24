"""Init, restarts and late link messages, interleaved with the session's calls.

`DisruptedRules` adds one rule to the beamline's rules: something happens to a server
that a client did not cause. None of it may change what a client sees (SPEC "Processes
and start-up"): the oracle's facts stay as they are, the model restarts its
MetadataManager chart from the journal the chart emitted (`PureSession.disrupt`), and the
real devices are Init'ed, killed and restarted, or sent a late answer.
"""

from __future__ import annotations

from typing import Protocol

from hypothesis import strategies as st
from hypothesis.stateful import rule

from tests.rules import BeamlineRules, Subject

DISRUPTIONS = ("init manager", "init meta", "restart manager", "restart meta", "late answer")


class DisruptableSubject(Subject, Protocol):
    def disrupt(self, kind: str) -> None: ...


class DisruptedRules(BeamlineRules):
    @rule(kind=st.sampled_from(DISRUPTIONS))
    def disrupt(self, kind: str) -> None:
        assert self.step("disrupt", kind), f"{kind} was refused"
