"""Our hand-written ICAT documents against pyicat-plus's, for generated datasets.

The ingester must not tell them apart: both documents are parsed and compared element
by element (tag, attributes, text, order). pyicat-plus never writes data files, so its
own XSD serializer is fed the dictionary it builds plus the data files: the XSD
dataclass then decides where and how they appear.
"""

from __future__ import annotations

import datetime
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icat_servers.icatcore.definitions import ParameterSpec, ValueKind, parameter_specs
from icat_servers.icatcore.messages import dataset_xml, investigation_xml
from icat_servers.icatcore.records import DatasetRecord, InvestigationRecord

pyicat_dataset = pytest.importorskip("pyicat_plus._icat_messaging.serializers.dataset")
pyicat_investigation = pytest.importorskip("pyicat_plus._icat_messaging.serializers.investigation")

MACHINE = "lid00ctrl.esrf.fr"
SOFTWARE = "icat-servers_v1"

SPECS = parameter_specs()
RESERVED = {
    "Sample_name",
    "startDate",
    "endDate",
    "machine",
    "software",
    "complete",
    "datasetName",
    "location",
    "proposal",
    "beamlineID",
    "input_datasets",
}


def _names(kind: ValueKind, *, renamed: bool = False) -> list[str]:
    return sorted(
        name
        for name, spec in SPECS.items()
        if spec.kind is kind and name not in RESERVED and bool(spec.renamed_to) == renamed
    )


TEXT_NAMES = _names(ValueKind.TEXT)
FLOAT_NAMES = _names(ValueKind.FLOAT)
INT_NAMES = _names(ValueKind.INT)
BOOL_NAMES = _names(ValueKind.BOOL)
QUANTITY_NAMES = _names(ValueKind.QUANTITY)
CUSTOM_NAMES = _names(ValueKind.CUSTOM)
CHOICE_NAMES = _names(ValueKind.CHOICE)
DATETIME_NAMES = _names(ValueKind.DATETIME)
RENAMED_NAMES = sorted(name for name, spec in SPECS.items() if spec.renamed_to)

# XML-safe text. Line breaks excluded: pyicat-plus deletes "\n" from its documents
# (and lets "\r" become "\n"), we keep them as character references.
xml_text = st.text(
    alphabet=st.characters(
        exclude_categories=["Cs"],
        exclude_characters="\r\n\ufffe\uffff",
        min_codepoint=0x09,
    ).filter(lambda c: c == "\t" or ord(c) >= 0x20),
    max_size=30,
)
number_text = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
    st.sampled_from(["1e3", "-0", "1.0", "2.50", " 3 ", "1_000", "0x10", "nan", "abc", ""]),
)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
numbers = st.one_of(st.integers(-(10**9), 10**9), finite_floats)
timezones = st.sampled_from(
    [
        datetime.UTC,
        datetime.timezone(datetime.timedelta(hours=2)),
        datetime.timezone(datetime.timedelta(hours=-5, minutes=-30)),
    ]
)
moments = st.datetimes(
    min_value=datetime.datetime(1970, 1, 2),
    max_value=datetime.datetime(2100, 1, 1),
    timezones=timezones,
)


def _value_for(spec: ParameterSpec) -> st.SearchStrategy[Any]:
    kind = spec.kind
    if kind is ValueKind.TEXT:
        return st.one_of(xml_text, st.integers(0, 9))  # an int is refused, sent as given
    if kind in (ValueKind.FLOAT, ValueKind.INT):
        return st.one_of(numbers, number_text, st.booleans())
    if kind is ValueKind.BOOL:
        return st.one_of(
            st.booleans(), st.sampled_from(["true", "False", "1", "0", "yes", "off", "maybe"])
        )
    if kind is ValueKind.QUANTITY:
        return st.one_of(
            numbers,
            number_text,
            st.sampled_from(["1.5 mm", "2 m", "3 um", "10 keV", "1 2 3"]),
            st.lists(finite_floats, min_size=1, max_size=3),
        )
    if kind is ValueKind.CHOICE:
        return st.one_of(st.sampled_from(spec.choices), xml_text)
    if kind is ValueKind.DATETIME:
        return st.one_of(moments, st.sampled_from(["2024-01-02T03:04:05Z", "2024-01-02", "x"]))
    if kind is ValueKind.CUSTOM:
        items = st.one_of(
            st.lists(xml_text.filter(lambda s: "," not in s and ";" not in s), max_size=3),
            st.lists(finite_floats, max_size=3),
            st.lists(st.integers(-5, 5), max_size=3),
        )
        return st.one_of(xml_text, number_text, items)
    return st.one_of(xml_text, numbers)


