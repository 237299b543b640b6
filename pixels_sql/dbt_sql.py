"""The dbt project's SQL, generated from the pipeline's: one statement text for both.

The dbt models (dbt/models) build the tables and views of the ``sql/`` pipeline through a
``pixels-sql serve``. So that the two cannot drift, the models do not restate the pipeline's
queries: they call macros of ``dbt/macros/pipeline.sql``, which this module writes from the
statements of ``sql/*.sql`` (the listing and its change column, the header read, the deleted
files, the thumbnails, the views). What differs is only what dbt names differently:

- ``${param}`` becomes ``{{ pixels_param(p, "param", "default") }}`` (dbt/macros/pixels.sql),
  which escapes the value as scripts.substitute() does; in a comment it becomes ``<param>``;
- the pipeline's tables ``object_catalog`` / ``object_thumbnails`` (and the view
  ``instance_copies``, which ``instance_conflicts`` reads) become the relations the model
  passes (``{{ this }}``, a ``ref``, or an empty relation of the same columns on a model's
  first run), and the temporary views a script creates become CTEs of the same name;
- the session variable ``pixels_meta_json_version`` becomes the number it is declared with.

The ``accepted_values`` lists of dbt/models/schema.yml are generated here too: the Modality
Defined Terms (``dicom.defined_terms``) and the reason codes (``errors.REASONS``).

``python -m pixels_sql.dbt_sql --write`` rewrites the generated files; ``--check`` (and
tests/test_dbt_sql.py) fails when one differs from what the sources give.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pixels_sql.dicom.defined_terms import modality_values
from pixels_sql.errors import REASONS
from pixels_sql.functions import header
from pixels_sql.scripts import (
    CODE,
    COMMENT,
    IDENTIFIER,
    STRING,
    Statement,
    contexts,
    split_statements,
    without_leading_comments,
)

ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = ROOT / "sql"
DBT_DIR = ROOT / "dbt"
MACROS_FILE = DBT_DIR / "macros" / "pipeline.sql"
SCHEMA_FILE = DBT_DIR / "models" / "schema.yml"

# ${name} or ${name:-default}, as scripts._PARAM.
_PARAM = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# The pipeline's tables (and the view another view reads), as the macros' arguments that stand
# for them.
TABLES = {
    "object_catalog": "catalog",
    "object_thumbnails": "thumbnails",
    "object_header": "header",
    "instance_copies": "copies",
}
VERSION_VARIABLE = "pixels_meta_json_version"


class GenerationError(Exception):
    """The pipeline's scripts do not have the statement shapes the dbt macros are made of."""


@dataclass(frozen=True)
class Part:
    """One macro: the query of one statement of ``script``, found by ``pattern`` (matched
    against the statement without its leading comments; group ``query`` is the macro body)."""

    macro: str
    script: str
    pattern: str
    what: str
    # (text, replacement) pairs applied to the query, each text found exactly once.
    rewrites: tuple[tuple[str, str], ...] = ()


_VIEW = r"CREATE OR REPLACE (?:TEMPORARY )?VIEW {name} AS\s+(?P<query>.*)"
# 20_meta.sql's read as dbt's instances model makes it: the DICOM JSON and the reason only. The
# pipeline's read makes each header's typed row in the same walk for 50_header.sql; dbt's header
# model types every header from the JSON the catalog stores (EMPTY_READS, below), so there the
# typed row would be made, carried and dropped.
JSON_ONLY_READ = (
    ("dicom_header_result(", "dicom_meta_result("),
    (
        " AS result,\n"
        "  header.typed AS typed, header.skeleton AS skeleton, header.skeleton_id AS skeleton_id\n",
        " AS result\n",
    ),
)
# The statements' patterns that are no view (_VIEW finds those).
_LISTING = r"CREATE TABLE IDENTIFIER\(pixels_listing_table\) AS\s+(?P<query>.*)"
_READ = r"CACHE LAZY TABLE pixels_read AS\s+(?P<query>.*)"
_CATALOG_ROWS = r"INSERT INTO object_catalog\s+(?P<query>SELECT.*)"
_TOMBSTONES = r"INSERT INTO object_thumbnails\s+(?P<query>SELECT(?:(?!dicom_thumbnail_result).)*)"
_THUMBNAILS = r"INSERT INTO object_thumbnails\s+(?P<query>SELECT.*dicom_thumbnail_result.*)"
# 90_views.sql's views: the analysts' (docs/tables.md).
_PUBLIC_VIEWS = [
    "object_errors",
    "series_catalog",
    "study_catalog",
    "instance_copies",
    "instance_conflicts",
]


