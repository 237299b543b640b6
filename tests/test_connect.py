"""read_files and the SQL functions through a Spark Connect server started from the pyspark
wheel's script (a separate JVM process), the client registering the functions."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyspark
import pytest

from pixels_sql.functions import injection_conf
from pixels_sql.session import session_conf
from tests.corpus import PYDICOM_TEST_FILES
from tests.serving import free_port

SPARK_HOME = Path(pyspark.__file__).parent


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"Spark Connect server did not listen on {port} in {timeout}s")


@pytest.fixture(scope="module")
def connect_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("connect-home")
    port = free_port()
    conf = session_conf(home, master="local[2]")
    # A Connect server started by hand whose driver registers nothing: without the injection
    # settings, the client's register() makes temporary functions (pixels-sql serve is the
    # server whose clients need nothing: tests/test_serve.py).
    for key in injection_conf():
        conf.pop(key)
    conf["spark.connect.grpc.binding.port"] = str(port)
    conf["spark.connect.grpc.binding.address"] = "127.0.0.1"
    args = ["--master", conf.pop("spark.master")]
    for key, value in conf.items():
        args += ["--conf", f"{key}={value}"]
    env = {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOG_DIR": str(home / "logs"),
        "SPARK_PID_DIR": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    subprocess.run(
        ["bash", str(SPARK_HOME / "sbin" / "start-connect-server.sh"), *args],
        env=env,
        check=True,
        capture_output=True,
    )
    try:
        wait_for_port(port, 180)
        yield f"sc://127.0.0.1:{port}"
    finally:
        subprocess.run(
            ["bash", str(SPARK_HOME / "sbin" / "stop-connect-server.sh")],
            env=env,
            capture_output=True,
        )


def test_read_files_and_functions_over_connect(connect_url: str) -> None:
    job = Path(__file__).with_name("connect_client_job.py")
    completed = subprocess.run(
        [sys.executable, str(job), connect_url, str(PYDICOM_TEST_FILES)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    expected = sum(1 for p in PYDICOM_TEST_FILES.iterdir() if p.is_file())
    assert completed.stdout.splitlines() == [f"listed {expected}", "modality CT error None"]
