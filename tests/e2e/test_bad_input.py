"""Bad input over Tango: a readable DevFailed, and nothing changed (SPEC, "Commands").

Each case brings the servers to a state, takes a snapshot of everything a client can
read (both devices' attributes and states, the technique parameters, the registered
count), makes one bad call, and checks the error's words and that the snapshot is the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import tango

from tests.e2e.conftest import ON, RUNNING, STANDBY, Beamline

pytestmark = pytest.mark.slow  # real processes: `-m "not slow"` skips them

MEGABYTE = "x" * (1 << 20)


@dataclass(frozen=True)
class Bad:
    id: str
    state: tango.DevState
    call: Callable[[Beamline], object]
    words: tuple[str, ...]


def set_parameters(text: str | bytes) -> Callable[[Beamline], object]:
    return lambda b: b.manager.command_inout("SetParameters", text)


def manager(name: str, value: object) -> Callable[[Beamline], object]:
    return lambda b: b.manager.write_attribute(name, value)


def meta(name: str, value: object) -> Callable[[Beamline], object]:
    return lambda b: b.meta.write_attribute(name, value)


def command(name: str, *argument: object) -> Callable[[Beamline], object]:
    return lambda b: b.manager.command_inout(name, *argument)


CASES = [
    Bad("invalid-json", RUNNING, set_parameters('{"Sample_notes": "a",'), ("invalid JSON",)),
    Bad("json-not-object", ON, set_parameters('["Sample_notes"]'), ("JSON object",)),
    Bad(
        "unknown-names-all-listed",
        RUNNING,
        set_parameters(
            json.dumps({"Sample_notes": "set?", "NotAnIcatName": 1, "Sample_colour": "red"})
        ),
        ("unknown", "NotAnIcatName", "Sample_colour", "nothing was set"),
    ),
    Bad(
        "parameter-control-character",
        RUNNING,
        set_parameters(json.dumps({"Sample_notes": "bad\x1b[31mred"})),
        ("control character", "U+001B"),
    ),
    Bad(
        "parameter-1MB",
        RUNNING,
        set_parameters(json.dumps({"Sample_notes": MEGABYTE})),
        ("characters long",),
    ),
    Bad(
        "parameter-attribute-control-character",
        RUNNING,
        manager("Sample_description", "unit\x1fseparator"),
        ("control character", "U+001F"),
    ),
    Bad("sample-control-character", ON, meta("sample", "lyso\x1b[2Jzyme"), ("U+001B",)),
    Bad(
        "sample-c1-byte",
        ON,
        meta("sample", b"lyso\x9bzyme"),
        ("control character", "U+009B"),
    ),
    Bad("proposal-1MB", ON, meta("proposal", MEGABYTE), ("characters long",)),
    Bad("sample-1MB", RUNNING, meta("sample", MEGABYTE), ("characters long",)),
    Bad("dataRoot-newline", ON, meta("dataRoot", "/data/visitor\n/x"), ("U+000A",)),
    Bad("datasetName-slash", ON, manager("datasetName", "a/b"), ("'/'",)),
    Bad("datasetName-dotdot", ON, manager("datasetName", ".."), ("relative path",)),
    Bad("scanName-slash", STANDBY, manager("scanName", "../etc"), ("'/'",)),
    Bad("datasetName-1MB", ON, manager("datasetName", MEGABYTE), ("characters long",)),
    Bad("datasetName-bell", ON, manager("datasetName", "scan\x07"), ("U+0007",)),
    Bad(
        "datasetName-while-running",
        RUNNING,
        manager("datasetName", "other"),
        ("datasetName", "RUNNING", "EndDataset"),
    ),
    Bad(
        "start-in-standby",
        STANDBY,
        command("StartDataset"),
        ("StartDataset", "STANDBY", "datasetName"),
    ),
    Bad("start-while-running", RUNNING, command("StartDataset"), ("RUNNING",)),
    Bad("end-in-on", ON, command("EndDataset"), ("EndDataset", "ON", "StartDataset")),
    Bad("endscan-in-standby", STANDBY, command("EndScan"), ("EndDataset", "STANDBY")),
    Bad("abort-in-on", ON, command("AbortDataset"), ("AbortDataset", "ON")),
    Bad("file-in-on", ON, manager("lastDataFile", "/data/x.h5"), ("lastDataFile", "ON")),
    Bad(
        "file-control-character",
        RUNNING,
        manager("lastDataFile", "/data/x\r.h5"),
        ("lastDataFile", "U+000D"),
    ),
    Bad("logbook-1MB", RUNNING, command("notifyInfo", MEGABYTE * 2), ("characters long",)),
    Bad(
        "logbook-control-character",
        ON,
        command("userComment", "ring\x07"),
        ("control character",),
    ),
    Bad(
        "image-not-base64",
        ON,
        command("uploadBase64", "data:image/png;base64,@@@not base64@@@"),
        ("base64",),
    ),
    Bad("image-not-a-data-url", ON, command("uploadBase64", "hello"), ("data:",)),
]


def arrange(beamline: Beamline, state: tango.DevState) -> None:
    beamline.open_session("hg600", "lysozyme", "/data/visitor/hg600/id00")
    if state == STANDBY:
        return
    beamline.manager.write_attribute("datasetName", "sample_0001")
    if state == ON:
        return
    beamline.manager.command_inout("StartDataset")
    beamline.manager.command_inout("SetParameters", json.dumps({"Sample_notes": "before"}))
    beamline.manager.write_attribute("lastDataFile", "/data/visitor/hg600/id00/a.h5")


@pytest.mark.parametrize("bad", CASES, ids=[bad.id for bad in CASES])
def test_bad_input_is_refused_and_changes_nothing(beamline: Beamline, bad: Bad) -> None:
    arrange(beamline, bad.state)
    assert beamline.manager.state() == bad.state
    before = beamline.snapshot()
    logbook_before = beamline.mark()
    with pytest.raises(tango.DevFailed) as refused:
        bad.call(beamline)
    description = refused.value.args[0].desc
    for word in bad.words:
        assert word in description, description
    assert len(description) < 1000, "an error a person can read, not the input echoed"
    assert beamline.snapshot() == before
    assert beamline.mark() == logbook_before, "nothing was put in the outbox"


def test_latin1_bytes_are_text_as_bliss_sends_them(beamline: Beamline) -> None:
    """Non-UTF-8 bytes cannot be refused over Tango: pytango sends a DevString as the
    bytes it is given and the server decodes every DevString as latin-1, where any byte
    is a character. So `b"caf\\xe9"` (what BLISS sends, it encodes its e-logbook text to
    latin-1) is "café", and only bytes that become control characters (0x80-0x9F) are
    refused (case sample-c1-byte). Text outside latin-1 ("€") cannot be sent at all:
    the pytango client refuses to encode it before anything leaves."""
    arrange(beamline, ON)
    beamline.meta.write_attribute("sample", b"caf\xe9")
    assert beamline.meta.sample == "café"
    assert beamline.manager.sampleName == "café"
    with pytest.raises(UnicodeError):
        beamline.meta.write_attribute("sample", "5 €")
    assert beamline.meta.sample == "café"


def test_refused_set_parameters_keeps_earlier_values(beamline: Beamline) -> None:
    """All or nothing: a refused SetParameters leaves the values set before it, and the
    dataset registered afterwards carries them and nothing of the refused call."""
    arrange(beamline, RUNNING)
    mark = beamline.mark()
    with pytest.raises(tango.DevFailed):
        beamline.manager.SetParameters(
            json.dumps({"Sample_notes": "overwritten?", "Sample_description": 3, "Bogus": 1})
        )
    beamline.manager.EndDataset()
    [dataset] = beamline.datasets_since(mark)
    assert dataset.parameters["Sample_notes"] == "before"
    assert "Sample_description" not in dataset.parameters
    assert "Bogus" not in dataset.parameters
