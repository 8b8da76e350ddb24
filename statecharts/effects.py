"""What a chart asks the world to do: values the adapters execute, in order.

The `Keep...` effects are the journal: what a restart of the process must find again.
The shell writes the journal effects of one event in one transaction, together with the
event's registration when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass

from icat_servers.icatcore.records import DatasetRecord, Experiment, InvestigationRecord


@dataclass(frozen=True, slots=True)
class RegisterDataset:
    """Store this dataset in the outbox before the call returns, then deliver it.

    Storing it forgets the running dataset's journal entry in the same transaction.
    """

    dataset: DatasetRecord


@dataclass(frozen=True, slots=True)
class AnnounceInvestigation:
    """Tell ICAT that the beamline starts measuring for this proposal."""

    investigation: InvestigationRecord


@dataclass(frozen=True, slots=True)
class PublishExperiment:
    """Give every follower the new proposal, sample and data root before the write returns."""

    experiment: Experiment


@dataclass(frozen=True, slots=True)
class KeepDatasetName:
    """The datasetName a restart brings back, for the experiment it was named under."""

    name: str
    proposal: str
    sample: str


@dataclass(frozen=True, slots=True)
class KeepRunningDataset:
    """The running dataset but its files, as text, for a restart to resume it.

    `files`, when given, replaces the files kept so far (after a Reset); otherwise the
    files kept one by one by `KeepFile` stay.
    """

    journal: str
    files: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class KeepFile:
    """One more file of the running dataset (a dataset can have thousands)."""

    path: str


@dataclass(frozen=True, slots=True)
class KeepParentLocation:
    """The dataset parent location set by a client; "" when cleared."""

    parent: str


Keep = KeepDatasetName | KeepRunningDataset | KeepFile | KeepParentLocation
Effect = RegisterDataset | AnnounceInvestigation | PublishExperiment | Keep


class Refused(Exception):
    """The chart does not accept this event now; the text says the state and what is missing."""
