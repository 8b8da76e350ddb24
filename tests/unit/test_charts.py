"""The SPEC's state tables, one behaviour a test, on the pure charts."""

from __future__ import annotations

import pytest

from icat_servers.icatcore.errors import InvalidInput
from icat_servers.icatcore.records import Experiment
from icat_servers.statecharts.effects import (
    AnnounceInvestigation,
    PublishExperiment,
    Refused,
    RegisterDataset,
)
from icat_servers.statecharts.meta_experiment import MetaExperimentChart
from icat_servers.statecharts.meta_experiment import Settings as MetaSettings
from tests.session_model import PureSession, Rejected, Unreadable


def ready_session() -> PureSession:
    session = PureSession()
    session.write_proposal("hg123")
    session.write_sample("lysozyme")
    session.write_dataset_name("sample_0001")
    return session


def test_manager_is_off_until_a_proposal_is_known() -> None:
    session = PureSession()
    assert session.observe().state == "OFF"
    session.write_proposal("hg123")
    assert session.observe().state == "STANDBY"


def test_placeholder_sample_counts_as_unspecified() -> None:
    session = PureSession()
    session.write_proposal("hg123")
    assert session.observe().sample == "please enter"
    with pytest.raises(Rejected, match="sample is not specified"):
        session.write_dataset_name("sample_0001")
    assert session.observe().state == "STANDBY"


def test_dataset_name_is_readable_only_once_a_sample_is_specified() -> None:
    session = PureSession()
    assert session.observe().dataset_name == Unreadable(
        "datasetName cannot be read in OFF: no proposal; write proposal on id00/metaexp/test"
    )
    session.write_proposal("hg123")
    assert session.observe().dataset_name == Unreadable(
        "datasetName cannot be read in STANDBY: the sample is not specified; "
        "write sample on id00/metaexp/test"
    )
    session.write_sample("lysozyme")
    assert session.observe().dataset_name == ""
    session.write_dataset_name("sample_0001")
    session.start_dataset()
    session.write_proposal("hg124")  # a new proposal ends the dataset; its sample is unknown
    assert isinstance(session.observe().dataset_name, Unreadable)


def test_naming_a_dataset_with_a_sample_gives_on() -> None:
    assert ready_session().observe().state == "ON"


def test_clearing_the_dataset_name_goes_back_to_standby() -> None:
    session = ready_session()
    session.write_dataset_name("")
    assert session.observe().state == "STANDBY"


def test_end_dataset_registers_complete_and_clears_the_dataset() -> None:
    session = ready_session()
    session.set_parameters('{"Sample_description": "crystal"}')
    session.start_dataset()
    session.add_file("/data/visitor/hg123/id00/f1.h5")
    session.end_dataset()
    [dataset] = session.registered
    assert dataset.complete
    assert (dataset.proposal, dataset.sample, dataset.name) == ("hg123", "lysozyme", "sample_0001")
    assert dataset.parameters == {"Sample_description": "crystal"}
    assert dataset.datafiles == ("/data/visitor/hg123/id00/f1.h5",)
    assert dataset.location == "/data/visitor/hg123/id00/lysozyme/sample_0001"
    seen = session.observe()
    assert (seen.state, seen.dataset_name, seen.files) == ("STANDBY", "", ())
    assert session.manager.parameters == {}


def test_abort_dataset_still_registers_it_as_incomplete() -> None:
    session = ready_session()
    session.start_dataset()
    session.abort_dataset()
    [dataset] = session.registered
    assert not dataset.complete


def test_sample_change_while_running_ends_the_dataset_first() -> None:
    session = ready_session()
    session.start_dataset()
    session.write_sample("thaumatin")
    [dataset] = session.registered
    assert dataset.sample == "lysozyme" and dataset.complete
    seen = session.observe()
    assert (seen.state, seen.sample, seen.dataset_name) == ("STANDBY", "thaumatin", "")


def test_proposal_cleared_while_running_ends_the_dataset_and_turns_off() -> None:
    session = ready_session()
    session.start_dataset()
    session.write_proposal("")
    assert len(session.registered) == 1
    seen = session.observe()
    assert (seen.state, seen.proposal, seen.sample, seen.data_root) == ("OFF", "", "", "")


def test_writing_the_same_sample_again_changes_nothing() -> None:
    session = ready_session()
    session.start_dataset()
    session.write_sample("lysozyme")
    assert session.registered == []
    assert session.observe().state == "RUNNING"


def test_dataset_name_cannot_change_while_running() -> None:
    session = ready_session()
    session.start_dataset()
    with pytest.raises(Rejected, match=r"RUNNING.*'sample_0001'.*EndDataset"):
        session.write_dataset_name("other")
    assert session.observe().dataset_name == "sample_0001"


def test_start_in_standby_says_what_is_missing() -> None:
    session = PureSession()
    session.write_proposal("hg123")
    session.write_sample("lysozyme")
    with pytest.raises(
        Rejected, match="StartDataset is not allowed in STANDBY: the dataset is not"
    ):
        session.start_dataset()


def test_unknown_parameters_are_rejected_with_their_list_and_nothing_changes() -> None:
    session = ready_session()
    session.set_parameters('{"Sample_description": "kept"}')
    with pytest.raises(Rejected, match=r"NotAnIcatName.*OtherBadName|OtherBadName.*NotAnIcat"):
        session.set_parameters(
            '{"Sample_description": "lost", "NotAnIcatName": 1, "OtherBadName": 2}'
        )
    assert session.manager.parameters == {"Sample_description": "kept"}


