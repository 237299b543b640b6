"""Run the DICOMweb service in the ``pixels-sql serve`` process: an HTTP server (uvicorn) on a
thread of its own, and a thread that keeps the index in step with the catalog.

The service's Python log (its 500s with their tracebacks, uvicorn's errors) goes to the home's
``logs/server.log``, where the JVM's log4j writes too (both append; log4j rolls the file, the
handler here reopens it when it does).
"""

from __future__ import annotations

import dataclasses
import logging
import logging.handlers
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pixels_sql.servers.dicomweb.app import Application
from pixels_sql.servers.dicomweb.connections import guarded_protocol
from pixels_sql.servers.dicomweb.index import CatalogIndex
from pixels_sql.servers.dicomweb.service import ServiceOptions

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("pixels_sql.dicomweb")

# How often the index checks the catalog for new partitions (a metastore call, no Spark job).
REFRESH_SECONDS = 5.0
LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s"
# File descriptors kept for other uses than HTTP connections (files being read, the JVM's
# pipes, Python's own) when the connection cap is checked against RLIMIT_NOFILE.
RESERVED_DESCRIPTORS = 256
_LOGGERS = ("pixels_sql", "uvicorn")


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (often 1024 of 4096 or more:
    a connection is a descriptor); the soft limit it has now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a kernel cap below the hard limit (nr_open)
            pass
    return soft


# One handler per log file, however many services log to it (a test starts several).
_FILE_HANDLERS: dict[Path, tuple[logging.Handler, int]] = {}
_FILE_HANDLERS_LOCK = threading.Lock()


def log_to_file(log_dir: Path) -> Path:
    """Send the service's Python log records (warnings and up) to ``log_dir/server.log``;
    :func:`stop_logging_to_file` with the path returned ends it."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = (log_dir / "server.log").resolve()
    with _FILE_HANDLERS_LOCK:
        handler, users = _FILE_HANDLERS.get(path, (None, 0))
        if handler is None:
            handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
            handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
            handler.setLevel(logging.WARNING)
            for name in _LOGGERS:
                logger = logging.getLogger(name)
                logger.addHandler(handler)
                if logger.level == logging.NOTSET or logger.level > logging.WARNING:
                    logger.setLevel(logging.WARNING)
            # uvicorn warns once per malformed request ("Invalid HTTP request received."):
            # a client could fill the log with them (the answer, a 400, says it all).
            logging.getLogger("uvicorn.error").setLevel(logging.ERROR)
        _FILE_HANDLERS[path] = (handler, users + 1)
    return path


def stop_logging_to_file(path: Path) -> None:
    with _FILE_HANDLERS_LOCK:
        handler, users = _FILE_HANDLERS[path]
        if users > 1:
            _FILE_HANDLERS[path] = (handler, users - 1)
            return
        del _FILE_HANDLERS[path]
    for name in _LOGGERS:
        logging.getLogger(name).removeHandler(handler)
    handler.close()


def spark_log_dir(spark: SparkSession) -> Path | None:
    """The folder of the session's log (the driver's ``pixels_sql.log_dir``: <home>/logs)."""
    try:
        value = spark._jvm.java.lang.System.getProperty("pixels_sql.log_dir")  # type: ignore[union-attr]
    except Exception:  # a session without a JVM of its own here
        return None
    return Path(value) if value else None


@dataclass
class DicomwebServer:
    """The running service; :meth:`stop` ends its threads. ``refresh_index``: it keeps the
    index in step with the catalog (False: the index's owner does, e.g. ``pixels-sql serve``,
    whose DIMSE service shares it)."""

    app: Application
    host: str
    port: int
    refresh_index: bool = True
    _http: object = None
    _threads: tuple[threading.Thread, ...] = ()
    _stop: threading.Event | None = None
    _log_file: Path | None = None
    owns_intake: bool = False

    def start(self, ready_timeout: float = 60.0, log_dir: Path | None = None) -> None:
        import uvicorn

        if log_dir is not None:
            self._log_file = log_to_file(log_dir)
        limits = self.app.limits
        descriptors = raise_open_files_limit()
        if limits.max_connections > descriptors - RESERVED_DESCRIPTORS:
            log.warning(
                "max_connections is %d but this process may open %d files: connections past"
                " about %d will fail (raise the hard RLIMIT_NOFILE, e.g. ulimit -Hn)",
                limits.max_connections,
                descriptors,
                descriptors - RESERVED_DESCRIPTORS,
            )
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            # uvicorn's h11 protocol, with the connection caps and the request-head timeout
            # (connections.py).
            http=guarded_protocol(self.app.connections),
            h11_max_incomplete_event_size=limits.max_head_bytes,
            log_level="warning",
            log_config=None,  # keep the handlers set here (server.log), not uvicorn's
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        self._http = server
        self._stop = threading.Event()
        http = threading.Thread(target=server.run, name="dicomweb-http", daemon=True)
        refresher = threading.Thread(target=self._refresh_loop, name="dicomweb-index", daemon=True)
        self._threads = (http, refresher) if self.refresh_index else (http,)
        http.start()
        deadline = time.monotonic() + ready_timeout
        while not server.started:
            if not http.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the DICOMweb service did not start on {self.host}:{self.port}")
            time.sleep(0.05)
        if self.refresh_index:
            refresher.start()

    def _refresh_loop(self) -> None:
        assert self._stop is not None
        self.app.index.keep_fresh(self._stop, REFRESH_SECONDS)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._http is not None:
            self._http.should_exit = True  # type: ignore[attr-defined]
        for thread in self._threads:
            thread.join(timeout=10)
        self.app.close()
        intake = self.app.options.intake
        if intake is not None and self.owns_intake:
            intake.stop()
        if self._log_file is not None:
            stop_logging_to_file(self._log_file)
            self._log_file = None


def start_dicomweb(
    spark: SparkSession,
    database: str,
    host: str,
    port: int,
    options: ServiceOptions,
    *,
    landing: Path | None = None,
    index: CatalogIndex | None = None,
) -> DicomwebServer:
    """Serve ``database``'s index on ``host:port`` under /dicomweb: ``index``, kept fresh by
    its owner, or one of the server's own; ``landing``: STOW-RS on, into that landing folder
    (with an intake of the server's own)."""
    own_index = index is None
    if index is None:
        index = CatalogIndex(spark.newSession(), database)
        index.refresh(force=True)
    owns_intake = False
    if landing is not None and options.intake is None:
        from pixels_sql.servers.intake import Intake

        options = dataclasses.replace(options, intake=Intake(index, landing))
        owns_intake = True
    server = DicomwebServer(
        Application(index, options),
        host,
        port,
        refresh_index=own_index,
        owns_intake=owns_intake,
    )
    if owns_intake:  # before the server listens: its recovery never meets a live receive
        assert options.intake is not None
        options.intake.start()
    server.start(log_dir=spark_log_dir(spark))
    return server
