"""``pixels-sql serve`` with real clients in separate processes: beeline, PyHive, Spark Connect,
the ``pixels-sql`` commands; robustness; a clean stop and restart on the same home."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import tomllib
from pyhive import hive

from pixels_sql.dicom.thumbnail import render_thumbnail
from pixels_sql.servers.endpoint import skip_hive_function_registry
from tests.conftest import SAMPLE_FILES, copy_samples
from tests.serving import SPARK_HOME, ServeProcess, cli, free_port, listening_addresses, query

ROOT = Path(__file__).resolve().parent.parent
SERVER_DOC = ROOT / "docs" / "server.md"
GOOD = {
    name: source for name, source in SAMPLE_FILES.items() if not name.startswith(("bad/", "raw/"))
}
# The soak of 8 concurrent clients (the issue asks for 60 s; PIXELS_SQL_SOAK_SECONDS shortens it
# while developing).
SOAK_SECONDS = float(os.environ.get("PIXELS_SQL_SOAK_SECONDS", "60"))
CLIENTS = 8


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve-data")
    return {
        "good": copy_samples(root / "good", GOOD),
        "all": copy_samples(root / "all"),
    }


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, folders: dict[str, Path]
) -> Iterator[ServeProcess]:
    # Admin clients read the sample folders (beeline, views) without the pipeline's ingest.
    data = str(folders["good"].parent)
    process = ServeProcess(
        tmp_path_factory.mktemp("serve-home") / "home", options=("--allow-path", data)
    ).start()
    try:
        yield process
    finally:
        if process.alive():
            process.terminate()


def jdbc(server: ServeProcess) -> hive.Connection:
    return server.jdbc()


def beeline(server: ServeProcess, statements: str) -> subprocess.CompletedProcess[str]:
    """Spark's beeline (from the pyspark wheel) running ``statements`` as the admin, rows as
    CSV; it stops at the first statement that fails."""
    return subprocess.run(
        [
            str(SPARK_HOME / "bin" / "beeline"),
            *("-u", server.jdbc_url, "-n", "admin", "-p", server.secrets.admin),
            *("--silent=true", "--outputformat=csv2", "-e", statements),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SPARK_HOME": str(SPARK_HOME)},
    )


def modalities(folder: Path) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for path in folder.rglob("*"):
        if path.is_file():
            counts[str(pydicom.dcmread(path, stop_before_pixels=True).Modality)] += 1
    return dict(counts)


def test_readiness_line_names_every_endpoint(server: ServeProcess) -> None:
    (ready,) = [line for line in server.lines if line.startswith("pixels-sql serve: ready")]
    assert server.jdbc_url in ready and server.connect_url in ready, ready
    assert f"DICOMweb http://127.0.0.1:{server.http_port}/dicomweb" in ready, ready
    assert f"viewer http://127.0.0.1:{server.http_port}/viewer" in ready, ready  # make viewer
    state = json.loads((server.home / "server.json").read_text())
    assert state["jdbc_port"] == server.jdbc_port and state["pid"] == server.process.pid
    assert state["http_port"] == server.http_port


def test_only_loopback_addresses_listen(server: ServeProcess) -> None:
    addresses = listening_addresses(server.pids())
    ports = {port for _, port in addresses}
    assert {server.jdbc_port, server.connect_port, server.http_port} <= ports, addresses
    for address, port in addresses:
        assert address in ("127.0.0.1", "::ffff:127.0.0.1", "::1"), (address, port)


def test_beeline_calls_the_functions_over_read_files(
    server: ServeProcess, folders: dict[str, Path]
) -> None:
    completed = beeline(
        server,
        "SELECT dicom_tag(dicom_meta(path), 'Modality') AS modality, count(*) AS files"
        f" FROM read_files('{folders['good']}', recursiveFileLookup => true)"
        " GROUP BY 1 ORDER BY 1;",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    assert lines[0] == "modality,files"
    got = {row.split(",")[0]: int(row.split(",")[1]) for row in lines[1:]}
    assert got == modalities(folders["good"])


def test_each_jdbc_connection_has_its_own_temp_views(
    server: ServeProcess, folders: dict[str, Path]
) -> None:
    first, second = jdbc(server), jdbc(server)
    try:
        for name, connection, file in (
            ("first_view", first, "ct/CT_small.dcm"),
            ("second_view", second, "mr/MR_small.dcm"),
        ):
            query(
                connection,
                f"CREATE TEMPORARY VIEW {name} AS SELECT dicom_tag(dicom_meta(path),"
                f" 'Modality') AS modality FROM read_files('{folders['good'] / file}')",
            )
        assert query(first, "SELECT modality FROM first_view") == [("CT",)]
        assert query(second, "SELECT modality FROM second_view") == [("MR",)]
        for connection, other in ((first, "second_view"), (second, "first_view")):
            with pytest.raises(Exception, match="TABLE_OR_VIEW_NOT_FOUND"):
                query(connection, f"SELECT * FROM {other}")
            assert query(connection, "SELECT count(*) > 4000 FROM dicom_dictionary") == [(True,)]
    finally:
        first.close()
        second.close()


def test_run_and_sql_commands_go_through_the_server(
    server: ServeProcess, folders: dict[str, Path]
) -> None:
    run = cli(server, "run", str(ROOT / "sql"), "--param", f"path={folders['all']}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"files: {len(SAMPLE_FILES)}" in run.stdout
    assert "XSDB6" not in run.stderr and "\tat " not in run.stderr
    counted = cli(server, "sql", "SELECT count(*) AS files FROM object_catalog", "--format", "csv")
    assert counted.returncode == 0, counted.stderr[-3000:]
    assert counted.stdout.split() == ["files", str(len(SAMPLE_FILES))]
    failing = cli(server, "sql", "SELECT dicom_meta('/no/such/file.dcm')")
    assert failing.returncode == 1
    assert failing.stderr.strip().endswith(
        "dicom_meta: /no/such/file.dcm: not_found: FileNotFoundError: [Errno 2] No such file or"
        " directory: '/no/such/file.dcm'"
    ), failing.stderr
    assert "\tat " not in failing.stderr and "Traceback" not in failing.stderr, failing.stderr
    # A second run reads nothing new and leaves the tables as they were.
    again = cli(server, "run", str(ROOT / "sql"), "--param", f"path={folders['all']}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"files: {len(SAMPLE_FILES)}" in again.stdout


def test_dicomweb_serves_what_the_pipeline_catalogued(server: ServeProcess) -> None:
    """The DICOMweb service of serve follows the catalog (tests/test_dicomweb.py covers the
    protocol); storing is off unless --allow-store."""
    counted = cli(
        server,
        "sql",
        "SELECT count(DISTINCT StudyInstanceUID) AS n FROM object_catalog",
        "--format",
        "csv",
    )
    studies = int(counted.stdout.split()[1])
    base = f"http://127.0.0.1:{server.http_port}/dicomweb"
    deadline = time.monotonic() + 60
    found: list = []
    while time.monotonic() < deadline:  # the index checks the catalog every few seconds
        with urllib.request.urlopen(f"{base}/studies", timeout=30) as answer:
            assert answer.headers["Content-Type"] == "application/dicom+json"
            found = json.loads(answer.read())
        if len(found) == studies:
            break
        time.sleep(1)
    assert len(found) == studies > 0
    store = urllib.request.Request(f"{base}/studies", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(store, timeout=30)
    assert refused.value.code == 403
    # The run through the server gave the views the viewer's address; viewer-url agrees.
    viewer = f"http://127.0.0.1:{server.http_port}/viewer?StudyInstanceUIDs="
    links = cli(
        server,
        "sql",
        "SELECT StudyInstanceUID, viewer_url FROM study_catalog ORDER BY 1",
        "--format",
        "csv",
    )
    rows = [line.split(",") for line in links.stdout.split()[1:]]
    assert len(rows) == studies
    assert all(url == viewer + uid for uid, url in rows)
    uid, url = rows[0]
    printed = cli(server, "viewer-url", uid, timeout=120)
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert printed.stdout.strip() == url
    with urllib.request.urlopen(url, timeout=30) as page:  # the viewer's page
        assert page.headers["Content-Type"].startswith("text/html")
        assert b"app-config.js" in page.read()


def test_ingest_goes_through_the_server_with_zip_members_and_deletions(
    server: ServeProcess, tmp_path: Path
) -> None:
    folder = copy_samples(tmp_path / "scans", GOOD)
    with zipfile.ZipFile(folder / "more.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(folder / "ct" / "CT_small.dcm", "inside/CT_small.dcm")
    database = ("--database", "served_ingest")
    first = cli(server, "ingest", str(folder), "--no-thumbnails", *database)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"ingest: {len(GOOD) + 1} new, 0 changed, 0 deleted" in first.stdout
    assert "(0 retried; 1 zip members read)" in first.stdout
    (folder / "ct" / "CT_small.dcm").unlink()
    second = cli(server, "ingest", str(folder), "--no-thumbnails", *database)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "ingest: 0 new, 0 changed, 1 deleted, 0 failed" in second.stdout


def test_gallery_command_goes_through_the_server(server: ServeProcess, tmp_path: Path) -> None:
    output = tmp_path / "gallery.html"
    completed = cli(server, "gallery", "--output", str(output))
    assert completed.returncode == 0, completed.stderr[-3000:]
    connection = jdbc(server)
    try:
        ((images,),) = query(connection, "SELECT count(thumbnail) FROM pixels.object_thumbnails")
    finally:
        connection.close()
    assert completed.stdout.strip() == f"gallery: {output} ({images} images)"
    assert images > 0 and output.read_text().count("<img") == images
    viewer = f'href="http://127.0.0.1:{server.http_port}/viewer?StudyInstanceUIDs='
    assert viewer in output.read_text()


CONNECT_CLIENT = """
import hashlib, sys
import pixels_sql

