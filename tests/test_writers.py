"""One writer per home, instance identity, and clients that never hang (issue 26), against a real
``pixels-sql serve --allow-store`` in a process of its own, its CLI clients in theirs, and
STOW-RS over plain HTTP:

- CLI ingests while STOWs arrive, round after round (``PIXELS_SQL_WRITER_ROUNDS``, default 3;
  ``make stress-writers`` runs 10): every acknowledged instance reaches the catalog and QIDO,
  no path has two live rows, and the index follows each run without a restart;
- a STOW of a catalogued SOP Instance UID with other bytes is refused (0111H), the same bytes
  succeed, and a second folder's conflicting file is listed in ``instance_conflicts`` without
  changing what QIDO and metadata return;
- a disk-full run names the statement and the OS error first;
- kill -9 of the server under a CLI ingest: the CLI exits within 30 s with one line, and the
  run again (embedded, the server gone) is exact.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from pixels_sql.home import WriterBusyError, catalog_writer
from tests.corpus import PYDICOM_TEST_FILES
from tests.serving import ServeProcess

ROOT = Path(__file__).parent.parent
ROUNDS = max(3, int(os.environ.get("PIXELS_SQL_WRITER_ROUNDS", "3")))
FILES_PER_ROUND = 4
ORIGINAL = "ORIGINAL^PATIENT"
DICOM_PARTS = 'multipart/related; type="application/dicom"; boundary={}'


def make_instance(
    study: str, patient: str = ORIGINAL, sop: str | None = None, series: str | None = None
) -> pydicom.Dataset:
    dataset = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm")
    dataset.PatientName = patient
    dataset.StudyInstanceUID = study
    dataset.SeriesInstanceUID = series or generate_uid()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = sop or generate_uid()
    return dataset


def encoded(dataset: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    dataset.save_as(out)
    return out.getvalue()


def stow(base: str, parts: list[bytes]) -> requests.Response:
    boundary = f"pixels-sql-{time.monotonic_ns()}"
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
        for part in parts
    )
    return requests.post(
        f"{base}/studies",
        data=body + f"--{boundary}--\r\n".encode(),
        headers={"Content-Type": DICOM_PARTS.format(boundary)},
        timeout=120,
    )


def qido_instances(base: str, study: str) -> list[dict]:
    response = requests.get(f"{base}/studies/{study}/instances", timeout=60)
    if response.status_code in (204, 404):
        return []
    response.raise_for_status()
    return response.json() if response.content else []


def study_patient(base: str, study: str) -> str | None:
    """The PatientName QIDO-RS gives a study."""
    response = requests.get(f"{base}/studies", params={"StudyInstanceUID": study}, timeout=60)
    found = response.json() if response.status_code == 200 and response.content else []
    return found[0]["00100010"]["Value"][0]["Alphabetic"] if found else None


def sop_uids(results: list[dict]) -> set[str]:
    return {result["00080018"]["Value"][0] for result in results}


def eventually(check: Callable[[], bool], seconds: float = 180) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def cli(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pixels_sql.cli", *args, "--home", str(home)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def cli_process(home: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pixels_sql.cli", *args, "--home", str(home)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def query(home: Path, sql: str) -> list[dict[str, str]]:
    """Rows of a query run by the CLI (through the home's server, if one runs)."""
    done = cli(home, "sql", sql, "--format", "csv", "--limit", "1000000", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return list(csv.DictReader(io.StringIO(done.stdout)))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    home = tmp_path_factory.mktemp("writers") / "home"
    process = ServeProcess(home, options=("--allow-store",)).start()
    try:
        yield process
    finally:
        if process.alive():
            process.terminate()


@pytest.fixture(scope="module")
def base(server: ServeProcess) -> str:
    return f"http://127.0.0.1:{server.http_port}/dicomweb"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("writers-data") / "data"


# -- the lock itself ---------------------------------------------------------------------------


HOLD_IN_ANOTHER_PROCESS = """
import sys, time
from pathlib import Path
from pixels_sql.home import catalog_writer
with catalog_writer(Path(sys.argv[1]), holder="a test writer", wait=10):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_writer_waits_for_another_process_and_says_for_whom(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_IN_ANOTHER_PROCESS, str(tmp_path), "3"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        said: list[str] = []
        with (
            pytest.raises(WriterBusyError, match="gave up after 0 s waiting for a test writer"),
            catalog_writer(tmp_path, wait=0.5, say=said.append),
        ):
            pass
        assert len(said) == 1 and "waiting for a test writer (pid" in said[0], said
        started = time.monotonic()
        with catalog_writer(tmp_path, wait=60, say=said.append):
            waited = time.monotonic() - started
            # Re-entrant in one thread: the pipeline's upkeep takes it inside the CLI's run.
            with catalog_writer(tmp_path, wait=0):
                pass
        assert 0.5 < waited < 30, waited
        assert holder.wait(30) == 0
    finally:
        holder.kill()


def test_threads_of_one_process_take_turns(tmp_path: Path) -> None:
    inside = []

    def write(name: str) -> None:
        with catalog_writer(tmp_path, wait=60, say=lambda _: None):
            inside.append(f"{name} in")
            time.sleep(0.3)
            inside.append(f"{name} out")

    threads = [threading.Thread(target=write, args=(str(n),)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(inside) == 6
    assert all(inside[i].split()[0] == inside[i + 1].split()[0] for i in range(0, 6, 2)), inside


# -- CLI ingests while STOWs arrive ------------------------------------------------------------


def test_cli_ingests_while_stows_arrive(server: ServeProcess, base: str, data: Path) -> None:
    acknowledged: set[str] = set()
    catalogued: set[str] = set()
    stow_study = generate_uid()
    studies: list[str] = []
    for round_number in range(ROUNDS):
        study = generate_uid()
        folder = data / f"round{round_number}"
        folder.mkdir(parents=True)
        files = set()
        for number in range(FILES_PER_ROUND):
            dataset = make_instance(study)
            dataset.save_as(folder / f"{number}.dcm")
            files.add(str(dataset.SOPInstanceUID))
        catalogued |= files
        changed = None
        if studies:
            # A file of the last round rewritten in place: its new row replaces the old one,
            # whose partition the run then rewrites (the index must read the table afresh).
            changed = f"CHANGED^ROUND{round_number}"
            path = data / f"round{round_number - 1}" / "0.dcm"
            rewritten = pydicom.dcmread(path)
            rewritten.PatientName = changed
            rewritten.save_as(path)
        studies.append(study)
        stderr = ingest_while_storing(server.home, data, base, stow_study, acknowledged)
        # The index follows both runs (the CLI's through the server, the landing ingest's)
        # without a restart.
        assert eventually(
            lambda study=study, files=files: sop_uids(qido_instances(base, study)) == files
        ), stderr
        if changed is not None:
            assert eventually(
                lambda study=studies[-2], changed=changed: study_patient(base, study) == changed
            ), stderr
        assert eventually(lambda: sop_uids(qido_instances(base, stow_study)) >= acknowledged), (
            f"round {round_number}: acknowledged but not searchable:"
            f" {sorted(acknowledged - sop_uids(qido_instances(base, stow_study)))[:5]}"
        )
    # Searchable at the acknowledgement, catalogued by the landing ingest seconds later.
    live = "SELECT path, SOPInstanceUID FROM object_catalog WHERE deleted_at IS NULL"
    assert eventually(
        lambda: (
            {row["SOPInstanceUID"] for row in query(server.home, live)} >= acknowledged | catalogued
        )
    )
    rows = query(server.home, live)
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)), "a path with two live rows"
    # Every run drops its working table when it ends. A landing ingest queued by the last
    # STOWs (their files may have been catalogued by the run before it) can still be under
    # way here, with its own table: wait for the runs to end, not for a moment without one.
    listing = "SHOW TABLES IN pixels LIKE 'pixels_listing*'"
    assert eventually(lambda: query(server.home, listing) == [], 240), query(server.home, listing)


def ingest_while_storing(
    home: Path, data: Path, base: str, study: str, acknowledged: set[str]
) -> str:
    """`pixels-sql ingest` of ``data`` through the server while STOW-RS requests of two new
    instances of ``study`` arrive every half second (at least three); the UIDs acknowledged go
    to ``acknowledged``. The CLI's stderr."""
    stop = threading.Event()
    refused: list[str] = []

    def send() -> None:
        sent = 0
        while not stop.is_set() or sent < 3:
            instances = [make_instance(study, "STOWED^ROUND") for _ in range(2)]
            response = stow(base, [encoded(d) for d in instances])
            sent += 1
            if response.status_code == 200:
                acknowledged.update(str(d.SOPInstanceUID) for d in instances)
            else:
                refused.append(f"{response.status_code} {response.text[:300]}")
            time.sleep(0.5)

    sender = threading.Thread(target=send)
    sender.start()
    run = cli_process(home, "ingest", str(data), "--no-thumbnails")
    try:
        _, stderr = run.communicate(timeout=600)
    finally:
        stop.set()
        sender.join(180)
    assert run.returncode == 0, stderr[-4000:]
    assert not refused, refused
    return stderr


# -- instance identity -------------------------------------------------------------------------


def test_a_conflicting_instance_never_replaces_the_catalogued_one(
    server: ServeProcess, base: str, data: Path, tmp_path: Path
) -> None:
    original_path = sorted(data.rglob("*.dcm"))[-1]  # of the last round: never rewritten
    original = pydicom.dcmread(original_path)
    study, sop = str(original.StudyInstanceUID), str(original.SOPInstanceUID)
    series = str(original.SeriesInstanceUID)
    instance = f"{base}/studies/{study}/series/{series}/instances/{sop}"
    spoofed = make_instance(study, "SPOOFED^BY^STOW", sop=sop, series=series)

    refused = stow(base, [encoded(spoofed)])
    assert refused.status_code == 409, refused.text
    failure = refused.json()["00081198"]["Value"][0]
    assert failure["00081197"]["Value"] == [0x0111]  # Duplicate SOP Instance
    assert failure["00081155"]["Value"] == [sop]
    audit = (server.home / "logs" / "server.log").read_text(errors="replace")
    assert f"STOW-RS refused SOP Instance UID {sop}: already stored with other content" in audit

    again = stow(base, [original_path.read_bytes()])  # a client's retry: the same bytes
    assert again.status_code == 200, again.text
    assert again.json()["00081199"]["Value"][0]["00081155"]["Value"] == [sop]
    assert not list((server.home / "landing").rglob(f"{sop}.dcm"))  # nothing written

    # A second folder, at a path sorting before the first: another file of that UID, and an
    # identical copy of another catalogued file (a copy is no conflict).
    copies = data.parent / "a-copies"
    copies.mkdir()
    make_instance(study, "SPOOFED^BY^FOLDER", sop=sop, series=series).save_as(
        copies / "same-uid.dcm"
    )
    copied = sorted(data.rglob("*.dcm"))[-2]
    (copies / "identical.dcm").write_bytes(copied.read_bytes())
    ingested = cli(server.home, "ingest", str(copies), "--no-thumbnails")
    assert ingested.returncode == 0, ingested.stderr[-3000:]
    conflicts = query(
        server.home,
        "SELECT SOPInstanceUID, served_path, conflicting_path FROM instance_conflicts",
    )
    assert conflicts == [
        {
            "SOPInstanceUID": sop,
            "served_path": f"file:{original_path}",
            "conflicting_path": f"file:{copies / 'same-uid.dcm'}",
        }
    ], conflicts
    served = query(
        server.home,
        "SELECT path FROM instance_copies WHERE served AND copies = 2",
    )
    assert sorted(row["path"] for row in served) == sorted(
        [f"file:{original_path}", f"file:{copied}"]
    ), served

    time.sleep(6)  # one refresh of the index at least (every 5 s)
    found = [r for r in qido_instances(base, study) if r["00080018"]["Value"] == [sop]]
    assert len(found) == 1, found
    assert study_patient(base, study) == ORIGINAL
    metadata = requests.get(f"{instance}/metadata", timeout=60).json()
    assert metadata[0]["00100010"]["Value"][0]["Alphabetic"] == ORIGINAL


# -- failures named ----------------------------------------------------------------------------


def test_a_full_disk_names_the_statement_and_the_os_error(
    server: ServeProcess, tmp_path: Path
) -> None:
    folder = tmp_path / "full-data"
    folder.mkdir()
    for number in range(3):
        make_instance(generate_uid()).save_as(folder / f"{number}.dcm")
    location = server.home / "warehouse" / "full.db"
    location.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(location)], check=True)
    try:
        failed = cli(server.home, "ingest", str(folder), "--database", "full", "--no-thumbnails")
    finally:
        subprocess.run(["umount", "-l", str(location)], check=True)
    assert failed.returncode == 1
    message = failed.stderr.strip().splitlines()[-1]
    assert message.startswith("pixels-sql: "), failed.stderr[-3000:]
    location_part, _, reason = message.removeprefix("pixels-sql: ").partition(": ")
    assert location_part.rsplit(":", 1)[0].endswith(".sql"), message
    assert reason.startswith("No space left on device"), message


