"""The dbx.pixels API (pixels_sql.pixels): the seed's Quick Start run as written, incremental
saves, streaming and zip extraction, the code blocks of docs/migrating-from-dbx-pixels.md and
the docstring examples of the package.

Pipeline runs dominate this module's time, so they are few: the Quick Start three times (first
save, a save with nothing new, a save after a file changed), the streaming block twice, the
unzip block and the docstring examples once each.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import json
import os
import re
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import pixels_sql.pixels
import pixels_sql.pixels.dicom
from pixels_sql.dicom.thumbnail import render_thumbnail
from pixels_sql.pixels import Catalog, UnsupportedError
from pixels_sql.pixels import catalog as catalog_module
from pixels_sql.pixels import transformers as transformers_module
from pixels_sql.pixels.dicom import DicomMetaExtractor, DicomThumbnailExtractor
from pixels_sql.pixels.dicom import extractors as extractors_module
from tests.conftest import README, copy_samples
from tests.corpus import PYDICOM_TEST_FILES

DOC = Path(__file__).resolve().parent.parent / "docs" / "migrating-from-dbx-pixels.md"
# The Quick Start of dbx.pixels' README (the seed), as written there.
SEED_QUICK_START = (
    "# imports\n"
    "from dbx.pixels import Catalog                       # 01\n"
    "from dbx.pixels.dicom import *                       # 02\n"
    "\n"
    "# catalog all your files\n"
    "catalog = Catalog(spark)                                    # 03\n"
    "catalog_df = catalog.catalog(<path>)                        # 04\n"
    "\n"
    "# extract the Dicom metadata\n"
    "meta_df = DicomMetaExtractor(catalog).transform(catalog_df) # 05\n"
    " \n"
    "# extract thumbnails and display\n"
    "thumbnail_df = DicomThumbnailExtractor().transform(meta_df) # 06\n"
    " \n"
    "# save your work for SQL access\n"
    "catalog.save(thumbnail_df)                                  # 07\n"
)
QUICK_START = SEED_QUICK_START.replace("dbx.pixels", "pixels_sql.pixels")
# The seed's ER diagram (is_anon aside: not carried over, see the migration doc).
SEED_COLUMNS = (
    "rowId",
    "path",
    "modificationTime",
    "length",
    "relative_path",
    "local_path",
    "extension",
    "path_tags",
    "meta",
    "thumbnail",
)
DATABASE = "pixels"  # where Catalog(spark) saves: dbx.pixels' default table, mapped
STREAM_DATABASE = "pixels_api_stream"
ZIP_DATABASE = "pixels_api_zip"
EXAMPLES_DATABASE = "pixels_examples"  # the docstring examples'
BAD_FILES = {
    "bad/MR_truncated.dcm": "truncated",
    "bad/README.txt": "not_dicom",
    "bad/declared_deflated.dcm": "corrupt",
    "bad/empty.dcm": "empty",
}


def doc_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def python_block(marker: str) -> str:
    """The migration doc's Python block containing ``marker`` (exactly one)."""
    found = [block for block in doc_blocks("python") if marker in block]
    assert len(found) == 1, (marker, found)
    return found[0]


def filled(block: str, **values: Path) -> str:
    """A doc block with its placeholders (``<path>``, ``<checkpointPath>``, …) replaced by
    Python string literals of ``values``."""
    for name, value in values.items():
        block = block.replace(f"<{name}>", repr(str(value)))
    assert not re.search(r"<[A-Za-z]+>", block), block
    return block


def run_block(block: str, namespace: dict[str, Any]) -> str:
    """Execute a doc block in ``namespace``; what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block, str(DOC), "exec"), namespace)
    return printed.getvalue()


def touch_later(path: Path) -> None:
    """A modification time clearly after the previous save's (file systems keep seconds)."""
    later = time.time() + 5
    os.utime(path, (later, later))