def _views(script: str, views: dict[str, str]) -> list[Part]:
    """A part for each view of ``script`` (name: what it is); its macro is pipeline_ and the
    view's name without its pixels_ prefix."""
    return [
        Part("pipeline_" + view.removeprefix("pixels_"), script, _VIEW.format(name=view), what)
        for view, what in views.items()
    ]


PARTS = [
    *_views("10_catalog.sql", {"pixels_listed": "the listing"}),
    Part("pipeline_listing", "10_catalog.sql", _LISTING, "the listing compared with the catalog"),
    Part("pipeline_read", "20_meta.sql", _READ, "each file to read, read once", JSON_ONLY_READ),
    Part("pipeline_meta", "20_meta.sql", _CATALOG_ROWS, "the catalog rows of the files to read"),
    *_views(
        "30_deleted.sql",
        {
            "pixels_deleted_paths": "catalogued files the listing no longer has",
            "pixels_deleted_files": "their rows again, with deleted_at",
        },
    ),
    *_views(
        "40_thumbnails.sql",
        {
            "pixels_current_files": "each path's newest catalog row",
            "pixels_current_thumbnails": "each path's live thumbnail",
            "pixels_new_images": "images without a current thumbnail",
            "pixels_deleted_thumbnails": "live thumbnails whose file is gone or no longer reads",
        },
    ),
    Part("pipeline_thumbnail_tombstones", "40_thumbnails.sql", _TOMBSTONES, "their rows again"),
    Part("pipeline_thumbnails", "40_thumbnails.sql", _THUMBNAILS, "a thumbnail or its reason"),
    *_views("50_header.sql", {"header_issues": "view"}),
    *_views("90_views.sql", dict.fromkeys(_PUBLIC_VIEWS, "view")),
]
# Scripts that a model runs whole, statement after statement in one session (materialization
# pixels_script, dbt/macros/pixels.sql): one that creates its table, alters it and fills it
# (the typed header table gains a column per new attribute). Its persistent views are models of
# their own (PARTS), left out here.
WHOLE_SCRIPTS = {"pipeline_header_statements": "50_header.sql"}
# The reads 20_meta.sql keeps for the run (pixels_read), which 50_header.sql takes the typed rows
# of, are not in the session of the dbt model that runs 50_header.sql (the header model runs
# after instances, in a session of its own): there, an empty relation of the same columns
# stands for them, and every header is typed from the one the catalog stores.
# 50_header.sql's working table is named in the session's current database, which is the
# pipeline's for a run; a dbt model's session may have any. The header model names it in its own
# schema, with a prefix no pipeline run drops as a killed run's (tables._WORKING_TABLE).
RUN_TODO_NAME = "concat('pixels_header_todo_', "
MODEL_TODO_NAME = "concat('{{ header.schema }}.dbt_header_todo_', "
# The columns of pixels_read that 50_header.sql reads.
EMPTY_READS = (
    "CREATE OR REPLACE TEMPORARY VIEW pixels_read AS\n"
    "SELECT CAST(NULL AS STRING) AS path, {typed_columns}\n"
    "WHERE false\n"
).format(
    typed_columns=", ".join(
        f"CAST(NULL AS {header.RESULT_FIELDS[name].upper()}) AS {name}"
        for name in ("typed", "skeleton", "skeleton_id")
    )
)
# The scripts the dbt models are made of (besides 00_database.sql: dbt builds in its own schema).
SCRIPTS = sorted({part.script for part in PARTS} | set(WHOLE_SCRIPTS.values()))
# Empty relations with the columns of the pipeline's tables: what a model reads as its own
# table on its first run, before dbt created it.
EMPTY_TABLES = {
    "pipeline_empty_catalog": "object_catalog",
    "pipeline_empty_thumbnails": "object_thumbnails",
}

_FOREIGN_MARKER = re.compile(r"^[ \t]*-- (?:BEGIN|END) generated by [^\n]*\n", re.M)
_CREATE_TABLE = re.compile(
    r"CREATE TABLE IF NOT EXISTS (?P<name>\w+) \((?P<columns>.*)\)\s*PARTITIONED BY", re.S
)
_DECLARE_VERSION = re.compile(
    rf"DECLARE OR REPLACE VARIABLE {VERSION_VARIABLE} INT DEFAULT (?P<value>\d+)"
)


def rewritten(text: str, rewrites: Iterable[tuple[str, str]], where: str) -> str:
    """``text`` with each (old, new) of ``rewrites`` applied in turn; each old text must stand
    exactly once, or the statement has changed under the rewrite (GenerationError)."""
    for old, new in rewrites:
        if text.count(old) != 1:
            raise GenerationError(f"{where}: no single {old!r} to rewrite")
        text = text.replace(old, new)
    return text


