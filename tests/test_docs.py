"""Every SQL function, command, option and catalog column is documented."""

from __future__ import annotations

import re
from pathlib import Path

from pixels_sql.cli import build_parser
from pixels_sql.errors import REASONS, WARNINGS
from pixels_sql.functions import DICTIONARY_VIEW, FUNCTIONS

DOCS = Path(__file__).parent.parent / "docs"
README = (Path(__file__).parent.parent / "README.md").read_text()
SQL_DOC = (DOCS / "sql-functions.md").read_text()
CLI_DOC = (DOCS / "cli.md").read_text()
TABLES_DOC = (DOCS / "tables.md").read_text()
PIPELINE = Path(__file__).parent.parent / "sql"


def test_every_sql_function_has_a_section_and_a_readme_row() -> None:
    for name in [*FUNCTIONS, DICTIONARY_VIEW, "read_files"]:
        assert f"## `{name}`" in SQL_DOC, name
        assert f"`{name}" in README, name


def test_every_reason_code_is_documented() -> None:
    for reason in REASONS:
        assert f"`{reason}`" in SQL_DOC, reason
    for warning in WARNINGS:
        assert f"| `{warning}` |" in SQL_DOC, warning


def test_every_command_and_option_is_documented() -> None:
    parser = build_parser()
    for name, command in parser._subparsers._group_actions[0].choices.items():
        assert f"## `pixels-sql {name}`" in CLI_DOC, name
        for action in command._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert option in CLI_DOC, (name, option)


def test_every_catalog_column_is_documented() -> None:
    create = (PIPELINE / "10_catalog.sql").read_text()
    body = create[create.index("CREATE TABLE IF NOT EXISTS object_catalog") :]
    body = body[: body.index(");")]
    columns = re.findall(r"^\s+`?(\w+)`?\s+[A-Z]", body, flags=re.MULTILINE)
    assert len(columns) > 25
    for column in columns:
        assert f"| `{column}` |" in TABLES_DOC, column
