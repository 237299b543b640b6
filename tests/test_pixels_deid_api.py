"""dbx.pixels' DicomAnonymizerExtractor (pixels_sql.pixels.dicom): de-identified copies written
by dicom_deidentify_write, the rows pointing to them, the mapping, bad files as rows, the
options with no counterpart, Catalog.save of the copies and the docstring examples.

One transform of a small folder is shared by most tests (its copies are written once); the
Pipeline test writes the same copies again, on purpose (same paths, same bytes).
"""

from __future__ import annotations

import doctest
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.uid import ExplicitVRLittleEndian
from pyspark.ml import Pipeline

from pixels_sql.pixels import Catalog, UnsupportedError
from pixels_sql.pixels.dicom import DicomAnonymizerExtractor
from pixels_sql.pixels.dicom import dicom_anonymizer_extractor as anonymizer_module
from tests.conftest import README, copy_samples
from tests.corpus import PYDICOM_TEST_FILES

DATABASE = "pixels_deid_api"
GOOD = ("ct/CT_small.dcm", "mr/MR_small.dcm")
BAD = {
    "bad/README.txt": "not_dicom",
    "bad/MR_truncated.dcm": "truncated",
    "bad/empty.dcm": "empty",
    # Burned-in text the header declares: refused without OCR (COMPLETE cleans it).
    "burned/text.dcm": "burned_in_unhandled",
}
MAPPING = (
    "deid_source_path",
    "deid_original_sop_instance_uid",
    "deid_sop_instance_uid",
    "deid_patient_id",
    "deid_shift_days",
    "deid_uids",
    "deid_cleaned_regions",
    "deid_reason",
    "deid_message",
)


def write_burned_in(target: Path) -> None:
    """A corpus image with a name and an ID drawn into it in its whitest value, as a modality
    burns them in, declared by Burned In Annotation YES."""
    dataset = pydicom.dcmread(PYDICOM_TEST_FILES / "examples_overlay.dcm")
    pixels = dataset.pixel_array.copy()
    mask = Image.new("L", (dataset.Columns, dataset.Rows), 0)
    draw = ImageDraw.Draw(mask)
    for y, text in ((12, "SMITH^JANE"), (40, "ID 4421907")):
        draw.text((20, y), text, fill=255, font=ImageFont.load_default(size=16))
    pixels[np.asarray(mask) > 127] = (1 << dataset.BitsStored) - 1
    dataset.PixelData = pixels.tobytes()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.BurnedInAnnotation = "YES"
    target.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(target, enforce_file_format=True)


@dataclass
class Anonymized:
    folder: Path
    destination: Path
    catalog: Catalog
    df: object  # the transformed DataFrame
    rows: dict[str, object]  # by the source file's path relative to folder


@pytest.fixture(scope="module")
def anonymized(spark, tmp_path_factory: pytest.TempPathFactory) -> Anonymized:
    work = tmp_path_factory.mktemp("pixels-deid-api")
    folder = copy_samples(
        work / "source",
        {
            "ct/CT_small.dcm": PYDICOM_TEST_FILES / "CT_small.dcm",
            "mr/MR_small.dcm": PYDICOM_TEST_FILES / "MR_small.dcm",
            "bad/README.txt": README,
            "bad/MR_truncated.dcm": PYDICOM_TEST_FILES / "MR_truncated.dcm",
        },
    )
    (folder / "bad" / "empty.dcm").write_bytes(b"")
    write_burned_in(folder / "burned" / "text.dcm")
    destination = work / "deid"
    catalog = Catalog(spark, table=f"{DATABASE}.object_catalog", volume=str(work / "volume"))
    df = DicomAnonymizerExtractor(
        catalog, anonym_mode="METADATA", anonymization_base_path=str(destination)
    ).transform(catalog.catalog(str(folder)))
    rows = {
        row.deid_source_path.removeprefix(f"file:{folder}/"): row
        for row in df.selectExpr("*", "CAST(meta AS STRING) AS meta_json").collect()
    }
    return Anonymized(folder, destination, catalog, df, rows)


