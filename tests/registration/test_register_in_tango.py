"""`icat-servers register` against a real Tango database (pytango-db), read back from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tango

from icat_servers.adapters import registration
from icat_servers.adapters.cli import main
from tests.registration.conftest import EXAMPLE, snapshot
from tests.registration.test_plan import MALFORMED, SECRET

NEW_SECRET = "elogbook-11111111-1111-1111-1111-111111111111"


def register(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    status = main(["register", *(str(a) for a in args)])
    out, err = capsys.readouterr()
    assert SECRET not in out + err and NEW_SECRET not in out + err, "a secret was printed"
    return status, out, err


def example_line(text: str) -> int:
    """The line of the example that reads `text` (its comments may change)."""
    return 1 + EXAMPLE.read_text().splitlines().index(text)


def edited_example(tmp_path: Path, old: str, new: str) -> Path:
    text = EXAMPLE.read_text()
    assert old in text
    path = tmp_path / "id00.yml"
    path.write_text(text.replace(old, new))
    return path


def test_registering_the_example_creates_both_devices_and_their_properties(
    db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = register(capsys, EXAMPLE)

    assert status == 0
    manager = db.get_device_info("id00/metadata/test")
    assert (manager.class_name, manager.ds_full_name) == (
        "MetadataManager",
        "MetadataManager/icatservers",
    )
    experiment = db.get_device_info("id00/metaexp/test")
    assert (experiment.class_name, experiment.ds_full_name) == (
        "MetaExperiment",
        "MetaExperiment/icatservers",
    )
    assert db.get_class_property(
        "MetadataManager",
        ["queueName", "queueURLs", "icatplus_server", "API_KEY", "jolokiaPort"],
    ) == {
        "queueName": ["/queue/icatIngest"],
        "queueURLs": ["localhost:61613"],
        "icatplus_server": ["http://localhost:8000"],
        "API_KEY": [SECRET],
        "jolokiaPort": ["0"],
    }
    assert db.get_class_property("MetaExperiment", ["queueName", "queueURLs"]) == {
        "queueName": ["/queue/icatIngest"],
        "queueURLs": ["localhost:61613"],
    }
    properties = db.get_device_property(
        "id00/metadata/test",
        ["beamlineID", "metaExperimentDevice", "dataFolderPattern", "parameters"],
    )
    assert properties["beamlineID"] == ["id00"]
    assert properties["metaExperimentDevice"] == ["id00/metaexp/test"]
    assert properties["dataFolderPattern"] == ["{dataRoot}"]
    assert "InstrumentSlitPrimary_horizontal_gap" in properties["parameters"]
    assert db.get_device_property("id00/metaexp/test", ["beamlineID"]) == {"beamlineID": ["id00"]}
    assert "+ device id00/metadata/test (MetadataManager/icatservers)" in out.splitlines()
    assert "+ class property MetadataManager.API_KEY: ***" in out.splitlines()
    assert out.splitlines()[-1].startswith("wrote 15 changes to TANGO_HOST=")


def test_registering_again_reports_nothing_to_change_and_writes_nothing(
    db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    register(capsys, EXAMPLE)
    before = snapshot(db)

    status, out, _ = register(capsys, EXAMPLE)

    assert status == 0
    assert out.startswith("nothing to change in the Tango database at TANGO_HOST=")
    assert snapshot(db) == before
    assert registration.changes(registration.plan([EXAMPLE]), db) == []


def test_a_dry_run_lists_the_changes_and_writes_nothing(
    db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(db)

    status, out, _ = register(capsys, "--dry-run", EXAMPLE)

    assert status == 0
    lines = out.splitlines()
    assert "+ device id00/metaexp/test (MetaExperiment/icatservers)" in lines
    assert '+ device property id00/metaexp/test.beamlineID: ["id00"]' in lines
    assert lines[-1].startswith("dry run: 15 changes not written")
    assert snapshot(db) == before
    with pytest.raises(tango.DevFailed):
        db.get_device_info("id00/metadata/test")


def test_a_changed_value_is_shown_as_a_change_and_applied(
    db: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    register(capsys, EXAMPLE)
    edited = edited_example(
        tmp_path,
        "    queueURLs:\n    - localhost:61613\n    jolokiaPort: 0\n    API_KEY",
        "    queueURLs:\n    - localhost:61613\n    - localhost:61614\n    jolokiaPort: 0\n"
        "    API_KEY",
    )

    status, dry_out, _ = register(capsys, "--dry-run", edited)
    assert status == 0
    assert db.get_class_property("MetadataManager", ["queueURLs"])["queueURLs"] == [
        "localhost:61613"
    ]

    status, out, _ = register(capsys, edited)

    change = (
        '~ class property MetadataManager.queueURLs: ["localhost:61613"] -> '
        '["localhost:61613", "localhost:61614"]'
    )
    assert status == 0
    assert out.splitlines()[0] == change
    assert dry_out.splitlines()[0] == change
    assert db.get_class_property("MetadataManager", ["queueURLs"])["queueURLs"] == [
        "localhost:61613",
        "localhost:61614",
    ]
    assert db.get_class_property("MetaExperiment", ["queueURLs"])["queueURLs"] == [
        "localhost:61613"
    ]


def test_a_changed_secret_is_applied_but_shown_as_stars(
    db: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    register(capsys, EXAMPLE)

    status, out, _ = register(capsys, edited_example(tmp_path, SECRET, NEW_SECRET))

    assert status == 0
    assert out.splitlines()[0] == "~ class property MetadataManager.API_KEY: *** -> ***"
    assert db.get_class_property("MetadataManager", ["API_KEY"])["API_KEY"] == [NEW_SECRET]


def test_an_emptied_property_is_removed_from_the_database(
    db: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    register(capsys, EXAMPLE)
    edited = edited_example(
        tmp_path, "    icatplus_server: http://localhost:8000", "    icatplus_server: []"
    )

    status, out, _ = register(capsys, edited)

    assert status == 0
    assert out.splitlines()[0] == (
        '- class property MetadataManager.icatplus_server: ["http://localhost:8000"]'
    )
    assert "icatplus_server" not in list(db.get_class_property_list("MetadataManager"))
    assert register(capsys, edited)[1].startswith("nothing to change")


def test_a_device_registered_in_another_server_is_moved(
    db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    info = tango.DbDevInfo()
    info.name, info._class, info.server = (
        "id00/metadata/test",
        "MetadataManager",
        "MetadataManager/old",
    )
    db.add_device(info)

    status, out, _ = register(capsys, EXAMPLE)

    assert status == 0
    assert (
        "~ device id00/metadata/test: MetadataManager/old (MetadataManager) -> "
        "MetadataManager/icatservers (MetadataManager)"
    ) in out.splitlines()
    assert db.get_device_info("id00/metadata/test").ds_full_name == "MetadataManager/icatservers"


def test_properties_the_files_do_not_mention_are_left_alone(
    db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    register(capsys, EXAMPLE)
    db.put_device_property("id00/metadata/test", {"polling_note": ["kept"]})
    db.put_class_property("MetaExperiment", {"icatplus_server": ["http://elsewhere"]})

    assert register(capsys, EXAMPLE)[1].startswith("nothing to change")
    assert db.get_device_property("id00/metadata/test", ["polling_note"]) == {
        "polling_note": ["kept"]
    }
    assert db.get_class_property("MetaExperiment", ["icatplus_server"]) == {
        "icatplus_server": ["http://elsewhere"]
    }


@pytest.mark.parametrize(
    "kind",
    [
        "unknown entry key",
        "missing tango_name",
        "class that is no ICAT server",
        "device name not a/b/c",
        "yaml syntax error",
        "property name typo",
        "unknown ICAT parameter",
    ],
)
def test_a_malformed_file_is_refused_and_nothing_is_written(
    db: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str
) -> None:
    text, expected = MALFORMED[kind]
    bad = tmp_path / "bad.yml"
    bad.write_text(text)
    before = snapshot(db)

    status, out, err = register(capsys, EXAMPLE, bad)

    assert status == 2
    assert out == ""
    assert f"{bad}:" in err
    for part in expected:
        assert part in err
    assert snapshot(db) == before  # not even the valid example was written


def test_a_duplicate_device_across_files_is_refused_and_nothing_is_written(
    db: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    copy = tmp_path / "copy.yml"
    copy.write_text(EXAMPLE.read_text())
    before = snapshot(db)

    status, _, err = register(capsys, EXAMPLE, copy)

    assert status == 2
    assert f"device id00/metadata/test is already defined in {EXAMPLE}" in err
    assert f"{copy}: entry 3 (server MetadataManager/icatservers)" in err
    assert snapshot(db) == before


def test_an_unreachable_tango_host_is_reported_with_what_to_do(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TANGO_HOST", "127.0.0.1:1")

    status, out, err = register(capsys, EXAMPLE)

    assert status == 1
    assert out == ""
    assert "cannot reach the Tango database at TANGO_HOST=127.0.0.1:1" in err


def test_a_secret_in_the_file_is_written_with_a_warning_recommending_the_file_property(
    db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = register(capsys, EXAMPLE)

    assert status == 0
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    line = example_line("- class: MetadataManager")
    assert warnings == [
        f"warning: {EXAMPLE}: entry 2 (class MetadataManager), line {line}: API_KEY is a secret "
        "written in this file, and anyone who can read the Tango database can read it: put it "
        "in a file readable only by the server's user (chmod 600) and set API_KEY_FILE to its "
        "path instead, or set ICAT_SERVERS_API_KEY in the server's environment."
    ]


def test_tango_metadatas_old_properties_are_written_and_named_as_not_used(
    db: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    edited = edited_example(
        tmp_path,
        "      beamlineID: id00\n      dataFolderPattern",
        "      beamlineId: id00\n      globalHDFfiles: 'true'\n      username: reader\n"
        "      dataFolderPattern",
    )

    status, out, err = register(capsys, edited)

    assert status == 0
    assert '+ device property id00/metadata/test.globalHDFfiles: ["true"]' in out.splitlines()
    assert db.get_device_property("id00/metadata/test", ["beamlineId", "username"]) == {
        "beamlineId": ["id00"],
        "username": ["reader"],
    }
    device_line = example_line("  - tango_name: id00/metadata/test")
    assert (
        f"device 1 (id00/metadata/test), line {device_line}: globalHDFfiles, username: not used "
        "by these servers"
    ) in err


def test_a_meta_experiment_device_named_nowhere_is_registered_with_a_warning(
    db: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    edited = edited_example(
        tmp_path,
        "      metaExperimentDevice: id00/metaexp/test",
        "      metaExperimentDevice: id00/metaexp/tset",
    )

    status, out, err = register(capsys, "--dry-run", edited)

    assert status == 0
    assert out.splitlines()[-1].startswith("dry run: 15 changes not written")
    entry_line = example_line("- server: MetadataManager")
    device_line = example_line("  - tango_name: id00/metadata/test")
    assert (
        f"warning: {edited}: entry 3 (server MetadataManager/icatservers), line {entry_line}, "
        f"device 1 (id00/metadata/test), line {device_line}: metaExperimentDevice "
        "'id00/metaexp/tset' is a device "
        "neither in these files nor in the Tango database: the MetadataManager would wait for "
        "it for ever. Check the name, or register that MetaExperiment too. "
        "Did you mean 'id00/metaexp/test'?"
    ) in err.splitlines()


def test_a_meta_experiment_already_in_the_database_needs_no_warning(
    db: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    register(capsys, EXAMPLE)
    text = EXAMPLE.read_text()
    only_manager = tmp_path / "manager.yml"
    only_manager.write_text(text[: text.index("- server: MetaExperiment")])

    status, out, err = register(capsys, only_manager)

    assert status == 0
    assert out.startswith("nothing to change")
    assert "metaExperimentDevice" not in err


def test_a_meta_experiment_device_naming_a_metadata_manager_is_warned_about(
    db: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    edited = edited_example(
        tmp_path,
        "      metaExperimentDevice: id00/metaexp/test",
        "      metaExperimentDevice: id00/metadata/test",
    )

    status, _, err = register(capsys, edited)

    assert status == 0
    assert (
        "metaExperimentDevice 'id00/metadata/test' is a MetadataManager device, not a "
        "MetaExperiment: name the MetaExperiment this device follows."
    ) in err
