"""The driver JVM's class archive: class data sharing (CDS) for a faster start.

A Spark driver JVM spends most of its first seconds loading, verifying and linking Spark's
classes from pyspark's jars. A dynamic CDS archive (``-XX:ArchiveClassesAtExit``, JDK 13 and
later) holds those classes ready to map. With one, a session starts and answers its first
catalog query in about two thirds of the time (bench/README.md, "warm engine").

The archive is written once per installation, by the first ``pixels-sql serve`` (a warm
engine, most often) that finds none: that server's JVM writes it as it exits, and the server
moves it into place. Every driver JVM started afterwards maps it: servers, engines, embedded
commands, ``pixels_sql.session()``. Its name is a digest of what the JVM checks before it maps
an archive (the JVM, pyspark's jars, the extension jar, the heap size), so a new JDK, pyspark or
jar writes a new one; archives unused for a week are removed.

An archive is code the JVM runs: it is kept in a folder of the user's own (mode 0700) and never
taken from anywhere else. ``PIXELS_SQL_CLASS_ARCHIVE=off`` turns this off; it is also off when
the JVM options already name an archive of their own (``SPARK_SUBMIT_OPTS``,
``JAVA_TOOL_OPTIONS``): two archive options would stop the JVM from starting.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pixels_sql.config import settings
from pixels_sql.home import process_alive

# The JVM's own CDS messages (an archive it cannot map, classes it leaves out when it writes
# one) would land in a command's output: a JVM that cannot map the archive runs without it.
QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"
# Options that say the user runs an archive of their own.
USER_ARCHIVE_OPTIONS = ("SharedArchiveFile", "ArchiveClassesAtExit", "-Xshare", "AOTCache")
USER_OPTION_VARIABLES = (
    "SPARK_SUBMIT_OPTS",
    "JAVA_TOOL_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "_JAVA_OPTIONS",
)
# Writing one (~200 MiB) at exit took 10-25 s here; under servers/engine.py's STOP_TIMEOUT, so
# `pixels-sql stop` sees the server end.
WRITE_TIMEOUT = 90.0
# Also in the archive's key: what else shapes a driver JVM's options and class path.
KEYED_VARIABLES = (
    *USER_OPTION_VARIABLES,
    "SPARK_CONF_DIR",
    "HADOOP_CONF_DIR",
    "YARN_CONF_DIR",
    "SPARK_DIST_CLASSPATH",
)
STALE_SECONDS = 7 * 24 * 3600
SUFFIX = ".jsa"

# The archive this process's driver JVM was started to write (session()), which finish()
# moves into place after the JVM has exited.
_writing: ClassArchive | None = None


class ClassArchiveError(Exception):
    """The archive folder cannot be used safely."""


def java_binary() -> Path:
    """The java that pyspark's spark-submit runs: ``$JAVA_HOME/bin/java``, else ``java`` on
    PATH; resolved."""
    java_home = os.environ.get("JAVA_HOME")
    found = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    return Path(os.path.realpath(found or "java"))


def runtime_key(jar: Path, extra: str = "") -> str:
    """A digest of what a JVM checks before it maps an archive: the JVM (its binary and its
    own base archive), pyspark's jars (paths, sizes, times) and the extension ``jar``;
    ``extra`` (options, a job) added by the caller."""
    import pyspark

    digest = hashlib.sha256(extra.encode())
    java = java_binary()
    spark_dir = Path(pyspark.__file__).resolve().parent
    files = [java, *sorted(java.parent.parent.glob("lib/server/*"))]
    files += sorted((spark_dir / "jars").iterdir())
    for path in files:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    digest.update(f"{spark_dir}\n".encode())
    digest.update(jar.read_bytes())
    return digest.hexdigest()[:24]


@dataclass(frozen=True)
class ClassArchive:
    path: Path

    @property
    def partial(self) -> Path:
        """Where this process's JVM writes it (moved to ``path`` once the JVM has exited)."""
        return self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")


