"""The typed header table (object_header): every typed value equals pydicom's value of the same
element, on the public corpus and on generated files covering every VR; schema drift, conflicts
and malformed values; hostile files; the pipeline's incremental behaviour through Spark."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pydicom
import pytest
from pydicom import config
from pydicom.datadict import DicomDictionary, dictionary_VM, dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pixels_sql.dicom import attributes, fastmeta, typed
from pixels_sql.dicom import meta as reader
from tests.corpus import EXPECTED_UNREADABLE, corpus_files, new_dataset
from tests.mutants import write_mutants

DOCS = Path(__file__).resolve().parent.parent / "docs"
MR = "1.2.840.10008.5.1.4.1.1.4"


def read_model(path: Path) -> dict[str, Any]:
    """The header's DICOM JSON model as the catalog stores it (dicom_meta's JSON)."""
    read = getattr(reader, "read_model", None) or reader.read_meta
    return read(str(path))


# --- pydicom's value of an element against the typed value --------------------------------------


def _expected_scalar(vr: str, value: Any) -> Any:
    """pydicom's value in the typed column's representation (what from_json gives)."""
    if vr == "DA":
        return value.isoformat()  # pydicom DA (datetime.date)
    if vr == "TM":
        return value.isoformat()
    if vr == "DT":
        return value.isoformat()
    if vr == "PN":
        groups = [value.alphabetic, value.ideographic, value.phonetic]
        return {
            name: (group or None)
            for name, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=True)
        }
    if vr == "AT":
        return int(value)
    return value


def _same(vr: str, got: Any, want: Any) -> bool:
    if vr in ("FL", "FD"):
        if isinstance(got, str):
            got = float(got)
        return got == want or (math.isnan(got) and math.isnan(want))
    if vr == "DS":
        return float(got) == float(want) or (math.isnan(float(got)) and math.isnan(float(want)))
    if vr == "IS":
        return int(got) == int(want)
    if isinstance(want, str) and isinstance(got, str):
        # Padding is not part of a value (PS3.5 6.2): trailing spaces and NULs of every text VR,
        # leading spaces too of those whose leading spaces are insignificant.
        strip = str.strip if vr in _LEADING_INSIGNIFICANT else str.rstrip
        return strip(got, " \x00") == strip(want, " \x00")
    return got == want


_LEADING_INSIGNIFICANT = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "LO", "SH", "UC"})


def check_dataset(
    dataset: Dataset, row: dict[str, Any], other: list[dict[str, Any]], path: str
) -> int:
    """Assert every standard element of ``dataset`` against ``row`` (the typed values); return
    how many values were compared. Elements that left their column must be in ``other``."""
    compared = 0
    other_tags = {entry["tag"] for entry in other}
    issues = {entry["tag"]: entry.get("issue") for entry in other}
    for key in dataset.keys():  # noqa: SIM118 (tags: converting is done below, one by one)
        if key.element == 0:
            continue  # group lengths are not in the DICOM JSON model (PS3.18 F.2)
        tag = f"{key:08X}"
        info = typed.attribute(tag)
        where = f"{path}{tag}"
        try:
            element = dataset[key]
            no_number = element.VR in ("DS", "IS") and type(element.value) is str
        except ValueError:
            element, no_number = dataset._dict[key], True
        if no_number:
            # pydicom cannot convert it (IS "1A" in badVR.dcm): a DS/IS kept as its text,
            # NULL as a number, with an issue.
            assert element.VR in ("DS", "IS") and info is not None, where
            value = element.value
            text = (value.decode("latin_1") if isinstance(value, bytes) else value).strip(" \x00")
            assert row[info.keyword] == text, where
            assert row.get(info.keyword + typed.NUMBER_SUFFIX) is None, where
            assert issues[where] == typed.MALFORMED, where
            compared += 1
            continue
        if info is None:
            assert where in other_tags, where
            continue
        keyword = info.keyword
        if element.VR in typed.BINARY_VRS:
            continue  # bulk data: its URI, checked by the meta conformance tests
        if element.VR not in info.vrs:
            assert keyword not in row, where
            assert where in other_tags, where
            continue
        if element.VR == "SQ":
            items = row.get(keyword)
            assert items is not None and len(items) == len(element.value), where
            for index, item in enumerate(element.value):
                compared += check_dataset(item, items[index], other, f"{where}[{index}].")
            continue
        value = element.value
        empty = value is None or value == "" or (isinstance(value, list | tuple) and not value)
        if empty:
            assert row.get(keyword) is None, where
            continue
        values = list(value) if element.VM > 1 else [value]
        if not info.multiple and len(values) > 1:
            assert row.get(keyword) is None and where in other_tags, where
            continue
        got = row.get(keyword) if info.multiple else [row.get(keyword)]
        assert got is not None and len(got) == len(values), (where, got, values)
        for got_one, want in zip(got, values, strict=True):
            if want is None or want == "":
                assert got_one is None, where
                continue
            if element.VR in ("DA", "TM", "DT") and type(want) is str:
                # pydicom could not read it as a date or time: malformed here too.
                assert got_one is None and where in other_tags, where
                continue
            assert _same(element.VR, got_one, _expected_scalar(element.VR, want)), (
                where,
                got_one,
                want,
            )
            compared += 1
        if element.VR in ("DS", "IS"):
            twins = row[keyword + typed.NUMBER_SUFFIX]
            twins = twins if info.multiple else [twins]
            for twin, want in zip(twins, values, strict=True):
                if want not in (None, ""):
                    assert _same(element.VR, twin, want), (where, twin, want)
    return compared


@pytest.fixture(autouse=True)
def _pydicom_dates(monkeypatch: pytest.MonkeyPatch) -> None:
    # pydicom's DA/TM/DT values as dates and times, to compare with.
    monkeypatch.setattr(config, "datetime_conversion", True)


def test_corpus_values_equal_pydicom(monkeypatch: pytest.MonkeyPatch) -> None:
    files = 0
    compared = 0
    for path in corpus_files():
        if path.name in EXPECTED_UNREADABLE:
            continue
        # The header as the pipeline reads it (its general backend is pydicom, with pydicom's
        # default settings); then pydicom's own dates and times to compare with.
        monkeypatch.setattr(config, "datetime_conversion", False)
        try:
            model = read_model(path)
        except Exception:
            continue  # unreadable files are the meta tests' business: no row to type
        row = typed.typed_header(model)
        monkeypatch.setattr(config, "datetime_conversion", True)
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        other = row[typed.OTHER_ELEMENTS]
        compared += check_dataset(dataset.file_meta, row, other, "")
        compared += check_dataset(dataset, row, other, "")
        files += 1
    assert files > 150 and compared > 10_000, (files, compared)


# --- generated files: every VR, VM 1..n, nesting, person names, empty and malformed values -----

VALUES: dict[str, list[Any]] = {
    "AE": ["STORESCP", "ARCHIVE", "VIEWER"],
    "AS": ["045Y", "003M", "010D"],
    "CS": ["ORIGINAL", "PRIMARY", "AXIAL"],
    "LO": ["long string", "second", "third"],
    "LT": ["long text\\with a backslash"],
    "SH": ["short", "other", "third"],
    "ST": ["short text\\kept whole"],
    "UC": ["unlimited characters", "two", "three"],
    "UI": ["1.2.840.10008.1.2", "1.2.3.4", "1.2.3.5"],
    "UR": ["http://example.org/a"],
    "UT": ["unlimited text\\kept whole"],
    "DS": ["1.5", "-2.25e3", "0"],
    "IS": ["42", "-7", "0"],
    "DA": ["20200102", "19991231", "20240229"],
    "TM": ["123456.789", "0930", "23"],
    "DT": ["20200102030405.123456+0100", "2020", "20200102030405-0530"],
    "FL": [1.5, -2.5, 0.0],
    "FD": [2.25, 1e300, -0.5],
    "SS": [-3, 7, 0],
    "US": [7, 65535, 0],
    "SL": [-70000, 70000, 0],
    "UL": [70000, 4294967295, 0],
    "SV": [-(2**40), 2**40, 0],
    "UV": [2**40, 1, 0],
    "AT": [0x00100010, 0x7FE00010, 0x00080060],
    "PN": ["Yamada^Tarou=山田^太郎=やまだ^たろう", "Doe^John", "Smith^J^^Dr"],
}


def _attributes_of(vr: str) -> tuple[str | None, str | None]:
    """A standard attribute of ``vr`` with VM 1, and one with a VM above 1."""
    single = multiple = None
    for tag, (entry_vr, vm, _name, retired, keyword) in sorted(DicomDictionary.items()):
        if entry_vr != vr or not keyword or retired or tag >> 16 in (0x0002, 0x0000):
            continue
        if tag == 0x00080005:
            continue  # Specific Character Set: set apart
        if vm == "1" and single is None:
            single = keyword
        elif vm in ("1-n", "2-n", "3-n", "1-3") and multiple is None:
            multiple = keyword
    return single, multiple


def image_references(count: int) -> Sequence:
    """A Referenced Image Sequence of ``count`` items of the same attributes."""
    references = []
    for number in range(count):
        reference = Dataset()
        reference.ReferencedSOPClassUID = MR
        reference.ReferencedSOPInstanceUID = f"1.2.3.{number}"
        references.append(reference)
    return Sequence(references)


def every_vr_dataset() -> Dataset:
    dataset = new_dataset(MR, ExplicitVRLittleEndian)
    dataset.SpecificCharacterSet = "ISO_IR 192"
    for vr, values in VALUES.items():
        single, multiple = _attributes_of(vr)
        if single is not None:
            dataset.add_new(single, vr, values[0])
        if multiple is not None:
            dataset.add_new(multiple, vr, values if len(values) > 1 else values[0])
    dataset.PatientName = VALUES["PN"][0]
    dataset.PixelSpacing = ["0.5", "0.25"]
    dataset.ImageType = ["ORIGINAL", "PRIMARY"]
    # Empty values: a text, a date, a number and a sequence.
    dataset.add_new("AccessionNumber", "SH", "")
    dataset.add_new("StudyDate", "DA", "")
    dataset.add_new("SeriesNumber", "IS", "")
    dataset.ReferencedStudySequence = Sequence()
    # Nested sequences three deep, each level with values of several VRs.
    inner = Dataset()
    inner.CodeValue = "T-A0100"
    inner.CodingSchemeDesignator = "SRT"
    inner.CodeMeaning = "Brain"
    middle = Dataset()
    middle.ConceptNameCodeSequence = Sequence([inner])
    middle.ReferencedFrameNumber = ["1", "2"]
    outer = Dataset()
    outer.ContentSequence = Sequence([middle, Dataset()])
    outer.ValueType = "CONTAINER"
    dataset.ContentSequence = Sequence([outer])
    dataset.ReferencedImageSequence = image_references(2)
    # A private element with its creator.
    block = dataset.private_block(0x0029, "PIXELS SQL TEST", create=True)
    block.add_new(0x10, "LO", "private value")
    return dataset


def write(dataset: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_generated_every_vr_equals_pydicom(tmp_path: Path) -> None:
    path = write(every_vr_dataset(), tmp_path / "every_vr.dcm")
    row = typed.typed_header(read_model(path))
    dataset = pydicom.dcmread(path)
    other = row[typed.OTHER_ELEMENTS]
    assert not [entry for entry in other if entry.get("issue")], other
    compared = check_dataset(dataset, row, other, "")
    assert compared > 80
    # Shapes the schema takes: PN as a struct, VM above 1 as an array, a sequence's items.
    shape = typed.header_shape(read_model(path))
    assert shape["PatientName"] == typed.PERSON_NAME_TYPE
    assert shape["PixelSpacing"] == "array<string>"
    assert shape["PixelSpacing_number"] == "array<double>"
    assert shape["StudyDate"] == "date"
    assert shape["ContentSequence"]["ContentSequence"]["ConceptNameCodeSequence"] == {
        "CodeValue": "string",
        "CodingSchemeDesignator": "string",
        "CodeMeaning": "string",
    }
    assert row["PatientName"] == {
        "Alphabetic": "Yamada^Tarou",
        "Ideographic": "山田^太郎",
        "Phonetic": "やまだ^たろう",
    }
    assert row["ReferencedStudySequence"] == []
    private = next(entry for entry in other if entry["tag"] == "00291010")
    assert private["private_creator"] == "PIXELS SQL TEST"
    assert private["values"] == ["private value"]


MALFORMED = {
    "StudyDate": ("DA", "2020-13-45"),
    "SeriesDate": ("DA", "20201345"),
    "StudyTime": ("TM", "25:61"),
    "SeriesTime": ("TM", "12h30"),
    "AcquisitionDateTime": ("DT", "2020010203040506"),
}
# DS and IS values that are no numbers: the header keeps their text (as DCMTK's dcm2json does),
# so the text column has it and the number twin is NULL, with an issue.
MALFORMED_NUMBERS = {
    "SliceThickness": ("DS", "thick"),
    "SeriesNumber": ("IS", "1.5"),
    "PixelSpacing": ("DS", "0.5\\zz"),
}


@contextlib.contextmanager
def lenient() -> Iterator[None]:
    """pydicom keeping and writing values as given, malformed ones included."""
    settings = config.settings
    saved = (
        config.datetime_conversion,
        settings.writing_validation_mode,
        settings.reading_validation_mode,
    )
    config.datetime_conversion = False
    settings.writing_validation_mode = settings.reading_validation_mode = config.IGNORE
    try:
        yield
    finally:
        (
            config.datetime_conversion,
            settings.writing_validation_mode,
            settings.reading_validation_mode,
        ) = saved


def write_malformed(path: Path) -> Path:
    with lenient():
        return write(malformed_dataset(), path)


def malformed_dataset() -> Dataset:
    dataset = new_dataset(MR, ExplicitVRLittleEndian)
    dataset.Modality = "MR"
    for keyword, (vr, value) in {**MALFORMED, **MALFORMED_NUMBERS}.items():
        element = DataElement(keyword, vr, "")
        element._value = value  # as written, past pydicom's own conversion (which refuses it)
        dataset.add(element)
    # An attribute with a VR the dictionary does not give it, and a VM 1 attribute with two.
    dataset.add(DataElement(0x00080022, "LO", "yesterday"))  # AcquisitionDate is DA
    dataset.add(DataElement(0x00080070, "LO", "MAKER\\SECOND"))  # Manufacturer, VM 1
    return dataset


def test_malformed_values_leave_their_column_with_an_issue(tmp_path: Path) -> None:
    path = write_malformed(tmp_path / "malformed.dcm")
    row = typed.typed_header(read_model(path))
    issues = {entry.get("keyword"): entry for entry in row[typed.OTHER_ELEMENTS]}
    for keyword, (vr, value) in MALFORMED.items():
        assert issues[keyword]["values"] == [value]
        assert issues[keyword]["issue"] == typed.MALFORMED, keyword
        assert issues[keyword]["vr"] == vr
        assert keyword not in row
    assert issues["AcquisitionDate"]["issue"] == typed.VR_MISMATCH
    assert issues["AcquisitionDate"]["values"] == ["yesterday"]
    assert issues["Manufacturer"]["issue"] == typed.MULTIPLE_VALUES
    assert issues["Manufacturer"]["values"] == ["MAKER", "SECOND"]
    assert "AcquisitionDate" not in row and "Manufacturer" not in row
    assert row["Modality"] == "MR"
    assert row["SliceThickness"] == "thick" and "SliceThickness_number" not in row
    assert row["SeriesNumber"] == "1.5" and "SeriesNumber_number" not in row
    assert row["PixelSpacing"] == ["0.5", "zz"] and "PixelSpacing_number" not in row
    for keyword, (vr, _value) in MALFORMED_NUMBERS.items():
        assert issues[keyword]["issue"] == typed.MALFORMED and issues[keyword]["vr"] == vr


def test_malformed_numbers_keep_their_text() -> None:
    model = {
        "00180050": {"vr": "DS", "Value": ["thick"]},
        "00200011": {"vr": "IS", "Value": ["1.5"]},
        "00280030": {"vr": "DS", "Value": [0.5, "NaN"]},
        "00200013": {"vr": "IS", "Value": [2**70]},
    }
    row = typed.typed_header(model)
    issues = {entry["keyword"]: entry for entry in row[typed.OTHER_ELEMENTS]}
    assert row["SliceThickness"] == "thick" and "SliceThickness_number" not in row
    assert row["SeriesNumber"] == "1.5" and "SeriesNumber_number" not in row
    assert issues["SliceThickness"]["issue"] == issues["SeriesNumber"]["issue"] == typed.MALFORMED
    assert issues["InstanceNumber"]["values"] == [str(2**70)]
    assert row["PixelSpacing"] == ["0.5", "NaN"]
    assert row["PixelSpacing_number"] == [0.5, "NaN"]  # from_json reads "NaN" as a DOUBLE NaN


def test_value_parsers_agree_with_pydicom() -> None:
    for text in ("20200102", "1999.12.31", "20240229"):
        assert typed.date_value(text) == pydicom.valuerep.DA(text).isoformat()
    for text in ("1234", "123456", "123456.1", "123456.123456", "12"):
        assert typed.time_value(text) == pydicom.valuerep.TM(text).isoformat()
    for text in ("2020", "202001", "20200102", "2020010203", "20200102030405.5+0100"):
        assert typed.datetime_value(text) == pydicom.valuerep.DT(text).isoformat()
    for text in ("20201301", "2020-01-02", "", "abc"):
        with pytest.raises(typed.Malformed):
            typed.date_value(text)
    for text in ("2460", "1261", "abc", "12345", "12:34:56"):
        with pytest.raises(typed.Malformed):
            typed.time_value(text)


def test_plan_adds_only_new_columns_and_parses_spark_types() -> None:
    table = (
        "struct<path:string,ingested_at:timestamp,OtherElements:array<"
        f"{typed.OTHER_ELEMENT_TYPE}>,Modality:string,"
        "ContentSequence:array<struct<CodeValue:string>>,"
        "PatientName:struct<Alphabetic:string,Ideographic:string,Phonetic:string>>"
    )
    # What schema_of_variant_agg(meta) gives for headers with these elements.
    header_type = (
        "OBJECT<`00080020`: OBJECT<Value: ARRAY<STRING>, vr: STRING>,"
        " `00080060`: OBJECT<Value: ARRAY<STRING>, vr: STRING>,"
        " `00091001`: OBJECT<Value: ARRAY<DECIMAL(2,1)>, vr: STRING>,"
        " `0040A730`: OBJECT<Value: ARRAY<OBJECT<"
        "`00080100`: OBJECT<Value: ARRAY<STRING>, vr: STRING>,"
        " `00080104`: OBJECT<Value: ARRAY<STRING>, vr: STRING>>>, vr: STRING>>"
    )
    assert typed.variant_shape(header_type) == {
        "StudyDate": "date",
        "Modality": "string",
        "ContentSequence": {"CodeValue": "string", "CodeMeaning": "string"},
    }
    added, schema, merged, misfits = typed.plan(table, [header_type, None])
    assert added == "`StudyDate` date" and misfits == []
    assert schema.startswith("`Modality` string, `ContentSequence` array<struct<CodeValue:string>>")
    assert schema.endswith(f"`OtherElements` array<{typed.OTHER_ELEMENT_TYPE}>")
    # The existing sequence column keeps its fields: CodeMeaning would be not_in_column.
    assert orjson.loads(merged)["ContentSequence"] == {"CodeValue": "string"}
    meta = {
        "0040A730": {"vr": "SQ", "Value": [{"00080104": {"vr": "LO", "Value": ["Brain"]}}]},
    }
    row = typed.typed_header(meta, orjson.loads(merged))
    assert row["ContentSequence"] == [{}]
    assert row[typed.OTHER_ELEMENTS][0]["issue"] == typed.NOT_IN_COLUMN
    assert row[typed.OTHER_ELEMENTS][0]["tag"] == "0040A730[0].00080104"


def test_hostile_files_give_a_row_or_a_reason(tmp_path: Path) -> None:
    sources = [p for p in corpus_files() if p.suffix == ".dcm"][:40]
    files = write_mutants(tmp_path / "mutants", sources, 300, seed=27)
    rows = reasons = 0
    for path in files:
        result = reader.read_result(str(path)) if hasattr(reader, "read_result") else None
        if result is None:
            result = reader.read_meta_result(str(path))
        if result.reason is not None:
            reasons += 1
            continue
        text = typed.typed_json(result.meta, None)
        assert text is not None
        row = orjson.loads(text)
        assert isinstance(row[typed.OTHER_ELEMENTS], list)
        assert isinstance(typed.header_shape(orjson.loads(result.meta)), dict)
        rows += 1
    assert rows + reasons == len(files) and rows > 50 and reasons > 10


def test_sequences_deeper_than_the_typed_depth_stay_whole() -> None:
    # 20 Content Sequences one inside the other's item, a Code Value in the innermost.
    inner: dict[str, Any] = {"00080100": {"vr": "SH", "Value": ["X"]}}
    for _ in range(20):
        inner = {"0040A730": {"vr": "SQ", "Value": [inner]}}
    shape = typed.header_shape(inner)
    row = typed.typed_header(inner, shape)
    level, depth = row, 0
    while "ContentSequence" in level:
        level, depth = level["ContentSequence"][0], depth + 1
    assert depth == typed.MAX_TYPED_DEPTH
    (deep,) = row[typed.OTHER_ELEMENTS]
    assert deep["issue"] == typed.TOO_DEEP and deep["keyword"] == "ContentSequence"
    assert deep["tag"] == "0040A730[0]." * typed.MAX_TYPED_DEPTH + "0040A730"
    assert '"X"' in deep["values"][0]  # the rest of the tree, as its DICOM JSON
    # The column's type nests as deep as the typed rows, no deeper.
    assert typed.type_of(shape["ContentSequence"]).count("ContentSequence:") == depth - 1


def test_a_header_that_is_not_an_object_gets_a_row_with_its_reason() -> None:
    row = orjson.loads(typed.typed_json("[1, 2]", None))
    assert row[typed.OTHER_ELEMENTS][0]["issue"] == typed.MALFORMED


# --- the compiled typed sink (_fastmeta.c): typed.typed_json's text from the walk itself ------

# Values at the edges of the DA, TM and DT rules (PS3.5 6.2), each in an item of its own so that
# a malformed one takes only its element to OtherElements: dotted and leap-day dates, a leap
# second, fractions of 1-6 digits, offsets of either sign, a day that does not exist.
EDGE_VALUES = {
    "DA": ["2020.01.02", "20200229", "20190229", "00010101", "00000101", "2020010", "20201231 "],
    "TM": ["235960", "1230", "12", "123045.5", "123045.123456", "240000", "123045.", "1230456"],
    "DT": [
        "2020",
        "202001",
        "20200102030405.123+0130",
        "20200102-0000",
        "20200102+2400",
        "20200102+0099",
        "2020010203040506",
        "99991231235959.999999-2359",
    ],
}


def edge_values_dataset() -> Dataset:
    """Edge values of the date and time VRs in Content Sequence items (Date, Time, DateTime:
    PS3.3 C.17.3), IEEE numbers that are no finite number, a private sequence (its items stay
    whole, as DICOM JSON) after its creator, and an UV beyond BIGINT."""
    dataset = new_dataset(MR, ExplicitVRLittleEndian)
    items = []
    keywords = {"DA": "Date", "TM": "Time", "DT": "DateTime"}
    for vr, values in EDGE_VALUES.items():
        for value in values:
            item = Dataset()
            element = DataElement(keywords[vr], vr, "")
            element._value = value  # as written, past pydicom's own checks
            item.add(element)
            items.append(item)
    dataset.ContentSequence = Sequence(items)
    _single, multiple = _attributes_of("FD")
    dataset.add_new(multiple, "FD", [math.nan, math.inf, -math.inf, 1e-5, 2.5e-05, 1e16])
    uv_single, _ = _attributes_of("UV")
    if uv_single is not None:
        dataset.add_new(uv_single, "UV", 2**64 - 1)
    # Empty parts among several values (PS3.18 F.2.5: null), in DS, IS and AE.
    for keyword, vr, value in (
        ("PixelSpacing", "DS", "0.5\\"),
        ("ReferencedFrameNumber", "IS", "1\\\\3"),
        ("RetrieveAETitle", "AE", "A\\\\B"),
    ):
        element = DataElement(keyword, vr, "")
        element._value = value
        dataset.add(element)
    # Items alike, as a multi-frame header's per-frame items: one entry in the skeleton.
    dataset.ReferencedImageSequence = image_references(5)
    block = dataset.private_block(0x0029, "PIXELS SQL TEST", create=True)
    inner = Dataset()
    inner.CodeValue = "X"
    inner.add_new(0x00291010, "LO", "PIXELS SQL TEST")
    block.add_new(0x20, "SQ", Sequence([inner, Dataset()]))
    block.add_new(0x21, "DS", "1.50\\2e-7")
    block.add_new(0x22, "PN", "Doe^John==")
    return dataset


def nested_dataset(levels: int, *, private: bool = False) -> Dataset:
    """Sequences ``levels`` items deep, a Code Value in the innermost item: Content Sequences,
    or a private sequence (OtherElements keeps it whole)."""
    tag = 0x00291030 if private else 0x0040A730
    inner = Dataset()
    inner.CodeValue = "X"
    for _ in range(levels):
        outer = Dataset()
        outer.add_new(tag, "SQ", Sequence([inner]))
        inner = outer
    dataset = new_dataset(MR, ExplicitVRLittleEndian)
    if private:
        dataset.private_block(0x0029, "PIXELS SQL TEST", create=True)  # its creator, 0x30
    dataset.add_new(tag, "SQ", inner[tag].value)
    return dataset


def test_the_compiled_typed_sink_writes_what_typed_json_writes(tmp_path: Path) -> None:
    """One walk gives the DICOM JSON, the typed row and the skeleton (fastmeta.read_typed):
    typed.typed_json's and typed.skeleton_json's text of that JSON, byte for byte, on the
    corpus, on generated files of every VR, malformed values, edge values and nesting past the
    typed depth, and on mutants; the skeleton gives the header's shape."""
    assert fastmeta._fastmeta is not None, "the compiled walk is built by make setup"
    generated = [
        write(every_vr_dataset(), tmp_path / "every_vr.dcm"),
        write_malformed(tmp_path / "malformed.dcm"),
    ]
    with lenient():
        generated.append(write(edge_values_dataset(), tmp_path / "edges.dcm"))
    generated.append(write(nested_dataset(typed.MAX_TYPED_DEPTH + 3), tmp_path / "deep.dcm"))
    mutants = write_mutants(
        tmp_path / "mutants", [p for p in corpus_files() if p.suffix == ".dcm"][:40], 300, seed=41
    )
    compared = 0
    for path in [*corpus_files(), *generated, *mutants]:
        read = fastmeta.read_typed(str(path))
        if read is None:
            assert path not in generated, path
            continue
        meta_json, row, skeleton = read
        assert meta_json == fastmeta.read_json(str(path)), path
        assert row.decode() == typed.typed_json(meta_json, None), path
        model = orjson.loads(meta_json)
        assert skeleton.decode() == typed.skeleton_json(model), path
        assert typed.skeleton_shape(skeleton) == typed.header_shape(model), path
        compared += 1
    assert compared > 150
    # What the generated files hold reached the rows: an issue of each kind, the leap second,
    # a private sequence's items as text with the creator named.
    rows = [orjson.loads(fastmeta.read_typed(str(path))[1]) for path in generated]
    issues = {entry.get("issue") for row in rows for entry in row[typed.OTHER_ELEMENTS]}
    assert {typed.MALFORMED, typed.VR_MISMATCH, typed.MULTIPLE_VALUES, typed.TOO_DEEP} <= issues
    times = [item.get("Time") for item in rows[2]["ContentSequence"]]
    assert "23:59:59" in times and "12:30:45.500000" in times
    (private,) = [e for e in rows[2][typed.OTHER_ELEMENTS] if e["tag"] == "00291020"]
    assert private["private_creator"] == "PIXELS SQL TEST" and len(private["values"]) == 2
    assert rows[2]["PixelSpacing"] == ["0.5", None] and rows[2]["PixelSpacing_number"] == [
        0.5,
        None,
    ]
    assert rows[2]["ReferencedFrameNumber_number"] == [1, None, 3]
    assert rows[2]["RetrieveAETitle"] == ["A", None, "B"]
    skeleton = orjson.loads(fastmeta.read_typed(str(generated[2]))[2])
    assert len(skeleton["00081140"]) == 1  # five items alike, written once
    # A sequence kept whole nested deeper than the compiled sink writes: typed.py types it.
    deep = dataset_path = write(nested_dataset(70, private=True), tmp_path / "deep_private.dcm")
    assert fastmeta.read_typed(str(deep)) is None
    result = reader.read_typed_result(str(dataset_path))
    assert result.reason is None
    assert result.typed.decode() == typed.typed_json(result.meta, None)


