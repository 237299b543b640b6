"""Pure tag lookups: keyword / tag spellings, PN, multi-valued, sequences, the dictionary."""

from __future__ import annotations

import json

import pydicom
import pytest

from pixels_sql.dicom.meta import read_model
from pixels_sql.dicom.tags import (
    UnknownKeyError,
    dictionary_entries,
    normalise_key,
    tag_value,
    tag_values,
)
from tests.corpus import PYDICOM_TEST_FILES

CT = PYDICOM_TEST_FILES / "CT_small.dcm"


@pytest.mark.parametrize(
    "key", ["PatientName", "00100010", "(0010,0010)", "0010,0010", "( 0010 , 0010 )"]
)
def test_key_spellings_normalise_to_the_json_key(key: str) -> None:
    assert normalise_key(key) == "00100010"


def test_unknown_keyword_is_a_clear_error() -> None:
    with pytest.raises(UnknownKeyError, match="PatientNam"):
        normalise_key("PatientNam")


def test_values_match_pydicom() -> None:
    meta = read_model(str(CT))
    dataset = pydicom.dcmread(CT)
    assert tag_value(meta, "PatientName") == str(dataset.PatientName)
    assert tag_value(meta, "(0008,0060)") == dataset.Modality
    assert tag_values(meta, "ImageType") == list(dataset.ImageType)
    assert tag_values(meta, "PixelSpacing") == [str(v) for v in dataset.PixelSpacing]
    assert tag_value(meta, "Rows") == str(dataset.Rows)
    assert tag_value(meta, "AccessionNumber") is None or dataset.get("AccessionNumber") == ""


def test_absent_attribute_is_none_and_sequences_are_items() -> None:
    meta = read_model(str(PYDICOM_TEST_FILES / "rtplan.dcm"))
    dataset = pydicom.dcmread(PYDICOM_TEST_FILES / "rtplan.dcm")
    assert tag_value(meta, "RTPlanLabel") == dataset.RTPlanLabel
    assert tag_value(meta, "WindowCenter") is None
    beams = tag_values(meta, "BeamSequence")
    assert len(beams) == len(dataset.BeamSequence)
    assert json.loads(beams[0])["300A00C2"]["Value"] == [dataset.BeamSequence[0].BeamName]


def test_dictionary_rows() -> None:
    rows = {row.keyword: row for row in dictionary_entries()}
    assert len(rows) > 4000
    name = rows["PatientName"]
    assert (name.tag, name.json_key, name.vr, name.vm, name.retired) == (
        "(0010,0010)",
        "00100010",
        "PN",
        "1",
        False,
    )
    assert rows["CommandLengthToEnd"].retired is True