# -- a server that dies ------------------------------------------------------------------------


def test_a_cli_client_exits_when_its_server_is_killed_and_the_rerun_is_exact(
    server: ServeProcess, tmp_path: Path
) -> None:
    folder = tmp_path / "killed-run"
    folder.mkdir()
    sops = set()
    for number in range(30):
        dataset = make_instance(generate_uid())
        dataset.save_as(folder / f"{number:02}.dcm")
        sops.add(str(dataset.SOPInstanceUID))
    run = cli_process(server.home, "ingest", str(folder))
    assert run.stderr is not None
    seen = []
    for line in run.stderr:  # the run is under way once the listing is counted
        seen.append(line)
        if "files_to_read" in line:
            break
    assert any("files_to_read" in line for line in seen), "".join(seen)[-3000:]
    pids = server.pids()
    os.kill(pids[0], signal.SIGKILL)  # kill -9 of `pixels-sql serve`
    server.process.wait(30)
    killed = time.monotonic()
    try:
        rest = run.stderr.read()
        run.wait(60)
    finally:
        run.kill()
    assert time.monotonic() - killed < 30
    for pid in pids[1:]:  # its JVM and workers end on their own; make sure before the re-run
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert eventually(lambda: all(gone(pid) for pid in pids), 60)
    assert run.returncode == 1
    after = [line for line in rest.splitlines() if line.strip()]
    assert after and after[-1].startswith("pixels-sql: the server of"), rest[-3000:]
    assert [line for line in after if line.startswith("pixels-sql:")] == after[-1:], rest[-3000:]
    assert "Traceback" not in rest, rest[-3000:]

    # Run again with no server on the home (the command runs embedded, the metastore and the
    # writer lock of the killed processes released by the kernel).
    again = cli(server.home, "ingest", str(folder), "--no-thumbnails")
    assert again.returncode == 0, again.stderr[-3000:]
    rows = query(
        server.home,
        f"SELECT path, SOPInstanceUID FROM object_catalog WHERE deleted_at IS NULL"
        f" AND startswith(path, 'file:{folder}/')",
    )
    assert sorted(row["path"] for row in rows) == sorted(
        f"file:{path}" for path in folder.iterdir()
    )
    assert {row["SOPInstanceUID"] for row in rows} == sops


def test_an_io_failure_leads_with_the_statement_and_the_os_error() -> None:
    """The text of a real ENOSPC under the embedded session (py4j's error, its Java stack
    included), captured once into tests/golden: the message names the statement and the
    OS error first, then Spark's own line."""
    from pixels_sql.cli import _error_text
    from pixels_sql.runner import STATEMENT_NOTE

    failure = RuntimeError((ROOT / "tests" / "golden" / "enospc_py4j.txt").read_text())
    failure.add_note(f"{STATEMENT_NOTE}sql/20_meta.sql:13")
    assert _error_text(failure) == (
        "sql/20_meta.sql:13: No space left on device: java.io.IOException"
        " ([TASK_WRITE_FAILED] Task failed while writing rows to"
        " file:/tmp/enospc/full.db/pixels_listing_b54784fccfb54054bdb02072759b2cc0."
        " SQLSTATE: 58030)"
    )
