"""The ``pixels-sql`` command: run SQL scripts and queries on the embedded Spark."""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from pixels_sql.output import FORMATS, render
from pixels_sql.pipeline import DEFAULT_DATABASE, PIPELINE_DIR, summary
from pixels_sql.scripts import (
    ScriptError,
    Statement,
    iter_sql,
    keep_values_as_written,
    load_scripts,
    parse_check,
)
from pixels_sql.session import home_dir

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from pixels_sql.progress import Progress

RESULT_KEYWORDS = (
    "SELECT",
    "WITH",
    "SHOW",
    "DESCRIBE",
    "DESC",
    "EXPLAIN",
    "VALUES",
    "TABLE",
    "FROM",
)


class CliError(Exception):
    """A failure to report in one line (no traceback) with exit status 1."""


def _parse_params(pairs: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CliError(f"--param expects name=value, got {pair!r}")
        params[name.strip()] = value
    if "path" in params:
        params["path"] = _normalise_dir(params["path"])
    return params


def _normalise_dir(path: str) -> str:
    """Local folders become absolute without a trailing slash (scripts compare prefixes)."""
    if "://" in path or path.startswith(("file:", "dbfs:")):
        return path.rstrip("/")
    return os.path.abspath(os.path.expanduser(path)).rstrip("/") or "/"


class HomeLock:
    """One process per home folder: Derby's embedded metastore admits a single JVM."""

    def __init__(self, home: Path) -> None:
        self.path = home / ".pixels-sql.lock"
        self._handle: TextIO | None = None

    def __enter__(self) -> HomeLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # held for the process lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise CliError(
                f"{self.path.parent} is in use by {holder}: its embedded Derby metastore admits"
                " one process at a time. Wait for it to finish, or use another --home."
            ) from None
        handle.seek(0)
        previous = handle.read().strip()
        if previous:
            # A holder that exits clears the file: text left in it is from a killed process
            # (the kernel released its lock when it died).
            print(
                f"pixels-sql: taking over {self.path.parent} from {previous}, which ended"
                " without releasing it",
                file=sys.stderr,
            )
        handle.seek(0)
        handle.truncate()
        handle.write(f"pixels-sql pid {os.getpid()}")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()
            self._handle.close()


def _quiet_pyspark_logs() -> None:
    # PySpark logs every caught SQL error as JSON on stderr; the CLI prints its own message.
    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        logging.getLogger(name).disabled = True


def _spark(args: argparse.Namespace) -> SparkSession:
    from pixels_sql.session import session

    return session(args.home, master=args.master, ui=args.ui)


def _returns_rows(sql: str) -> bool:
    code = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    first = " ".join(code).lstrip("( ").split(None, 1)
    return bool(first) and first[0].upper() in RESULT_KEYWORDS


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = text.splitlines()
    # Python worker failures carry a traceback: its last line names the file and the reason.
    if "Traceback (most recent call last)" in text:
        tail = [line for line in lines if line.strip() and not line.startswith((" ", "\t"))]
        return tail[-1] if tail else lines[-1]
    return "\n".join(lines[:8])


def execute(
    spark: SparkSession,
    statements: Sequence[Statement],
    *,
    out: TextIO = sys.stdout,
    fmt: str = "table",
    limit: int = 50,
    width: int = 60,
    progress: Progress | None = None,
) -> None:
    """Run statements in order, printing the rows of queries; stop at the first failure."""
    keep_values_as_written(spark)
    for statement in statements:
        started = time.monotonic()
        if progress is not None:
            progress.statement(statement.location)
        try:
            frame = spark.sql(statement.sql)
            if _returns_rows(statement.sql):
                rows = frame.take(limit + 1)
                columns = frame.columns
                if progress is not None and columns == ["files_to_read"] and rows:
                    progress.expected_files = int(rows[0][0])
                out.write(render(columns, [tuple(r) for r in rows[:limit]], fmt, width) + "\n")
                if len(rows) > limit:
                    out.write(f"(first {limit} rows; use --limit for more)\n")
        except Exception as exc:
            raise CliError(f"{statement.location}: {_error_text(exc)}") from exc
        if progress is not None:
            elapsed = time.monotonic() - started
            print(f"{statement.location}: ok ({elapsed:.1f}s)", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    params = _parse_params(args.param)
    statements = load_scripts(args.scripts, params, check=not args.no_parse_check)
    return _run_statements(args, statements, params.get("database", DEFAULT_DATABASE))


def _run_statements(args: argparse.Namespace, statements: list[Statement], database: str) -> int:
    from pixels_sql.progress import Progress
    from pixels_sql.tables import TableLayoutError, exact_tables

    with HomeLock(home_dir(args.home)):
        spark = _spark(args)
        try:
            with exact_tables(spark, database), Progress(spark.sparkContext) as progress:
                execute(spark, statements, progress=progress, limit=args.limit)
        except TableLayoutError as exc:
            raise CliError(str(exc)) from None
        print(summary(spark, database))
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    params = _parse_params(args.param)
    statements = list(iter_sql(args.query, params))
    if not args.no_parse_check:
        for statement in statements:
            parse_check(statement)
    with HomeLock(home_dir(args.home)):
        spark = _spark(args)
        if args.database:
            spark.catalog.setCurrentDatabase(args.database)
        elif spark.catalog.databaseExists(DEFAULT_DATABASE):
            spark.catalog.setCurrentDatabase(DEFAULT_DATABASE)
        execute(spark, statements, fmt=args.format, limit=args.limit, width=args.width)
    return 0


def cmd_gallery(args: argparse.Namespace) -> int:
    from pixels_sql.gallery import GALLERY_SQL, render_gallery

    database = args.database or DEFAULT_DATABASE
    output = Path(args.output).resolve()
    with HomeLock(home_dir(args.home)):
        spark = _spark(args)
        if not spark.catalog.tableExists(f"{database}.object_thumbnails"):
            raise CliError(
                f"no {database}.object_thumbnails table: run the pipeline first"
                " (pixels-sql run sql --param path=<folder>)"
            )
        query = GALLERY_SQL.format(database=f"`{database}`", limit=int(args.gallery_limit))
        rows = [row.asDict() for row in spark.sql(query).collect()]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_gallery(rows, title=f"pixels-sql · {database}"), encoding="utf-8")
    print(f"gallery: {output} ({len(rows)} images)")
    return 0


