"""read_files in every JDBC session of a Thrift server, queried with the wheel's beeline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyspark

from tests.corpus import PYDICOM_TEST_FILES
from tests.test_connect import free_port, wait_for_port

SPARK_HOME = Path(pyspark.__file__).parent


def test_read_files_in_a_new_jdbc_session(tmp_path: Path) -> None:
    port = free_port()
    job = Path(__file__).with_name("thrift_server_job.py")
    server = subprocess.Popen(
        [sys.executable, str(job), str(tmp_path / "home"), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_for_port(port, 180)
        completed = subprocess.run(
            [
                str(SPARK_HOME / "bin" / "beeline"),
                "-u",
                f"jdbc:hive2://127.0.0.1:{port}/default",
                "--silent=true",
                "--outputformat=csv2",
                "-e",
                f"SELECT count(*) AS files FROM read_files('{PYDICOM_TEST_FILES}');",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "SPARK_HOME": str(SPARK_HOME)},
        )
    finally:
        server.kill()
        server.wait(timeout=60)
    assert completed.returncode == 0, completed.stderr[-2000:]
    expected = sum(1 for p in PYDICOM_TEST_FILES.iterdir() if p.is_file())
    assert completed.stdout.split() == ["files", str(expected)]
