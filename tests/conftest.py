"""Fixtures: one SparkSession for the whole run (local[2]), small copies of the corpus."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.corpus import PYDICOM_TEST_FILES, pydicom_data_dir

# A small, varied folder: good files of several modalities and encodings plus broken ones.
SAMPLE_FILES = {
    "ct/CT_small.dcm": PYDICOM_TEST_FILES / "CT_small.dcm",
    "mr/MR_small.dcm": PYDICOM_TEST_FILES / "MR_small.dcm",
    "mr/MR_small_RLE.dcm": PYDICOM_TEST_FILES / "MR_small_RLE.dcm",
    "mr/MR_small_bigendian.dcm": PYDICOM_TEST_FILES / "MR_small_bigendian.dcm",
    "rt/rtplan.dcm": PYDICOM_TEST_FILES / "rtplan.dcm",
    "us/US1_J2KR.dcm": pydicom_data_dir() / "US1_J2KR.dcm",
    "mf/emri_small.dcm": pydicom_data_dir() / "emri_small.dcm",
    "raw/no_preamble": PYDICOM_TEST_FILES / "ExplVR_BigEndNoMeta.dcm",
    "bad/MR_truncated.dcm": PYDICOM_TEST_FILES / "MR_truncated.dcm",
    "bad/README.txt": PYDICOM_TEST_FILES / "README.txt",
    "bad/badVR.dcm": PYDICOM_TEST_FILES / "badVR.dcm",
}


def copy_samples(target: Path, names: dict[str, Path] = SAMPLE_FILES) -> Path:
    for relative, source in names.items():
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
    return target


@pytest.fixture(scope="session")
def spark_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pixels-home")


@pytest.fixture(scope="session")
def spark(spark_home: Path) -> Iterator[object]:
    import pixels_sql

    session = pixels_sql.session(spark_home, master="local[2]")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_samples(tmp_path_factory.mktemp("samples"))


def printed_value(printed: str, column: str) -> str:
    """The first row's value of ``column`` in a table the CLI printed (header, rule, rows)."""
    lines = printed.split("\n")
    header = next(index for index, line in enumerate(lines) if column in line.split(" | "))
    names = [name.strip() for name in lines[header].split(" | ")]
    return lines[header + 2].split(" | ")[names.index(column)].strip()


def kill_after(process: subprocess.Popen[str], marker: str, delay: float) -> str:
    """Read the process's stderr until ``marker``, wait ``delay`` seconds, SIGKILL its whole
    process group (it must have been started with ``start_new_session``: driver JVM, Python
    workers, helpers); what it printed."""
    seen = ""
    assert process.stderr is not None
    while marker not in seen:
        line = process.stderr.readline()
        assert line, f"the run ended before {marker!r}: {seen[-3000:]}"
        seen += line
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return seen