def _statements(sql_dir: Path) -> dict[str, list[Statement]]:
    return {
        path.name: split_statements(path.read_text(encoding="utf-8"), f"sql/{path.name}")
        for path in sorted(sql_dir.glob("*.sql"))
    }


def _body(statement: Statement) -> tuple[str, int]:
    """A statement without its leading comments, and the line it starts on."""
    return without_leading_comments(statement.sql), statement.line


def _find(scripts: dict[str, list[Statement]], part: Part) -> tuple[str, int]:
    found = []
    for statement in scripts.get(part.script, []):
        body, line = _body(statement)
        match = re.fullmatch(part.pattern, body, re.S)
        if match:
            start = body[: match.start("query")].count("\n")
            found.append((match.group("query"), line + start))
    if len(found) != 1:
        raise GenerationError(
            f"sql/{part.script}: {len(found)} statements match {part.pattern!r}"
            f" ({part.macro}: {part.what}); the dbt macros need exactly one"
        )
    return found[0]


def _translate(query: str, source: str, version: str) -> str:
    """The query as the body of a dbt macro (module docstring)."""
    if any(mark in query for mark in ("{{", "{%", "{#", "}}", "%}", "#}")):
        raise GenerationError(f"{source}: the statement holds Jinja delimiters")
    # Region markers of other generators (pixels_sql.dicom.attributes writes the columns inside
    # them in sql/): here the region is part of a generated file, not theirs to rewrite.
    query = _FOREIGN_MARKER.sub("", query)
    pieces = []
    for start, end, kind in contexts(query, source):
        text = query[start:end]
        if kind == COMMENT:
            pieces.append(_PARAM.sub(lambda m: f"<{m.group(1)}>", text))
        elif kind == IDENTIFIER:
            if _PARAM.search(text):
                raise GenerationError(f"{source}: a ${{param}} inside a quoted identifier")
            pieces.append(text)
        elif kind == STRING:
            # A table named inside a literal is a statement built with EXECUTE IMMEDIATE.
            pieces.append(_tables(_PARAM.sub(_param(code=False), text)))
        else:
            assert kind == CODE
            text = _tables(_PARAM.sub(_param(code=True), text))
            text = re.sub(rf"\b{VERSION_VARIABLE}\b", version, text)
            pieces.append(text)
    return "".join(pieces)


def _tables(text: str) -> str:
    for table, argument in TABLES.items():
        text = re.sub(rf"\b{table}\b", f"{{{{ {argument} }}}}", text)
    return text


def _param(*, code: bool) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        arguments = [json.dumps(match.group(1))]
        if match.group(2) is not None:
            arguments.append(json.dumps(match.group(2)))
        if code:
            arguments.append("code=true")
        return "{{ pixels_param(p, " + ", ".join(arguments) + ") }}"

    return replace


def _columns(scripts: dict[str, list[Statement]], table: str) -> list[tuple[str, str]]:
    for statement in scripts.get("10_catalog.sql", []):
        body = _without_comments(_body(statement)[0], statement.source)
        match = _CREATE_TABLE.search(body)
        if match and match.group("name") == table:
            columns = []
            for line in match.group("columns").split(","):
                name, kind = line.strip().split(None, 1)
                columns.append((name, kind.strip()))
            return columns
    raise GenerationError(f"sql/10_catalog.sql: no CREATE TABLE IF NOT EXISTS {table}")


def _without_comments(text: str, source: str) -> str:
    return "".join(
        text[start:end] for start, end, kind in contexts(text, source) if kind != COMMENT
    )


def _version(scripts: dict[str, list[Statement]]) -> str:
    for statement in scripts.get("10_catalog.sql", []):
        match = _DECLARE_VERSION.search(_body(statement)[0])
        if match:
            return match.group("value")
    raise GenerationError(f"sql/10_catalog.sql: no DECLARE of {VERSION_VARIABLE}")


MACROS_HEADER = """\
{#-
  GENERATED by `python -m pixels_sql.dbt_sql --write` from the pipeline's scripts (sql/*.sql):
  do not edit here, edit sql/ and generate again (tests/test_dbt_sql.py fails until then).
  Each macro is the query of one pipeline statement: ${param} is pixels_param(p, ...)
  (macros/pixels.sql); the tables object_catalog / object_thumbnails and the view
  instance_copies are the relations passed as catalog / thumbnails / copies; the temporary
  views the scripts create are CTEs of the same name in the models; pixels_meta_json_version
  is the number sql/10_catalog.sql declares.
-#}
"""