client = pixels_sql.connect(sys.argv[1])
count = client.sql("SELECT count(*) FROM pixels.object_catalog").first()[0]
row = client.sql(
    "SELECT path, dicom_thumbnail(path) AS png FROM pixels.object_catalog"
    " WHERE relative_path = 'ct/CT_small.dcm'"
).first()
print(count, row.path, hashlib.sha256(row.png).hexdigest())
client.stop()
"""


def test_connect_client_queries_saved_tables_and_thumbnails(server: ServeProcess) -> None:
    if not (server.home / "warehouse").exists():
        pytest.fail("runs after test_run_and_sql_commands_go_through_the_server (saved tables)")
    completed = subprocess.run(
        [sys.executable, "-c", CONNECT_CLIENT, str(server.home)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    count, path, digest = completed.stdout.split()
    assert int(count) == len(SAMPLE_FILES)
    assert digest == hashlib.sha256(render_thumbnail(path.removeprefix("file:"))).hexdigest()


def test_persistent_view_calls_the_functions(
    server: ServeProcess, folders: dict[str, Path]
) -> None:
    connection = jdbc(server)
    try:
        query(
            connection,
            "CREATE OR REPLACE VIEW default.ct_names AS SELECT"
            " dicom_tag(dicom_meta(path), 'PatientName') AS name"
            f" FROM read_files('{folders['good'] / 'ct'}')",
        )
        assert query(connection, "SELECT name FROM default.ct_names") == [
            ("CompressedSamples^CT1",)
        ]
    finally:
        connection.close()


def test_a_failing_query_leaves_the_connection_usable(
    server: ServeProcess, folders: dict[str, Path]
) -> None:
    missing = folders["good"] / "no-such-file.dcm"  # inside the folders clients may read
    connection = jdbc(server)
    try:
        with pytest.raises(Exception, match="not_found"):
            query(connection, f"SELECT dicom_meta('{missing}')")
        with pytest.raises(Exception, match="PARSE_SYNTAX_ERROR"):
            query(connection, "SELEC 1")
        assert query(connection, f"SELECT dicom_meta_error('{missing}')") == [("not_found",)]
    finally:
        connection.close()


def test_hive_clients_made_when_a_session_closes_do_not_load_hive_s_functions(spark) -> None:
    # Hive's SessionState.close asks for a client with Hive.get, which loads Hive's own function
    # registry the first time; on Spark 4 that fails (no hive-llap-common) and leaves every later
    # such call waiting: a JDBC client's CloseSession failed, then the next ones hung.
    jvm = spark._jvm
    hive_class = jvm.org.apache.hadoop.hive.ql.metadata.Hive
    skip_hive_function_registry(jvm)
    for _ in range(2):
        hive_class.closeCurrent()  # as on a thread whose client was another user's
        assert hive_class.get(jvm.org.apache.hadoop.hive.conf.HiveConf()) is not None
    hive_class.closeCurrent()


def test_a_view_over_a_deleted_file_fails_in_one_line(
    server: ServeProcess, folders: dict[str, Path]
) -> None:
    """Through beeline (statements polled asynchronously: Spark's server would put its whole
    Java stack in the message) and PyHive, the failure is the function's one-line reason;
    try_dicom_meta gives NULL."""
    kept = folders["good"] / "deleted-later.dcm"
    kept.write_bytes(next(folders["good"].rglob("*.dcm")).read_bytes())
    connection = jdbc(server)
    try:
        query(
            connection,
            "CREATE OR REPLACE VIEW default.deleted_meta AS SELECT path, dicom_meta(path) AS meta,"
            f" try_dicom_meta(path) AS maybe FROM VALUES ('{kept}') AS t(path)",
        )
        assert query(connection, "SELECT meta IS NOT NULL FROM default.deleted_meta") == [(True,)]
        kept.unlink()
        with pytest.raises(Exception) as failure:
            query(connection, "SELECT meta FROM default.deleted_meta")
        message = failure.value.args[0].status.errorMessage
        reason = f"dicom_meta: {kept}: not_found: "
        assert reason in message and "Traceback" not in message, message
        assert len(message.strip().splitlines()) <= 2, message  # and Spark's SQLSTATE line
    finally:
        connection.close()
    completed = beeline(
        server,
        "SELECT maybe IS NULL AS gone FROM default.deleted_meta;"
        " SELECT meta FROM default.deleted_meta;",
    )
    errors = [line for line in completed.stderr.splitlines() if "WARNING" not in line]
    assert errors and errors[0].startswith("Error: ") and reason in errors[0], completed.stderr
    assert len(errors) <= 2 and not any(line.startswith("\tat ") for line in errors), errors
    assert completed.stdout.split() == ["gone", "true"], (completed.stdout, completed.stderr)


SLOW_CLIENT = """
import sys
from pyhive import hive
connection = hive.connect(
    host="127.0.0.1", port=int(sys.argv[1]), username="admin", auth="CUSTOM", password=sys.argv[2]
)
cursor = connection.cursor()
print("querying", flush=True)
# Minutes of work on one core, one task (reflect's Thread.sleep is refused to clients).
cursor.execute("SELECT max(sha2(CAST(id AS STRING), 512)) FROM range(0, 100000000000, 1, 1)")
"""


def test_a_client_killed_mid_query_does_not_hurt_the_server(server: ServeProcess) -> None:
    client = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLIENT, str(server.jdbc_port), server.secrets.admin],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdout is not None and client.stdout.readline().strip() == "querying"
    time.sleep(3)  # the query is running on the server
    client.kill()
    client.wait()
    connection = jdbc(server)
    try:
        started = time.monotonic()
        assert query(connection, "SELECT count(*) FROM range(1000)") == [(1000,)]
        assert time.monotonic() - started < 60
    finally:
        connection.close()
    assert server.alive()


def test_eight_concurrent_clients_for_a_minute(
    server: ServeProcess, folders: dict[str, Path]
) -> None:
    files = sorted(str(p) for p in folders["good"].rglob("*") if p.is_file())
    catalog_queries = [
        "SELECT Modality, count(*) FROM pixels.object_catalog GROUP BY 1",
        "SELECT count(*) FROM pixels.series_catalog",
        "SELECT reason, count(*) FROM pixels.object_errors GROUP BY 1",
    ]
    answers: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + SOAK_SECONDS

    def client(number: int) -> None:
        connection = jdbc(server)
        try:
            turn = 0
            while time.monotonic() < deadline:
                if (number + turn) % 2:
                    sql = catalog_queries[turn % len(catalog_queries)]
                    rows = query(connection, sql)
                    ok = len(rows) > 0
                else:
                    path = files[(number + turn) % len(files)]
                    rows = query(
                        connection, f"SELECT dicom_tag(dicom_meta('{path}'), 'SOPInstanceUID')"
                    )
                    expected = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
                    ok = rows == [(expected,)]
                with lock:
                    answers["ok" if ok else "wrong"] += 1
                turn += 1
        except Exception as exc:  # collected: every client's failure is reported
            with lock:
                failures.append(f"client {number}: {exc}")
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SOAK_SECONDS + 300)
    assert not failures, failures
    assert answers["wrong"] == 0 and answers["ok"] >= CLIENTS, answers
    assert server.alive()


def _docs_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", SERVER_DOC.read_text(), flags=re.DOTALL)


def _for_this_server(text: str, server: ServeProcess) -> str:
    # The docs use the default ports and home.
    return (
        text.replace("10000", str(server.jdbc_port))
        .replace("15002", str(server.connect_port))
        .replace("pixels-home", str(server.home))
    )


def test_the_python_examples_of_docs_server_md_run(server: ServeProcess) -> None:
    blocks = _docs_blocks("python")
    assert len(blocks) >= 3
    for block in blocks:
        completed = subprocess.run(
            [sys.executable, "-c", _for_this_server(block, server)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=server.home.parent,
            # What the docs ask the reader to export first.
            env={**os.environ, "PIXELS_SQL_READER": server.secrets.reader},
        )
        assert completed.returncode == 0, (block, completed.stderr[-3000:])
        assert completed.stdout.strip(), block


def test_the_shell_examples_of_docs_server_md_run(server: ServeProcess) -> None:
    blocks = _docs_blocks("bash")
    serve_block = blocks[0]
    (beeline_block,) = [block for block in blocks if "beeline" in block]
    # The first block starts the server as the fixture does (which adds only free ports).
    assert serve_block.splitlines()[0] == "pixels-sql serve --home pixels-home"
    # From the project folder, as the docs say, with the venv's programs named by path.
    completed = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _for_this_server(beeline_block, server)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "| CT " in completed.stdout and "| MR " in completed.stdout, completed.stdout


def test_the_sql_examples_of_docs_server_md_make_working_views(server: ServeProcess) -> None:
    blocks = _docs_blocks("sql")
    assert len(blocks) >= 2
    connection = jdbc(server)
    try:
        for block in blocks:
            query(connection, block.strip().rstrip(";"))
            view = re.search(r"CREATE VIEW (\S+)", block).group(1)
            live = query(
                connection, "SELECT count(*) FROM pixels.object_catalog WHERE deleted_at IS NULL"
            )
            assert query(connection, f"SELECT count(*) FROM {view}") == live, block
            query(connection, f"DROP VIEW {view}")
    finally:
        connection.close()


def test_the_pyhive_recipe_installs_a_working_client(server: ServeProcess, tmp_path: Path) -> None:
    """docs/server.md's pip line in a fresh venv, then its first PyHive example with it."""
    (install,) = re.findall(r"`(pip install PyHive[^`]*)`", SERVER_DOC.read_text())
    venv = tmp_path / "client"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", *install.split()],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    (example,) = [block for block in _docs_blocks("python") if "hive.connect(" in block]
    completed = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _for_this_server(example, server)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PIXELS_SQL_READER": server.secrets.reader},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip() == "[('PatientName', 'PN')]", completed.stdout
    # The test extra installs what the recipe names (the suite's own PyHive client).
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    named = {package.split("==")[0].lower() for package in install.split()[2:]}
    for extra in ("jdbc", "test"):
        assert named <= {package.split("==")[0].lower() for package in extras[extra]}, extra


def test_the_readme_serve_command_is_what_the_tests_run() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Serve it to SQL tools") :]
    command = re.search(r"```bash\n(.*?)\n```", section, flags=re.DOTALL).group(1)
    assert command.split("#")[0].split() == [".venv/bin/pixels-sql", "serve"]


def test_deidentify_through_the_server_fills_the_copy_s_database(
    server: ServeProcess, folders: dict[str, Path]
) -> None:
    """`pixels-sql deidentify` through the server: the copy's database, none of the original
    UIDs in it. The restart below serves it (`serve --database pixels_deid`)."""
    destination = folders["good"].parent / "deid"
    done = cli(
        server,
        "deidentify",
        *("--from", "pixels", "--to", str(destination), "--no-thumbnails"),
        *("--option", "tcia", "--option", "allow_burned_in"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    connection = jdbc(server)
    try:
        originals = set(query(connection, "SELECT StudyInstanceUID FROM pixels.object_catalog"))
        copied = set(query(connection, DEID_STUDIES))
    finally:
        connection.close()
    assert copied and not copied & originals


DEID_STUDIES = (
    "SELECT DISTINCT StudyInstanceUID FROM pixels_deid.object_catalog"
    " WHERE deleted_at IS NULL AND StudyInstanceUID IS NOT NULL"
)


def test_sigterm_cancels_queries_stops_cleanly_and_restarts_with_tables_intact(
    server: ServeProcess,
) -> None:
    connection = jdbc(server)
    before = query(connection, "SELECT count(*), count(meta) FROM pixels.object_catalog")
    thumbnails = query(connection, "SELECT count(thumbnail) FROM pixels.object_thumbnails")
    view = query(connection, "SELECT name FROM default.ct_names")
    connection.close()
    slow = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLIENT, str(server.jdbc_port), server.secrets.admin],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert slow.stdout is not None and slow.stdout.readline().strip() == "querying"
    time.sleep(3)
    started = time.monotonic()
    status = server.terminate(timeout=120)
    stopping = time.monotonic() - started
    slow.kill()
    slow.wait()
    assert status == 0, "".join(server.errors)[-3000:]
    assert stopping < 60, stopping  # the 600 s query was cancelled, not waited for
    assert server.lines[-1] == "pixels-sql serve: stopped"
    assert not (server.home / "server.json").exists()
    assert (server.home / ".pixels-sql.lock").read_text() == ""  # released
    assert (server.home / "logs" / "server.log").exists()

    # Restarted on the de-identified copy (the test before made it): DICOMweb serves it now,
    # the tables below are named with their database.
    server.options = (*server.options, "--database", "pixels_deid")
    server.start()
    connection = jdbc(server)
    try:
        assert query(connection, "SELECT count(*), count(meta) FROM pixels.object_catalog") == (
            before
        )
        assert query(connection, "SELECT count(thumbnail) FROM pixels.object_thumbnails") == (
            thumbnails
        )
        assert query(connection, "SELECT name FROM default.ct_names") == view
    finally:
        connection.close()


def test_serve_database_deid_serves_the_copy_over_dicomweb(server: ServeProcess) -> None:
    """The server restarted with `--database pixels_deid`: its studies, and only those, with
    Patient Identity Removed."""
    connection = jdbc(server)
    try:
        copied = {uid for (uid,) in query(connection, DEID_STUDIES)}
    finally:
        connection.close()
    base = f"http://127.0.0.1:{server.http_port}/dicomweb"
    deadline = time.monotonic() + 60
    served: set[str] = set()
    while time.monotonic() < deadline:  # the index reads the catalog a few seconds after start
        with urllib.request.urlopen(f"{base}/studies", timeout=30) as answer:
            served = {study["0020000D"]["Value"][0] for study in json.loads(answer.read())}
        if served == copied:
            break
        time.sleep(1)
    assert served == copied and copied
    study = sorted(served)[0]
    with urllib.request.urlopen(f"{base}/studies/{study}/metadata", timeout=60) as answer:
        instances = json.loads(answer.read())
    assert instances and all(i["00120062"]["Value"] == ["YES"] for i in instances)


def test_a_second_server_on_the_same_home_or_port_is_refused(server: ServeProcess) -> None:
    same_port = cli(server, "serve", "--jdbc-port", str(server.jdbc_port), timeout=120)
    assert same_port.returncode == 1
    assert f"cannot listen on 127.0.0.1:{server.jdbc_port}" in same_port.stderr
    same_home = cli(
        server,
        "serve",
        "--jdbc-port",
        str(free_port()),
        "--connect-port",
        str(free_port()),
        "--http-port",
        str(free_port()),
    )
    assert same_home.returncode == 1
    assert f"in use by pixels-sql serve pid {server.process.pid}" in same_home.stderr
    for completed in (same_port, same_home):
        assert "Traceback" not in completed.stderr
