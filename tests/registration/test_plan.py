"""The YAML beamline staff write is read into a validated plan, or refused with a located reason.

Pure: no Tango database is involved.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from icat_servers.adapters.registration import (
    AddDevice,
    RegistrationError,
    SetProperty,
    plan,
)
from tests.registration.conftest import EXAMPLE

SECRET = "elogbook-00000000-0000-0000-0000-000000000000"

GOOD = """\
- class: MetadataManager
  properties:
    queueURLs: localhost:61613
    API_KEY: s3cret-key
- server: MetadataManager
  personal_name: icatservers
  device:
  - tango_name: id00/metadata/test
    class: MetadataManager
    properties:
      beamlineID: id00
      metaExperimentDevice: id00/metaexp/test
"""


def write(tmp_path: Path, text: str, name: str = "beamline.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def refusal(*files: Path) -> str:
    with pytest.raises(RegistrationError) as caught:
        plan(files)
    return str(caught.value)


def test_the_example_plans_both_servers_with_class_and_device_properties() -> None:
    registration = plan([EXAMPLE])

    devices = {d.name: d for d in registration.devices}
    assert set(devices) == {"id00/metadata/test", "id00/metaexp/test"}
    manager = devices["id00/metadata/test"]
    assert (manager.device_class, manager.server) == (
        "MetadataManager",
        "MetadataManager/icatservers",
    )
    assert devices["id00/metaexp/test"].server == "MetaExperiment/icatservers"
    assert manager.properties["dataFolderPattern"] == ("{dataRoot}",)
    assert manager.properties["metaExperimentDevice"] == ("id00/metaexp/test",)
    assert "Sample_description" in manager.properties["parameters"]
    assert "InstrumentSlitPrimary_horizontal_gap" in manager.properties["parameters"]
    assert registration.class_properties["MetadataManager"] == {
        "queueName": ("/queue/icatIngest",),
        "queueURLs": ("localhost:61613",),
        "jolokiaPort": ("0",),
        "API_KEY": (SECRET,),
        "icatplus_server": ("http://localhost:8000",),
    }
    assert registration.class_properties["MetaExperiment"]["queueName"] == ("/queue/icatIngest",)


def test_scalars_become_one_string_and_lists_become_lists_of_strings(tmp_path: Path) -> None:
    text = """\
- class: MetaExperiment
  properties:
    jolokiaPort: 8161
    queueURLs: [broker1:61613, broker2]
    queueName: icatIngest
- server: MetaExperiment
  personal_name: 1
  device:
  - tango_name: id01/metaexp/1
    class: MetaExperiment
    properties:
      beamlineID: id01
"""
    registration = plan([write(tmp_path, text)])

    assert registration.class_properties["MetaExperiment"] == {
        "jolokiaPort": ("8161",),
        "queueURLs": ("broker1:61613", "broker2"),
        "queueName": ("icatIngest",),
    }
    (device,) = registration.devices
    assert device.server == "MetaExperiment/1"
    assert device.properties == {"beamlineID": ("id01",)}


def test_an_empty_list_is_kept_as_no_value(tmp_path: Path) -> None:
    text = GOOD.replace("queueURLs: localhost:61613", "queueURLs: []")
    registration = plan([write(tmp_path, text)])
    assert registration.class_properties["MetadataManager"]["queueURLs"] == ()


def test_devices_and_class_properties_from_several_files_are_combined(tmp_path: Path) -> None:
    other = """\
- class: MetaExperiment
  properties:
    queueName: /queue/icatIngest
- server: MetaExperiment
  personal_name: icatservers
  device:
  - tango_name: id00/metaexp/test
    class: MetaExperiment
    properties: {beamlineID: id00}
