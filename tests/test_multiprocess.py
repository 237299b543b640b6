"""The SQL functions ship to separate executor processes (local-cluster: 2 executor JVMs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pixels_sql.dicom.meta import read_result
from pixels_sql.dicom.tags import tag_value
from tests.corpus import PYDICOM_TEST_FILES


def test_functions_run_on_two_executor_jvms(tmp_path: Path) -> None:
    job = Path(__file__).with_name("multiprocess_job.py")
    # Test-only speed-up: the executor JVMs get what tests/conftest.py gives the driver (C1,
    # the class archive), as JAVA_TOOL_OPTIONS (executors do not read SPARK_SUBMIT_OPTS).
    driver = os.environ.get("SPARK_SUBMIT_OPTS", "")
    completed = subprocess.run(
        [sys.executable, str(job), str(tmp_path / "home"), str(PYDICOM_TEST_FILES)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "JAVA_TOOL_OPTIONS": driver} if driver else None,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.split("\n")
    driver = next(int(line.split()[1]) for line in lines if line.startswith("driver "))
    executors = [list(map(int, line.split()[1:])) for line in lines if line.startswith("executor ")]
    pids = {pid for pid, *_ in executors}
    assert len(pids) == 2 and driver not in pids

    files = [p for p in PYDICOM_TEST_FILES.rglob("*") if p.is_file()]
    metas = [read_result(str(p)).decoded().meta for p in files]
    readable = [json.loads(meta) for meta in metas if meta is not None]
    with_uid = sum(1 for meta in readable if tag_value(meta, "SOPInstanceUID") is not None)
    assert sum(e[1] for e in executors) == len(files)
    assert sum(e[2] for e in executors) == len(readable)
    assert sum(e[3] for e in executors) == with_uid