def test_without_the_compiled_walk_read_typed_leaves_it_to_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = next(p for p in corpus_files() if fastmeta.read_typed(str(p)) is not None)
    monkeypatch.setattr(fastmeta, "COMPILED", False)
    assert fastmeta.read_typed(str(path)) is None


# --- through the pipeline: Spark ------------------------------------------------------------


def _in_spark(value: Any, kind: Any) -> Any:
    """A typed value (JSON-ready) as Spark returns it for a column of type ``kind``: what
    ``from_json`` must have made of it."""
    from pyspark.sql import types

    if value is None:
        return None
    if isinstance(kind, types.ArrayType):
        return [_in_spark(item, kind.elementType) for item in value]
    if isinstance(kind, types.StructType):
        return {field.name: _in_spark(value.get(field.name), field.dataType) for field in kind}
    if isinstance(kind, types.DateType):
        return dt.date.fromisoformat(value)
    if isinstance(kind, types.TimestampType):
        stamp = dt.datetime.fromisoformat(value)
        # Spark gives an instant as a naive local time; one without an offset was read in the
        # session's time zone, here the process's own.
        return stamp.astimezone().replace(tzinfo=None) if stamp.tzinfo else stamp
    if isinstance(kind, types.DoubleType):
        return float(value)
    return value


