"""The script runner's pure parts, and the pipeline scripts under both SQL dialects."""

from __future__ import annotations

import io
import re
import threading
from pathlib import Path

import pytest
import sqlglot

from pixels_sql.pipeline import PIPELINE_DIR
from pixels_sql.runner import failed_statement, run_statements
from pixels_sql.scripts import (
    ScriptError,
    escape_string,
    iter_sql,
    load_scripts,
    returns_rows,
    script_files,
    skip_reason,
    split_statements,
    substitute,
    view_replacement,
)


def test_split_respects_quotes_and_comments() -> None:
    text = "SELECT ';' AS a; -- one; two\nSELECT 2;\n\n/* x; */ SELECT 3"
    statements = split_statements(text, "t.sql")
    assert [s.sql for s in statements] == [
        "SELECT ';' AS a",
        "-- one; two\nSELECT 2",
        "/* x; */ SELECT 3",
    ]
    assert [s.line for s in statements] == [1, 2, 4]


def test_substitution_with_defaults_and_missing_parameter() -> None:
    assert substitute("'${path}' ${db:-pixels}", {"path": "/d"}, "x.sql") == "'/d' `pixels`"
    assert substitute("${db:-pixels}", {"db": "other"}, "x.sql") == "`other`"
    assert substitute("LIMIT ${n:-256}", {}, "x.sql") == "LIMIT 256"
    with pytest.raises(ScriptError, match=r"^x\.sql:2: parameter \$\{path\} is not set"):
        substitute("SELECT 1;\nSELECT '${path}'", {}, "x.sql")


def test_parse_error_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "01_ok.sql").write_text("SELECT 1;\n")
    (tmp_path / "02_bad.sql").write_text(
        "SELECT 1;\n\n-- the broken one\nSELECT a\nFROM t WHERE (;\n"
    )
    with pytest.raises(ScriptError) as error:
        load_scripts([tmp_path], {})
    assert error.value.location == f"{tmp_path / '02_bad.sql'}:5:14"  # line:column


def test_folders_run_in_name_order(tmp_path: Path) -> None:
    for name in ("20_b.sql", "10_a.sql", "notes.txt"):
        (tmp_path / name).write_text("SELECT 1;")
    assert [p.name for p in script_files([tmp_path])] == ["10_a.sql", "20_b.sql"]
    with pytest.raises(ScriptError, match="no such script"):
        script_files([tmp_path / "missing.sql"])


@pytest.mark.parametrize("dialect", ["spark", "databricks"])
def test_pipeline_scripts_parse_in_both_dialects(dialect: str) -> None:
    statements = load_scripts([PIPELINE_DIR], {"path": "/data/dicom"}, check=False)
    assert len(statements) >= 10
    for statement in statements:
        parsed = sqlglot.parse_one(statement.sql, read=dialect)
        assert parsed is not None, statement.location


