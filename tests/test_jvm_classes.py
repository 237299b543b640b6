"""The driver JVM's class archive (pixels_sql/jvm_classes.py), without a JVM: which options a
driver gets, when the archive is off, where it may live. test_engine.py checks a real engine
writing one and the next engine mapping it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pixels_sql import jvm_classes
from pixels_sql.session import jar_path

JAR = jar_path()


@pytest.fixture
def archive_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "jvm-classes"
    monkeypatch.setenv("PIXELS_SQL_CLASS_ARCHIVE", str(folder))
    for variable in jvm_classes.USER_OPTION_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(jvm_classes, "_writing", None)
    return folder


def test_a_driver_writes_the_archive_when_there_is_none_then_maps_it(archive_folder: Path) -> None:
    archive = jvm_classes.class_archive(JAR)
    assert archive is not None and archive.path.parent == archive_folder
    assert archive.path.name.startswith("spark-driver-") and archive.path.suffix == ".jsa"
    # Private: an archive is code the JVM runs.
    assert archive_folder.stat().st_mode & 0o777 == 0o700
    # Only a driver allowed to write (a server) writes it, to a file of its own process.
    assert jvm_classes.driver_options(JAR, write=False) == ""
    assert not jvm_classes.writing()
    options = jvm_classes.driver_options(JAR, write=True)
    assert options == f"-XX:ArchiveClassesAtExit={archive.partial} {jvm_classes.QUIET}"
    assert archive.partial.name == f"{archive.path.name}.{os.getpid()}.partial"
    assert jvm_classes.writing()
    archive.path.write_bytes(b"archive")
    for write in (False, True):
        assert jvm_classes.driver_options(JAR, write=write) == (
            f"-XX:SharedArchiveFile={archive.path} {jvm_classes.QUIET}"
        )


def test_the_key_follows_what_the_jvm_checks(archive_folder: Path, monkeypatch) -> None:
    first = jvm_classes.class_archive(JAR)
    assert first is not None and first == jvm_classes.class_archive(JAR)
    assert jvm_classes.runtime_key(JAR, "a") != jvm_classes.runtime_key(JAR, "b")
    # A larger heap may turn compressed pointers off, which an archive depends on.
    monkeypatch.setenv("SPARK_DRIVER_MEMORY", "40g")
    assert jvm_classes.class_archive(JAR) != first


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PIXELS_SQL_CLASS_ARCHIVE", "off"),
        ("SPARK_SUBMIT_OPTS", "-XX:SharedArchiveFile=/elsewhere/mine.jsa"),
        ("JAVA_TOOL_OPTIONS", "-Xshare:off"),
    ],
)
def test_off_when_asked_or_when_the_user_runs_an_archive(
    archive_folder: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert jvm_classes.class_archive(JAR) is None
    assert jvm_classes.driver_options(JAR, write=True) == ""
    assert not jvm_classes.writing()


def test_a_folder_others_can_write_is_not_used(archive_folder: Path) -> None:
    archive_folder.mkdir(mode=0o700)
    archive_folder.chmod(0o777)
    assert jvm_classes.class_archive(JAR) is None


def test_leftovers_of_dead_writers_and_stale_archives_go(archive_folder: Path) -> None:
    archive = jvm_classes.class_archive(JAR)
    assert archive is not None
    dead = archive_folder / f"{archive.path.name}.999999999.partial"
    dead.write_bytes(b"half")
    live = archive_folder / f"{archive.path.name}.{os.getppid()}.partial"
    live.write_bytes(b"being written")
    stale = archive_folder / "spark-driver-0123456789abcdef01234567.jsa"
    stale.write_bytes(b"old")
    old = 8 * 24 * 3600
    os.utime(stale, (os.path.getmtime(stale) - old,) * 2)
    recent = archive_folder / "spark-driver-fedcba9876543210fedcba98.jsa"
    recent.write_bytes(b"another installation's")
    jvm_classes.driver_options(JAR, write=True)
    assert not dead.exists() and not stale.exists()
    assert live.exists() and recent.exists()


def test_finish_without_a_writing_jvm_does_nothing(archive_folder: Path) -> None:
    lines: list[str] = []
    assert jvm_classes.finish(lines.append) is None
    assert lines == []
