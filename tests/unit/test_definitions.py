"""ICAT parameter names, text checks and the SetParameters JSON."""

from __future__ import annotations

import re

import pytest

from icat_servers.icatcore import facility
from icat_servers.icatcore.definitions import (
    ValueKind,
    check_dataset_name,
    check_text,
    parameter_names,
    parameter_specs,
    parse_parameters,
    unknown_parameters,
)
from icat_servers.icatcore.errors import InvalidInput


def test_names_are_the_definition_files_placeholders() -> None:
    """The model and the facility's hdf5_cfg.xml must agree: same names, none invented."""
    from icat_esrf_definitions import DEFINITIONS_FILE

    with open(DEFINITIONS_FILE, encoding="utf-8") as handle:
        placeholders = set(re.findall(r"\$\{([^}]+)\}", handle.read()))
    assert parameter_names() == placeholders - {"entry"}
    assert len(parameter_names()) > 1000


def test_well_known_names_are_known() -> None:
    for name in (
        "Sample_name",
        "datasetName",
        "InstrumentSource_current",
        "MX_beamShape",
        "scanNumber",
    ):
        assert name in parameter_names()
    assert "Sample_Name" not in parameter_names()  # case matters to ICAT


def test_names_are_cached() -> None:
    assert parameter_names() is parameter_names()
    assert parameter_specs() is parameter_specs()


def _installed_at_least(*wanted: int) -> bool:
    release = facility.installed_version().split(".")
    return tuple(int(part) for part in release[: len(wanted)] if part.isdigit()) >= wanted


def test_specs_reflect_the_model_types() -> None:
    specs = parameter_specs()
    assert specs["scanNumber"].kind is ValueKind.INT
    assert specs["InstrumentBeam_incident_polarization"].kind is ValueKind.FLOAT
    assert specs["complete"].kind is ValueKind.BOOL
    assert specs["Sample_distance"].kind is ValueKind.QUANTITY
    assert specs["InstrumentSlitPrimary_vertical_gap"].kind is ValueKind.CUSTOM
    if _installed_at_least(3, 8):  # before 3.8.0, Mirror_type is an Enum class: CONSTRAINED
        assert specs["Mirror_type"].kind is ValueKind.CHOICE
        assert specs["Mirror_type"].choices == ("single", "multi")
    assert specs["DOI_abstract"].kind is ValueKind.CONSTRAINED
    assert specs["HOLO_pixelSize"].renamed_to == "HOLO_pixel_size"
    ranks = sorted(spec.rank for spec in specs.values())
    assert ranks == list(range(len(ranks)))  # one place each


def test_unknown_parameters_lists_each_once_in_order() -> None:
    assert unknown_parameters(["Sample_name", "zzz", "aaa", "zzz", "scanNumber"]) == ["zzz", "aaa"]
    assert unknown_parameters([]) == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("a\x00b", "U\\+0000 at position 1"),
        ("tab\there", "U\\+0009"),
        ("new\nline", "U\\+000A"),
        ("del\x7f", "U\\+007F"),
        ("c1\x85", "U\\+0085"),
        ("lone \ud800", "U\\+D800"),
        ("nonchar \uffff", "U\\+FFFF"),
        ("\ufffe", "U\\+FFFE"),
        ("x" * 4097, "4097 characters long, more than the 4096"),
    ],
)
def test_check_text_refuses_with_field_and_remedy(value: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem) as error:
        check_text("sample", value)
    assert str(error.value).startswith("sample ")
    assert "remove it" in str(error.value) or "shorter" in str(error.value)


def test_check_text_multiline_allows_tab_and_newline_only() -> None:
    assert check_text("comment", "a\tb\nc", multiline=True) == "a\tb\nc"
    with pytest.raises(InvalidInput, match="U\\+000D"):
        check_text("comment", "a\r\nb", multiline=True)
    assert check_text("x", "ü🧪 <&>", max_length=6) == "ü🧪 <&>"
    with pytest.raises(InvalidInput):
        check_text("x", "1234567", max_length=6)


@pytest.mark.parametrize("name", ["sample_0001", "a.b", "...", "ü name", "x" * 255])
def test_good_dataset_names(name: str) -> None:
    assert check_dataset_name(name) == name


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("a/b", "'/'"),
        ("/abs", "'/'"),
        ("..", "relative path component"),
        (".", "relative path component"),
        ("x\ny", "control character"),
        ("x" * 256, "more than the 255"),
    ],
)
def test_bad_dataset_names(name: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        check_dataset_name(name)


def test_parse_parameters_accepts_scalars_and_flat_lists() -> None:
    parsed = parse_parameters(
        '{"Sample_description": "powder <&>", "scanNumber": 3, '
        '"InstrumentBeam_incident_polarization": 0.5, "complete": true, '
        '"InstrumentSlitPrimary_vertical_gap": [1.5, 2, "3"]}'
    )
    assert parsed == {
        "Sample_description": "powder <&>",
        "scanNumber": 3,
        "InstrumentBeam_incident_polarization": 0.5,
        "complete": True,
        "InstrumentSlitPrimary_vertical_gap": (1.5, 2, "3"),
    }
    assert list(parsed) == [
        "Sample_description",
        "scanNumber",
        "InstrumentBeam_incident_polarization",
        "complete",
        "InstrumentSlitPrimary_vertical_gap",
    ]
    assert parse_parameters("{}") == {}


def test_parse_parameters_lists_all_unknown_names_at_once() -> None:
    with pytest.raises(InvalidInput) as error:
        parse_parameters('{"Sample_name": "s", "bogus1": 1, "scanNumber": 2, "bogus2": "x"}')
    message = str(error.value)
    assert "'bogus1'" in message and "'bogus2'" in message
    assert "Sample_name" not in message
    assert "nothing was set" in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "invalid JSON"),
        ("", "invalid JSON"),
        ('["Sample_name"]', "expected a JSON object"),
        ('"text"', "expected a JSON object"),
        ('{"Sample_name": null}', "null is not a value"),
        ('{"Sample_name": {"a": 1}}', "an object is not a value"),
        ('{"Sample_name": [[1]]}', "flatten it"),
        ('{"Sample_name": [null]}', "got null"),
        ('{"Sample_name": "a\\u0000b"}', "control character"),
        ('{"Sample_name": "\\ud800"}', "U\\+D800"),
        ('{"scanNumber": NaN}', "NaN"),
        ('{"scanNumber": [1, -Infinity]}', "Infinity"),
        ("[" * 100_000, "invalid JSON|nested too deeply"),
    ],
)
def test_parse_parameters_refuses_with_a_clear_message(text: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        parse_parameters(text)
