"""The one statement runner: every command, the ingest, the stream, the dbx.pixels API and
:func:`pixels_sql.run_pipeline` run their statements through :func:`run_statements`.

It runs statements in order on a session, skips a statement whose ``-- pixels-sql: skip if``
condition holds on the counts selected so far (scripts.py), tells the progress display which
statement runs and how many files the next one reads, writes one line a statement to ``log``
(``10_catalog.sql:3: ok (0.4s)``, ``... : skipped (files_to_read = 0)``, or the line a caller
makes of the statement's rows), and names a failed statement in a note on its exception (the
exception itself is unchanged; :func:`failed_statement` reads the note back). A plain
``CREATE OR REPLACE VIEW`` of a view that exists runs as ``ALTER VIEW ... AS``, so readers in
other sessions never find the view missing while it is replaced (:func:`_in_place`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TextIO

from pixels_sql.scripts import (
    Statement,
    keep_values_as_written,
    returns_rows,
    skip_counts,
    skip_reason,
    view_replacement,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from pixels_sql.progress import Progress

# How a failed statement's exception names it (an exception note: the exception is unchanged).
STATEMENT_NOTE = "pixels-sql statement: "
# Counts of the pipeline that say how many items the statements that name them in a
# `-- pixels-sql: skip if <count> = 0` comment write, one row each: the progress line's
# "<written>/<count> <unit>".
EXPECTED: dict[str, str] = {
    "files_to_read": "files",
    "images_to_render": "images",
    "header_rows": "headers",
}

# Called with a query's statement, columns and rows (at most ``rows + 1`` of them, or all);
# returns the statement's log line, or None for the usual "ok (<seconds>s)".
RowsHandler = Callable[[Statement, list[str], list[Any]], "str | None"]


def run_statements(
    spark: SparkSession,
    statements: Iterable[Statement],
    *,
    rows: int | None = 1,
    on_rows: RowsHandler | None = None,
    progress: Progress | None = None,
    log: TextIO | None = None,
) -> dict[str, Any]:
    """Run ``statements`` in order, stopping at the first failure; return the counts: the
    first row of every query, by column name (later queries' columns win). A query's rows are
    fetched up to ``rows + 1`` (so a caller can tell they were cut), every one when ``rows`` is
    None."""
    keep_values_as_written(spark)
    counts: dict[str, Any] = {}
    for statement in statements:
        skipped = skip_reason(statement, counts)
        if skipped is not None:
            _say(log, f"{statement.location}: skipped ({skipped})")
            continue
        if progress is not None:
            progress.statement(statement.location, *_expected(statement, counts))
        began = time.monotonic()
        try:
            frame = spark.sql(_in_place(spark, statement.sql))
            fetched = None
            if returns_rows(statement.sql):
                fetched = frame.collect() if rows is None else frame.take(rows + 1)
            columns = frame.columns if fetched is not None else []
        except Exception as exc:
            exc.add_note(f"{STATEMENT_NOTE}{statement.location}")
            raise
        line = None
        if fetched is not None:
            if fetched:
                first = dict(zip(columns, fetched[0], strict=True))
                counts.update(first)
            if on_rows is not None:
                line = on_rows(statement, columns, fetched)
        _say(log, f"{statement.location}: {line or f'ok ({time.monotonic() - began:.1f}s)'}")
    return counts


def _in_place(spark: SparkSession, sql: str) -> str:
    """``sql``, or for a plain ``CREATE OR REPLACE VIEW`` of a persistent view that exists, the
    ``ALTER VIEW ... AS`` that changes it in place. Spark replaces a view by dropping it and
    creating it again (CreateViewCommand), so a query of another session in between (a BI
    tool over JDBC, the DICOMweb index) finds no view; ALTER VIEW (AlterViewAsCommand) changes
    it in one metastore call. The name is qualified: unqualified, ALTER VIEW would change a
    temporary view of that name, which CREATE VIEW never touches."""
    replacement = view_replacement(sql)
    if replacement is None:
        return sql
    parts, query = replacement
    if len(parts) == 1:
        parts = (spark.catalog.currentDatabase(), *parts)
    name = ".".join(f"`{part.replace('`', '``')}`" for part in parts)
    try:
        existing = spark.catalog.getTable(name)
    except Exception:  # none (AnalysisException), or a catalog that cannot tell
        return sql
    if existing.tableType != "VIEW" or existing.isTemporary:
        return sql
    return f"ALTER VIEW {name} AS {query}"


def _expected(statement: Statement, counts: dict[str, Any]) -> tuple[int | None, str]:
    """How many items ``statement`` works through and what they are, from the count its skip
    comment names (:data:`EXPECTED`); (None, "") for a statement that names none."""
    for name in skip_counts(statement):
        if name in EXPECTED and counts.get(name) is not None:
            return int(counts[name]), EXPECTED[name]
    return None, ""


def failed_statement(exc: BaseException) -> str | None:
    """Where the statement that raised ``exc`` is (``file.sql:line``), if a runner ran it."""
    for note in getattr(exc, "__notes__", ()):
        if note.startswith(STATEMENT_NOTE):
            return note.removeprefix(STATEMENT_NOTE)
    return None


def _say(log: TextIO | None, line: str) -> None:
    if log is not None:
        print(line, file=log, flush=True)