@pytest.mark.parametrize("name", ["a/b", "..", "x\x00y", "n" * 300])
def test_bad_dataset_names_are_refused(name: str) -> None:
    session = ready_session()
    with pytest.raises(Rejected):
        session.write_dataset_name(name)
    assert session.observe().dataset_name == "sample_0001"


def test_a_lost_meta_experiment_keeps_the_running_dataset_and_turns_off_after_it() -> None:
    session = ready_session()
    session.start_dataset()
    session.lose_meta()
    assert session.observe().state == "RUNNING"
    session.end_dataset()
    assert session.observe().state == "OFF"
    assert "cannot be reached" in session.manager.status()
    session.find_meta()
    assert session.observe().state == "STANDBY"


def test_fault_keeps_a_running_dataset_and_reset_resumes_it() -> None:
    session = ready_session()
    session.start_dataset()
    session.break_configuration("outbox unwritable")
    assert session.observe().state == "FAULT"
    with pytest.raises(Rejected, match=r"FAULT \(outbox unwritable\).*Reset"):
        session.end_dataset()
    session.reset("still unwritable")
    assert session.observe().state == "FAULT"
    session.reset("")
    assert session.observe().state == "RUNNING"


def test_a_dataset_that_could_not_be_stored_is_registered_again_after_reset() -> None:
    session = ready_session()
    session.start_dataset()
    session.end_dataset()
    [dataset] = session.registered
    effects = session.manager.handle("storage_failed", problem="disk full", dataset=dataset)
    assert effects == []
    assert session.manager.handle("reset", problem="")[0] == RegisterDataset(dataset)


def test_opening_a_proposal_announces_it_before_publishing_the_reset_sample_and_root() -> None:
    chart = MetaExperimentChart(MetaSettings("id00"))
    effects = chart.handle("write_proposal", name="hg123", at=None)
    assert isinstance(effects[0], AnnounceInvestigation)
    assert effects[0].investigation.proposal == "hg123"
    assert effects[1] == PublishExperiment(Experiment("hg123", "please enter", "/data/visitor"))
    assert chart.handle("write_proposal", name="hg123", at=None) == []


def test_clearing_the_proposal_clears_everything() -> None:
    chart = MetaExperimentChart(MetaSettings("id00"))
    chart.handle("write_proposal", name="hg123", at=None)
    chart.handle("write_sample", name="s1")
    assert chart.handle("write_proposal", name="", at=None) == [PublishExperiment(Experiment())]


def test_meta_experiment_in_fault_refuses_writes_until_reset() -> None:
    chart = MetaExperimentChart(MetaSettings("id00"))
    chart.handle("fail", problem="beamlineID is missing")
    with pytest.raises(Refused, match=r"FAULT \(beamlineID is missing"):
        chart.handle("write_sample", name="s1")
    chart.handle("reset", problem="")
    assert chart.state_name == "ON"


def test_meta_experiment_refuses_control_characters() -> None:
    chart = MetaExperimentChart(MetaSettings("id00"))
    with pytest.raises(InvalidInput):
        chart.handle("write_sample", name="a\x1b[31mb")
    assert chart.experiment == Experiment()


def test_a_remembered_dataset_name_comes_back_when_the_meta_experiment_is_found() -> None:
    session = ready_session()
    session.meta_reachable = False
    session.restart_manager()
    assert session.observe().state == "OFF"
    session.find_meta()
    assert (session.observe().state, session.observe().dataset_name) == ("ON", "sample_0001")


def test_a_remembered_dataset_name_applies_only_to_the_experiment_it_was_named_under() -> None:
    session = ready_session()
    session.meta_reachable = False
    session.restart_manager()
    session.meta_reachable = True
    session.write_sample("thaumatin")
    session.find_meta()
    assert (session.observe().state, session.manager.dataset_name) == ("STANDBY", "")


def test_a_running_dataset_resumed_from_its_journal_is_registered_whole() -> None:
    session = ready_session()
    session.set_parameters('{"Sample_description": "crystal"}')
    session.start_dataset()
    session.add_file("/data/visitor/f1.h5")
    session.add_file("/data/visitor/f2.h5")
    journal = session.manager.journal()
    assert journal is not None and "f1.h5" not in journal, "files are kept one by one"

    restarted = PureSession()
    restarted.meta = session.meta
    restarted.manager.handle("experiment_lost")
    restarted.manager.handle("resume_dataset", journal=journal, files=session.manager.files)
    assert restarted.observe().state == "RUNNING"
    restarted.find_meta()
    restarted.end_dataset()
    [dataset] = restarted.registered
    assert (dataset.name, dataset.sample, dataset.datafiles) == (
        "sample_0001",
        "lysozyme",
        ("/data/visitor/f1.h5", "/data/visitor/f2.h5"),
    )
    assert dataset.parameters == {"Sample_description": "crystal"}
    assert dataset.start == session.manager.started_at
    assert restarted.manager.journal() is None


def test_a_resumed_dataset_ends_when_the_experiment_moved_on_meanwhile() -> None:
    session = ready_session()
    session.start_dataset()
    journal = session.manager.journal()
    assert journal is not None
    session.write_sample("thaumatin")
    assert len(session.registered) == 1

    restarted = PureSession()
    restarted.meta = session.meta
    restarted.manager.handle("experiment_lost")
    restarted.manager.handle("resume_dataset", journal=journal)
    restarted.find_meta()
    [dataset] = restarted.registered
    assert dataset.sample == "lysozyme"
    assert restarted.observe().state == "STANDBY"