def sample_data_dirs() -> dict[str, Path]:
    """The bundled real sample files: pydicom's test files and the pydicom-data package."""
    import pydicom

    dirs = {"pydicom": Path(pydicom.__file__).parent / "data" / "test_files"}
    try:
        import data_store  # the pydicom-data distribution
    except ImportError:
        pass
    else:
        dirs["pydicom-data"] = Path(data_store.__file__).parent / "data"
    return dirs


def cmd_demo(args: argparse.Namespace) -> int:
    home = home_dir(args.home)
    samples = home / "samples"
    for name, source in sample_data_dirs().items():
        target = samples / name
        if not target.exists():
            shutil.copytree(source, target)
    print(f"sample data: {samples} ({sum(1 for p in samples.rglob('*') if p.is_file())} files)")
    params = {"path": str(samples), "database": args.database or DEFAULT_DATABASE}
    statements = load_scripts([PIPELINE_DIR], params)
    args.home = str(home)
    return _run_statements(args, statements, params["database"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixels-sql", description="DICOM folders as Spark SQL tables."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        help="folder for the metastore, warehouse and scratch space"
        " (default: $PIXELS_SQL_HOME or ./pixels-home)",
    )
    common.add_argument("--master", default="local[*]", help="Spark master (default: local[*])")
    common.add_argument("--ui", action="store_true", help="start the Spark UI on 127.0.0.1")
    common.add_argument("--limit", type=int, default=50, help="rows to print per query")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[common], help="run SQL scripts (files or folders)")
    run.add_argument("scripts", nargs="+", help=".sql files or folders of them (name order)")
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("--no-parse-check", action="store_true", help="skip the sqlglot check")
    run.set_defaults(handler=cmd_run)

    sql = sub.add_parser("sql", parents=[common], help="run one query and print its rows")
    sql.add_argument("query")
    sql.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    sql.add_argument("--database", help=f"current database (default: {DEFAULT_DATABASE})")
    sql.add_argument("--format", choices=FORMATS, default="table")
    sql.add_argument("--width", type=int, default=60, help="cut table cells at this many chars")
    sql.add_argument("--no-parse-check", action="store_true", help="skip the sqlglot check")
    sql.set_defaults(handler=cmd_sql)

    gallery = sub.add_parser(
        "gallery", parents=[common], help="write a static HTML contact sheet of the thumbnails"
    )
    gallery.add_argument("--database", help=f"database to read (default: {DEFAULT_DATABASE})")
    gallery.add_argument(
        "--output", default="gallery.html", help="HTML file to write (default: gallery.html)"
    )
    gallery.add_argument(
        "--max-images",
        dest="gallery_limit",
        type=int,
        default=5000,
        help="at most this many images, in study/series/instance order (default: 5000)",
    )
    gallery.set_defaults(handler=cmd_gallery)

    demo = sub.add_parser(
        "demo", parents=[common], help="run the pipeline on the bundled sample DICOM files"
    )
    demo.add_argument("--database", help=f"database to create (default: {DEFAULT_DATABASE})")
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_pyspark_logs()
    try:
        return args.handler(args)
    except (CliError, ScriptError) as exc:
        print(f"pixels-sql: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