def test_every_source_file_is_a_row(anonymized: Anonymized) -> None:
    assert set(anonymized.rows) == {*GOOD, *BAD}
    assert set(MAPPING) <= set(anonymized.df.columns)


def test_copies_are_written_under_the_destination_and_readable(anonymized: Anonymized) -> None:
    destination = anonymized.destination
    for name in GOOD:
        row = anonymized.rows[name]
        assert row.deid_reason is None and row.meta_error_reason is None, row
        copy = Path(row.path.removeprefix("file:"))
        # <destination>/<pseudonymous patient>/<new SOP Instance UID>.dcm
        assert copy == destination / row.deid_patient_id / f"{row.deid_sop_instance_uid}.dcm"
        assert row.local_path == str(copy) and row.original_path == row.path
        assert row.relative_path == f"{row.deid_patient_id}/{row.deid_sop_instance_uid}.dcm"
        assert row.extension == "dcm"
        written = pydicom.dcmread(copy)
        source = pydicom.dcmread(anonymized.folder / name)
        assert written.SOPInstanceUID == row.deid_sop_instance_uid != source.SOPInstanceUID
        assert row.deid_original_sop_instance_uid == source.SOPInstanceUID
        assert written.StudyInstanceUID != source.StudyInstanceUID
        assert row.deid_uids[source.StudyInstanceUID] == written.StudyInstanceUID
        assert written.PatientID == row.deid_patient_id != source.PatientID
        assert written.PatientIdentityRemoved == "YES"
        assert row.deid_cleaned_regions == []
        # The Basic Profile without a dates option: no date kept (dbx.pixels kept StudyDate).
        assert written.get("StudyDate", "") == "" and source.StudyDate
        # meta is the copy's header.
        meta = json.loads(row.meta_json)
        assert meta["00080018"]["Value"] == [row.deid_sop_instance_uid]
        assert meta["00100020"]["Value"] == [row.deid_patient_id]
    # Nothing else was written: the bad files have no copy.
    files = {path for path in destination.rglob("*") if path.is_file()}
    assert files == {Path(anonymized.rows[name].local_path) for name in GOOD}


def test_the_mapping_is_what_dicom_deidentify_result_gives(spark, anonymized: Anonymized) -> None:
    for name in GOOD:
        row = anonymized.rows[name]
        result = spark.sql(
            "SELECT dicom_deidentify_result(:path, 'basic', array()) AS r",
            args={"path": row.deid_source_path},
        ).first()["r"]
        assert result["reason"] is None
        assert row.deid_sop_instance_uid == result["sop_instance_uid"]
        assert row.deid_original_sop_instance_uid == result["original_sop_instance_uid"]
        assert row.deid_patient_id == result["patient_id"]
        assert row.deid_shift_days == result["shift_days"]
        assert row.deid_uids == result["uids"]
        assert Path(row.local_path).read_bytes() == bytes(result["data"])


def test_the_catalog_columns_point_to_the_copies(spark, anonymized: Anonymized) -> None:
    for name in GOOD:
        row = anonymized.rows[name]
        assert row.rowId == spark.sql("SELECT xxhash64(:p)", args={"p": row.path}).first()[0]
        assert row.deid_patient_id in row.path_tags and "dcm" in row.path_tags
    settings = anonymized.df.schema["path"].metadata["pixels_sql"]["catalog"]
    assert settings == {"path": str(anonymized.destination)}


def test_a_bad_file_is_a_row_with_its_reason_and_its_own_paths(anonymized: Anonymized) -> None:
    for name, reason in BAD.items():
        row = anonymized.rows[name]
        assert (row.deid_reason, row.meta_error_reason) == (reason, reason), row
        assert row.deid_message and row.meta_error_message == row.deid_message
        assert row.path == row.deid_source_path == f"file:{anonymized.folder}/{name}"
        assert row.relative_path == name
        assert row.meta is None and row.original_path is None
        assert row.deid_sop_instance_uid is None and row.deid_uids is None


