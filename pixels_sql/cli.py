"""The ``pixels-sql`` command: run SQL scripts and queries on the embedded Spark."""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import re
import shutil
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar

from pixels_sql.config import DEFAULT_DATABASE, DEMO_DATABASE, SETTINGS, SettingError
from pixels_sql.home import (
    HomeInUseError,
    HomeLock,
    home_dir,
    is_home,
    process_alive,
    set_process_holder,
)
from pixels_sql.output import FORMATS
from pixels_sql.servers import endpoint as endpoint_defaults

# The heavier modules (pydicom, sqlglot, pyspark behind them) are imported by the commands that
# use them: a command the home's warm engine runs only parses its arguments here (engine.py).
if TYPE_CHECKING:
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    from pixels_sql.progress import Progress
    from pixels_sql.scripts import Statement

Report = TypeVar("Report")
DEFAULT_MASTER = "local[*]"
# The commands the home's warm engine runs (servers/engine.py); `ingest --stream` runs on its own.
ENGINE_COMMANDS = frozenset({"sql", "run", "ingest", "gallery", "deidentify"})

# Arguments that name files or folders: made absolute (URLs kept) before a command goes to the
# engine, whose working folder is not the user's.
_PATH_ARGUMENTS = ("path", "checkpoint", "extract_zip", "output", "to")
# Set by Ctrl-C in a command running its own Spark (_ctrl_c_cancels_jobs).
_INTERRUPTED = threading.Event()
# The engine's SparkSession, in the thread running a command sent to it.
_ENGINE = threading.local()
HOME_VARIABLE = SETTINGS["home"].variable
# Commands that only read a home: they never make one.
READ_ONLY_COMMANDS = frozenset({"sql", "gallery", "viewer-url"})
HOME_MAKING_COMMANDS = frozenset({"ingest", "run", "demo", "serve", "deidentify"})
# The exit status of a command stopped by Ctrl-C (SIGINT), as shells report it: 128 + 2.
INTERRUPTED = 130
# Rows a query prints as a table when --limit is not given (CSV and JSON print them all).
TABLE_ROWS = 50
# How often a client of a server checks that the server's process still runs.
SERVER_WATCH_SECONDS = 1.0


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


def _quiet_pyspark_logs() -> None:
    # PySpark logs every caught SQL error as JSON on stderr; the CLI prints its own message.
    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        logging.getLogger(name).disabled = True


def _spark(args: argparse.Namespace) -> SparkSession:
    from pixels_sql.session import session

    return session(args.home, master=args.master, ui=args.ui)


@contextlib.contextmanager
def _home_session(args: argparse.Namespace) -> Iterator[SparkSession]:
    """The session a command runs in: a Spark Connect client of the ``serve`` that owns the
    home, else the embedded session (holding the home for the command's lifetime).

    Runs that write the pipeline's tables take the home's writer lock themselves
    (``tables.exact_tables``), whichever process they run in: a client of the server waits
    for the server's STOW-RS landing ingest, and the other way round.
    """
    from pixels_sql.servers.discovery import connect_server, running_server

    engine_spark = getattr(_ENGINE, "spark", None)
    if engine_spark is not None:
        # In the engine: a session of its own Spark per command (current database, temp views,
        # settings its own), trusted as the server's own sessions are (docs/security.md).
        session = engine_spark.newSession()
        engine_spark._jvm.pixelssql.ClientGuard.trust(session._jsparkSession)
        yield session
        return
    home = home_dir(args.home)
    server = running_server(home)
    if server is None:
        with HomeLock(home):
            spark = _spark(args)
            with _ctrl_c_cancels_jobs(spark):
                yield spark
        return
    if args.master != DEFAULT_MASTER:
        print(
            f"pixels-sql: --master is ignored: the server of {home} (pid {server.pid}) runs"
            " the queries",
            file=sys.stderr,
        )
    from pixels_sql.servers import engine

    lease = engine.hold(home)  # an engine's: not idle while this command uses it
    with contextlib.ExitStack() as held, _exit_if_server_stops(server.pid, home):
        if lease is not None:
            held.enter_context(lease)
        try:
            spark = connect_server(server)
        except Exception as exc:
            raise CliError(f"cannot reach the server of {home}: {_error_text(exc)}") from exc
        try:
            yield spark
        except Exception:
            # The server's JVM may answer a last error as it stops ("Cannot call methods on a
            # stopped SparkContext"): what the user needs to know is that the server is gone.
            if not process_alive(server.pid):
                raise CliError(_server_stopped(server.pid, home)) from None
            raise
        finally:
            spark.stop()


