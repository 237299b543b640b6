"""The de-identification SQL functions on the session: the same bytes as the pure transform,
reasons for bad files, the mapping in dicom_deidentify_result, the query's errors."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from pixels_sql.deid.files import deidentify
from pixels_sql.deid.profile import Profile
from tests.conftest import TEST_DEID_KEY
from tests.corpus import PYDICOM_TEST_FILES


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("deid")
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"):
        (folder / name).write_bytes((PYDICOM_TEST_FILES / name).read_bytes())
    (folder / "README.txt").write_text("not a DICOM file\n")
    (folder / "empty.dcm").write_bytes(b"")
    return folder


def test_the_key_is_the_suite_s() -> None:
    # conftest sets it before the session starts: the Python workers read it from there.
    assert os.environ["PIXELS_SQL_DEID_KEY"] == TEST_DEID_KEY


def test_dicom_deidentify_gives_the_pure_transform_s_bytes(spark, folder: Path) -> None:
    rows = spark.sql(
        f"""SELECT regexp_extract(path, '[^/]+$', 0) AS name,
                   try_dicom_deidentify(path, 'basic', array('tcia')) AS dcm,
                   dicom_deidentify_error(path) AS reason,
                   dicom_deidentify_result(path, 'basic', array('tcia')) AS result
            FROM list_files('{folder}')"""
    ).collect()
    by_name = {row.name: row for row in rows}
    assert set(by_name) == {"CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "README.txt", "empty.dcm"}
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"):
        row = by_name[name]
        expected = deidentify(
            (folder / name).read_bytes(), Profile.of(["tcia"]), TEST_DEID_KEY.encode()
        )
        assert bytes(row.dcm) == expected.data, name
        assert bytes(row.result.data) == expected.data
        assert row.reason is None and row.result.reason is None
        original = pydicom.dcmread(folder / name)
        written = pydicom.dcmread(io.BytesIO(bytes(row.dcm)))
        assert row.result.original_sop_instance_uid == original.SOPInstanceUID
        assert row.result.sop_instance_uid == written.SOPInstanceUID
        assert row.result.uids[original.SOPInstanceUID] == written.SOPInstanceUID
        assert row.result.patient_id == written.PatientID
        assert row.result.shift_days == expected.shift_days > 0
    for name, reason in (("README.txt", "not_dicom"), ("empty.dcm", "empty")):
        row = by_name[name]
        assert (row.dcm, row.reason, row.result.reason) == (None, reason, reason)
        assert row.result.data is None and row.result.message


def test_dicom_deidentify_fails_in_one_line_and_checks_its_options(spark, folder: Path) -> None:
    readme = folder / "README.txt"
    with pytest.raises(Exception, match=f"dicom_deidentify: {readme}: not_dicom: ") as raised:
        spark.sql(f"SELECT dicom_deidentify('{readme}')").collect()
    assert "Traceback" not in str(raised.value)
    ct = folder / "CT_small.dcm"
    with pytest.raises(Exception, match="unknown de-identification option 'keep_faces'"):
        spark.sql(f"SELECT try_dicom_deidentify('{ct}', 'basic', array('keep_faces'))").collect()
    with pytest.raises(Exception, match="profile must be 'basic'"):
        spark.sql(f"SELECT try_dicom_deidentify('{ct}', 'extended')").collect()
    # A NULL path is a NULL result, as for the other families.
    assert spark.sql("SELECT dicom_deidentify(CAST(NULL AS STRING))").first()[0] is None


def test_burned_in_text_is_reported_and_cleaned_through_sql(spark, folder: Path) -> None:
    # pydicom's US1_UNCR.dcm carries its site's name and scan labels in its pixels.
    us = folder / "us.dcm"
    us.write_bytes(Path(get_testdata_file("US1_UNCR.dcm")).read_bytes())
    rows = spark.sql(
        f"""SELECT regexp_extract(path, '[^/]+$', 0) AS name,
                   try_dicom_burned_in_text(path) AS words,
                   dicom_deidentify_result(path, 'basic', array('ocr')) AS result
            FROM list_files('{folder}')"""
    ).collect()
    by_name = {row.name: row for row in rows}
    words = {word.text for word in by_name["us.dcm"].words}
    assert {"BAPTIST", "LYMPH", "NODE"} <= words
    word = next(w for w in by_name["us.dcm"].words if w.text == "BAPTIST")
    assert word.frame == 0 and word.width > 0 and word.confidence > 50
    cleaned = by_name["us.dcm"].result.cleaned_regions
    assert {region.source for region in cleaned} == {"ocr"}
    assert len(cleaned) == len(by_name["us.dcm"].words)
    written = pydicom.dcmread(io.BytesIO(bytes(by_name["us.dcm"].result.data)))
    top_left = written.pixel_array[word.y : word.y + word.height, word.x : word.x + word.width]
    assert (top_left == 0).all()
    # CT_small has no text: nothing found, nothing cleaned, the pixels as they were.
    assert by_name["CT_small.dcm"].words == []
    assert by_name["CT_small.dcm"].result.cleaned_regions == []
    # Not an image, or not DICOM: NULL from try_, the reason from the strict function.
    assert by_name["rtplan.dcm"].words is None and by_name["README.txt"].words is None
    with pytest.raises(Exception, match=r"dicom_burned_in_text: .*rtplan.dcm: no_pixel_data: "):
        spark.sql(f"SELECT dicom_burned_in_text('{folder / 'rtplan.dcm'}')").collect()
    us.unlink()
