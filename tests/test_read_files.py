"""read_files: the Databricks table-valued function, served by the extension jar."""

from __future__ import annotations

from pathlib import Path

import pytest
from chispa import assert_df_equality

from tests.corpus import PYDICOM_TEST_FILES


def test_same_rows_as_the_binary_file_source(spark) -> None:
    folder = str(PYDICOM_TEST_FILES)
    ours = spark.sql(
        f"""SELECT path, modificationTime, length FROM read_files('{folder}',
            format => 'binaryFile', recursiveFileLookup => true, pathGlobFilter => '*.dcm')"""
    )
    spark_own = (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", "*.dcm")
        .load(folder)
        .select("path", "modificationTime", "length")
    )
    assert ours.count() == len(list(PYDICOM_TEST_FILES.rglob("*.dcm")))
    assert_df_equality(ours, spark_own, ignore_row_order=True)


def test_options_change_the_listing(spark, sample_dir: Path) -> None:
    top_only = spark.sql(f"SELECT path FROM read_files('{sample_dir}/ct')").count()
    recursive = spark.sql(
        f"SELECT path FROM read_files('{sample_dir}', recursiveFileLookup => true)"
    ).count()
    txt = spark.sql(
        f"""SELECT path FROM read_files('{sample_dir}', recursiveFileLookup => true,
            pathGlobFilter => '*.txt')"""
    ).collect()
    assert (top_only, recursive) == (1, len(list(sample_dir.rglob("*.*"))) + 1)
    assert [Path(r.path).name for r in txt] == ["README.txt"]


def test_metadata_columns_read_no_file_content(spark) -> None:
    """With a 16-byte content limit, listing works and only selecting content fails."""
    folder = str(PYDICOM_TEST_FILES)
    spark.conf.set("spark.sql.sources.binaryFile.maxLength", "16")
    try:
        rows = spark.sql(
            f"""SELECT count(*) AS files, sum(length) AS bytes
                FROM read_files('{folder}', recursiveFileLookup => true)"""
        ).first()
        assert rows.files > 100 and rows.bytes > 16 * rows.files
        with pytest.raises(Exception, match=r"FAILED_READ_FILE|exceeds|length"):
            spark.sql(
                f"""SELECT max(length(content))
                    FROM read_files('{folder}', recursiveFileLookup => true)"""
            ).collect()
    finally:
        spark.conf.unset("spark.sql.sources.binaryFile.maxLength")


def test_other_formats_and_schema(spark, tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x,y\n1,2\n3,4\n")
    rows = spark.sql(
        f"""SELECT * FROM read_files('{tmp_path}', format => 'csv', header => true,
            schema => 'x INT, y INT') ORDER BY x"""
    ).collect()
    assert [tuple(r) for r in rows] == [(1, 2), (3, 4)]


def test_read_files_in_new_sessions(spark) -> None:
    other = spark.newSession()
    assert other.sql(f"SELECT count(*) FROM read_files('{PYDICOM_TEST_FILES}')").first()[0] > 50


def test_missing_path_is_a_clear_error(spark) -> None:
    with pytest.raises(Exception, match="read_files needs a path"):
        spark.sql("SELECT * FROM read_files(format => 'binaryFile')").collect()