@contextlib.contextmanager
def _ctrl_c_cancels_jobs(spark: SparkSession) -> Iterator[None]:
    """Ctrl-C (SIGINT) cancels the running Spark jobs from another thread and marks the
    command interrupted; the statement under way then fails and the command ends with one
    line (_run_handler). pyspark's own handler raises KeyboardInterrupt inside a py4j call,
    which logs tracebacks of py4j's connection on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def cancel(*_: object) -> None:
        _INTERRUPTED.set()
        threading.Thread(target=spark.sparkContext.cancelAllJobs, daemon=True).start()

    previous = signal.signal(signal.SIGINT, cancel)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _server_stopped(pid: int, home: Path) -> str:
    return (
        f"the server of {home} (pid {pid}) stopped during the command; run it again (once a"
        " server runs, or none: the command then runs embedded)"
    )


@contextlib.contextmanager
def _exit_if_server_stops(pid: int, home: Path) -> Iterator[None]:
    """End this process with one line as soon as the server (``pid``) is gone. A Spark
    Connect client retries a lost server for minutes (RETRIES_EXCEEDED), and its release calls
    at the end retry again: after a kill -9 of the server it never exited. A run cut short
    leaves nothing its next run does not clean up (tables.prepare), so the line says to run it
    again."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(SERVER_WATCH_SECONDS):
            if not process_alive(pid):
                print(f"pixels-sql: {_server_stopped(pid, home)}", file=sys.stderr, flush=True)
                os._exit(1)

    watcher = threading.Thread(target=watch, name="pixels-sql-server-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()


# OS errors that end an I/O failure, by the C library's text, which Java's messages carry too
# ("java.io.IOException: No space left on device"): the message leads with it, not with
# Spark's wrappers ("An error occurred while calling o74.sql", "Task failed while writing").
_OS_ERRORS = tuple(
    os.strerror(number)
    for number in (
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EIO,
        errno.EFBIG,
        errno.EMFILE,
        errno.ENFILE,
        errno.EACCES,
        errno.ENAMETOOLONG,
        errno.ESTALE,
    )
)


# A line of a Java stack trace ("\tat org.apache...(File.scala:42)", "\t... 12 more").
_JAVA_FRAME = re.compile(r"^\s+(?:at |\.\.\. \d+ more)")
# "org.apache.spark.SparkException: " before a message that names its error class itself.
_JAVA_CLASS_PREFIX = re.compile(r"^(?:[\w$]+\.)+[\w$]+(?:Exception|Error): ")
_PYTHON_WORKER_FAILED = "An exception was thrown from the Python worker:"
_PYTHON_CLASS_PREFIX = re.compile(r"^(?:\w+\.)*\w+(?:Exception|Error): ")


def _os_error(text: str) -> str | None:
    """The OS error in an exception's text and its Java stack (the deepest cause's line):
    ``No space left on device: java.io.IOException``, or None."""
    for line in reversed(text.splitlines()):
        for message in _OS_ERRORS:
            if message in line:
                detail = line.strip().removeprefix("Caused by: ")
                rest = detail.replace(f"({message})", "").replace(message, "").strip(" :();")
                return f"{message}: {rest}" if rest else message
    return None


def _error_text(exc: BaseException) -> str:
    from pixels_sql.runner import failed_statement

    location = failed_statement(exc)
    text = _error_message(exc)
    return f"{location}: {text}" if location else text


def _error_message(exc: BaseException) -> str:
    if _jvm_gone(exc):
        # Spark's JVM exits on an uncaught error (OutOfMemoryError first of all) after logging
        # it; what reaches Python is only a refused connection.
        return (
            f"lost the connection to Spark's JVM ({exc}): it exited, and its own error (e.g."
            " OutOfMemoryError) is in the log above; SPARK_DRIVER_MEMORY sets the embedded"
            " session's heap"
        )
    whole = str(exc)
    # A Spark Connect error may append the server's Java stack trace: the message is enough.
    text = whole.split("JVM stacktrace:", 1)[0].strip()
    lines = text.splitlines()
    os_error = _os_error(whole)
    if os_error is not None:
        # An I/O failure: the OS error first, then the first line of Spark's own message
        # (py4j's "An error occurred while calling ..." is no message).
        said = [line for line in lines if line.strip() and "An error occurred while" not in line]
        if not said:
            return os_error
        spark_said = _JAVA_CLASS_PREFIX.sub("", said[0].strip(": "))
        return f"{os_error} ({spark_said})"
    # A Python worker's failure: its exception's own line (the session hides the traceback:
    # "dicom_meta: <path>: not_found: ..."), without Spark's and Python's class prefixes.
    worker = text.partition(_PYTHON_WORKER_FAILED)[2].strip()
    if worker and "Traceback (most recent call last)" not in worker:
        return _PYTHON_CLASS_PREFIX.sub("", worker.splitlines()[0])
    # With tracebacks shown (spark.sql.execution.pyspark.udf.hideTraceback.enabled false), the
    # traceback's last line names the file and the reason.
    if "Traceback (most recent call last)" in text:
        tail = [line for line in lines if line.strip() and not line.startswith((" ", "\t"))]
        return tail[-1] if tail else lines[-1]
    # Spark's message without the py4j call and the Java stack under it ("\tat org....").
    kept = [
        line
        for line in lines
        if not _JAVA_FRAME.match(line) and "An error occurred while calling" not in line
    ]
    if kept:
        kept[0] = _JAVA_CLASS_PREFIX.sub("", kept[0].lstrip(": "))
    return "\n".join(kept[:8])


def _jvm_gone(exc: BaseException) -> bool:
    """Whether ``exc`` is py4j finding the JVM gone: its network error, or a connection refused
    inside py4j's own code (a Spark Connect client fails otherwise, through gRPC)."""
    from py4j.protocol import Py4JNetworkError

    if isinstance(exc, Py4JNetworkError):
        return True
    return isinstance(exc, ConnectionRefusedError) and any(
        "py4j" in Path(frame.f_code.co_filename).parts
        for frame, _line in traceback.walk_tb(exc.__traceback__)
    )


def execute(
    spark: SparkSession,
    statements: Sequence[Statement],
    *,
    out: TextIO | None = None,
    fmt: str = "table",
    limit: int | None = None,
    width: int = 60,
    progress: Progress | None = None,
    err: TextIO | None = None,
    log: TextIO | None = None,
) -> None:
    """Run statements in order, printing the rows of queries; stop at the first failure.
    ``limit``: rows printed per query; None: :data:`TABLE_ROWS` in a table, every row in the
    machine formats (CSV, JSON lines), whose output must be the whole result. A cut is said on
    ``err``, never in the data."""
    from pixels_sql.output import render
    from pixels_sql.runner import run_statements

    out = out or sys.stdout  # at call time: the engine routes each command's streams
    err = err or sys.stderr
    if limit is None and fmt == "table":
        limit = TABLE_ROWS

    def print_rows(_statement: Statement, columns: list[str], rows: list) -> None:
        shown = rows if limit is None else rows[:limit]
        out.write(render(columns, [tuple(r) for r in shown], fmt, width) + "\n")
        out.flush()
        if limit is not None and len(rows) > limit:
            print(f"pixels-sql: first {limit} rows shown; --limit N shows more", file=err)

    try:
        run_statements(
            spark, statements, rows=limit, on_rows=print_rows, progress=progress, log=log
        )
    except Exception as exc:
        raise CliError(_error_text(exc)) from exc


def _with_viewer_url(args: argparse.Namespace, params: dict[str, str]) -> dict[str, str]:
    """``params`` plus the viewer's address for scripts that take ``viewer_url`` (90_views.sql),
    when a server runs on the home (or PIXELS_SQL_VIEWER_URL is set) and none was given."""
    from pixels_sql.scripts import parameter_names, script_files
    from pixels_sql.servers.viewer import viewer_base

    if "viewer_url" in params:
        return params
    used = set()
    for path in script_files(args.scripts):
        used |= parameter_names(path.read_text(encoding="utf-8"), str(path))
    base = viewer_base(args.home) if "viewer_url" in used else None
    return {**params, "viewer_url": base} if base else params


def _allow_root(args: argparse.Namespace, folder: str) -> None:
    """The home's server lets its admin and read-only clients read the folders the catalog is
    ingested from (docs/security.md): record one."""
    from pixels_sql.servers.secrets import add_root

    add_root(home_dir(args.home), folder)


def cmd_run(args: argparse.Namespace) -> int:
    """run SQL scripts (files or folders)"""
    from pixels_sql.scripts import load_scripts

    params = _with_viewer_url(args, _parse_params(args.param))
    statements = load_scripts(args.scripts, params, check=not args.no_parse_check)
    if "path" in params:
        _allow_root(args, params["path"])
    return _run_statements(args, statements, params.get("database", DEFAULT_DATABASE))


def _run_statements(args: argparse.Namespace, statements: list[Statement], database: str) -> int:
    from pixels_sql.functions import is_connect_client
    from pixels_sql.pipeline import summary
    from pixels_sql.tables import TableLayoutError, exact_tables

    with _home_session(args) as spark:
        context = None if is_connect_client(spark) else spark.sparkContext
        try:
            with exact_tables(spark, database), _progress(args, context) as progress:
                execute(spark, statements, progress=progress, limit=args.limit, log=_log(args))
        except TableLayoutError as exc:
            raise CliError(str(exc)) from None
        print(summary(spark, database))
    return 0


def _progress(args: argparse.Namespace, context: SparkContext | None) -> Progress:
    """The progress display a pipeline command asked for (--quiet, --progress)."""
    from pixels_sql.progress import Progress

    return Progress(context, mode="off" if args.quiet else args.progress)


def _log(args: argparse.Namespace) -> TextIO | None:
    """Where a pipeline command says each statement's outcome: stderr, unless --quiet or
    --progress json (whose stderr is JSON lines only)."""
    return None if args.quiet or args.progress == "json" else sys.stderr


def _with_progress(
    args: argparse.Namespace,
    work: Callable[[SparkSession, Progress, TextIO | None], Report],
    said_as_is: tuple[type[Exception], ...],
) -> Report:
    """``work(spark, progress, log)`` in the home's session, under the command's progress
    display. An error of ``said_as_is`` or a script's error is said by its own message; any
    other with the statement that failed."""
    from pixels_sql.functions import is_connect_client
    from pixels_sql.scripts import ScriptError

    with _home_session(args) as spark:
        context = None if is_connect_client(spark) else spark.sparkContext
        try:
            with _progress(args, context) as progress:
                return work(spark, progress, _log(args))
        except said_as_is as exc:
            raise CliError(str(exc)) from None
        except ScriptError:
            raise
        except Exception as exc:
            raise CliError(_error_text(exc)) from exc


def cmd_ingest(args: argparse.Namespace) -> int:
    """catalogue a folder incrementally: new, changed and deleted files, zip archives"""
    from pixels_sql.ingest.batch import ingest, print_report
    from pixels_sql.servers.viewer import viewer_base
    from pixels_sql.tables import TableLayoutError

    _allow_root(args, _normalise_dir(args.path))

    path = _normalise_dir(args.path)
    database = args.database or DEFAULT_DATABASE
    if args.stream:
        return _ingest_stream(args, path, database)
    if args.checkpoint or args.trigger or args.max_files_per_trigger:
        raise CliError("--checkpoint, --trigger and --max-files-per-trigger go with --stream")
    report = _with_progress(
        args,
        lambda spark, progress, log: ingest(
            spark,
            path,
            database,
            thumbnails=not args.no_thumbnails,
            thumbnail_size=args.thumbnail_size,
            glob=args.glob,
            extract_zip=os.path.realpath(args.extract_zip) if args.extract_zip else None,
            progress=progress,
            log=log,
            viewer_url=viewer_base(args.home),
        ),
        (TableLayoutError,),
    )
    print_report(report)
    return 0


def cmd_deidentify(args: argparse.Namespace) -> int:
    """a de-identified copy of a database (PS3.15 Basic Profile and options), with the mapping kept
    apart"""
    from pixels_sql.deid.keys import DeidKeyError
    from pixels_sql.deid.profile import ProfileError
    from pixels_sql.deidentify import deidentify_database
    from pixels_sql.ingest.batch import print_report
    from pixels_sql.tables import TableLayoutError

    _check_deidentify(args)
    destination = _normalise_dir(args.to)
    _allow_root(args, destination)
    report = _with_progress(
        args,
        lambda spark, progress, log: deidentify_database(
            spark,
            args.source,
            destination,
            database=args.database,
            mapping=args.mapping_database,
            options=tuple(args.option),
            where=args.where,
            thumbnails=not args.no_thumbnails,
            progress=progress,
            log=log,
        ),
        (ProfileError, DeidKeyError, ValueError, TableLayoutError),
    )
    print(report.line())
    if report.ingest is not None:
        print_report(report.ingest)
    return 0


def _check_deidentify(args: argparse.Namespace) -> None:
    """An unknown option or no key: said before any Spark starts or any home is made."""
    from pixels_sql.deid.files import profile_of
    from pixels_sql.deid.keys import DeidKeyError, load_key
    from pixels_sql.deid.profile import ProfileError

    try:
        profile_of(args.option)
        load_key()
    except (ProfileError, DeidKeyError) as exc:
        raise CliError(str(exc)) from None


def _ingest_stream(args: argparse.Namespace, path: str, database: str) -> int:
    from pixels_sql.ingest.stream import DEFAULT_TRIGGER, StreamError, run_stream
    from pixels_sql.pipeline import summary

    if not args.checkpoint:
        raise CliError("--stream needs --checkpoint DIR (one folder per destination)")
    with _home_session(args) as spark:
        try:
            report = run_stream(
                spark,
                path,
                os.path.abspath(args.checkpoint),
                database,
                trigger=args.trigger or DEFAULT_TRIGGER,
                thumbnails=not args.no_thumbnails,
                thumbnail_size=args.thumbnail_size,
                glob=args.glob,
                extract_zip=os.path.realpath(args.extract_zip) if args.extract_zip else None,
                max_files_per_trigger=args.max_files_per_trigger,
            )
        except StreamError as exc:
            raise CliError(str(exc)) from None
        print(report.line())
        print(summary(spark, database))
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    """run one query and print its rows"""
    from pixels_sql.scripts import iter_sql

    params = _parse_params(args.param)
    # No sqlglot pre-check here: a query runs alone, so Spark's own message (line, position,
    # a caret) is the better answer to a typo, and nothing ran before it.
    statements = list(iter_sql(args.query, params))
    with _home_session(args) as spark:
        if args.database:
            spark.catalog.setCurrentDatabase(args.database)
        elif spark.catalog.databaseExists(DEFAULT_DATABASE):
            spark.catalog.setCurrentDatabase(DEFAULT_DATABASE)
        execute(spark, statements, fmt=args.format, limit=args.limit, width=args.width)
    return 0


def cmd_gallery(args: argparse.Namespace) -> int:
    """write a static HTML contact sheet of the thumbnails"""
    from pixels_sql.gallery import GALLERY_SQL, render_gallery
    from pixels_sql.servers.viewer import viewer_base

    database = args.database or DEFAULT_DATABASE
    output = Path(args.output).resolve()
    with _home_session(args) as spark:
        if not spark.catalog.tableExists(f"{database}.object_thumbnails"):
            raise CliError(
                f"no {database}.object_thumbnails table: run the pipeline first"
                " (pixels-sql run sql --param path=<folder>)"
            )
        query = GALLERY_SQL.format(database=f"`{database}`", limit=int(args.gallery_limit))
        rows = [row.asDict() for row in spark.sql(query).collect()]
    output.parent.mkdir(parents=True, exist_ok=True)
    page = render_gallery(
        rows, title=f"pixels-sql · {database}", viewer_base=viewer_base(args.home)
    )
    output.write_text(page, encoding="utf-8")
    print(f"gallery: {output} ({len(rows)} images)")
    return 0


def cmd_viewer_url(args: argparse.Namespace) -> int:
    """print the viewer's URL of a study (on the pixels-sql serve of the home)"""
    from pixels_sql.servers.dicomweb.query import QueryError, check_uid
    from pixels_sql.servers.viewer import study_url, viewer_base

    try:
        uid = check_uid(args.study_uid)
    except QueryError as exc:
        raise CliError(str(exc)) from None
    base = viewer_base(args.home)
    if base is None:
        base = f"http://127.0.0.1:{endpoint_defaults.DEFAULT_HTTP_PORT}"
        print(
            f"pixels-sql: no server runs on {home_dir(args.home)}: the URL assumes"
            f" `pixels-sql serve` with the default --http-port",
            file=sys.stderr,
        )
    print(study_url(base, uid))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """serve the home to SQL clients: JDBC (Thrift) and Spark Connect endpoints"""
    from pixels_sql.servers.endpoint import ServeError, ServeOptions, serve

    options = ServeOptions(
        run_command=_engine_command,
        engine=args.engine,
        idle_timeout=args.idle_timeout or 0.0,
        host=args.host,
        jdbc_port=args.jdbc_port,
        connect_port=args.connect_port,
        http_port=args.http_port,
        master=args.master,
        ui=args.ui,
        allow_store=args.allow_store,
        dicom_port=args.dicom_port,
        ae_title=args.ae_title,
        dicom_peers=args.dicom_peers,
        dicom_tls=tuple(args.dicom_tls) if args.dicom_tls else None,
        database=args.database,
        http_limits=tuple(args.http_limit),
        auth=not args.no_auth,
        allow_paths=tuple(args.allow_path),
        allow_udfs=args.allow_udfs,
    )
    try:
        return serve(args.home, options)
    except ServeError as exc:
        raise CliError(str(exc)) from None


def cmd_stop(args: argparse.Namespace) -> int:
    """stop the home's engine or server (pixels-sql serve) and wait for it to end"""
    from pixels_sql.servers import engine
    from pixels_sql.servers.discovery import running_server

    home = home_dir(args.home)
    server = running_server(home)
    if server is None:
        print(f"pixels-sql: no engine or server runs on {home}", file=sys.stderr)
        return 0
    if not engine.stop(server.pid):
        raise CliError(f"the server of {home} (pid {server.pid}) did not stop in time")
    print(f"pixels-sql: stopped the server of {home} (pid {server.pid})", file=sys.stderr)
    return 0


def _check_store(args: argparse.Namespace) -> None:
    """The peer's address, the AE title and what to send: said before any file is read."""
    from pixels_sql.servers.dimse.peers import PeersError, check_ae_title, parse_address

    try:
        args.peer = parse_address(args.to)
        args.ae_title = check_ae_title(args.ae_title)
    except PeersError as exc:
        raise CliError(str(exc)) from None
    if bool(args.paths) == bool(args.where):
        raise CliError(
            "give the files or folders to send, or --where to send catalogued instances (not both)"
        )


def cmd_store(args: argparse.Namespace) -> int:
    """send DICOM files, or catalogued instances, to a DICOM peer (C-STORE)"""
    from pixels_sql.io.paths import to_local_path
    from pixels_sql.servers.dimse.send import dicom_files, send_files

    if args.where:
        if not is_home(home_dir(args.home)):
            raise CliError(f"no pixels-sql home at {home_dir(args.home)}: nothing catalogued")
        with _home_session(args) as spark:
            if not spark.catalog.tableExists(f"{args.database}.instance_copies"):
                raise CliError(f"nothing is catalogued in {args.database} of {home_dir(args.home)}")
            # Each live instance's served copy (sql/90_views.sql), as DICOMweb serves it. The
            # predicate is the home owner's own SQL, as `pixels-sql sql` runs it.
            try:
                rows = spark.sql(
                    f"SELECT path FROM `{args.database}`.instance_copies"
                    f" WHERE served AND ({args.where}) ORDER BY path"
                ).collect()
            except Exception as exc:  # the predicate's own error, in one line
                raise CliError(f"--where: {_error_text(exc)}") from exc
        files = [to_local_path(row.path) for row in rows]
    else:
        files = list(dicom_files(args.paths))
    say = (lambda _text: None) if args.quiet else (lambda text: print(text, file=sys.stderr))
    report = send_files(files, args.peer, calling_ae_title=args.ae_title, say=say)
    for path, why in report.failed:
        print(f"pixels-sql store: {path}: {why}", file=sys.stderr)
    print(report.line())
    return 1 if report.failed else 0


def cmd_token(args: argparse.Namespace) -> int:
    """print the admin secret of the home's server (JDBC user admin, dbt, Spark Connect)"""
    from pixels_sql.servers.secrets import ADMIN_USER, READER_USER, read_secrets

    home = home_dir(args.home)
    found = read_secrets(home)
    if found is None:
        raise CliError(
            f"{home} has no secrets yet: `pixels-sql serve` makes them the first time it starts"
        )
    # The secret alone on its line, for $(pixels-sql token); which user goes with it, on stderr.
    user, secret = (READER_USER, found.reader) if args.reader else (ADMIN_USER, found.admin)
    print(secret)
    print(f"pixels-sql: the secret of JDBC user {user}", file=sys.stderr)
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
    """run the pipeline on the bundled sample DICOM files"""
    from pixels_sql.pipeline import PIPELINE_DIR
    from pixels_sql.scripts import load_scripts

    home = home_dir(args.home)
    samples = home / "samples"
    for name, source in sample_data_dirs().items():
        target = samples / name
        if not target.exists():
            shutil.copytree(source, target)
    print(f"sample data: {samples} ({sum(1 for p in samples.rglob('*') if p.is_file())} files)")
    params = {"path": str(samples), "database": args.database or DEMO_DATABASE}
    statements = load_scripts([PIPELINE_DIR], params)
    args.home = str(home)
    _allow_root(args, params["path"])
    return _run_statements(args, statements, params["database"])


# Each command's --help ends with these (tests/test_cli.py runs the read-only ones).
EXAMPLES: dict[str, list[str]] = {
    "ingest": [
        "pixels-sql ingest /data/dicom",
        "pixels-sql ingest s3://bucket/dicom --no-thumbnails",
        "pixels-sql ingest /data/incoming --stream --checkpoint /data/incoming.checkpoint",
    ],
    "run": [
        "pixels-sql run sql --param path=/data/dicom",
        "pixels-sql run my_views.sql --param database=pixels",
    ],
    "sql": [
        'pixels-sql sql "SELECT * FROM study_catalog ORDER BY StudyDate DESC"',
        "pixels-sql sql \"SELECT path FROM object_catalog WHERE Modality = '${m}'\" --param m=CT",
        'pixels-sql sql "SELECT * FROM object_catalog" --format csv > catalog.csv',
    ],
    "deidentify": [
        "pixels-sql deidentify --from pixels --to /shared/deid --option tcia",
        "pixels-sql deidentify --from pixels --to /shared/ct --where \"Modality = 'CT'\"",
    ],
    "gallery": ["pixels-sql gallery --output gallery.html --max-images 500"],
    "viewer-url": ["pixels-sql viewer-url 1.2.840.113619.2.1.1.322987881.621.736170080.681"],
    "serve": [
        "pixels-sql serve",
        "pixels-sql serve --allow-store --allow-path /data/dicom",
        "pixels-sql serve --allow-store --dicom-port 11112 --dicom-peers peers.toml",
    ],
    "stop": ["pixels-sql stop"],
    "store": [
        "pixels-sql store /data/dicom/study1 --to ORTHANC@pacs.example.org:4242",
        "pixels-sql store --where \"Modality = 'CT'\" --to ORTHANC@127.0.0.1:4242",
    ],
    "token": ["pixels-sql token --reader"],
    "demo": ["pixels-sql demo --home /tmp/pixels-demo"],
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixels-sql", description="DICOM folders as Spark SQL tables."
    )
    # What every command and each kind of command takes: a command lists only what applies.
    # The top-level defaults give every command's namespace these attributes.
    parser.set_defaults(master=DEFAULT_MASTER, ui=False, limit=None, quiet=False, progress="line")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        help="folder for the metastore, warehouse and scratch space"
        " (default: $PIXELS_SQL_HOME, else the nearest pixels-home holding a home from the"
        " working folder up, else ./pixels-home)",
    )
    spark = argparse.ArgumentParser(add_help=False)
    spark.add_argument(
        "--master", default=DEFAULT_MASTER, help=f"Spark master (default: {DEFAULT_MASTER})"
    )
    spark.add_argument("--ui", action="store_true", help="start the Spark UI on 127.0.0.1")
    shown = argparse.ArgumentParser(add_help=False)
    shown.add_argument(
        "--quiet",
        action="store_true",
        help="print only the result (no progress, no line per statement)",
    )
    shown.add_argument(
        "--progress",
        choices=("line", "json"),
        default="line",
        help="line: a live line per step (default); json: one JSON object per update on"
        " stderr, nothing else there",
    )
    rows = argparse.ArgumentParser(add_help=False)
    rows.add_argument(
        "--limit",
        type=int,
        help=f"rows to print per query (default: {TABLE_ROWS} in a table, every row in CSV/JSON)",
    )
    warm = argparse.ArgumentParser(add_help=False)
    warm.add_argument(
        "--no-server",
        action="store_true",
        help="run in a Spark of this command's own instead of the home's warm engine"
        " (PIXELS_SQL_ENGINE=off does it for every command)",
    )
    warm.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="when this command starts the engine: how long it waits idle before it stops"
        " (default: $PIXELS_SQL_IDLE_TIMEOUT or 300)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(
        handler: Callable[[argparse.Namespace], int], parents: list[argparse.ArgumentParser]
    ) -> argparse.ArgumentParser:
        """The command ``handler`` runs: cmd_viewer_url is ``viewer-url``, its docstring the
        command's help line."""
        name = handler.__name__.removeprefix("cmd_").replace("_", "-")
        command = sub.add_parser(
            name,
            parents=parents,
            help=" ".join((handler.__doc__ or "").split()),
            epilog="examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name]),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.set_defaults(handler=handler)
        return command

    def add_param(command: argparse.ArgumentParser, used_in: str, more: str = "") -> None:
        command.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help=f"a value for ${{NAME}} in {used_in} (repeatable): any text inside quotes, a"
            f" name or a number outside them{more}",
        )

    run = add(cmd_run, [common, spark, rows, shown, warm])
    run.add_argument("scripts", nargs="+", help=".sql files or folders of them (name order)")
    add_param(run, "the scripts", " (the pipeline's: docs/tables.md)")
    run.add_argument("--no-parse-check", action="store_true", help="skip the sqlglot check")

    ingest = add(cmd_ingest, [common, spark, shown, warm])
    ingest.add_argument("path", help="folder (or file) to catalogue")
    ingest.add_argument("--database", help=f"database to fill (default: {DEFAULT_DATABASE})")
    ingest.add_argument(
        "--no-thumbnails", action="store_true", help="skip the thumbnail step (40_thumbnails)"
    )
    ingest.add_argument(
        "--thumbnail-size", type=int, default=256, help="longer side in pixels (default: 256)"
    )
    ingest.add_argument(
        "--glob", default="*", help="file names to catalogue (default: *, every file)"
    )
    ingest.add_argument(
        "--extract-zip",
        metavar="DIR",
        help="write the members of zip archives to DIR (in parallel, in Spark) and catalogue"
        " the written files (default: read members in place)",
    )
    ingest.add_argument(
        "--stream",
        action="store_true",
        help="keep ingesting new files as they appear (Structured Streaming; SIGINT stops it"
        " after the micro-batch under way)",
    )
    ingest.add_argument(
        "--checkpoint", metavar="DIR", help="with --stream: the folder recording its progress"
    )
    ingest.add_argument(
        "--trigger",
        help="with --stream: once, available-now or an interval such as '30 seconds'"
        " (default: 10 seconds)",
    )
    ingest.add_argument(
        "--max-files-per-trigger",
        type=int,
        help="with --stream: at most this many new files per micro-batch",
    )

    deid = add(cmd_deidentify, [common, spark, shown, warm])
    deid.add_argument(
        "--from", dest="source", required=True, metavar="DATABASE", help="the database to copy"
    )
    deid.add_argument(
        "--to", required=True, metavar="FOLDER", help="where the de-identified files go"
    )
    deid.add_argument(
        "--database", help="the copy's database (default: <from>_deid), filled from --to"
    )
    deid.add_argument(
        "--mapping-database",
        metavar="DATABASE",
        help="where original -> new UIDs, pseudonyms and date shifts are kept (default:"
        " <from>_deid_mapping); the copy never references it",
    )
    deid.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME",
        help="a PS3.15 option (repeatable): retain_safe_private, retain_uids,"
        " retain_longitudinal_modified_dates, ..., or tcia (docs/deidentification.md)",
    )
    deid.add_argument(
        "--where",
        metavar="PREDICATE",
        help="the cohort: a SQL predicate over object_header's columns, e.g. \"Modality = 'CT'"
        " AND StudyDate >= DATE'2020-01-01'\" (default: every live instance)",
    )
    deid.add_argument("--no-thumbnails", action="store_true", help="skip the copy's thumbnail step")

    sql = add(cmd_sql, [common, spark, rows, warm])
    sql.add_argument("query", help="one SQL statement (Spark SQL; ${NAME} from --param)")
    add_param(sql, "the query")
    sql.add_argument("--database", help=f"current database (default: {DEFAULT_DATABASE})")
    sql.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table (default; cells cut at --width), csv or json (every row, nothing cut)",
    )
    sql.add_argument("--width", type=int, default=60, help="cut table cells at this many chars")

    gallery = add(cmd_gallery, [common, spark, warm])
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

    viewer_url = add(cmd_viewer_url, [common])
    viewer_url.add_argument("study_uid", help="the StudyInstanceUID to open")

    serve = add(cmd_serve, [common, spark])
    serve.add_argument(
        "--host",
        default=endpoint_defaults.DEFAULT_HOST,
        help="address to listen on (default: 127.0.0.1, this machine only)",
    )
    serve.add_argument(
        "--jdbc-port",
        type=int,
        default=endpoint_defaults.DEFAULT_JDBC_PORT,
        help=f"Thrift/JDBC port (default: {endpoint_defaults.DEFAULT_JDBC_PORT})",
    )
    serve.add_argument(
        "--connect-port",
        type=int,
        default=endpoint_defaults.DEFAULT_CONNECT_PORT,
        help=f"Spark Connect port (default: {endpoint_defaults.DEFAULT_CONNECT_PORT})",
    )
    serve.add_argument(
        "--http-port",
        type=int,
        default=endpoint_defaults.DEFAULT_HTTP_PORT,
        help="DICOMweb port: QIDO-RS, WADO-RS and STOW-RS under /dicomweb"
        f" (default: {endpoint_defaults.DEFAULT_HTTP_PORT})",
    )
    serve.add_argument(
        "--allow-store",
        action="store_true",
        help="accept STOW-RS and C-STORE: instances sent by DICOMweb clients and DICOM peers"
        " are written to the home's landing folder, searchable at once and catalogued"
        " (default: off, read-only)",
    )
    serve.add_argument(
        "--dicom-port",
        type=int,
        default=0,
        metavar="PORT",
        help="DICOM (DIMSE) port: C-ECHO, C-STORE (with --allow-store), C-FIND, C-MOVE, C-GET;"
        f" e.g. {endpoint_defaults.DEFAULT_DICOM_PORT} (default: off); docs/dimse.md",
    )
    serve.add_argument(
        "--ae-title",
        default=endpoint_defaults.DEFAULT_AE_TITLE,
        help="this server's AE title on the DICOM port"
        f" (default: {endpoint_defaults.DEFAULT_AE_TITLE})",
    )
    serve.add_argument(
        "--dicom-peers",
        metavar="FILE",
        help="a TOML file of [[peer]] ae_title/host/port: only these AEs may call the DICOM"
        " port, and they are C-MOVE's destinations (default: any AE may call, no C-MOVE)",
    )
    serve.add_argument(
        "--dicom-tls",
        nargs=2,
        metavar=("CERT", "KEY"),
        help="DICOM over TLS (PS3.15 B.1) on the DICOM port, with this PEM certificate chain"
        " and key",
    )
    serve.add_argument(
        "--http-limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change a limit of the DICOMweb server (repeatable), e.g. max_body_bytes=2147483648;"
        " names and defaults: docs/server.md, 'DICOMweb limits'",
    )
    serve.add_argument(
        "--database",
        default=DEFAULT_DATABASE,
        help="the catalog database DICOMweb serves and STOW-RS writes to"
        f" (default: {DEFAULT_DATABASE})",
    )
    serve.add_argument(
        "--no-auth",
        action="store_true",
        help="let JDBC and Spark Connect clients in without a secret, as the admin (a"
        " single-user laptop only: every user of the machine can then connect)",
    )
    serve.add_argument(
        "--allow-path",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder (or object-storage prefix) admin and read-only clients may read, besides"
        " the folders the catalog was ingested from and the landing folder (repeatable)",
    )
    serve.add_argument(
        "--allow-udfs",
        action="store_true",
        help="let Spark Connect clients run their own Python and JVM functions on the server"
        " (their code runs as the server's user: trust every client holding a secret first)",
    )
    serve.add_argument(
        "--engine",
        action="store_true",
        help="run as the home's warm engine, as a command starts it (its output is a log"
        " file: no secret printed; named 'the pixels-sql engine' to waiting writers)",
    )
    serve.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="stop after this many seconds without a pixels-sql command of the home's owner"
        " (the warm engine runs with one; default: never)",
    )

    add(cmd_stop, [common])

    store = add(cmd_store, [common])
    store.add_argument("paths", nargs="*", metavar="PATH", help="files or folders to send")
    store.add_argument(
        "--to",
        required=True,
        metavar="AE@HOST:PORT",
        help="the peer: its AE title, host and DICOM port, e.g. ORTHANC@127.0.0.1:4242",
    )
    store.add_argument(
        "--where",
        metavar="SQL",
        help="send the catalog's live instances matching this predicate over object_catalog"
        " (e.g. \"Modality = 'CT'\") instead of files",
    )
    store.add_argument(
        "--database",
        default=DEFAULT_DATABASE,
        help=f"the catalog --where reads (default: {DEFAULT_DATABASE})",
    )
    store.add_argument(
        "--ae-title",
        default=endpoint_defaults.DEFAULT_AE_TITLE,
        help=f"the calling AE title (default: {endpoint_defaults.DEFAULT_AE_TITLE})",
    )
    store.add_argument("--quiet", action="store_true", help="print only the summary and failures")

    token = add(cmd_token, [common])
    token.add_argument(
        "--reader",
        action="store_true",
        help="print the read-only secret instead (JDBC user reader: analysts, BI tools)",
    )

    demo = add(cmd_demo, [common, spark, shown])
    demo.add_argument(
        "--database",
        help=f"database to fill (default: {DEMO_DATABASE}, apart from the {DEFAULT_DATABASE}"
        " database that ingest fills)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check = PRECHECKS.get(args.command)
    if check is not None:
        try:
            check(args)
        except CliError as exc:
            print(f"pixels-sql: {exc}", file=sys.stderr)
            return 1
    home = home_dir(args.home)
    if not is_home(home):
        if args.command in READ_ONLY_COMMANDS:
            # Never an empty home made in whatever folder the command ran from.
            print(
                f"pixels-sql: no pixels-sql home at {home}; run `pixels-sql ingest` first, or"
                f" pass --home (or set {HOME_VARIABLE})",
                file=sys.stderr,
            )
            return 1
        if args.command in HOME_MAKING_COMMANDS:
            print(f"pixels-sql: new home {home}", file=sys.stderr, flush=True)
    try:
        if _runs_in_engine(args, home):
            return _send_to_engine(args, home)
    except SettingError as exc:  # PIXELS_SQL_ENGINE or PIXELS_SQL_IDLE_TIMEOUT that does not parse
        print(f"pixels-sql: {exc}", file=sys.stderr)
        return 1
    _quiet_pyspark_logs()
    set_process_holder(f"pixels-sql {args.command}")
    return _run_handler(args)


def _run_handler(args: argparse.Namespace) -> int:
    """Run the command; a failure it reports is one line on stderr and exit status 1, a
    Ctrl-C one line and 130."""
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as exc:
        from pixels_sql.scripts import ScriptError

        if _INTERRUPTED.is_set():
            return _interrupted()  # the failure of a statement whose jobs Ctrl-C cancelled
        if not isinstance(exc, (CliError, HomeInUseError, ScriptError)):
            raise
        print(f"pixels-sql: {exc}", file=sys.stderr)
        return 1


def _interrupted() -> int:
    # The running jobs are cancelled; a run cut short leaves nothing its next run does not
    # clean up (tables.prepare).
    print("pixels-sql: interrupted", file=sys.stderr)
    return INTERRUPTED


def _runs_in_engine(args: argparse.Namespace, home: Path) -> bool:
    """Whether the command goes to the home's engine socket: one of ENGINE_COMMANDS, not told
    otherwise (--no-server, PIXELS_SQL_ENGINE=off), and the socket answers (the warm engine's
    or a `pixels-sql serve`'s: every serve runs its owner's commands) or nothing runs on the
    home yet (the engine is then started). A server without the socket (an older version) is
    used as a Spark Connect server."""
    from pixels_sql.config import settings
    from pixels_sql.servers import engine
    from pixels_sql.servers.discovery import running_server

    if args.command not in ENGINE_COMMANDS or getattr(args, "no_server", False):
        return False
    if (args.command == "ingest" and args.stream) or not settings.engine:
        return False
    return engine.is_running(home) or running_server(home) is None


def _send_to_engine(args: argparse.Namespace, home: Path) -> int:
    """Run the command in the home's engine, starting it when none runs."""
    from pixels_sql.config import settings
    from pixels_sql.servers import engine

    arguments = _engine_arguments(args, home)
    idle = args.idle_timeout if args.idle_timeout is not None else settings.idle_timeout
    if args.master != DEFAULT_MASTER and engine.is_running(home):
        # The engine's Spark was started with the master of the command that started it.
        print(
            f"pixels-sql: --master is ignored: the engine of {home} runs the command with its"
            " own (`pixels-sql stop`, then this command, to start one with it)",
            file=sys.stderr,
        )
    try:
        engine.ensure_running(
            home,
            master=args.master,
            idle_timeout=idle,
            say=lambda text: print(f"pixels-sql: {text}", file=sys.stderr, flush=True),
        )
        return engine.run_command(home, arguments, sys.stdout, sys.stderr)
    except engine.EngineError as exc:
        print(f"pixels-sql: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return _interrupted()


def _engine_arguments(args: argparse.Namespace, home: Path) -> dict[str, object]:
    """The parsed arguments as the engine takes them: JSON values, local paths absolute."""
    arguments = {key: value for key, value in vars(args).items() if key != "handler"}
    arguments["home"] = str(home)
    for key in _PATH_ARGUMENTS:
        value = arguments.get(key)
        if isinstance(value, str):
            arguments[key] = _normalise_dir(value)
    if args.command == "run":
        arguments["scripts"] = [os.path.abspath(script) for script in args.scripts]
        arguments["param"] = [
            f"path={_normalise_dir(pair.partition('=')[2])}" if pair.startswith("path=") else pair
            for pair in args.param
        ]
    return arguments


def _engine_command(
    spark: SparkSession, arguments: dict[str, object], out: TextIO, err: TextIO, tty: bool
) -> int:
    """Run a command sent to the engine, in this (the engine's) process: the same function
    the command runs embedded, on a session of the engine's Spark."""
    args = argparse.Namespace(**arguments)
    args.handler = COMMANDS[str(args.command)]
    _ENGINE.spark = spark
    try:
        return _run_handler(args)
    except Exception:
        traceback.print_exc(file=err)
        return 1
    finally:
        _ENGINE.spark = None


# Checks of a command's arguments that need no Spark and no home, run before either.
PRECHECKS = {"deidentify": _check_deidentify, "store": _check_store}

# The command functions by name: what a command sent to the engine runs there.
COMMANDS = {
    "run": cmd_run,
    "ingest": cmd_ingest,
    "deidentify": cmd_deidentify,
    "sql": cmd_sql,
    "gallery": cmd_gallery,
}


if __name__ == "__main__":
    sys.exit(main())
