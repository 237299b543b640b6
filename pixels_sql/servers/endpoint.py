"""``pixels-sql serve``: one long-running local Spark application that owns a home and exposes it
to SQL clients through a Thrift/JDBC endpoint (HiveServer2 protocol) and a Spark Connect
endpoint, and its catalog to DICOMweb clients and the viewer over HTTP (servers/dicomweb/).

Every client gets its own Spark session (temp views, current database, settings), and every
session has the pixels-sql functions: they are injected by the extension and resolved to the
Python UDFs this process registers once (see ``PythonFunctions.java``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from pixels_sql import jvm_classes
from pixels_sql.home import HomeLock, home_dir
from pixels_sql.servers.dimse.peers import DEFAULT_AE_TITLE, DEFAULT_DICOM_PORT
from pixels_sql.servers.discovery import ServerInfo, is_listening, remove_state
from pixels_sql.servers.engine import EngineSocket, RunCommand

if TYPE_CHECKING:
    from py4j.java_gateway import JVMView
    from pyspark.sql import SparkSession

    from pixels_sql.servers.dicomweb.index import CatalogIndex
    from pixels_sql.servers.dicomweb.limits import HttpLimits
    from pixels_sql.servers.dicomweb.server import DicomwebServer
    from pixels_sql.servers.dimse.server import DimseOptions, DimseServer
    from pixels_sql.servers.intake import Intake

__all__ = ["DEFAULT_AE_TITLE", "DEFAULT_DICOM_PORT"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_JDBC_PORT = 10000
DEFAULT_CONNECT_PORT = 15002
DEFAULT_HTTP_PORT = 8080
SERVE_LOG_CONFIG = Path(__file__).resolve().parent.parent / "log4j2-serve.properties"
READY_TIMEOUT = 120.0


class ServeError(Exception):
    """The server cannot start (a port taken, an endpoint that did not come up)."""


@dataclass(frozen=True)
class ServeOptions:
    host: str = DEFAULT_HOST
    jdbc_port: int = DEFAULT_JDBC_PORT
    connect_port: int = DEFAULT_CONNECT_PORT
    http_port: int = DEFAULT_HTTP_PORT  # DICOMweb (/dicomweb) and the viewer
    master: str = "local[*]"
    ui: bool = False
    allow_store: bool = False  # STOW-RS and C-STORE: clients may send instances into the home
    dicom_port: int = 0  # DIMSE (servers/dimse/); 0: off
    ae_title: str = DEFAULT_AE_TITLE
    dicom_peers: str | None = None  # the peers file (servers/dimse/peers.py)
    dicom_tls: tuple[str, str] | None = None  # PEM certificate chain and key: DICOM over TLS
    database: str = "pixels"  # the catalog DICOMweb serves
    http_limits: tuple[str, ...] = ()  # NAME=VALUE settings of DICOMweb's HttpLimits
    auth: bool = True  # JDBC and Spark Connect clients need a secret (--no-auth: not)
    allow_paths: tuple[str, ...] = ()  # more folders clients may read (--allow-path)
    allow_udfs: bool = False  # Spark Connect clients may run their own Python/JVM code
    # The home's warm engine (servers/engine.py): runs the CLI's commands sent over its Unix
    # socket with this function; None: no engine socket.
    run_command: RunCommand | None = None
    # Started by a command as the home's warm engine (`serve --engine`): its output goes to a
    # log file, so no secret is printed, and waiting writers are told "the pixels-sql engine".
    engine: bool = False
    idle_timeout: float = 0.0  # stop after this many seconds with no client (0: never)


def server_conf(home: Path, options: ServeOptions) -> dict[str, str]:
    """Spark settings added to the embedded session's for the two endpoints."""
    scratch = home / "tmp" / "hive"
    return {
        "spark.app.name": "pixels-sql serve",
        # One Spark session per JDBC connection (temp views and settings stay its own).
        "spark.sql.hive.thriftServer.singleSession": "false",
        "spark.hadoop.hive.server2.thrift.port": str(options.jdbc_port),
        "spark.hadoop.hive.server2.thrift.bind.host": options.host,
        "spark.hadoop.hive.server2.logging.operation.log.location": str(home / "logs" / "jdbc"),
        # Hive's scratch folders default to /tmp: keep them in the home folder.
        "spark.hadoop.hive.exec.scratchdir": str(scratch),
        "spark.hadoop.hive.exec.local.scratchdir": str(scratch / "local"),
        # One folder per JDBC session, as Hive's default is: a session deletes its folder
        # when it closes, under the feet of the others if they shared one.
        "spark.hadoop.hive.downloaded.resources.dir": str(scratch / "${hive.session.id}_resources"),
        # The Thrift server's own Hive configuration (HiveUtils.newTemporaryConfiguration) names
        # DataNucleus' Derby adapter; the home's did not. The embedded metastore keeps one
        # persistence-manager factory while the JDO settings it is given stay equal, and rebuilds
        # it when they differ: JDBC sessions alternate between the two, so every session open
        # and close rebuilt it (0.9 s) and the old one's finaliser ran a full System.gc().
        # Naming the adapter here too: open 0.9 -> 0.1 s, close 0.54 -> 0.02 s, no System.gc().
        "spark.hadoop.datanucleus.rdbms.datastoreAdapterClassName": (
            "org.datanucleus.store.rdbms.adapter.DerbyAdapter"
        ),
        "spark.connect.grpc.binding.address": options.host,
        "spark.connect.grpc.binding.port": str(options.connect_port),
        **(AUTH_CONF if options.auth else {}),
    }