def _folder() -> Path:
    chosen = settings.class_archive
    if isinstance(chosen, Path):
        return chosen
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "pixels-sql" / "jvm-classes"


def _private(folder: Path) -> Path:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = folder.lstat()
    if status.st_uid != os.getuid() or status.st_mode & 0o022 or not folder.is_dir():
        raise ClassArchiveError(f"{folder} is not a folder only this user can write: not used")
    return folder


def user_archive() -> bool:
    """Whether the JVM options of the environment name an archive of their own."""
    return any(
        option in os.environ.get(variable, "")
        for variable in USER_OPTION_VARIABLES
        for option in USER_ARCHIVE_OPTIONS
    )


def class_archive(jar: Path) -> ClassArchive | None:
    """This installation's archive (written or not) for driver JVMs with the extension ``jar``
    on their class path, or None when archives are off, the environment runs its own, or the
    folder is not private."""
    if settings.class_archive is False or user_archive():
        return None
    options = [f"driver memory {settings.driver_memory}"]
    options += [f"{variable}={os.environ.get(variable, '')}" for variable in KEYED_VARIABLES]
    try:
        folder = _private(_folder())
        key = runtime_key(jar, "\n".join(options))
    except (OSError, RuntimeError, ClassArchiveError):  # RuntimeError: no home folder known
        return None  # Spark then says what is wrong with its JVM, if anything
    return ClassArchive(folder / f"spark-driver-{key}{SUFFIX}")


def driver_options(jar: Path, *, write: bool) -> str:
    """The driver JVM options for a session this process is about to start (its first), with
    the extension ``jar`` on its class path: map the archive, or write it when there is none
    and ``write`` says this JVM may."""
    global _writing
    archive = class_archive(jar)
    if archive is None:
        return ""
    if archive.path.is_file():
        with contextlib.suppress(OSError):
            os.utime(archive.path)  # in use: not stale
        return f"-XX:SharedArchiveFile={archive.path} {QUIET}"
    if not write:
        return ""
    _remove_leftovers(archive)
    _writing = archive
    return f"-XX:ArchiveClassesAtExit={archive.partial} {QUIET}"


def writing() -> bool:
    """Whether this process's driver JVM writes the archive when it exits."""
    return _writing is not None


def finish(say: Callable[[str], None] | None = None) -> Path | None:
    """After this process's Spark has stopped: when its JVM was started to write the archive,
    let it exit (it writes the archive as it does) and move the archive into place. The
    process cannot start another session afterwards: call it last. Returns the archive."""
    global _writing
    archive, _writing = _writing, None
    if archive is None:
        return None
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    process = getattr(gateway, "proc", None)
    if process is None:
        return None
    if say is not None:
        say(f"writing the JVM class archive {archive.path} (once per installation)")
    with contextlib.suppress(Exception):
        gateway.shutdown()
    SparkContext._gateway = None
    SparkContext._jvm = None
    # The driver JVM exits when its standard input closes (pyspark's gateway server).
    with contextlib.suppress(OSError):
        process.stdin.close()
    try:
        status = process.wait(timeout=WRITE_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        status = None
    partial = archive.partial
    with contextlib.suppress(OSError):
        if status == 0 and partial.is_file() and partial.stat().st_size:
            os.replace(partial, archive.path)
            return archive.path
    with contextlib.suppress(OSError):
        partial.unlink()
    return None


def _remove_leftovers(archive: ClassArchive) -> None:
    """Partial archives of processes no longer alive, and archives of other keys unused for a
    week (another JDK, pyspark or jar)."""
    for path in archive.path.parent.iterdir():
        with contextlib.suppress(OSError, ValueError):
            if path.name.endswith(".partial"):
                pid = int(path.name.rsplit(".", 2)[-2])
                if not process_alive(pid):
                    path.unlink()
            elif (
                path.suffix == SUFFIX
                and path != archive.path
                and time.time() - path.stat().st_mtime > STALE_SECONDS
            ):
                path.unlink()
