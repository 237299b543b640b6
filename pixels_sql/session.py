"""The embedded default: a local SparkSession with the extension jar and a persistent metastore."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pixels_sql.config import settings
from pixels_sql.home import home_dir, metastore_dir

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

JAR_NAME = "pixels-sql-extensions.jar"
LOG_CONFIG = Path(__file__).resolve().parent / "log4j2.properties"


def jar_path() -> Path:
    """The extension jar: ``$PIXELS_SQL_JAR``, else ``jars/`` of the source checkout, else the
    copy an installed wheel carries."""
    override = settings.jar
    candidates = [override] if override else []
    package = Path(__file__).resolve().parent
    candidates += [package.parent / "jars" / JAR_NAME, package / "jars" / JAR_NAME]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"pixels-sql extension jar not found (looked at {', '.join(map(str, candidates))});"
        f" build it with `make jar` or point {settings.variable('jar')} at it"
    )


def _cores(master: str) -> int:
    """Cores of a local master (local, local[N], local[*]); else this machine's count."""
    inside = master[master.find("[") + 1 : master.find("]")] if "[" in master else ""
    if master == "local":
        return 1
    if inside.isdigit():
        return int(inside)
    return os.cpu_count() or 1


def session_conf(
    home: Path,
    *,
    master: str = "local[*]",
    ui: bool = False,
    log_config: Path = LOG_CONFIG,
    java_options: str = "",
) -> dict[str, str]:
    """Spark settings of the embedded default (exposed so tests and servers can extend them).
    ``java_options``: more options of the driver JVM (the class archive's, jvm_classes.py)."""
    from pixels_sql.functions import EXTENSION_CLASS, injection_conf

    warehouse = home / "warehouse"
    derby = metastore_dir(home)
    return {
        **injection_conf(),
        "spark.master": master,
        "spark.app.name": "pixels-sql",
        "spark.jars": str(jar_path()),
        # The jar on the JVM's own class path too: Hive finds the server's password checker by
        # name through the Thrift thread's class loader, which may be a closed session's
        # (ClassNotFoundException after a while), and a class found from every loader is. The
        # same class path for every driver JVM: one class archive serves them all.
        "spark.driver.extraClassPath": str(jar_path()),
        "spark.sql.extensions": EXTENSION_CLASS,
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(warehouse),
        "spark.hadoop.javax.jdo.option.ConnectionURL": (
            f"jdbc:derby:;databaseName={derby};create=true"
        ),
        # derby.log lands in derby.system.home; keep it in the home folder, not the cwd.
        "spark.driver.extraJavaOptions": (
            f"-Dderby.system.home={home} -Dlog4j2.configurationFile={log_config.as_uri()}"
            f" -Dpixels_sql.log_dir={home / 'logs'} {java_options}"
        ).strip(),
        "spark.ui.enabled": "true" if ui else "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.host": "127.0.0.1",
        # The driver's RPC and block-manager ports would otherwise bind to the host's address.
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.sql.shuffle.partitions": "8",
        # A local master runs every task in the driver's JVM, whose heap Spark sizes at 1 GiB
        # whatever the machine: after a million headers were written (two Parquet writers
        # buffer up to a 128 MB row group each), reading their VARIANT column in 4,096-row
        # batches failed with OutOfMemoryError. 2 GiB unless SPARK_DRIVER_MEMORY (Spark's own
        # variable) says otherwise; a cluster's driver is sized by its owner.
        **({"spark.driver.memory": settings.driver_memory} if master.startswith("local") else {}),
        # File sources split by bytes, but dicom_meta reads only headers: the cost is per file
        # and per task (a Python UDF task costs 40-90 ms to set up). A few large splits per core
        # instead of one per 128 MB, counting a file's opening as 64 KiB (a header read) rather
        # than 4 MiB: 10,000 files go from 323 tasks to 8, and from 14.7 s to 2.2 s on 2 cores.
        "spark.sql.files.maxPartitionBytes": "1g",
        "spark.sql.files.openCostInBytes": "64k",
        "spark.sql.files.minPartitionNum": str(4 * _cores(master)),
        # Spark 4.3 feeds pandas UDFs columnar input from vectorized scans (a Parquet or Delta
        # table of paths) and then gathers each batch's results into one contiguous column:
        # 10,000 headers of ~8 KB of JSON want ~100 MB of heap at once, and 100,000 paths read
        # from a Parquet table failed with OutOfMemoryError on the 1 GiB local heap. Off: the
        # same query ran in 19 s.
        "spark.sql.execution.arrow.pythonUDF.columnarInput.enabled": "false",
        # Arrow batches of 2,000 rows instead of 10,000: a batch of header JSON (4-11 KB a
        # file) is held by a Python worker several times over (the Arrow input, the results,
        # the pandas output), and its peak stays (glibc keeps freed memory). 24,000 headers:
        # largest worker 338 -> 285 MiB, as fast; thumbnails (tens of KB a row) gain more.
        "spark.sql.execution.arrow.maxRecordsPerBatch": "2000",
        # Spark 4.3 shreds VARIANT columns when it writes Parquet, with a schema inferred from
        # the rows: for headers (a few hundred tags, differing by modality and vendor) that made
        # writing the meta column 2-3x slower and reading it back slower too. 18,187 headers:
        # parse + write 5.7-9.2 -> 2.8 s; 18 variant_gets 1.2-2.9 -> 0.9-1.2 s; to_json
        # 5.1-8.1 -> 3.1-3.3 s. Shredded tables written before still read.
        "spark.sql.variant.writeShredding.enabled": "false",
        "spark.sql.session.timeZone": "UTC",
        # A failing function (dicom_meta of a deleted file) reaches a JDBC or Spark Connect
        # client as its one-line reason ("dicom_meta: <path>: not_found: ..."), not a Python
        # traceback inside a Java one. Set it to false to see the Python frames.
        "spark.sql.execution.pyspark.udf.hideTraceback.enabled": "true",
        # Python workers fork from a daemon that has imported the functions' modules already
        # (pydicom, numpy, Pillow), and fork their file-reading helper in turn.
        "spark.python.daemon.module": "pixels_sql.functions.daemon",
        # Spark would rewrite ${name} and ${env:NAME} anywhere in SQL text, string literals
        # included: a folder named "${x}" or a DICOM value must reach Spark as written.
        "spark.sql.variable.substitute": "false",
        # A JVM keeps 100 compiled query classes (whole-stage code generation, Spark's default);
        # one incremental ingest makes ~180 distinct ones, so every run compiled them all again
        # (~1-1.2 s of compiling on 2 cores, and a new class runs interpreted until the JIT
        # takes it). 1,000 hold a pipeline's and a server's queries: a warm run compiles ~10.
        "spark.sql.codegen.cache.maxEntries": "1000",
    }