HOSTILE_VALUES = [
    "O'Brien scans",
    "/data/${x}/${env:HOME}/scans [1]",
    'a "quoted" \\ back\\slash',
    "/data/x'; DROP TABLE pixels.object_thumbnails; --",
    "Müller/検査/ünïcode\n2nd line",
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_a_value_in_a_string_literal_stays_one_literal(value: str) -> None:
    """Spark and sqlglot read back exactly the value: one literal, nothing else."""
    (statement,) = iter_sql("SELECT '${path}' AS p", {"path": value})
    parsed = sqlglot.parse_one(statement.sql, read="spark")
    assert [e.alias for e in parsed.expressions] == ["p"]
    assert parsed.expressions[0].this.this == value
    assert escape_string(value).count("'") == escape_string(value).count("\\'")


def test_values_in_double_quotes_and_back_quotes_are_escaped_too() -> None:
    text = 'SELECT "${a}" AS `${b}`'
    out = substitute(text, {"a": 'x"y', "b": "c`d"}, "x.sql")
    assert out == 'SELECT "x\\"y" AS `c``d`'


@pytest.mark.parametrize(
    "value", ["pixels; DROP TABLE IF EXISTS pixels.object_thumbnails", "a b", "x`y", "1; --"]
)
def test_a_value_outside_quotes_must_be_a_name_or_a_number(value: str) -> None:
    with pytest.raises(ScriptError, match=r"^x\.sql:2: parameter database="):
        substitute("SELECT 1;\nUSE ${database:-pixels};", {"database": value}, "x.sql")


def test_parameters_in_comments_are_left_alone() -> None:
    text = "-- reads ${path} (required)\nSELECT 1 /* ${nothing} */"
    assert substitute(text, {}, "x.sql") == text


def test_unknown_parameter_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ScriptError) as error:
        load_scripts([PIPELINE_DIR], {"pathh": "/x"})
    assert "unknown parameter pathh" in str(error.value)
    assert "path" in error.value.message.split("takes:")[1]
    with pytest.raises(ScriptError, match="unknown parameter"):
        list(iter_sql("SELECT 1", {"x": "1"}))


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("SELECT 1;\nSELECT 'open\nFROM t;", 2),
        ('SELECT 1;\n\n\nSELECT "x', 4),
        ("SELECT 1 /* never closed\n;", 1),
        ("SELECT `a\n\n", 1),
    ],
)
def test_unterminated_quotes_carry_their_line(tmp_path: Path, text: str, line: int) -> None:
    script = tmp_path / "user.sql"
    script.write_text(text)
    with pytest.raises(ScriptError) as error:
        load_scripts([script], {})
    assert error.value.location == f"{script}:{line}"
    assert "unterminated" in error.value.message


def test_skip_comment_names_a_count_that_was_zero() -> None:
    (statement,) = split_statements(
        "-- pixels-sql: skip if files_to_read = 0\nINSERT INTO t SELECT 1", "x.sql"
    )
    assert skip_reason(statement, {"files_to_read": 0}) == "files_to_read = 0"
    assert skip_reason(statement, {"files_to_read": 3}) is None
    assert skip_reason(statement, {}) is None  # not counted in this run: it runs
    (quoted,) = split_statements("SELECT '-- pixels-sql: skip if n = 0'", "x.sql")
    assert skip_reason(quoted, {"n": 0}) is None


def test_pipeline_skips_only_on_counts_it_selected_before() -> None:
    """Each skip comment of the pipeline names a column of a query earlier in the pipeline (a
    misspelt name would never skip anything)."""
    statements = load_scripts([PIPELINE_DIR], {"path": "/data"})
    selected: set[str] = set()
    skipping = 0
    for statement in statements:
        names = set(re.findall(r"-- pixels-sql: skip if (\w+) = 0", statement.sql))
        assert names <= selected, (statement.location, names)
        skipping += bool(names)
        if returns_rows(statement.sql):  # as the runner tells a query (comments before it)
            selected |= set(re.findall(r"\bAS (\w+)", statement.sql))
    assert skipping == 10  # 20_meta 1, 30_deleted 1, 40_thumbnails 2, 50_header 6


def test_queries_return_rows_and_commands_do_not() -> None:
    assert returns_rows("-- counts\n(SELECT 1)")
    assert returns_rows("WITH a AS (SELECT 1) SELECT * FROM a")
    assert not returns_rows("INSERT INTO t SELECT 1")
    assert not returns_rows("-- SELECT in a comment\nCREATE TABLE t (a INT)")


def test_the_runner_skips_counts_logs_and_names_a_failed_statement(spark) -> None:
    statements = list(
        iter_sql(
            "SELECT 0 AS files_to_read;\n"
            "-- pixels-sql: skip if files_to_read = 0\nSELECT 1 AS never;\n"
            "SELECT 3 AS images_to_render, 'x' AS label;\n"
            "SELECT * FROM no_such_table_of_the_runner_test",
            {},
            "runner.sql",
        )
    )
    log = io.StringIO()
    seen = []
    with pytest.raises(Exception, match="no_such_table") as raised:
        run_statements(
            spark,
            statements,
            on_rows=lambda statement, columns, rows: seen.append((columns, rows)) or None,
            log=log,
        )
    assert failed_statement(raised.value) == statements[-1].location
    lines = log.getvalue().splitlines()
    assert lines[1] == f"{statements[1].location}: skipped (files_to_read = 0)"
    assert [columns for columns, _ in seen] == [["files_to_read"], ["images_to_render", "label"]]
    assert [tuple(rows[0]) for _, rows in seen] == [(0,), (3, "x")]
    assert len(lines) == 3 and lines[2].startswith(f"{statements[2].location}: ok (")