"""
    registration = plan([write(tmp_path, GOOD), write(tmp_path, other, "other.yml")])
    assert {d.name for d in registration.devices} == {"id00/metadata/test", "id00/metaexp/test"}
    assert set(registration.class_properties) == {"MetadataManager", "MetaExperiment"}


MALFORMED = {
    "unknown entry key": (
        GOOD.replace("personal_name: icatservers", "personal_nam: icatservers\n  personal_name: x"),
        ["entry 2 (server MetadataManager/x)", "unknown key 'personal_nam'", "personal_name"],
    ),
    "unknown device key": (
        GOOD.replace("    class: MetadataManager\n", "    class: MetadataManager\n    klass: x\n"),
        ["device 1 (id00/metadata/test)", "unknown key 'klass'"],
    ),
    "missing tango_name": (
        GOOD.replace("  - tango_name: id00/metadata/test\n    class", "  - class"),
        ["entry 2 (server MetadataManager/icatservers)", "tango_name is missing"],
    ),
    "class that is no ICAT server": (
        GOOD.replace("- class: MetadataManager", "- class: TangoTest"),
        ["entry 1 (class TangoTest), line 1", "'TangoTest' is not an ICAT server class"],
    ),
    "device name not a/b/c": (
        GOOD.replace("tango_name: id00/metadata/test", "tango_name: id00/metadata"),
        ["device 1 (id00/metadata)", "not a Tango device name of the form domain/family/member"],
    ),
    "yaml syntax error": (
        GOOD.replace("  personal_name: icatservers", "  personal_name: [icatservers"),
        ["line 7", "not valid YAML"],
    ),
    "key written twice": (
        GOOD.replace(
            "      beamlineID: id00\n", "      beamlineID: id00\n      beamlineID: id01\n"
        ),
        ["line 12, column 7", "'beamlineID' is written twice (first on line 11)"],
    ),
    "properties not a mapping": (
        GOOD.replace(
            "  properties:\n    queueURLs: localhost:61613\n    API_KEY: s3cret-key\n",
            "  properties: [queueURLs]\n",
        ),
        ["entry 1 (class MetadataManager)", "properties must be a mapping"],
    ),
    "unquoted braces become a mapping": (
        GOOD.replace(
            "      beamlineID: id00\n",
            "      beamlineID: id00\n      dataFolderPattern: {dataRoot}\n",
        ),
        [
            "device 1 (id00/metadata/test)",
            "'dataFolderPattern' is a mapping",
            'If you meant the text "{dataRoot}", quote it',
        ],
    ),
    "property name typo": (
        GOOD.replace("queueURLs: localhost", "queueURL: localhost"),
        [
            "entry 1 (class MetadataManager)",
            "property 'queueURL' is not read by class",
            "Did you mean 'queueURLs'?",
        ],
    ),
    "device property on the wrong class": (
        GOOD.replace("queueURLs: localhost:61613", "beamlineID: id00"),
        ["entry 1 (class MetadataManager)", "property 'beamlineID' is not read by class"],
    ),
    "required property missing": (
        GOOD.replace("      beamlineID: id00\n", ""),
        [
            "device 1 (id00/metadata/test)",
            "the device would refuse it: property beamlineID is missing",
        ],
    ),
    "device class differs from its server": (
        GOOD.replace("    class: MetadataManager\n", "    class: MetaExperiment\n"),
        [
            "device 1 (id00/metadata/test)",
            "a MetaExperiment device cannot run in the MetadataManager server",
        ],
    ),
    "unknown ICAT parameter": (
        GOOD + "      parameters: [Sample_description, Sample_descripton]\n",
        [
            "device 1 (id00/metadata/test)",
            "unknown ICAT parameter(s) 'Sample_descripton' (did you mean 'Sample_description'?)",
        ],
    ),
    "value without a value": (
        GOOD.replace("beamlineID: id00", "beamlineID:"),
        ["device 1 (id00/metadata/test)", "property 'beamlineID' has no value"],
    ),
    "several values for a single-valued property": (
        GOOD.replace("beamlineID: id00", "beamlineID: [id00, id01]"),
        ["device 1 (id00/metadata/test)", "property beamlineID has 2 values: give exactly one"],
    ),
    "bad jolokia port": (
        GOOD.replace("queueURLs: localhost:61613", "jolokiaPort: eighty"),
        [
            "entry 1 (class MetadataManager), line 1: the devices would refuse it",
            "property jolokiaPort 'eighty' is not a port",
        ],
    ),
    "beamline name the devices refuse": (
        GOOD.replace("beamlineID: id00", "beamlineID: id 00"),
        [
            "entry 2 (server MetadataManager/icatservers), line 5, device 1 (id00/metadata/test)",
            "the device would refuse it: property beamlineID 'id 00' is not a beamline name",
        ],
    ),
    "broker address the devices refuse": (
        GOOD.replace("queueURLs: localhost:61613", "queueURLs: localhost:stomp"),
        [
            "entry 1 (class MetadataManager), line 1",
            "queueURLs entry 'localhost:stomp' is not host:port",
        ],
    ),
    "not a list": ("class: MetadataManager\n", ["must be a YAML list of entries"]),
    "empty file": ("", ["the file holds no entries"]),
    "entry of neither kind": (
        GOOD + "- scan_saving: {class: ESRFScanSaving}\n",
        ["entry 3 (unnamed), line 13", "neither 'class' nor 'server'"],
    ),
    "device list missing": (
        GOOD.replace("  device:\n", "  devices:\n"),
        ["unknown key 'devices'", "'device' must be a non-empty list"],
    ),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_malformed_file_is_refused_naming_file_entry_and_reason(
    tmp_path: Path, kind: str
) -> None:
    text, expected = MALFORMED[kind]
    path = write(tmp_path, text)

    message = refusal(path)

    assert f"{path}:" in message
    assert "nothing was written" in message
    for part in expected:
        assert part in message


def test_a_device_defined_in_two_files_is_refused_naming_both(tmp_path: Path) -> None:
    first = write(tmp_path, GOOD, "first.yml")
    second = write(tmp_path, GOOD.replace("API_KEY: s3cret-key", "queueName: q"), "second.yml")

    message = refusal(first, second)

    assert f"{second}: entry 2 (server MetadataManager/icatservers)" in message
    assert f"device id00/metadata/test is already defined in {first} entry 2" in message
    assert "class property MetadataManager.queueURLs is already set in" in message


def test_a_device_name_differing_only_in_case_is_a_duplicate(tmp_path: Path) -> None:
    text = GOOD + GOOD[GOOD.index("- server") :].replace("id00/metadata/test", "ID00/Metadata/Test")
    assert "device ID00/Metadata/Test is already defined" in refusal(write(tmp_path, text))


def test_every_problem_of_every_file_is_reported_at_once(tmp_path: Path) -> None:
    bad = GOOD.replace("queueURLs:", "queueURL:").replace("beamlineID: id00", "beamlineID:")
    broken = write(tmp_path, "- [", "broken.yml")

    message = refusal(write(tmp_path, bad), broken)

    assert message.startswith("3 problems in the registration files")
    assert "'queueURL'" in message and "'beamlineID' has no value" in message
    assert f"{broken}: line 1, column 4: not valid YAML" in message


def test_a_missing_file_is_refused_with_its_name(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    assert f"{missing}: cannot read the file" in refusal(missing)


def test_secret_values_never_appear_in_errors_or_reprs(tmp_path: Path) -> None:
    bad = GOOD.replace("API_KEY: s3cret-key", "API_KEY: [s3cret-key, s3cret-key2]")
    assert "s3cret" not in refusal(write(tmp_path, bad))
    mapping = GOOD.replace("API_KEY: s3cret-key", "API_KEY: {s3cret-key}")
    assert "s3cret" not in refusal(write(tmp_path, mapping, "mapping.yml"))

    registration = plan([EXAMPLE])
    assert SECRET not in repr(registration)
    assert "'API_KEY': ***" in repr(registration)


@pytest.mark.parametrize("name", ["API_KEY", "ldap_password", "Passcode", "proxyPassword"])
def test_changes_of_secret_properties_show_stars(name: str) -> None:
    change = SetProperty("class", "MetadataManager", name, ("new-secret",), ("old-secret",))
    assert str(change) == f"~ class property MetadataManager.{name}: *** -> ***"
    assert "secret" not in repr(change)


def test_changes_read_like_a_diff() -> None:
    add = AddDevice("id00/metadata/test", "MetadataManager", "MetadataManager/icatservers")
    assert str(add) == "+ device id00/metadata/test (MetadataManager/icatservers)"
    assert str(SetProperty("class", "MetadataManager", "queueURLs", ("b:1", "c:2"), ("a:1",))) == (
        '~ class property MetadataManager.queueURLs: ["a:1"] -> ["b:1", "c:2"]'
    )
    assert str(SetProperty("device", "id00/metadata/test", "beamlineID", ("id00",))) == (
        '+ device property id00/metadata/test.beamlineID: ["id00"]'
    )
    assert str(SetProperty("class", "MetaExperiment", "queueURLs", (), ("a:1",))) == (
        '- class property MetaExperiment.queueURLs: ["a:1"]'
    )


def test_broker_login_and_passcode_are_accepted_and_the_passcode_is_masked(tmp_path: Path) -> None:
    text = GOOD.replace(
        "    API_KEY: s3cret-key\n", "    queueLogin: icat\n    queuePasscode: s3cret-pass\n"
    )
    registration = plan([write(tmp_path, text)])

    assert registration.class_properties["MetadataManager"]["queuePasscode"] == ("s3cret-pass",)
    assert "s3cret" not in repr(registration)
    change = SetProperty("class", "MetadataManager", "queuePasscode", ("s3cret-pass",))
    assert str(change) == "+ class property MetadataManager.queuePasscode: ***"


# -- tango-metadata's files, read as written ----------------------------------------------

OLD_SERVERS = """\
- class: MetadataManager
  properties:
    queueURLs: localhost:61613
    server: icat.esrf.fr
    port: 443
    username: reader