def session(
    home: str | os.PathLike[str] | None = None,
    *,
    master: str = "local[*]",
    ui: bool = False,
    conf: dict[str, str] | None = None,
    register: bool = True,
    log_config: Path = LOG_CONFIG,
    write_class_archive: bool = False,
) -> SparkSession:
    """Build (or return) the embedded SparkSession and install the pixels-sql SQL functions.

    Tables persist in ``home`` (default ``$PIXELS_SQL_HOME`` or ``./pixels-home``) across runs.
    Derby admits one process at a time: a second process on the same home fails to open the
    metastore while the first is alive. While ``pixels-sql serve`` holds the home, this raises
    :class:`~pixels_sql.home.HomeInUseError`: use ``pixels_sql.connect(home)`` instead.
    The driver JVM this starts maps the installation's class archive (jvm_classes.py); with
    ``write_class_archive`` (a long-lived server) it writes one when there is none, which
    :func:`pixels_sql.jvm_classes.finish` puts in place after the session stops.
    """
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    from pixels_sql import jvm_classes
    from pixels_sql.home import HomeInUseError
    from pixels_sql.io.storage import s3a_environment
    from pixels_sql.servers.discovery import running_server

    folder = home_dir(home)
    server = running_server(folder)
    if server is not None and server.pid != os.getpid():
        raise HomeInUseError(
            f"{folder} is served by pixels-sql serve (pid {server.pid}): its metastore admits"
            f" one process; use pixels_sql.connect({str(folder)!r}) (Spark Connect) instead"
        )
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    # Workers must run this interpreter: it is the one with pydicom, pyarrow and pandas.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # Scratch space inside the home folder; loopback only (the host name may resolve elsewhere).
    os.environ["SPARK_LOCAL_DIRS"] = str(folder / "tmp")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # A fresh Builder: the shared `SparkSession.builder` keeps options set by earlier callers
    # (e.g. a Spark Connect `remote(...)`), which would leak into this session.
    builder = SparkSession.Builder()
    java_options = ""
    if SparkContext._gateway is None:  # this process's first Spark: its JVM starts now
        java_options = jvm_classes.driver_options(jar_path(), write=write_class_archive)
    settings = {
        **session_conf(
            folder, master=master, ui=ui, log_config=log_config, java_options=java_options
        ),
        **(conf or {}),
    }
    # Object storage is read by Python workers through fsspec, which takes the AWS variables:
    # the S3A settings a Spark user would write reach them as executor environment.
    # (And this process's own reads: the DICOMweb server's, for one.)
    for variable, value in s3a_environment(settings).items():
        settings[f"spark.executorEnv.{variable}"] = value
        os.environ.setdefault(variable, value)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.enableHiveSupport().getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if register:
        from pixels_sql.functions import register as register_functions

        register_functions(spark)
    return spark


def release_metastore(spark: SparkSession, home: Path) -> bool:
    """After ``spark`` stopped, while its JVM lives on (writing its class archive): shut the
    embedded Derby down, so its lock goes and the home's next process can open the metastore.
    Only for a JVM this process owns: Derby is shut for every session of the JVM. Whether the
    metastore of ``home`` is free now (Derby removes its lock file when it shuts down)."""
    # Derby reports a clean shutdown as an SQLException (XJ015).
    with contextlib.suppress(Exception):
        spark._jvm.java.sql.DriverManager.getConnection("jdbc:derby:;shutdown=true")
    return not (metastore_dir(home) / "db.lck").exists()
