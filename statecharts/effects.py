"""What a chart asks the world to do: values the adapters execute, in order."""

from __future__ import annotations

from dataclasses import dataclass

from icatcore.records import DatasetRecord, Experiment, InvestigationRecord


@dataclass(frozen=True, slots=True)
class RegisterDataset:
    """Store this dataset in the outbox before the call returns, then deliver it."""

    dataset: DatasetRecord


@dataclass(frozen=True, slots=True)
class AnnounceInvestigation:
    """Tell ICAT that the beamline starts measuring for this proposal."""

    investigation: InvestigationRecord


@dataclass(frozen=True, slots=True)
class PublishExperiment:
    """Give every follower the new proposal, sample and data root before the write returns."""

    experiment: Experiment


Effect = RegisterDataset | AnnounceInvestigation | PublishExperiment


class Refused(Exception):
    """The chart does not accept this event now; the text says the state and what is missing."""