# Both endpoints check the home's secrets (servers/secrets.py) with the extension's classes,
# which hold them in the JVM: no secret is ever a Spark setting (SPARK-58658).
CUSTOM_AUTH_CLASS = "hive.server2.custom.authentication.class"
HIVE_AUTH_CLASS = f"spark.hadoop.{CUSTOM_AUTH_CLASS}"
AUTH_CONF = {
    "spark.hadoop.hive.server2.authentication": "CUSTOM",
    HIVE_AUTH_CLASS: "pixelssql.SecretAuthentication",
    "spark.connect.grpc.interceptor.classes": "pixelssql.ConnectAuthentication",
}


def _check_free(host: str, port: int, flag: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ServeError(
                f"cannot listen on {host}:{port} ({exc.strerror}): another server uses it;"
                f" choose another {flag}"
            ) from None


def _wait_listening(host: str, port: int, what: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if is_listening(host, port, timeout=1.0):
            return
        time.sleep(0.2)
    raise ServeError(f"the {what} endpoint did not listen on {host}:{port} in time")


def skip_hive_function_registry(jvm: JVMView) -> None:
    """Keep Hive from loading its own function registry, which cannot load on Spark 4: before
    any JDBC session can close, or a client's CloseSession can fail and later ones hang
    (HiveBuiltins.java says why)."""
    jvm.pixelssql.HiveBuiltins.markRegistered()


class Endpoints:
    """The running Thrift and Connect services of one SparkSession."""

    def __init__(self, spark: SparkSession, options: ServeOptions) -> None:
        self.spark = spark
        self.options = options
        self._thrift = None
        self._connect = None

    def start(self) -> None:
        jvm = self.spark._jvm
        deadline = time.monotonic() + READY_TIMEOUT
        if self.options.auth:
            # Hive builds its password checker from a new HiveConf, which reads system
            # properties, not the server's settings.
            jvm.java.lang.System.setProperty(CUSTOM_AUTH_CLASS, AUTH_CONF[HIVE_AUTH_CLASS])
        if self.options.jdbc_port:
            skip_hive_function_registry(jvm)
            thrift = jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2
            self._thrift = thrift.startWithContext(self.spark._jsparkSession.sqlContext())
            jvm.pixelssql.ClientGuard.thriftServer(self._thrift)
            if not jvm.pixelssql.ThriftErrors.install(self._thrift):
                print(
                    "pixels-sql serve: JDBC error messages keep the server's stack trace"
                    " (no binary Thrift endpoint found to shorten them)",
                    file=sys.stderr,
                )
        self._connect = jvm.org.apache.spark.sql.connect.service.SparkConnectService
        self._connect.start(self.spark.sparkContext._jsc.sc())
        if self.options.jdbc_port:
            _wait_listening(self.options.host, self.options.jdbc_port, "JDBC", deadline)
        _wait_listening(self.options.host, self.options.connect_port, "Spark Connect", deadline)

    def stop(self) -> None:
        """Cancel running queries, close both endpoints, stop Spark (closing the metastore)."""
        context = self.spark.sparkContext
        context.cancelAllJobs()
        if self._connect is not None:
            none = self.spark._jvm.scala.Option.empty()
            self._connect.stop(none, none)
        if self._thrift is not None:
            self._thrift.stop()
        self.spark._jvm.pixelssql.ClientGuard.disable()
        self.spark.stop()


def _start_web(
    spark: SparkSession,
    options: ServeOptions,
    index: CatalogIndex,
    intake: Intake | None,
    limits: HttpLimits,
) -> DicomwebServer:
    from pixels_sql.servers.dicomweb.server import start_dicomweb
    from pixels_sql.servers.dicomweb.service import ServiceOptions
    from pixels_sql.servers.viewer import viewer_dir

    service_options = ServiceOptions(intake=intake, viewer=viewer_dir(), limits=limits)
    return start_dicomweb(
        spark, options.database, options.host, options.http_port, service_options, index=index
    )


def dimse_options(home: Path, options: ServeOptions) -> DimseOptions:
    """The DIMSE service's options, checked (a peers file, an AE title, TLS files): ServeError
    before Spark starts."""
    import ssl

    from pixels_sql.servers.dimse.peers import PeersError, check_ae_title, load_peers
    from pixels_sql.servers.dimse.server import DimseOptions

    try:
        title = check_ae_title(options.ae_title)
        peers = load_peers(Path(options.dicom_peers)) if options.dicom_peers else None
    except PeersError as exc:
        raise ServeError(str(exc)) from None
    if peers is None and not _is_loopback(options.host):
        # DIMSE has no secrets: beyond this machine, the peers file is who may call.
        raise ServeError(
            f"--dicom-port on {options.host} needs --dicom-peers FILE: DICOM peers are told"
            " apart by AE title and address only, so they must be named (docs/dimse.md)"
        )
    tls = None
    if options.dicom_tls is not None:
        certificate, key = options.dicom_tls
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(certificate, key)
        except (OSError, ssl.SSLError) as exc:
            raise ServeError(f"--dicom-tls: cannot load {certificate} and {key}: {exc}") from None
    return DimseOptions(
        host=options.host,
        port=options.dicom_port,
        ae_title=title,
        peers=peers,
        tls=tls,
        log_dir=home / "logs",
    )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _start_dimse(
    index: CatalogIndex, intake: Intake | None, options: DimseOptions, limits: HttpLimits
) -> DimseServer:
    from pixels_sql.servers.dicomweb.service import Service, ServiceOptions
    from pixels_sql.servers.dimse.server import DimseServer

    service = Service(index, ServiceOptions(limits=limits))
    server = DimseServer(service, intake, options)
    server.start()
    return server


def _guard_clients(spark: SparkSession, home: Path, options: ServeOptions, out: TextIO) -> None:
    """Turn on ClientGuard (docs/security.md) before any client can connect: the secrets,
    the allowed roots, whether clients may send code."""
    from pixels_sql.servers.intake import landing_folder
    from pixels_sql.servers.secrets import ROOTS_FILE, SECRETS_FILE, ensure_secrets

    guard = spark._jvm.pixelssql.ClientGuard
    if options.auth:
        made, created = ensure_secrets(home)
        guard.secrets(made.pipeline, made.admin, made.reader)
        if created and options.engine:
            # The engine's output is a log file: no secret in it.
            print(
                f"pixels-sql serve: new secrets in {home / SECRETS_FILE} (mode 0600);"
                " `pixels-sql token` prints them",
                file=out,
                flush=True,
            )
        elif created:
            print(
                f"pixels-sql serve: new secrets in {home / SECRETS_FILE} (mode 0600), shown once"
                f" (`pixels-sql token` prints them again): admin {made.admin} · read-only"
                f" {made.reader}",
                file=out,
                flush=True,
            )
    else:
        print(
            "pixels-sql serve: WARNING: --no-auth: every user of this machine can use the JDBC"
            " and Spark Connect endpoints as the admin, without a secret",
            file=sys.stderr,
            flush=True,
        )
    roots = [
        str(landing_folder(home)),
        *(os.path.abspath(os.path.expanduser(path)) for path in options.allow_paths),
        *catalog_roots(spark, options.database),
    ]
    guard.enable("\n".join(roots), str(home / ROOTS_FILE), options.allow_udfs, options.auth)
    guard.trust(spark._jsparkSession)


def catalog_roots(spark: SparkSession, database: str) -> list[str]:
    """The local folders the catalog's files were ingested from: a file's path less its
    relative_path (the pipeline's 10_catalog.sql keeps it relative to the folder ingested)."""
    if not spark.catalog.tableExists(f"{database}.object_catalog"):
        return []
    rows = spark.sql(
        f"""
        SELECT DISTINCT left(local, length(local) - length(relative_path) - 1) AS root
        FROM (
          SELECT regexp_replace(path, '^file:(//)?', '') AS local, relative_path
          FROM `{database}`.object_catalog
          WHERE relative_path IS NOT NULL AND path NOT LIKE 'zip://%'
        )
        WHERE endswith(local, concat('/', relative_path))
        """
    ).collect()
    return [row.root for row in rows if row.root]


def _register_while_the_metastore_opens(spark: SparkSession) -> None:
    """Install the SQL functions (a second of Python-to-JVM calls) while another thread opens
    the metastore (Hive's client and Derby, a few seconds), which the first query would
    otherwise wait for."""
    from pixels_sql.functions import register

    opening = threading.Thread(
        target=lambda: spark.catalog.listDatabases(), name="metastore-open", daemon=True
    )
    opening.start()
    register(spark)
    opening.join()


def _ready_line(info: ServerInfo, options: ServeOptions, folder: Path) -> str:
    parts = ["pixels-sql serve: ready"]
    if options.jdbc_port:
        parts.append(f"JDBC {info.jdbc_url}")
    parts.append(f"Spark Connect {info.connect_url}")
    if info.dicomweb_url is not None:
        from pixels_sql.servers.viewer import viewer_dir

        store = " (store on)" if options.allow_store else ""
        parts.append(f"DICOMweb {info.dicomweb_url}{store}")
        if viewer_dir() is not None:
            parts.append(f"viewer {info.http_url}/viewer")
    if options.dicom_port:
        store = " (store on)" if options.allow_store else ""
        parts.append(f"DICOM {options.ae_title}@{options.host}:{options.dicom_port}{store}")
    if options.run_command is not None:
        idle = f", stops after {options.idle_timeout:.0f} s idle" if options.idle_timeout else ""
        parts.append(f"engine of the pixels-sql commands{idle}")
    parts += [f"home {folder}", f"logs {folder / 'logs'}"]
    return " · ".join(parts)


def serve(
    home: str | os.PathLike[str] | None,
    options: ServeOptions,
    *,
    out: TextIO = sys.stdout,
    ready: threading.Event | None = None,
) -> int:
    """Run the server until SIGINT or SIGTERM; 0 after a clean stop."""
    from pixels_sql.servers.dicomweb.limits import DEFAULT_LIMITS
    from pixels_sql.session import release_metastore, session

    folder = home_dir(home)
    for port, flag in [
        (options.jdbc_port, "--jdbc-port"),
        (options.connect_port, "--connect-port"),
        (options.http_port, "--http-port"),
        (options.dicom_port, "--dicom-port"),
    ]:
        if port:  # 0: that endpoint is off
            _check_free(options.host, port, flag)
    dimse = dimse_options(folder, options) if options.dicom_port else None
    try:  # a wrong limit is told before Spark starts; DICOMweb and DIMSE share the limits
        limits = DEFAULT_LIMITS.with_settings(list(options.http_limits))
    except ValueError as exc:
        raise ServeError(str(exc)) from None
    stop = threading.Event()

    def stop_on_signals() -> dict[int, object]:
        return {
            number: signal.signal(number, lambda *_: stop.set())
            for number in (signal.SIGINT, signal.SIGTERM)
        }

    def write_archive() -> None:
        jvm_classes.finish(lambda line: print(f"pixels-sql serve: {line}", file=out, flush=True))

    previous = stop_on_signals()
    try:
        holder = "the pixels-sql engine" if options.engine else "pixels-sql serve"
        with contextlib.ExitStack() as home_free:
            # After the home is free (also after a failed start): the JVM writes the class
            # archive as it exits, once per installation. Nothing when not asked or done.
            home_free.callback(write_archive)
            home_free.enter_context(HomeLock(folder, holder=holder))
            (folder / "logs").mkdir(parents=True, exist_ok=True)
            # Hive's session start-up logs an error when its local scratch folder is missing.
            (folder / "tmp" / "hive" / "local").mkdir(parents=True, exist_ok=True)
            # Hive's Thrift service reads these before its settings: make them agree.
            os.environ["HIVE_SERVER2_THRIFT_PORT"] = str(options.jdbc_port)
            os.environ["HIVE_SERVER2_THRIFT_BIND_HOST"] = options.host
            spark = session(
                folder,
                master=options.master,
                ui=options.ui,
                conf=server_conf(folder, options),
                log_config=SERVE_LOG_CONFIG,
                register=False,
                write_class_archive=True,
            )
            # pyspark's SparkContext installs a SIGINT handler of its own (cancel the jobs,
            # raise KeyboardInterrupt): a Ctrl-C must stop the server cleanly instead.
            stop_on_signals()
            _register_while_the_metastore_opens(spark)
            endpoints = Endpoints(spark, options)
            web = None
            dicom = None
            engine = None
            intake = None
            index_stop = threading.Event()
            index_keeper = None
            try:
                if options.run_command is not None:
                    # The owner's commands first: the engine's socket takes only the home
                    # owner's commands, each in a session trusted as the server's own, so it
                    # needs neither the client guard nor the endpoints that follow (the
                    # allowed roots read from the catalog, Spark Connect): a cold command
                    # runs while they start.
                    engine = EngineSocket(folder, options.run_command, spark)
                    engine.start()
                _guard_clients(spark, folder, options, out)
                endpoints.start()
                if options.http_port or dimse is not None:
                    from pixels_sql.servers.dicomweb.index import CatalogIndex
                    from pixels_sql.servers.dicomweb.server import REFRESH_SECONDS
                    from pixels_sql.servers.intake import Intake, landing_folder

                    # One index and one intake for DICOMweb and DIMSE: an instance stored by
                    # either is found by both.
                    index = CatalogIndex(spark.newSession(), options.database)
                    # The index's session reads and, after a store, ingests: the server's own.
                    spark._jvm.pixelssql.ClientGuard.trust(index.spark._jsparkSession)
                    index.refresh(force=True)
                    index_keeper = threading.Thread(
                        target=index.keep_fresh,
                        args=(index_stop, REFRESH_SECONDS),
                        name="catalog-index",
                        daemon=True,
                    )
                    index_keeper.start()
                    if options.allow_store:
                        # Started before either endpoint listens: its recovery removes the
                        # partial files of an earlier process, never those of a live receive.
                        intake = Intake(index, landing_folder(folder))
                        intake.start()
                    if options.http_port:
                        web = _start_web(spark, options, index, intake, limits)
                    if dimse is not None:
                        dicom = _start_dimse(index, intake, dimse, limits)
                info = ServerInfo(
                    pid=os.getpid(),
                    host=options.host,
                    jdbc_port=options.jdbc_port,
                    connect_port=options.connect_port,
                    home=str(folder),
                    http_port=options.http_port or None,
                )
                info.write(folder)
                print(_ready_line(info, options, folder), file=out, flush=True)
                if ready is not None:
                    ready.set()
                while not stop.wait(0.5):
                    if (
                        engine is not None
                        and options.idle_timeout
                        and engine.idle_seconds() > options.idle_timeout
                        and not spark.sparkContext.statusTracker().getActiveJobsIds()
                    ):
                        print(
                            f"pixels-sql serve: idle for {options.idle_timeout:.0f} s",
                            file=out,
                            flush=True,
                        )
                        break
                print("pixels-sql serve: stopping", file=out, flush=True)
            finally:
                remove_state(folder, os.getpid())
                if engine is not None:
                    engine.stop()
                if dicom is not None:
                    dicom.stop()
                if web is not None:
                    web.stop()
                if intake is not None:
                    intake.stop()
                index_stop.set()
                if index_keeper is not None:
                    index_keeper.join(timeout=10)
                endpoints.stop()
                if jvm_classes.writing() and not release_metastore(spark, folder):
                    # Derby still holds the home: the archive is written before it is free.
                    write_archive()
        print("pixels-sql serve: stopped", file=out, flush=True)
        return 0
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]