def _sql_blocks(section: str, doc: str = "tables.md") -> list[str]:
    """The SQL examples of a section of a doc (not its signature blocks, which hold ``->``)."""
    text = (DOCS / doc).read_text()
    start = text.index(f"## `{section}`")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```sql\n(.*?)```", text[start : end if end > 0 else None], re.DOTALL)
    return [
        s.strip() for block in blocks if "->" not in block for s in block.split(";\n") if s.strip()
    ]


def test_the_catalogs_date_rule_is_the_typed_tables(spark) -> None:
    """object_catalog's DATE columns (attributes.date_sql, in sql/20_meta.sql and dbt) read a DA
    as dicom/typed.py does: YYYYMMDD and the retired ACR-NEMA YYYY.MM.DD, NULL otherwise."""
    texts = ["20200102", "2020.01.02", "2020-01-02", "20201301", "2020", "x2020.01.02", ""]
    rows = spark.sql(
        f"SELECT t, {attributes.date_sql('t')} AS d FROM VALUES "
        + ", ".join(f"('{text}')" for text in texts)
        + " AS v(t)"
    ).collect()
    in_sql = {row.t: row.d for row in rows}

    def in_python(text: str) -> dt.date | None:
        try:
            return dt.date.fromisoformat(typed.date_value(text))
        except typed.Malformed:
            return None

    assert in_sql == {text: in_python(text) for text in texts}
    assert in_sql["2020.01.02"] == dt.date(2020, 1, 2)