def table_rows(spark, database: str) -> tuple[list[tuple], list[tuple]]:
    """Every catalog and thumbnail row, with the run that wrote it (a rewrite shows)."""
    catalog = spark.sql(
        f"SELECT path, ingest_run, SOPInstanceUID, meta_error_reason FROM {database}.object_catalog"
    ).collect()
    thumbnails = spark.sql(
        f"SELECT path, ingest_run, thumbnail_size FROM {database}.object_thumbnails"
    ).collect()
    return sorted(map(tuple, catalog)), sorted(map(tuple, thumbnails))


@dataclass
class QuickStart:
    folder: Path
    namespace: dict[str, Any]
    first: tuple[list[tuple], list[tuple]]
    again: tuple[list[tuple], list[tuple]]
    changed: tuple[list[tuple], list[tuple]]


@pytest.fixture(scope="module")
def quick_start(spark, spark_home: Path, tmp_path_factory: pytest.TempPathFactory):
    """The doc's session block, then its Quick Start (the seed's, prefix changed) three times
    on a small corpus folder: a first save, one with nothing new, one after a file changed."""
    folder = copy_samples(tmp_path_factory.mktemp("quick-start"))
    (folder / "bad" / "empty.dcm").write_bytes(b"")
    with zipfile.ZipFile(folder / "zipped.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(PYDICOM_TEST_FILES / "JPEG2000.dcm", "series/JPEG2000.dcm")
    spark.sql(f"DROP DATABASE IF EXISTS {DATABASE} CASCADE")
    namespace: dict[str, Any] = {}
    session_block = python_block("spark = pixels_sql.session()")
    # The doc's session, on the suite's home: the same application, so the same session.
    run_block(
        session_block.replace(
            "pixels_sql.session()", f"pixels_sql.session({str(spark_home)!r}, master='local[2]')"
        ),
        namespace,
    )
    block = python_block("catalog = Catalog(spark)  ")
    assert block == QUICK_START
    quick = filled(block, path=folder)
    run_block(quick, namespace)
    first = table_rows(spark, DATABASE)
    run_block(quick, namespace)
    again = table_rows(spark, DATABASE)
    rewritten = folder / "ct" / "CT_small.dcm"
    shutil.copyfile(PYDICOM_TEST_FILES / "MR_small.dcm", rewritten)
    touch_later(rewritten)
    run_block(quick, namespace)
    yield QuickStart(folder, namespace, first, again, table_rows(spark, DATABASE))
    spark.sql("USE default")


def test_the_doc_quick_start_is_the_seeds_with_the_import_prefix_changed() -> None:
    assert python_block("catalog = Catalog(spark)  ") == QUICK_START
    assert QUICK_START.count("pixels_sql.pixels") == 2
    assert QUICK_START.replace("pixels_sql.pixels", "dbx.pixels") == SEED_QUICK_START


def test_the_loaded_table_has_the_seed_columns_and_dicom_meta(spark, quick_start) -> None:
    loaded = Catalog(spark).load()
    assert set(SEED_COLUMNS) <= set(loaded.columns)
    # The pipeline's table itself, not a copy: its columns come first, in its order.
    assert loaded.columns[:-1] == spark.table(f"{DATABASE}.object_catalog").columns
    loaded.createOrReplaceTempView("pixels_api_loaded")
    rows = spark.sql(
        """SELECT path, relative_path, CAST(meta AS STRING) AS meta,
                  try_dicom_meta(path) AS direct
           FROM pixels_api_loaded"""
    ).collect()
    listed = {
        str(path.relative_to(quick_start.folder))
        for path in quick_start.folder.rglob("*")
        if path.is_file() and path.suffix != ".zip"
    }
    assert {row.relative_path for row in rows} == listed | {"zipped.zip/series/JPEG2000.dcm"}
    for row in rows:
        if row.direct is None:
            assert row.meta is None, row.path
        else:
            assert json.loads(row.meta) == json.loads(row.direct), row.path


def test_the_dataframes_compute_what_the_table_holds(spark, quick_start) -> None:
    """catalog_df's path columns and the transformers' meta and thumbnails are the table's."""
    namespace = quick_start.namespace
    columns = ["rowId", "path", "relative_path", "local_path", "extension", "path_tags"]
    listed = namespace["catalog"].catalog(str(quick_start.folder))
    loaded = Catalog(spark).load()
    assert sorted(map(tuple, listed.select(columns).collect())) == sorted(
        map(tuple, loaded.select(columns).collect())
    )
    computed = {
        row.path: row
        for row in namespace["thumbnail_df"]
        .selectExpr("path", "CAST(meta AS STRING) AS meta", "meta_error_reason", "thumbnail")
        .collect()
    }
    stored = loaded.selectExpr(
        "path", "CAST(meta AS STRING) AS meta", "meta_error_reason", "thumbnail", "`Rows`"
    ).collect()
    assert {row.path for row in stored} == set(computed)
    for row in stored:
        assert computed[row.path].meta_error_reason == row.meta_error_reason, row.path
        assert computed[row.path].meta == row.meta, row.path
        assert computed[row.path].thumbnail == row.thumbnail, row.path
        # Every image has its thumbnail.
        assert (row.thumbnail is not None) == (row.Rows is not None), row.path


def test_a_second_save_of_the_same_files_adds_nothing(quick_start) -> None:
    assert quick_start.again == quick_start.first
    catalog_rows, thumbnails = quick_start.first
    assert len({row[0] for row in catalog_rows}) == len(catalog_rows)
    assert thumbnails


def test_a_changed_file_replaces_its_row_and_its_thumbnail(spark, quick_start) -> None:
    rewritten = quick_start.folder / "ct" / "CT_small.dcm"
    uri = f"file:{rewritten}"
    before = {row[0]: row for row in quick_start.again[0]}
    after = {row[0]: row for row in quick_start.changed[0]}
    assert set(after) == set(before)
    assert {path for path in after if after[path] != before[path]} == {uri}
    mr_uid = spark.sql(
        f"SELECT SOPInstanceUID FROM {DATABASE}.object_catalog WHERE path LIKE '%/mr/MR_small.dcm'"
    ).first()[0]
    assert after[uri][2] == mr_uid != before[uri][2]
    thumbnail = (
        Catalog(spark).load().where(f"path = '{uri}'").select("thumbnail", "Modality").collect()
    )
    assert [(bytes(r.thumbnail), r.Modality) for r in thumbnail] == [
        (render_thumbnail(str(rewritten), 256), "MR")
    ]


def test_bad_files_get_their_reason_and_every_good_file_lands(spark, quick_start) -> None:
    rows = spark.sql(
        f"""SELECT relative_path, meta IS NOT NULL AS read, meta_error_reason
            FROM {DATABASE}.object_catalog"""
    ).collect()
    reasons = {row.relative_path: row.meta_error_reason for row in rows if not row.read}
    assert reasons == BAD_FILES
    errors = spark.sql(f"SELECT path, reason FROM {DATABASE}.object_errors WHERE stage = 'meta'")
    assert len(errors.collect()) == len(BAD_FILES)
    assert sum(row.read for row in rows) == len(rows) - len(BAD_FILES) > 5


def test_streaming_save_catalogs_the_files_that_arrive(spark, tmp_path: Path) -> None:
    """The doc's streaming block, run twice: the files there, then a file added later."""
    spark.sql(f"DROP DATABASE IF EXISTS {STREAM_DATABASE} CASCADE")
    incoming, checkpoints = tmp_path / "incoming", tmp_path / "checkpoints"
    incoming.mkdir()
    shutil.copyfile(PYDICOM_TEST_FILES / "CT_small.dcm", incoming / "CT_small.dcm")
    block = filled(python_block("streaming=True"), path=incoming, checkpointPath=checkpoints)
    namespace: dict[str, Any] = {
        "catalog": Catalog(spark, table=f"{STREAM_DATABASE}.object_catalog"),
        "DicomMetaExtractor": DicomMetaExtractor,
    }
    query = f"SELECT relative_path, Modality FROM {STREAM_DATABASE}.object_catalog ORDER BY 1"
    run_block(block, namespace)
    assert [tuple(row) for row in spark.sql(query).collect()] == [("CT_small.dcm", "CT")]
    shutil.copyfile(PYDICOM_TEST_FILES / "MR_small.dcm", incoming / "MR_small.dcm")
    run_block(block, namespace)
    assert [tuple(row) for row in spark.sql(query).collect()] == [
        ("CT_small.dcm", "CT"),
        ("MR_small.dcm", "MR"),
    ]
    # The stream ingest's checkpoint, where dbx.pixels puts it: <base>/<table>.
    assert (checkpoints / f"{STREAM_DATABASE}.object_catalog" / "pixels-sql.json").is_file()
    spark.sql("USE default")


def test_extract_zip_catalogues_the_written_members(spark, tmp_path: Path) -> None:
    """The doc's unzip block over a zip of corpus files."""
    spark.sql(f"DROP DATABASE IF EXISTS {ZIP_DATABASE} CASCADE")
    folder, unzipped = tmp_path / "zips", tmp_path / "unzipped"
    folder.mkdir()
    names = ("CT_small.dcm", "MR_small.dcm", "README.txt")
    with zipfile.ZipFile(folder / "study.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.write(PYDICOM_TEST_FILES / name, f"series/{name}")
    block = filled(python_block("extractZip=True"), path=folder, unzipPath=unzipped)
    namespace: dict[str, Any] = {
        "catalog": Catalog(spark, table=f"{ZIP_DATABASE}.object_catalog"),
        "DicomMetaExtractor": DicomMetaExtractor,
    }
    run_block(block, namespace)
    rows = spark.sql(
        f"SELECT path, relative_path, meta_error_reason FROM {ZIP_DATABASE}.object_catalog"
    ).collect()
    assert sorted((row.path, row.relative_path, row.meta_error_reason) for row in rows) == [
        (
            f"file:{unzipped}/study.zip/series/{name}",
            f"study.zip/series/{name}",
            "not_dicom" if name == "README.txt" else None,
        )
        for name in names
    ]
    for name in names:
        written = unzipped / "study.zip" / "series" / name
        assert written.read_bytes() == (PYDICOM_TEST_FILES / name).read_bytes()
    # The DataFrame's rows are the written files too.
    assert {row.path for row in namespace["catalog_df"].select("path").collect()} == {
        row.path for row in rows
    }
    spark.sql("USE default")


def test_every_code_block_of_the_migration_doc_runs(spark, quick_start) -> None:
    """The blocks the tests above do not run, on the Quick Start's folder and namespace."""
    python = doc_blocks("python")
    by_tests = [
        python_block("spark = pixels_sql.session()"),
        python_block("catalog = Catalog(spark)  "),
        python_block("streaming=True"),
        python_block("extractZip=True"),
    ]
    rest = [block for block in python if block not in by_tests]
    assert len(rest) == 2, rest
    printed = "".join(
        run_block(filled(block, path=quick_start.folder), quick_start.namespace) for block in rest
    )
    assert "DicomPatcher: pixels-sql does not cut images into patches" in printed
    assert "|mr/MR_small.dcm" in printed and "[mr, MR, small, dcm]" in printed
    sql = doc_blocks("sql")
    assert len(sql) == 3
    results = [
        spark.sql(block.replace("<path>", str(quick_start.folder)).strip().rstrip(";")).collect()
        for block in sql
    ]
    listed, by_modality, errors = results
    assert {row.meta_error_reason for row in listed} >= {None, "not_dicom"}
    # (The Quick Start's last save turned the one CT file into an MR.)
    assert {row.Modality for row in by_modality} >= {"MR", "US", "RTPLAN"}
    assert {row.reason for row in errors} == set(BAD_FILES.values())


def test_unsupported_calls_raise_naming_the_alternative(spark, quick_start) -> None:
    catalog = Catalog(spark)
    folder = str(quick_start.folder)
    cases = {
        "radiology.object_catalog": lambda: Catalog(spark, table="main.radiology.object_catalog"),
        "object_thumbnails and the views": lambda: Catalog(spark, table="pixels.my_catalog"),
        "BulkDataURI": lambda: DicomMetaExtractor(catalog, deep=True),
        "dicom_tag(meta, key)": lambda: DicomMetaExtractor(catalog, remove_un_tags=True),
        "meta_error_reason 'not_dicom'": lambda: catalog.catalog(folder, detectFileType=True),
        "batch catalog(path) + save(df)": lambda: catalog.catalog(
            folder, streaming=True, allowOverwrites=True
        ),
        "pattern=": lambda: catalog.catalog(folder, streaming=True, recurse=False),
        "DROP TABLE": lambda: catalog.save(catalog.catalog(folder), mode="overwrite"),
        "df.select('path', 'label')": lambda: catalog.save(
            catalog.catalog(folder).selectExpr("*", "1 AS label")
        ),
        "other transformations (filters, joins)": lambda: catalog.save(
            catalog.catalog(
                folder, streaming=True, streamCheckpointBasePath=str(quick_start.folder.parent)
            ).where("length > 0")
        ),
    }
    for expected, call in cases.items():
        with pytest.raises(UnsupportedError) as raised:
            call()
        assert expected in str(raised.value), (expected, str(raised.value))
    with pytest.raises(TypeError, match="did not match input type StringType"):
        DicomThumbnailExtractor(inputCol="length").transform(catalog.catalog(folder))
    # Rows of another folder's catalog would be dropped by the save's listing: refused.
    elsewhere = str(quick_start.folder / "mr")
    with pytest.raises(ValueError, match="files outside the catalogued folder"):
        catalog.save(
            catalog.catalog(str(quick_start.folder / "ct")).union(catalog.catalog(elsewhere))
        )


# Every public name of the package, with the examples its docstring must hold.
PUBLIC = [
    *(getattr(pixels_sql.pixels, name) for name in pixels_sql.pixels.__all__),
    *(getattr(pixels_sql.pixels.dicom, name) for name in pixels_sql.pixels.dicom.__all__),
    Catalog.catalog,
    Catalog.save,
    Catalog.load,
]


def test_every_public_name_has_a_docstring_example() -> None:
    for public in PUBLIC:
        if public is UnsupportedError:
            continue  # an exception class: raised in the other examples
        assert ">>> " in (public.__doc__ or ""), public


def test_the_docstring_examples_run(spark, tmp_path: Path) -> None:
    """The package's doctests, with a Spark session: pytest's own doctest run (pyproject.toml)
    leaves this package out, having no session to give them."""
    spark.sql(f"DROP DATABASE IF EXISTS {EXAMPLES_DATABASE} CASCADE")
    folder = tmp_path / "examples"
    copy_samples(
        folder,
        {
            "CT_small.dcm": PYDICOM_TEST_FILES / "CT_small.dcm",
            "MR_small.dcm": PYDICOM_TEST_FILES / "MR_small.dcm",
            "README.txt": README,
        },
    )
    finder = doctest.DocTestFinder()
    tests = [
        test
        for module in (
            pixels_sql.pixels,
            transformers_module,
            extractors_module,
            catalog_module,
        )
        for test in finder.find(module)
        if test.examples
    ]
    # load()'s example reads what save()'s wrote.
    tests.sort(key=lambda test: test.name.endswith(".load"))
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        test.globs = {**test.globs, "spark": spark, "folder": str(folder), "workdir": tmp_path}
        runner.run(test)
    spark.sql("USE default")
    results = runner.summarize(verbose=False)
    assert results.failed == 0, results
    assert results.attempted >= 30
    assert {test.name.rsplit(".", 1)[-1] for test in tests} >= {
        "Catalog",
        "catalog",
        "save",
        "load",
        "DicomMetaExtractor",
        "DicomThumbnailExtractor",
        "DicomPillowThumbnailExtractor",
        "DicomPatcher",
        "PathExtractor",
        "TagExtractor",
    }