def render_macros(sql_dir: Path = SQL_DIR) -> str:
    """The text of dbt/macros/pipeline.sql."""
    scripts = _statements(sql_dir)
    version = _version(scripts)
    blocks = [MACROS_HEADER]
    arguments = ", ".join(f"{argument}=none" for argument in TABLES.values())
    for part in PARTS:
        query, line = _find(scripts, part)
        source = f"sql/{part.script}:{line}"
        query = rewritten(query, part.rewrites, f"{source} ({part.macro})")
        body = _translate(query.rstrip(), source, version)
        blocks.append(
            f"\n{{% macro {part.macro}(p={{}}, {arguments}) -%}}\n"
            f"-- {source}: {part.what}\n"
            f"{body}\n"
            "{%- endmacro %}\n"
        )
    for macro, script in WHOLE_SCRIPTS.items():
        statements = [
            "-- pixels_sql.dbt_sql: no read of sql/20_meta.sql in this session\n" + EMPTY_READS
        ]
        for statement in scripts.get(script, []):
            body, line = _body(statement)
            if re.match(r"CREATE OR REPLACE VIEW ", body):
                continue  # a model of its own
            source = f"sql/{script}:{line}"
            text = _translate(statement.sql, source, version)
            statements.append(f"-- {source}\n{text.replace(RUN_TODO_NAME, MODEL_TODO_NAME)}\n")
        if not statements:
            raise GenerationError(f"sql/{script}: no statement")
        if sum(MODEL_TODO_NAME in text for text in statements) != 1:
            raise GenerationError(f"sql/{script}: no single {RUN_TODO_NAME!r} to name in dbt")
        separator = "{{ pixels_statement_separator() }}\n"
        blocks.append(
            f"\n{{% macro {macro}(p={{}}, {arguments}) -%}}\n"
            + separator.join(statements)
            + "{%- endmacro %}\n"
        )
    for macro, table in EMPTY_TABLES.items():
        columns = ",\n  ".join(
            f"CAST(NULL AS {kind}) AS {name}" for name, kind in _columns(scripts, table)
        )
        blocks.append(
            f"\n{{% macro {macro}() -%}}\n"
            f"-- sql/10_catalog.sql: {table}'s columns, no row\n"
            f"SELECT\n  {columns}\nWHERE false\n"
            "{%- endmacro %}\n"
        )
    return "".join(blocks)


# schema.yml: a generated list follows a marker comment naming it, as
#     # generated by pixels_sql.dbt_sql: modality
#     values: [...]
_MARKER = re.compile(
    r"^(?P<indent>[ ]*)# generated by pixels_sql\.dbt_sql: (?P<name>\w+)\n"
    r"(?P=indent)values: \[[^\]]*\]\n",
    re.M,
)


def accepted_values() -> dict[str, list[str]]:
    """The generated ``accepted_values`` lists of schema.yml, by marker name."""
    return {"modality": modality_values(), "reasons": list(REASONS)}


def render_schema(text: str) -> str:
    """schema.yml's text with its generated lists rewritten."""
    lists = accepted_values()
    seen: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        name, indent = match.group("name"), match.group("indent")
        if name not in lists:
            raise GenerationError(f"schema.yml: unknown generated list {name!r}")
        seen.add(name)
        items = textwrap.wrap(
            ", ".join(lists[name]),
            width=100,
            initial_indent=f"{indent}values: [",
            subsequent_indent=f"{indent}         ",
            break_on_hyphens=False,
        )
        return f"{indent}# generated by pixels_sql.dbt_sql: {name}\n" + "\n".join(items) + "]\n"

    rendered = _MARKER.sub(replace, text)
    missing = sorted(set(lists) - seen)
    if missing:
        raise GenerationError(f"schema.yml: no generated list {', '.join(missing)}")
    return rendered


def generated() -> dict[Path, str]:
    """Each generated file and the text it should have."""
    return {
        MACROS_FILE: render_macros(),
        SCHEMA_FILE: render_schema(SCHEMA_FILE.read_text(encoding="utf-8")),
    }


def stale() -> list[Path]:
    """The generated files whose text differs from what the sources give."""
    return [
        path
        for path, text in generated().items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pixels_sql.dbt_sql", description=__doc__.splitlines()[0]
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite the generated files")
    action.add_argument("--check", action="store_true", help="fail when one is out of date")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale()
        for path in outdated:
            print(f"{path.relative_to(ROOT)}: out of date (python -m pixels_sql.dbt_sql --write)")
        return 1 if outdated else 0
    for path, text in generated().items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