def test_pipeline_fills_object_header_incrementally(spark, tmp_path: Path) -> None:
    from pixels_sql.ingest.batch import ingest

    database = "typed_header_test"
    folder = tmp_path / "dicom"
    first = write(every_vr_dataset(), folder / "a" / "every_vr.dcm")
    write_malformed(folder / "b" / "malformed.dcm")
    plain = new_dataset(MR, ImplicitVRLittleEndian)
    plain.Modality = "CT"
    plain.PixelSpacing = ["0.7", "0.7"]
    write(plain, folder / "c" / "plain.dcm")
    (folder / "c" / "not_dicom.txt").write_text("not a header")
    spark.sql(f"DROP DATABASE IF EXISTS `{database}` CASCADE")
    try:
        ingest(spark, str(folder), database, thumbnails=False)
        table = f"`{database}`.object_header"
        rows = {row.path.rsplit("/", 1)[-1]: row for row in spark.table(table).collect()}
        assert sorted(rows) == ["every_vr.dcm", "malformed.dcm", "plain.dcm"]
        # Spark's values are the typed values of the pure module, column by column.
        expected = typed.typed_header(read_model(first))
        got = rows["every_vr.dcm"].asDict(recursive=True)
        schema = spark.table(table).schema
        for field in schema:
            if typed.attribute_column(field.name):
                want = _in_spark(expected.get(field.name), field.dataType)
                assert got[field.name] == want, field.name
        # The shapes Spark's schema_of_variant_agg gives equal those of the headers themselves.
        merged: dict[str, Any] = {}
        for name in ("every_vr.dcm", "malformed.dcm", "plain.dcm"):
            path = next(folder.rglob(name))
            typed.merge_shapes(merged, typed.header_shape(read_model(path)))
        header_type = spark.sql(
            f"SELECT schema_of_variant_agg(meta) FROM `{database}`.object_catalog"
            " WHERE meta IS NOT NULL"
        ).first()[0]
        assert typed.variant_shape(header_type) == merged
        nested = spark.sql(
            f"SELECT c.ContentSequence[0].ConceptNameCodeSequence[0].CodeMeaning FROM {table}"
            " LATERAL VIEW explode(ContentSequence) AS c WHERE path LIKE '%every_vr.dcm'"
        ).first()[0]
        assert nested == "Brain"
        issues = spark.sql(
            f"SELECT keyword, issue FROM `{database}`.header_issues WHERE path LIKE '%malformed%'"
        ).collect()
        assert {(row.keyword, row.issue) for row in issues} >= {
            ("StudyDate", "malformed"),
            ("StudyTime", "malformed"),
            ("AcquisitionDate", "vr_mismatch"),
            ("Manufacturer", "multiple_values"),
            ("SliceThickness", "malformed"),
            ("SeriesNumber", "malformed"),
        }
        malformed = rows["malformed.dcm"]
        assert malformed.StudyDate is None and malformed.Modality == "MR"
        assert malformed.SliceThickness == "thick" and malformed.SliceThickness_number is None
        assert malformed.PixelSpacing == ["0.5", "zz"] and malformed.PixelSpacing_number is None
        # The documented examples run.
        spark.catalog.setCurrentDatabase(database)
        examples = [
            *_sql_blocks("object_header"),
            *_sql_blocks("header_issues"),
            *_sql_blocks("dicom_header_plan", "sql-functions.md"),
            *_sql_blocks("dicom_header_typed", "sql-functions.md"),
        ]
        assert len(examples) == 6
        for statement in examples:
            assert spark.sql(statement).collect(), statement
        columns = set(spark.table(table).columns)
        assert "PatientBreedDescription" not in columns

        # Second batch: a new attribute (a column is added, older rows NULL there), a changed
        # file (its row replaced), a deleted file (its row marked).
        added = new_dataset(MR, ExplicitVRLittleEndian)
        added.Modality = "MR"
        added.PatientBreedDescription = "none"
        write(added, folder / "d" / "new_attribute.dcm")
        plain.Modality = "MR"
        write(plain, folder / "c" / "plain.dcm")
        (folder / "b" / "malformed.dcm").unlink()
        ingest(spark, str(folder), database, thumbnails=False)
        after = spark.table(table).collect()
        by_name = {}
        for row in after:
            by_name.setdefault(row.path.rsplit("/", 1)[-1], []).append(row)
        assert all(len(found) == 1 for found in by_name.values()), by_name
        assert by_name["new_attribute.dcm"][0].PatientBreedDescription == "none"
        assert by_name["every_vr.dcm"][0].PatientBreedDescription is None
        assert (
            by_name["plain.dcm"][0].Modality == "MR" and by_name["plain.dcm"][0].deleted_at is None
        )
        assert by_name["malformed.dcm"][0].deleted_at is not None
        live = spark.sql(f"SELECT count(*) FROM {table} WHERE deleted_at IS NULL").first()[0]
        instances = spark.sql(
            f"SELECT count(DISTINCT path) FROM `{database}`.object_catalog"
            " WHERE deleted_at IS NULL AND meta_error_reason IS NULL"
        ).first()[0]
        assert live == instances == 3
        assert not spark.sql(
            f"SELECT * FROM `{database}`.header_issues WHERE path LIKE '%malformed%'"
        ).collect()

        # A typed row whose path the catalog no longer holds at all (the catalog dropped and
        # made again without that file) is marked too.
        (folder / "d" / "new_attribute.dcm").unlink()
        spark.sql(f"DROP TABLE `{database}`.object_catalog")
        ingest(spark, str(folder), database, thumbnails=False)
        gone = spark.sql(
            f"SELECT deleted_at FROM {table} WHERE path LIKE '%new_attribute.dcm'"
        ).collect()
        assert len(gone) == 1 and gone[0].deleted_at is not None, gone
        live = spark.sql(f"SELECT count(*) FROM {table} WHERE deleted_at IS NULL").first()[0]
        assert live == 2
    finally:
        spark.catalog.setCurrentDatabase("default")
        spark.sql(f"DROP DATABASE IF EXISTS `{database}` CASCADE")
        shutil.rmtree(folder, ignore_errors=True)


