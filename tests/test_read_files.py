"""read_files: the Databricks table-valued function, served by the extension jar."""

from __future__ import annotations

from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql.functions import col

from tests.corpus import PYDICOM_TEST_FILES

# Every test twice: folders read by the jar's C library, and through java.nio.
pytestmark = pytest.mark.usefixtures("folder_reader")


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


def test_a_local_folder_is_walked_in_parts_with_the_binary_file_sources_rules(
    spark, tmp_path: Path
) -> None:
    """read_files of a local folder walks it itself (LocalWalk, in parallel parts), and gives
    what Spark's binaryFile source gives: no `.`/`_` names (but `_k=v`), no
    empty files, no `._COPYING_`, symlinks followed; content the same bytes."""
    for series in range(12):
        for number in range(3):
            path = tmp_path / f"study{series % 3}" / f"series{series}" / f"IM{number}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes([series, number]) * (series + number + 1))
    for name in ("_hidden/x.dcm", ".git/y.dcm", "_metadata", "_k=v/z.dcm", "a.dcm._COPYING_"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"DICM")
    (tmp_path / "empty.dcm").touch()
    (tmp_path / "alias").symlink_to(tmp_path / "study0" / "series0")
    query = f"SELECT * FROM read_files('{tmp_path}', recursiveFileLookup => true)"
    ours = spark.sql(query)
    assert f"read_files({tmp_path})" in ours._jdf.queryExecution().analyzed().toString()
    assert ours.rdd.getNumPartitions() > 1
    spark_own = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
    # Spark lists the files of the symlink into the tree twice; read_files by their real
    # paths only, as list_files does.
    spark_own = spark_own.load(str(tmp_path)).where(~col("path").contains("/alias/"))
    assert ours.count() == 12 * 3 + 1  # and _k=v/z.dcm
    assert_df_equality(ours, spark_own, ignore_row_order=True)


def test_a_flat_folder_is_cut_into_parts_in_path_order(spark, tmp_path: Path) -> None:
    """A folder of files with no subfolders (a flat DICOM export) is still walked by several
    tasks, so per-file work (a thumbnail, a header) uses every core; list_files gives each
    part's rows in path order, and the parts follow each other."""
    names = [f"IM{number:03d}.dcm" for number in range(48)]
    for name in names:
        (tmp_path / name).write_bytes(b"DICM")
    query = f"SELECT path FROM read_files('{tmp_path}', recursiveFileLookup => true)"
    listing = spark.sql(query)
    parts = listing.rdd.glom().collect()
    assert len(parts) == 2 * spark.sparkContext.defaultParallelism
    assert all(parts), "every part has files"
    walked = [row.path.rsplit("/", 1)[1] for part in parts for row in part]
    assert walked == names
    listed = spark.sql(f"SELECT path FROM list_files('{tmp_path}')").rdd.glom().collect()
    assert [row.path.rsplit("/", 1)[1] for part in listed for row in part] == names


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