- server: MetadataManager
  personal_name: icatservers
  device:
  - tango_name: id00/metadata/test
    class: MetadataManager
    properties:
      beamlineId: id00
      metaExperimentDevice: id00/metaexp/test
      globalHDFfiles: "true"
      dataFolderPattern: "{dataRoot}/{proposal}/{beamlineID}/{sampleName}/{scanName}"
"""


def test_an_original_tango_metadata_file_is_accepted_and_its_unused_properties_named(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, OLD_SERVERS)

    registration = plan([path])

    assert registration.class_properties["MetadataManager"]["port"] == ("443",)
    (device,) = registration.devices
    assert device.properties["beamlineId"] == ("id00",)
    assert device.properties["globalHDFfiles"] == ("true",)
    notes = [str(note) for note in registration.notes]
    assert notes == [
        f"{path}: entry 1 (class MetadataManager), line 1: port, server, username: not used by "
        "these servers (tango-metadata's properties, accepted and written as given; they may "
        "be removed).",
        f"{path}: entry 2 (server MetadataManager/icatservers), line 7, device 1 "
        "(id00/metadata/test), line 10: globalHDFfiles: not used by these servers "
        "(tango-metadata's properties, accepted and written as given; they may be removed).",
    ]


def test_both_spellings_of_beamline_id_on_one_device_are_refused(tmp_path: Path) -> None:
    text = GOOD.replace("beamlineID: id00", "beamlineID: id00\n      beamlineId: id00")
    assert "property 'beamlineId' is also written as 'beamlineID': keep one." in refusal(
        write(tmp_path, text)
    )


def test_a_file_without_secrets_or_old_properties_has_no_notes(tmp_path: Path) -> None:
    text = GOOD.replace("    API_KEY: s3cret-key\n", "    API_KEY_FILE: /etc/icat/key\n")
    assert plan([write(tmp_path, text)]).notes == ()


@pytest.mark.parametrize(
    ("line", "name", "file_property", "variable"),
    [
        ("API_KEY: s3cret-key", "API_KEY", "API_KEY_FILE", "ICAT_SERVERS_API_KEY"),
        (
            "queuePasscode: s3cret-pass",
            "queuePasscode",
            "queuePasscodeFile",
            "ICAT_SERVERS_QUEUE_PASSCODE",
        ),
    ],
)
def test_a_secret_in_the_file_is_accepted_with_a_note_recommending_the_file_property(
    tmp_path: Path, line: str, name: str, file_property: str, variable: str
) -> None:
    path = write(tmp_path, GOOD.replace("API_KEY: s3cret-key", line))

    (note,) = plan([path]).notes

    assert str(note).startswith(f"{path}: entry 1 (class MetadataManager), line 1: {name} is")
    assert f"set {file_property} to its path" in note.message
    assert variable in note.message
    assert "s3cret" not in str(note)


def test_a_secret_file_property_must_name_an_absolute_path(tmp_path: Path) -> None:
    text = GOOD.replace("API_KEY: s3cret-key", "API_KEY_FILE: key.txt")
    message = refusal(write(tmp_path, text))
    assert "entry 1 (class MetadataManager), line 1: the devices would refuse it" in message
    assert "property API_KEY_FILE 'key.txt' is not an absolute path" in message


def test_a_secret_file_is_not_read_by_the_plan(tmp_path: Path) -> None:
    text = GOOD.replace("API_KEY: s3cret-key", "API_KEY_FILE: /nonexistent/icat/key")
    registration = plan([write(tmp_path, text)])
    assert registration.class_properties["MetadataManager"]["API_KEY_FILE"] == (
        "/nonexistent/icat/key",
    )


SHAPES = {
    "server that is no ICAT server": (
        GOOD.replace("- server: MetadataManager", "- server: MetadataManagr"),
        ["'MetadataManagr' is not an ICAT server", "Did you mean 'MetadataManager'?"],
    ),
    "personal_name with a slash": (
        GOOD.replace("personal_name: icatservers", "personal_name: a/b"),
        ["personal_name 'a/b' must not contain '/'."],
    ),
    "personal_name a list": (
        GOOD.replace("personal_name: icatservers", "personal_name: [a]"),
        ["personal_name must be text, not list: quote it."],
    ),
    "device not a mapping": (
        GOOD.replace(
            "  - tango_name: id00/metadata/test\n", "  - just-a-name\n  - tango_name: x/y/z\n"
        ),
        ["device 1 (unnamed), line 8", "a device must be a mapping with tango_name"],
    ),
    "property name not text": (
        GOOD.replace("    queueURLs: localhost:61613\n", "    5: localhost:61613\n"),
        ["entry 1 (class MetadataManager)", "property name 5 must be text."],
    ),
    "class entry without properties": (
        GOOD.replace(
            "  properties:\n    queueURLs: localhost:61613\n    API_KEY: s3cret-key\n", ""
        ),
        ["entry 1 (class MetadataManager), line 1: a class entry needs 'properties'."],
    ),
    "list inside a list": (
        GOOD.replace("beamlineID: id00", "beamlineID: [[id00]]"),
        ["property 'beamlineID' must be text or a list of text, not a list of list."],
    ),
    "empty device list": (
        GOOD.replace(
            GOOD[GOOD.index("  device:") :],
            "  device: []\n",
        ),
        ["entry 2 (server MetadataManager/icatservers), line 5", "'device' must be a non-empty"],
    ),
}


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_a_file_of_the_wrong_shape_is_refused_in_words(tmp_path: Path, kind: str) -> None:
    text, expected = SHAPES[kind]
    message = refusal(write(tmp_path, text))
    for part in expected:
        assert part in message
    assert "pydantic" not in message and "Input should be" not in message


@pytest.mark.parametrize(
    "value", ["[[s3cret-key]]", "{s3cret-key: 1}", "{a: s3cret-key, b: 2}", "[{s3cret-key: 1}]"]
)
def test_a_secret_of_the_wrong_shape_is_refused_without_showing_it(
    tmp_path: Path, value: str
) -> None:
    message = refusal(write(tmp_path, GOOD.replace("API_KEY: s3cret-key", f"API_KEY: {value}")))
    assert "property 'API_KEY'" in message
    assert "s3cret" not in message


def test_a_secret_file_property_is_a_path_and_shown_as_one() -> None:
    change = SetProperty("class", "MetadataManager", "API_KEY_FILE", ("/etc/icat/key",))
    assert str(change) == '+ class property MetadataManager.API_KEY_FILE: ["/etc/icat/key"]'
    passcode = SetProperty("class", "MetaExperiment", "queuePasscodeFile", ("/etc/icat/pass",))
    assert str(passcode).endswith('queuePasscodeFile: ["/etc/icat/pass"]')
