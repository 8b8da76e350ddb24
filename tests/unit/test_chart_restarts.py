"""What a restart keeps, on the pure charts: the journal effects a chart emits are all a
new process needs to carry on as if nothing happened (SPEC "Processes and start-up")."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.session_model import PureSession, Rejected


def named_session() -> PureSession:
    session = PureSession()
    session.write_proposal("hg123")
    session.write_sample("lysozyme")
    session.write_dataset_name("sample_0001")
    return session


def test_a_dataset_ended_after_a_restart_is_not_named_again_by_the_next_answer() -> None:
    """Name, restart, start, restart, end: STANDBY with no name, and no second dataset."""
    session = named_session()
    session.restart_manager()
    session.start_dataset()
    session.restart_manager()
    session.end_dataset()
    session.find_meta()  # the MetaExperiment's answer arriving late
    assert (session.observe().state, session.manager.dataset_name) == ("STANDBY", "")
    try:
        session.start_dataset()
    except Rejected as refusal:
        assert "not named" in str(refusal)
    else:
        raise AssertionError("a second dataset started under the registered name")
    assert [dataset.name for dataset in session.registered] == ["sample_0001"]


def test_a_restart_brings_back_the_running_dataset_with_its_last_file() -> None:
    session = named_session()
    session.start_dataset()
    session.add_file("/data/f1.h5")
    session.add_file("/data/f2.h5")
    session.restart_manager()
    assert session.observe().state == "RUNNING"
    assert session.manager.last_file == "/data/f2.h5"
    assert session.observe().files == ("/data/f1.h5", "/data/f2.h5")


def test_a_running_dataset_restarted_without_its_meta_experiment_says_so() -> None:
    session = named_session()
    session.start_dataset()
    session.meta_reachable = False
    session.restart_manager()
    assert session.observe().state == "RUNNING"
    assert "MetaExperiment id00/metaexp/test cannot be reached" in session.manager.status()


def test_the_parent_location_survives_a_restart_and_sets_the_folder() -> None:
    session = named_session()
    session.set_parent_location("/data/visitor/{proposal}/{beamlineID}/special/")
    assert session.observe().data_folder == "/data/visitor/hg123/id00/special/sample_0001"
    session.restart_manager()
    assert session.manager.parent_location == "/data/visitor/{proposal}/{beamlineID}/special"
    assert session.observe().data_folder == "/data/visitor/hg123/id00/special/sample_0001"
    session.clear_parent_location()
    session.restart_manager()
    assert session.observe().data_folder == "/data/visitor/hg123/id00/lysozyme/sample_0001"


def test_the_parent_location_cannot_change_while_a_dataset_runs() -> None:
    session = named_session()
    session.start_dataset()
    changes: tuple[Callable[[], None], ...] = (
        lambda: session.set_parent_location("/data/other"),
        session.clear_parent_location,
    )
    for change in changes:
        try:
            change()
        except Rejected as refusal:
            assert "already fixed" in str(refusal)
            assert "EndDataset" in str(refusal)
        else:
            raise AssertionError("the running dataset's folder moved")
    assert session.manager.location == "/data/visitor/hg123/id00/lysozyme/sample_0001"


def test_a_parent_location_must_be_absolute_or_a_pattern() -> None:
    session = named_session()
    for bad in ("relative/path", "{nofield}/x", "/data/\x1b[31m"):
        try:
            session.set_parent_location(bad)
        except Rejected:
            pass
        else:
            raise AssertionError(f"{bad!r} accepted")
    assert session.manager.parent_location == ""


STEPS = st.lists(
    st.sampled_from(
        [
            "restart",
            "late answer",
            "name",
            "unname",
            "start",
            "end",
            "abort",
            "file",
            "sample",
            "proposal",
            "parent",
        ]
    ),
    max_size=30,
)


def act(session: PureSession, step: str, n: int) -> str:
    """One client call; the refusal's text, or "" when it was accepted."""
    calls: dict[str, Callable[[], None]] = {
        "name": lambda: session.write_dataset_name(f"ds_{n}"),
        "unname": lambda: session.write_dataset_name(""),
        "start": session.start_dataset,
        "end": session.end_dataset,
        "abort": session.abort_dataset,
        "file": lambda: session.add_file(f"/data/f{n}.h5"),
        "sample": lambda: session.write_sample(f"s{n % 3}"),
        "proposal": lambda: session.write_proposal(f"hg{n % 2}"),
        "parent": lambda: session.set_parent_location(f"/data/p{n % 2}"),
    }
    try:
        calls[step]()
    except Rejected as refusal:
        return str(refusal)
    return ""


@settings(max_examples=300, deadline=None)
@given(STEPS)
@example(["restart", "start", "restart", "end", "late answer", "start"])
@example(["start", "file", "restart", "sample", "restart", "name", "late answer", "start"])
@example(["parent", "restart", "start", "file", "restart", "late answer", "end", "restart"])
def test_restarts_and_late_answers_change_nothing_a_client_can_see(steps: list[str]) -> None:
    """The same calls on a session that restarts (and gets late answers) and on one that
    never does: the same answers, the same observations, the same registrations."""
    steady, restarted = named_session(), named_session()
    for n, step in enumerate(steps):
        if step == "restart":
            restarted.restart_manager()
        elif step == "late answer":
            restarted.find_meta()
        else:
            assert act(restarted, step, n) == act(steady, step, n), step
        assert restarted.observe() == steady.observe(), step
        if steady.manager.dataset_started():
            assert restarted.manager.last_file == steady.manager.last_file
        assert restarted.manager.parent_location == steady.manager.parent_location
    assert [d.name for d in restarted.registered] == [d.name for d in steady.registered]
    assert [d.datafiles for d in restarted.registered] == [d.datafiles for d in steady.registered]