@st.composite
def parameters(draw: st.DrawFn) -> dict[str, Any]:
    groups = [
        TEXT_NAMES,
        FLOAT_NAMES,
        INT_NAMES,
        BOOL_NAMES,
        QUANTITY_NAMES,
        CUSTOM_NAMES,
        CHOICE_NAMES,
        DATETIME_NAMES,
        RENAMED_NAMES,
    ]
    # older icat-esrf-definitions have no parameter of some kinds (3.7.0: no CHOICE)
    groups = [group for group in groups if group]
    chosen: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 12))):
        name = draw(st.sampled_from(draw(st.sampled_from(groups))))
        chosen[name] = draw(_value_for(SPECS[name]))
    if draw(st.booleans()):
        chosen["definition"] = draw(st.sampled_from(["XRF", "SAXS XRD", "NOT_A_TECHNIQUE"]))
    if draw(st.booleans()):
        chosen[draw(st.sampled_from(["MyOwnField", "beamline_temperature"]))] = draw(xml_text)
    return chosen


names = xml_text.filter(bool)
path_parts = st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="/\ufffe\uffff"),
    min_size=1,
    max_size=12,
)


@st.composite
def datasets(draw: st.DrawFn) -> DatasetRecord:
    start = draw(moments)
    location = "/data/visitor/" + "/".join(draw(st.lists(path_parts, min_size=1, max_size=4)))
    return DatasetRecord(
        proposal=draw(names),
        beamline=draw(names),
        name=draw(names),
        location=location + draw(st.sampled_from(["", "/", "/./", "//x/.."])),
        sample=draw(names),
        start=start,
        end=start
        + draw(
            st.timedeltas(min_value=datetime.timedelta(0), max_value=datetime.timedelta(days=3))
        ),
        complete=draw(st.booleans()),
        parameters=draw(parameters()),
        datafiles=tuple(draw(st.lists(location_texts(), max_size=4))),
    )


def location_texts() -> st.SearchStrategy[str]:
    return st.lists(path_parts, min_size=1, max_size=3).map(lambda p: "/data/" + "/".join(p))


@contextmanager
def _with_datafiles(datafiles: tuple[str, ...]) -> Iterator[None]:
    """Let pyicat-plus's XSD serializer write the data files it never receives."""
    raw = pyicat_dataset.raw_serialize_dataset_message

    def with_files(data: dict[str, Any], indent: str | None = None) -> bytes:
        data = dict(data, datafile=[{"location": path} for path in datafiles])
        return bytes(raw(data, indent=indent))

    with mock.patch.object(pyicat_dataset, "raw_serialize_dataset_message", with_files):
        yield


def reference_dataset_xml(record: DatasetRecord) -> bytes:
    metadata: dict[str, Any] = dict(record.parameters)
    metadata.update(
        Sample_name=record.sample,
        startDate=record.start,
        endDate=record.end,
        machine=MACHINE,
        software=SOFTWARE,
        complete=record.complete,
    )
    with warnings.catch_warnings(), _with_datafiles(record.datafiles):
        warnings.simplefilter("ignore")
        return bytes(
            pyicat_dataset.serialize_dataset_message(
                beamline=record.beamline,
                proposal=record.proposal,
                dataset=record.name,
                path=record.location,
                metadata=metadata,
            )
        )


