"""Hostile text in ICAT documents: well-formed XML that gives the text back, or refusal.

Never a dropped character, never an injected element.
"""

from __future__ import annotations

import datetime
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icat_servers.icatcore.errors import InvalidInput
from icat_servers.icatcore.messages import dataset_xml, investigation_xml
from icat_servers.icatcore.records import DatasetRecord, InvestigationRecord

NS = {"tns": "http://www.esrf.fr/icat"}
START = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)

HOSTILE = [
    "<&>",
    "]]>",
    "<![CDATA[x]]>",
    "\"quoted\" and 'single'",
    "</tns:value></tns:parameter><tns:parameter><tns:name>evil</tns:name><tns:value>1",
    "&amp; &lt; &#60; &unknown;",
    "<?xml version='1.0'?>",
    "<!-- comment -->",
    "line\nbreak\r\nand\rreturn\ttab",
    "emoji 🧪 RTL \u202e\u05d0 zero-width \u200b combining e\u0301",
    "C1 control \x85 and DEL \x7f",
    "\U0010fffd astral end",
]
UNCARRIABLE = [
    "nul\x00",
    "bell\x07",
    "esc\x1b",
    "form\x0c",
    "lone \ud800",
    "lone \udfff",
    "\ufffe",
    "\uffff",
]


def record(text: str, **changes: object) -> DatasetRecord:
    fields: dict[str, object] = dict(
        proposal="hg123",
        beamline="id00",
        name="sample_0001",
        location="/data/visitor/hg123/id00/sample_0001",
        sample="s1",
        start=START,
        end=START,
        parameters={"Sample_description": text},
        datafiles=("/data/visitor/hg123/id00/a.h5",),
    )
    fields.update(changes)
    return DatasetRecord(**fields)  # type: ignore[arg-type]


def parameter(document: bytes, name: str) -> str | None:
    root = ET.fromstring(document)
    for element in root.findall("tns:parameter", NS):
        if element.findtext("tns:name", None, NS) == name:
            return element.findtext("tns:value", "", NS)
    return None


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_parameter_value_round_trips(text: str) -> None:
    document = dataset_xml(record(text), machine="m", software="s")
    assert parameter(document, "Sample_description") == text
    root = ET.fromstring(document)
    assert parameter(document, "evil") is None
    assert len(root.findall("tns:parameter", NS)) == 11  # 10 fixed + the one given


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_record_fields_round_trip(text: str) -> None:
    document = dataset_xml(
        record("x", name=text, sample=text, datafiles=(text,)), machine=text, software=text
    )
    root = ET.fromstring(document)
    assert root.findtext("tns:name", None, NS) == text
    assert root.findtext("tns:sample/tns:name", None, NS) == text
    assert root.findtext("tns:datafile/tns:location", None, NS) == text
    assert parameter(document, "machine") == text
    assert parameter(document, "software") == text


@pytest.mark.parametrize("text", UNCARRIABLE)
def test_uncarriable_characters_are_refused_not_dropped(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"U\+[0-9A-F]{4}"):
        dataset_xml(record(text), machine="m", software="s")
    with pytest.raises(InvalidInput):
        dataset_xml(record("x", sample=text), machine="m", software="s")
    with pytest.raises(InvalidInput):
        dataset_xml(record("x", datafiles=("/data/" + text,)), machine="m", software="s")
    with pytest.raises(InvalidInput):
        investigation_xml(InvestigationRecord(proposal=text, beamline="id00", start=START))


def test_hostile_parameter_name_is_escaped() -> None:
    name = "<evil attr='1'>&"
    document = dataset_xml(record("x", parameters={name: "v"}), machine="m", software="s")
    assert parameter(document, name) == "v"


def test_one_megabyte_value_round_trips() -> None:
    text = ("<&>]]>\"' ü🧪" * 100_000)[:1_000_000]
    document = dataset_xml(record(text), machine="m", software="s")
    assert parameter(document, "Sample_description") == text


def test_one_megabyte_with_one_bad_character_is_refused() -> None:
    text = "a" * 999_999 + "\x01"
    with pytest.raises(InvalidInput, match="position 999999"):
        dataset_xml(record(text), machine="m", software="s")


xml_chars = st.characters(exclude_categories=["Cs"], exclude_characters="\ufffe\uffff").filter(
    lambda c: c in "\t\n\r" or ord(c) >= 0x20
)


@settings(max_examples=300, deadline=None)
@given(st.text(xml_chars, max_size=60), st.text(xml_chars, min_size=1, max_size=20))
def test_any_xml_safe_text_round_trips(text: str, sample: str) -> None:
    document = dataset_xml(record(text, sample=sample), machine="m", software="s")
    assert parameter(document, "Sample_description") == text
    assert ET.fromstring(document).findtext("tns:sample/tns:name", None, NS) == sample


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20))
def test_any_text_round_trips_or_is_refused(text: str) -> None:
    try:
        document = dataset_xml(record(text), machine="m", software="s")
    except InvalidInput:
        assert any(
            (ord(c) < 0x20 and c not in "\t\n\r")
            or 0xD800 <= ord(c) <= 0xDFFF
            or c in "\ufffe\uffff"
            for c in text
        )
    else:
        assert parameter(document, "Sample_description") == text