def test_catalog_save_catalogues_the_copies_and_no_mapping(spark, anonymized: Anonymized) -> None:
    spark.sql(f"DROP DATABASE IF EXISTS {DATABASE} CASCADE")
    try:
        report = anonymized.catalog.save(anonymized.df)
        assert (report.new, report.failed) == (len(GOOD), 0)
        loaded = anonymized.catalog.load()
        stored = {
            row.path: row
            for row in loaded.selectExpr(
                "path", "relative_path", "PatientID", "CAST(meta AS STRING) AS meta"
            ).collect()
        }
        copies = {anonymized.rows[name].path: anonymized.rows[name] for name in GOOD}
        assert set(stored) == set(copies)
        for path, row in stored.items():
            assert row.relative_path == copies[path].relative_path
            assert row.PatientID == copies[path].deid_patient_id
            assert json.loads(row.meta) == json.loads(copies[path].meta_json)
        assert not set(MAPPING) & set(loaded.columns)
    finally:
        spark.sql("USE default")


def test_inside_a_pipeline_with_local_paths_and_json_meta(anonymized: Anonymized) -> None:
    """The upstream default input column and useVariant=False, as a Pipeline stage: the same
    copies again (same paths), meta a JSON STRING."""
    stage = DicomAnonymizerExtractor(
        anonymized.catalog,
        inputCol="local_path",
        anonym_mode="METADATA",
        anonymization_base_path=str(anonymized.destination),
        useVariant=False,
    )
    files = anonymized.catalog.catalog(str(anonymized.folder), pattern="*.dcm")
    df = Pipeline(stages=[stage]).fit(files).transform(files)
    assert dict(df.dtypes)["meta"] == "string"
    rows = {row.deid_source_path: row for row in df.collect()}
    for name in GOOD:
        first = anonymized.rows[name]
        row = rows[first.deid_source_path]
        assert (row.path, row.deid_sop_instance_uid) == (first.path, first.deid_sop_instance_uid)
        assert json.loads(row.meta) == json.loads(first.meta_json)
    assert rows[f"file:{anonymized.folder}/bad/MR_truncated.dcm"].deid_reason == "truncated"


def test_the_default_destination_is_the_volume_s_anonymized_folder(spark, tmp_path: Path) -> None:
    catalog = Catalog(spark, volume=str(tmp_path / "volume"))
    stage = DicomAnonymizerExtractor(catalog, anonym_mode="METADATA")
    assert stage.anonymization_base_path == str(tmp_path / "volume" / "anonymized")
    assert stage.inputCol == "path" and stage.outputCol == "meta" and stage.options == ()
    with pytest.raises(ValueError, match="give anonymization_base_path"):
        DicomAnonymizerExtractor(anonym_mode="METADATA")


def test_options_and_kept_attributes(spark, anonymized: Anonymized) -> None:
    tcia = DicomAnonymizerExtractor(
        anonym_mode="metadata", anonymization_base_path="/x", options="tcia"
    )
    assert tcia.options == ("tcia",) and tcia.anonym_mode == "METADATA"
    # keep_tags the options keep (dates with Full Dates), or that no profile row touches.
    DicomAnonymizerExtractor(
        anonym_mode="METADATA",
        anonymization_base_path="/x",
        options=["retain_longitudinal_full_dates"],
        keep_tags=("StudyDate", "StudyTime", "SeriesDate", "Modality"),
    )
    # dbx.pixels' encrypt_tags, given or not: what the profile does anyway.
    DicomAnonymizerExtractor(
        anonym_mode="METADATA",
        anonymization_base_path="/x",
        encrypt_tags=["PatientID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
                      "AccessionNumber"],
    )  # fmt: skip
    with pytest.raises(ValueError, match="unknown de-identification option 'keep_faces'"):
        DicomAnonymizerExtractor(
            anonym_mode="METADATA", anonymization_base_path="/x", options=["keep_faces"]
        )


