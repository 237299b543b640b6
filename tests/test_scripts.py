"""The script runner's pure parts, and the pipeline scripts under both SQL dialects."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlglot

from pixels_sql.cli import PIPELINE_DIR
from pixels_sql.scripts import (
    ScriptError,
    load_scripts,
    script_files,
    split_statements,
    substitute,
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
    assert substitute("'${path}' ${db:-pixels}", {"path": "/d"}, "x.sql") == "'/d' pixels"
    assert substitute("${db:-pixels}", {"db": "other"}, "x.sql") == "other"
    with pytest.raises(ScriptError, match=r"^x\.sql:2: parameter \$\{path\} is not set"):
        substitute("SELECT 1;\nSELECT '${path}'", {}, "x.sql")


def test_parse_error_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "01_ok.sql").write_text("SELECT 1;\n")
    (tmp_path / "02_bad.sql").write_text(
        "SELECT 1;\n\n-- the broken one\nSELECT a\nFROM t WHERE (;\n"
    )
    with pytest.raises(ScriptError) as error:
        load_scripts([tmp_path], {})
    assert error.value.location == f"{tmp_path / '02_bad.sql'}:5"


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