def test_only_the_plain_view_replacement_is_recognised() -> None:
    query = "SELECT a,\n  -- a comment in the query stays\n  b FROM t"
    assert view_replacement(f"-- the view\n\nCREATE OR REPLACE VIEW v AS {query}") == (
        ("v",),
        query,
    )
    assert view_replacement("create or replace view db.`a``b.c` as select 1") == (
        ("db", "a`b.c"),
        "select 1",
    )
    assert view_replacement("CREATE OR REPLACE VIEW c.d.v\nAS\nSELECT 1") == (
        ("c", "d", "v"),
        "SELECT 1",
    )
    for other in (
        "CREATE VIEW v AS SELECT 1",
        "CREATE OR REPLACE TEMPORARY VIEW v AS SELECT 1",
        "CREATE OR REPLACE VIEW v (a) AS SELECT 1",
        "CREATE OR REPLACE VIEW v COMMENT 'c' AS SELECT 1",
        "CREATE OR REPLACE VIEW v WITH SCHEMA BINDING AS SELECT 1",
        "SELECT 'CREATE OR REPLACE VIEW v AS SELECT 1'",
    ):
        assert view_replacement(other) is None, other


def test_the_runner_replaces_a_view_that_readers_never_find_missing(spark) -> None:
    # Spark's own CREATE OR REPLACE VIEW drops the view and creates it again: a reader in
    # another session finds no view in between (TABLE_OR_VIEW_NOT_FOUND).
    spark.sql("CREATE DATABASE IF NOT EXISTS runner_views")
    spark.sql("CREATE OR REPLACE TEMPORARY VIEW replaced AS SELECT 'temporary' AS kind")
    spark.sql("CREATE TABLE IF NOT EXISTS runner_views.base USING parquet AS SELECT 1 AS a")
    reader = spark.newSession()
    current = spark.catalog.currentDatabase()
    spark.catalog.setCurrentDatabase("runner_views")
    try:
        run_statements(spark, iter_sql("CREATE OR REPLACE VIEW replaced AS SELECT a FROM base", {}))
        spark.sql("ALTER VIEW runner_views.replaced SET TBLPROPERTIES ('kept' = 'yes')")
        done = threading.Event()
        missing: list[str] = []
        reads = 0

        def read() -> None:
            nonlocal reads
            while not done.is_set():
                try:
                    reader.sql("SELECT * FROM runner_views.replaced").collect()
                    reads += 1
                except Exception as exc:  # what a reader of a dropped view gets
                    missing.append(str(exc)[:200])

        thread = threading.Thread(target=read)
        thread.start()
        try:
            for round_ in range(20):
                run_statements(
                    spark,
                    iter_sql(
                        f"-- round {round_}\n"
                        f"CREATE OR REPLACE VIEW replaced AS SELECT a, {round_} AS round FROM base",
                        {},
                    ),
                )
        finally:
            done.set()
            thread.join()
        assert reads > 0 and missing == [], missing
        view = reader.sql("SELECT * FROM runner_views.replaced").collect()
        assert [tuple(row) for row in view] == [(1, 19)]  # the new columns, read elsewhere
        properties = spark.sql("SHOW TBLPROPERTIES runner_views.replaced").collect()
        assert ("kept", "yes") in [tuple(row) for row in properties]  # changed, not re-made
        temporary = spark.sql("SELECT * FROM replaced").collect()
        assert [tuple(row) for row in temporary] == [("temporary",)]  # left alone
    finally:
        spark.catalog.setCurrentDatabase(current)
        spark.catalog.dropTempView("replaced")
        spark.sql("DROP DATABASE IF EXISTS runner_views CASCADE")