def test_dictionary_helpers_are_consistent() -> None:
    # The pure module follows the dictionary pydicom ships (through the registry).
    assert typed.attribute("00280030").keyword == "PixelSpacing"
    assert typed.attribute("00280030").multiple == (dictionary_VM(0x00280030) != "1")
    assert typed.attribute("00100010").vrs == (dictionary_VR(0x00100010),)
    assert typed.attribute("00091001") is None


def test_the_reads_typed_rows_equal_the_stored_headers_typed_rows(spark, tmp_path: Path) -> None:
    """sql/50_header.sql takes a header read by this run from the read's typed row (20_meta.sql's
    pixels_read) and any other from the stored header: the same rows either way. A header whose
    sequence holds a field the table's existing column lacks (a misfit skeleton) is typed again
    for the table: the field goes to OtherElements as not_in_column, as dicom_header_typed has
    it."""
    from pixels_sql.ingest.batch import ingest

    database = "typed_reads_test"
    folder = tmp_path / "dicom"
    write(every_vr_dataset(), folder / "every_vr.dcm")
    write_malformed(folder / "malformed.dcm")
    with lenient():
        write(edge_values_dataset(), folder / "edges.dcm")
    shutil.copyfile(corpus_files()[0], folder / corpus_files()[0].name)
    spark.sql(f"DROP DATABASE IF EXISTS `{database}` CASCADE")
    table = f"`{database}`.object_header"

    def comparable(value: Any) -> Any:
        # NaN is no value equal to itself.
        if isinstance(value, float) and math.isnan(value):
            return "NaN"
        if isinstance(value, list):
            return [comparable(item) for item in value]
        if isinstance(value, dict):
            return {key: comparable(item) for key, item in value.items()}
        return value

    def rows() -> dict[str, dict[str, Any]]:
        found = {}
        for row in spark.table(table).collect():
            values = row.asDict(recursive=True)
            del values["ingest_run"]
            found[values["path"]] = comparable(values)
        return found

    try:
        ingest(spark, str(folder), database, thumbnails=False)
        from_reads = rows()
        assert len(from_reads) == 4
        # The same catalog, its typed rows made again from the stored headers (no read of
        # this run: every row pending).
        spark.sql(f"DROP TABLE {table}")
        ingest(spark, str(folder), database, thumbnails=False)
        assert rows() == from_reads

        # A misfit: ContentSequence items with a field the column lacks (Code Meaning).
        misfit = new_dataset(MR, ExplicitVRLittleEndian)
        item = Dataset()
        item.CodeMeaning = "Brain"
        misfit.ContentSequence = Sequence([item])
        write(misfit, folder / "misfit.dcm")
        ingest(spark, str(folder), database, thumbnails=False)
        (row,) = [r for path, r in rows().items() if path.endswith("misfit.dcm")]
        issues = {e["tag"]: e["issue"] for e in row[typed.OTHER_ELEMENTS]}
        assert issues == {"0040A730[0].00080104": typed.NOT_IN_COLUMN}, issues
        (content,) = row["ContentSequence"]
        assert "CodeMeaning" not in content and not any(content.values()), content
    finally:
        spark.catalog.setCurrentDatabase("default")
        spark.sql(f"DROP DATABASE IF EXISTS `{database}` CASCADE")