def tree(document: bytes) -> list[Any]:
    def node(element: ET.Element) -> list[Any]:
        return [
            element.tag,
            sorted(element.attrib.items()),
            element.text or "",
            [node(c) for c in element],
        ]

    return node(ET.fromstring(document))


def parameter_rows(document: bytes) -> list[tuple[str, str]]:
    ns = {"tns": "http://www.esrf.fr/icat"}
    root = ET.fromstring(document)
    return [
        (p.findtext("tns:name", "", ns), p.findtext("tns:value", "", ns))
        for p in root.findall("tns:parameter", ns)
    ]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datasets())
def test_dataset_document_is_pyicat_plus_document(record: DatasetRecord) -> None:
    ours = dataset_xml(record, machine=MACHINE, software=SOFTWARE)
    reference = reference_dataset_xml(record)
    # Parameters first: their diff is the readable one when something drifts.
    assert parameter_rows(ours) == parameter_rows(reference)
    assert tree(ours) == tree(reference)


@settings(max_examples=100, deadline=None)
@given(st.builds(InvestigationRecord, proposal=names, beamline=names, start=moments))
def test_investigation_document_is_pyicat_plus_document(record: InvestigationRecord) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = pyicat_investigation.serialize_investigation_message(
            beamline=record.beamline, proposal=record.proposal, start_datetime=record.start
        )
    assert tree(investigation_xml(record)) == tree(reference)


@pytest.mark.parametrize(
    "technique",
    [{"definition": [0.0]}, {"definition": [1]}, {"definition": [True]}, {"technique_pid": [0.5]}],
)
def test_a_technique_list_with_numbers_is_sent_as_given_like_pyicat_plus(
    technique: dict[str, Any],
) -> None:
    """Found by the property test: pyicat-plus's whole model fails on such a list."""
    moment = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
    record = DatasetRecord(
        proposal="0",
        beamline="0",
        name="0",
        location="/data/visitor/0",
        sample="0",
        start=moment,
        end=moment,
        complete=False,
        parameters=technique,
    )
    ours = dataset_xml(record, machine=MACHINE, software=SOFTWARE)
    assert parameter_rows(ours) == parameter_rows(reference_dataset_xml(record))


def test_typical_dataset_is_byte_identical() -> None:
    """Without datafiles or line breaks the two documents are the same bytes."""
    start = datetime.datetime(2024, 5, 6, 7, 8, 9, 120000, tzinfo=datetime.UTC)
    record = DatasetRecord(
        proposal="HG-123",
        beamline="ID00",
        name="sample_0001",
        location="/data/visitor/hg123/id00/20240506/RAW_DATA/s/sample_0001",
        sample="s & <t>",
        start=start,
        end=start + datetime.timedelta(seconds=61.5),
        complete=False,
        parameters={
            "InstrumentBeam_incident_polarization": "0.5",
            "Sample_distance": "12",
            "scanNumber": 4,
        },
    )
    assert dataset_xml(record, machine=MACHINE, software=SOFTWARE) == reference_dataset_xml(record)


def test_datafiles_sit_between_sample_and_parameters() -> None:
    start = datetime.datetime(2024, 5, 6, tzinfo=datetime.UTC)
    record = DatasetRecord(
        proposal="hg1",
        beamline="id00",
        name="d",
        location="/data/x",
        sample="s",
        start=start,
        end=start,
        datafiles=("/data/x/a.h5", "/data/x/b.h5"),
    )
    tags = [
        child.tag.split("}")[1]
        for child in ET.fromstring(dataset_xml(record, machine="m", software="s"))
    ]
    assert tags[:9] == [
        "investigation",
        "instrument",
        "name",
        "location",
        "startDate",
        "endDate",
        "sample",
        "datafile",
        "datafile",
    ]
    assert set(tags[9:]) == {"parameter"}
