"""Init, restarts and late link messages, interleaved with the session's calls.

`DisruptedRules` adds one rule to the beamline's rules: something happens to a server
that a client did not cause. None of it may change what a client sees (SPEC "Processes
and start-up"): the model only restarts its MetadataManager chart from the journal the
chart emitted, and every other disruption leaves it as it is.
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
        def move(subject: object) -> None:
            if subject is self.model:
                if kind == "restart manager":
                    before = self.model.observe()
                    self.model.restart_manager()
                    assert self.model.observe() == before, "the journal lost something"
            else:
                subject.disrupt(kind)  # type: ignore[attr-defined]

        assert self.step(move), f"{kind} was refused"