def test_unsupported_calls_raise_naming_the_alternative(spark, anonymized: Anonymized) -> None:
    key, tweak = "00112233445566778899aabbccddeeff", "0123456789abcdef"

    def make(**options: object) -> DicomAnonymizerExtractor:
        return DicomAnonymizerExtractor(
            **{"anonym_mode": "METADATA", "anonymization_base_path": "/x", **options}
        )

    cases = {
        "anonym_mode='COMPLETE'": lambda: make(anonym_mode="IMAGE"),
        "set PIXELS_SQL_DEID_KEY_FILE": lambda: make(fp_key=key, fp_tweak=tweak),
        "remove fp_key and fp_tweak": lambda: make(fp_tweak=tweak),
        "retain_longitudinal_full_dates": lambda: make(
            keep_tags=("StudyDate", "StudyTime", "SeriesDate")
        ),
        "PatientName (no option keeps it)": lambda: make(keep_tags=["PatientName"]),
        "no format-preserving encryption": lambda: make(encrypt_tags=("PatientName",)),
        "dicom_deidentify_result": lambda: make(save_anonymized_dicom=False),
        "local or mounted folder": lambda: make(anonymization_base_path="s3://bucket/deid"),
        "pixels-sql deidentify": lambda: make().transform(
            anonymized.catalog.catalog(
                str(anonymized.folder),
                streaming=True,
                streamCheckpointBasePath=str(anonymized.destination.parent / "checkpoints"),
            )
        ),
    }
    for expected, call in cases.items():
        with pytest.raises(UnsupportedError) as raised:
            call()
        assert expected in str(raised.value), (expected, str(raised.value))
        assert key not in str(raised.value) and tweak not in str(raised.value)
    with pytest.raises(ValueError, match=r"Invalid anonymization mode None"):
        DicomAnonymizerExtractor(anonymization_base_path="/x")
    with pytest.raises(ValueError, match="not a DICOM keyword"):
        make(keep_tags=["NoSuchKeyword"])
    with pytest.raises(TypeError, match="did not match input type StringType"):
        make(inputCol="length").transform(anonymized.catalog.catalog(str(anonymized.folder)))


def test_the_docstring_examples_run(spark, tmp_path: Path) -> None:
    folder = copy_samples(
        tmp_path / "examples",
        {
            "CT_small.dcm": PYDICOM_TEST_FILES / "CT_small.dcm",
            "MR_small.dcm": PYDICOM_TEST_FILES / "MR_small.dcm",
            "README.txt": README,
        },
    )
    tests = [test for test in doctest.DocTestFinder().find(anonymizer_module) if test.examples]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        test.globs = {**test.globs, "spark": spark, "folder": str(folder), "workdir": tmp_path}
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, results
    assert {test.name.rsplit(".", 1)[-1] for test in tests} >= {
        "DicomAnonymizerExtractor",
        "destination_folder",
    }


def test_complete_mode_also_cleans_burned_in_text_by_ocr(anonymized: Anonymized) -> None:
    """Last: COMPLETE adds the SQL functions' ``ocr`` option (Tesseract). The burned-in image
    METADATA refused is written, its text blacked out."""
    stage = DicomAnonymizerExtractor(
        anonymized.catalog,
        anonym_mode="COMPLETE",
        anonymization_base_path=str(anonymized.destination.parent / "complete"),
        options=["retain_safe_private"],
    )
    assert stage.options == ("retain_safe_private", "ocr")
    files = anonymized.catalog.catalog(str(anonymized.folder / "burned"))
    (row,) = stage.transform(files).collect()
    assert row.deid_reason is None, row.deid_message
    assert row.deid_cleaned_regions and {r.source for r in row.deid_cleaned_regions} == {"ocr"}
    # The text's band, at the top left, is what was found.
    assert min(r.y for r in row.deid_cleaned_regions) < 40
    written = pydicom.dcmread(row.local_path)
    assert written.BurnedInAnnotation == "NO"
    assert os.path.dirname(row.local_path).endswith(f"complete/{row.deid_patient_id}")
    source = pydicom.dcmread(anonymized.folder / "burned" / "text.dcm")
    assert written.SOPInstanceUID == row.deid_sop_instance_uid != source.SOPInstanceUID
    region = row.deid_cleaned_regions[0]
    box = (slice(region.y, region.y + region.height), slice(region.x, region.x + region.width))
    assert (source.pixel_array[box] != written.pixel_array[box]).any()