def test_a_read_task_gives_each_skeleton_s_text_once(spark, tmp_path: Path) -> None:
    """dicom_header_result gives a skeleton's text on the first row of a Spark task that has it
    and its skeleton_id on every row: collect_set(skeleton) still gathers every distinct one,
    and the plan names misfits by the same ids."""
    folder = tmp_path / "dicom"
    for number in range(6):
        dataset = new_dataset(MR, ExplicitVRLittleEndian)
        dataset.InstanceNumber = number
        write(dataset, folder / f"mr{number}.dcm")
    write(every_vr_dataset(), folder / "every_vr.dcm")
    paths = spark.createDataFrame(
        [(str(path),) for path in sorted(folder.iterdir())], "path string"
    )
    for tasks in (1, 3):
        paths.repartition(tasks).createOrReplaceTempView("skeleton_paths")
        rows = spark.sql(
            "SELECT r.skeleton, r.skeleton_id, spark_partition_id() AS task"
            " FROM (SELECT dicom_header_result(path) AS r FROM skeleton_paths)"
        ).collect()
        assert len(rows) == 7 and all(row.skeleton_id is not None for row in rows)
        texts = {row.skeleton for row in rows if row.skeleton is not None}
        assert {typed.skeleton_id(text) for text in texts} == {row.skeleton_id for row in rows}
        assert len(texts) == 2
        for task in {row.task for row in rows}:
            mine = [row for row in rows if row.task == task]
            given = [row.skeleton_id for row in mine if row.skeleton is not None]
            assert sorted(given) == sorted({row.skeleton_id for row in mine}), tasks
    spark.catalog.dropTempView("skeleton_paths")
