"""Who may do what on ``pixels-sql serve`` (docs/security.md): the attacks of issue 26 against a
real server, with real clients (PyHive, Spark Connect, the ``pixels-sql`` command) in processes
of their own. Every refusal is checked for its one-line message and for its effect: canary
files stay, nothing is written, the server's environment stays its own."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyhive import hive

from tests.conftest import SAMPLE_FILES, copy_samples
from tests.serving import ServeProcess, cli, query

GOOD = {name: source for name, source in SAMPLE_FILES.items() if name.startswith(("ct/", "mr/"))}
# In the server's environment only: a client that can read it has reflection or a shell.
CANARY_SECRET = "PIXELS_SQL_TEST_CANARY_SECRET"
CANARY_VALUE = "canary-1f3b9c"


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("security")
    allowed = copy_samples(root / "allowed", GOOD)
    with zipfile.ZipFile(allowed / "archive.zip", "w") as archive:
        archive.write(allowed / "ct" / "CT_small.dcm", "inside/CT_small.dcm")
    outside = root / "outside"
    outside.mkdir()
    (outside / "private.txt").write_text("not for clients\n")
    (outside / "keep").mkdir()
    (outside / "keep" / "canary.txt").write_text("still here\n")
    # A link inside the allowed folder to a file outside it.
    (allowed / "escape.dcm").symlink_to(outside / "private.txt")
    return {"root": root, "allowed": allowed, "outside": outside}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, places: dict[str, Path]
) -> Iterator[ServeProcess]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CANARY_SECRET, CANARY_VALUE)
        process = ServeProcess(tmp_path_factory.mktemp("security-home") / "home").start()
    try:
        # The owner catalogues the allowed folder through the server (the pipeline's secret):
        # from then on it is a folder admin and read-only clients may read.
        ingest = cli(process, "ingest", str(places["allowed"]), "--no-thumbnails")
        assert ingest.returncode == 0, ingest.stderr[-3000:]
        yield process
    finally:
        if process.alive():
            process.terminate()


def refused(server: ServeProcess, role: str, sql: str) -> str:
    """The server's one-line refusal of ``sql`` for ``role``."""
    connection = server.jdbc(role)
    try:
        with pytest.raises(Exception) as failure:
            query(connection, sql)
        # The connection stays usable after a refusal.
        assert query(connection, "SELECT 1") == [(1,)]
    finally:
        connection.close()
    text = str(failure.value)
    assert "pixels-sql serve: refused for a" in text, text[:2000]
    line = text[text.index("pixels-sql serve: refused") :].split("\\n")[0].split("'")[0]
    return line


def test_the_secrets_are_private_and_printed_by_token(server: ServeProcess) -> None:
    path = server.home / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert len({stored["admin"], stored["reader"], stored["pipeline"]}) == 3
    assert all(len(value) >= 40 for value in stored.values())
    # Shown once, by the first start, and by `pixels-sql token` since.
    assert any(stored["admin"] in line and stored["reader"] in line for line in server.lines)
    assert not any(stored["pipeline"] in line for line in server.lines)
    admin = cli(server, "token")
    reader = cli(server, "token", "--reader")
    assert admin.returncode == reader.returncode == 0, admin.stderr + reader.stderr
    assert admin.stdout.strip() == stored["admin"]
    assert reader.stdout.strip() == stored["reader"]


@pytest.mark.parametrize(
    "credentials",
    [
        {"username": "admin", "auth": "NONE"},
        {"username": "admin", "auth": "CUSTOM", "password": "wrong"},
        {"username": "admin", "auth": "CUSTOM", "password": "<reader>"},
        {"username": "reader", "auth": "CUSTOM", "password": "<admin>"},
        {"username": "someone", "auth": "CUSTOM", "password": "<admin>"},
    ],
    ids=["no-secret", "wrong-secret", "reader-secret-as-admin", "admin-as-reader", "other-user"],
)
def test_jdbc_without_the_right_secret_is_refused(
    server: ServeProcess, credentials: dict[str, str]
) -> None:
    given = dict(credentials)
    if given.get("password") == "<reader>":
        given["password"] = server.secrets.reader
    if given.get("password") == "<admin>":
        given["password"] = server.secrets.admin
    with pytest.raises(Exception, match=r"Error validating the login|TSocket"):
        hive.connect(host="127.0.0.1", port=server.jdbc_port, **given)


CONNECT_CLIENT = """
import json, sys
from pixels_sql.servers.discovery import connect_to
url, token, sql = sys.argv[1], sys.argv[2] or None, sys.argv[3]
try:
    spark = connect_to(url, token)
    print(json.dumps(["ok", [list(row) for row in spark.sql(sql).collect()]]))
except Exception as exc:
    print(json.dumps(["error", str(exc)]))
"""


def connect_client(server: ServeProcess, token: str | None, sql: str) -> tuple[str, object]:
    completed = subprocess.run(
        [sys.executable, "-c", CONNECT_CLIENT, server.connect_url, token or "", sql],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    outcome, value = json.loads(completed.stdout.strip().splitlines()[-1])
    return outcome, value


def test_spark_connect_without_a_secret_is_refused(server: ServeProcess) -> None:
    outcome, message = connect_client(server, None, "SELECT 1")
    assert outcome == "error" and "UNAUTHENTICATED" in message and "no secret" in message
    outcome, message = connect_client(server, "not-a-secret", "SELECT 1")
    assert outcome == "error" and "wrong secret" in message
    assert connect_client(server, server.secrets.reader, "SELECT 1") == ("ok", [[1]])


def test_the_cli_without_the_homes_secret_is_refused(server: ServeProcess) -> None:
    """A user who cannot read the home's secrets (here: the file moved away meanwhile) gets one
    line from the command line, not a way in."""
    path = server.home / "secrets.json"
    aside = path.with_name("secrets.json.aside")
    path.rename(aside)
    try:
        completed = cli(server, "sql", "SELECT count(*) FROM object_catalog")
    finally:
        aside.rename(path)
    assert completed.returncode == 1
    assert "no secret" in completed.stderr, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    again = cli(server, "sql", "SELECT count(*) AS n FROM object_catalog", "--format", "csv")
    assert again.returncode == 0, again.stderr[-2000:]


def test_a_reader_can_query_the_catalog(server: ServeProcess) -> None:
    connection = server.jdbc("reader")
    try:
        ((count,),) = query(connection, "SELECT count(*) FROM pixels.object_catalog")
        assert count >= len(GOOD)
        modalities = query(
            connection, "SELECT DISTINCT Modality FROM pixels.object_catalog ORDER BY 1"
        )
        assert ("CT",) in modalities and ("MR",) in modalities
        assert query(connection, "SHOW DATABASES") and query(connection, "USE pixels") == []
        assert query(connection, "SET spark.sql.shuffle.partitions=3")
        assert query(connection, "DESCRIBE pixels.object_catalog")
        query(connection, "CREATE TEMPORARY VIEW mine AS SELECT 1 AS one")
        assert query(connection, "SELECT one FROM mine") == [(1,)]
    finally:
        connection.close()


def test_a_reader_reads_files_of_the_catalogued_folder(
    server: ServeProcess, places: dict[str, Path]
) -> None:
    connection = server.jdbc("reader")
    ct = places["allowed"] / "ct" / "CT_small.dcm"
    try:
        assert query(connection, f"SELECT dicom_tag(dicom_meta('{ct}'), 'Modality')") == [("CT",)]
        rows = query(connection, f"SELECT count(*) FROM list_files('{places['allowed']}')")
        assert rows[0][0] >= len(GOOD)
    finally:
        connection.close()


def attacks(places: dict[str, Path]) -> dict[str, tuple[str, str]]:
    """What each attack of issue 26 runs, and what its refusal says."""
    canary = places["root"] / "transform-ran"
    member = f"zip://inside/CT_small.dcm::{places['allowed'] / 'archive.zip'}"
    return {
        "transform": (
            f"SELECT TRANSFORM('x') USING 'touch {canary}' AS (o STRING)",
            "script transformation",
        ),
        "java_method": (
            f"SELECT java_method('java.lang.System', 'getenv', '{CANARY_SECRET}')",
            "reflection",
        ),
        "reflect": (
            f"SELECT reflect('java.lang.System', 'getenv', '{CANARY_SECRET}')",
            "reflection",
        ),
        "try_reflect": (
            f"SELECT try_reflect('java.lang.System', 'getenv', '{CANARY_SECRET}')",
            "reflection",
        ),
        "file_content": ("SELECT file_content('/etc/shadow')", "may not read /etc/shadow"),
        "file_content_outside": (
            f"SELECT file_content('{places['outside'] / 'private.txt'}')",
            "outside the folders",
        ),
        "file_content_through_a_link": (
            f"SELECT file_content('{places['allowed'] / 'escape.dcm'}')",
            "outside the folders",
        ),
        "dicom_meta_climbing": (
            f"SELECT dicom_meta('{places['allowed']}/../outside/private.txt')",
            "outside the folders",
        ),
        "text_path": ("SELECT * FROM text.`/etc/passwd`", "may not read file:/etc/passwd"),
        "list_files_root": ("SELECT * FROM list_files('/')", "may not list /"),
        "read_files_outside": (
            f"SELECT * FROM read_files('{places['outside']}', format => 'text')",
            "may not list",
        ),
        "zip_extract_outside": (
            f"SELECT zip_extract('{member}', '{places['outside'] / 'dropped'}', 'x.dcm')",
            "may not write to",
        ),
        "insert_overwrite_directory": (
            f"INSERT OVERWRITE DIRECTORY '{places['outside'] / 'keep'}' USING text SELECT 'x'",
            "INSERT OVERWRITE DIRECTORY",
        ),
        "load_data": (
            f"LOAD DATA LOCAL INPATH '{places['outside'] / 'private.txt'}' INTO TABLE"
            " pixels.object_catalog",
            "",
        ),
        "add_jar": ("ADD JAR '/tmp/nothing.jar'", "ADD JAR"),
        # EXECUTE IMMEDIATE analyses its statement as a query of its own (in Spark 4.3 during
        # the analysis of the outer one): the check rule sees the inner plan.
        "execute_immediate_transform": (
            f'EXECUTE IMMEDIATE \'SELECT TRANSFORM("x") USING "touch {canary}" AS (o STRING)\'',
            "script transformation",
        ),
        "execute_immediate_reflect": (
            "EXECUTE IMMEDIATE"
            f' \'SELECT reflect("java.lang.System", "getenv", "{CANARY_SECRET}")\'',
            "reflection",
        ),
        "execute_immediate_add_jar": (
            "EXECUTE IMMEDIATE 'ADD JAR \"/tmp/nothing.jar\"'",
            "ADD JAR",
        ),
        "execute_immediate_set_hadoop": (
            "EXECUTE IMMEDIATE 'SET spark.hadoop.fs.file.impl=x'",
            "SET spark.hadoop.fs.file.impl",
        ),
        "execute_immediate_file": (
            "EXECUTE IMMEDIATE 'SELECT file_content(\"/etc/shadow\")'",
            "may not read /etc/shadow",
        ),
        "create_function_class": (
            "CREATE TEMPORARY FUNCTION r AS 'org.apache.hadoop.hive.ql.udf.UDFReflect'",
            "",
        ),
        "set_hadoop": ("SET spark.hadoop.fs.file.impl=x", "SET spark.hadoop.fs.file.impl"),
        "set_catalog": (
            "SET spark.sql.catalog.evil=org.apache.spark.sql.execution.datasources.v2.jdbc"
            ".JDBCTableCatalog",
            "SET spark.sql.catalog.evil",
        ),
        "jdbc_view": (
            "CREATE TEMPORARY VIEW j USING jdbc OPTIONS"
            f" (url 'jdbc:derby:{places['outside'] / 'evil'};create=true', dbtable 'x')",
            "",
        ),
        "jdbc_table": (
            "CREATE TABLE default.j USING jdbc OPTIONS"
            f" (url 'jdbc:derby:{places['outside'] / 'evil'};create=true', dbtable 'x')",
            "",
        ),
        "database_location": (
            f"CREATE DATABASE evil LOCATION '{places['outside'] / 'keep'}'",
            "",
        ),
        "table_location": (
            f"CREATE TABLE default.evil (x STRING) USING text LOCATION '{places['outside']}'",
            "",
        ),
    }


ATTACKS = [
    "transform",
    "java_method",
    "reflect",
    "try_reflect",
    "file_content",
    "file_content_outside",
    "file_content_through_a_link",
    "dicom_meta_climbing",
    "text_path",
    "list_files_root",
    "read_files_outside",
    "zip_extract_outside",
    "insert_overwrite_directory",
    "load_data",
    "add_jar",
    "execute_immediate_transform",
    "execute_immediate_reflect",
    "execute_immediate_add_jar",
    "execute_immediate_set_hadoop",
    "execute_immediate_file",
    "create_function_class",
    "set_hadoop",
    "set_catalog",
    "jdbc_view",
    "jdbc_table",
    "table_location",
    "database_location",
]


@pytest.mark.parametrize("role", ["reader", "admin"])
@pytest.mark.parametrize("attack", ATTACKS)
def test_every_attack_is_refused_and_nothing_happens(
    server: ServeProcess, places: dict[str, Path], role: str, attack: str
) -> None:
    sql, says = attacks(places)[attack]
    line = refused(server, role, sql)
    assert says in line, line
    assert "\n" not in line
    # Nothing happened.
    assert not (places["root"] / "transform-ran").exists()
    assert (places["outside"] / "keep" / "canary.txt").read_text() == "still here\n"
    assert not (places["outside"] / "dropped").exists()
    assert sorted(p.name for p in places["outside"].iterdir()) == ["keep", "private.txt"]


def test_a_path_from_a_column_is_checked_when_the_query_runs(server: ServeProcess) -> None:
    for role in ("reader", "admin"):
        line = refused(server, role, "SELECT file_content(p) FROM VALUES ('/etc/shadow') AS t(p)")
        assert "may not read /etc/shadow" in line, line


def test_a_reader_may_not_change_the_catalog(server: ServeProcess) -> None:
    for sql in (
        "DROP DATABASE pixels CASCADE",
        "DROP TABLE pixels.object_catalog",
        "CREATE DATABASE reader_made",
        "CREATE TABLE default.reader_table AS SELECT 1 AS x",
        "INSERT INTO pixels.object_catalog SELECT * FROM pixels.object_catalog LIMIT 1",
        "CREATE VIEW default.reader_view AS SELECT 1 AS x",
        "CREATE GLOBAL TEMPORARY VIEW shared AS SELECT 1 AS x",
        "EXECUTE IMMEDIATE 'INSERT INTO pixels.object_catalog"
        " SELECT * FROM pixels.object_catalog LIMIT 1'",
        # The cache is the application's, shared by every session: a reader could fill the
        # driver's memory or evict what the pipeline cached.
        "CACHE TABLE reader_cache AS SELECT 1 AS x",
        "DECLARE VARIABLE reader_variable INT",
    ):
        line = refused(server, "reader", sql)
        assert "read-only client may run queries only" in line, (sql, line)
    connection = server.jdbc("admin")
    try:
        assert ("pixels",) in query(connection, "SHOW DATABASES")
        assert query(connection, "SELECT count(*) FROM pixels.object_catalog")[0][0] > 0
        assert ("reader_made",) not in query(connection, "SHOW DATABASES")
    finally:
        connection.close()


def test_an_admin_builds_tables_from_the_allowed_folder(
    server: ServeProcess, places: dict[str, Path]
) -> None:
    connection = server.jdbc("admin")
    try:
        query(connection, "CREATE DATABASE IF NOT EXISTS admin_work")
        query(connection, "DROP TABLE IF EXISTS admin_work.modalities")
        query(
            connection,
            "CREATE TABLE admin_work.modalities AS"
            " SELECT dicom_tag(dicom_meta(path), 'Modality') AS modality, count(*) AS files"
            f" FROM list_files('{places['allowed']}', glob => '*.dcm')"
            " WHERE reason IS NULL AND path NOT LIKE '%escape%' GROUP BY 1",
        )
        query(
            connection,
            "CREATE OR REPLACE VIEW admin_work.ct AS"
            " SELECT * FROM admin_work.modalities WHERE modality = 'CT'",
        )
        rows = dict(query(connection, "SELECT modality, files FROM admin_work.modalities"))
        assert rows["CT"] >= 1 and rows["MR"] >= 1
        assert query(connection, "SELECT count(*) FROM admin_work.ct") == [(1,)]
    finally:
        connection.close()
    reader = server.jdbc("reader")
    try:
        assert query(reader, "SELECT count(*) FROM admin_work.ct") == [(1,)]
    finally:
        reader.close()


CONNECT_UDF = """
import sys
from pixels_sql.servers.discovery import connect_to
from pyspark.sql.functions import udf

url, token, canary = sys.argv[1:4]
spark = connect_to(url, token)

@udf("string")
def escape(value):
    open(canary, "w").write("ran")
    return value

try:
    spark.range(1).select(escape("id")).collect()
    print("ran")
except Exception as exc:
    print("refused:", str(exc).splitlines()[0])
"""


@pytest.mark.parametrize("role", ["reader", "admin"])
def test_connect_clients_may_not_run_their_own_python(
    server: ServeProcess, places: dict[str, Path], role: str
) -> None:
    canary = places["root"] / f"udf-{role}"
    token = server.secrets.reader if role == "reader" else server.secrets.admin
    completed = subprocess.run(
        [sys.executable, "-c", CONNECT_UDF, server.connect_url, token, str(canary)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.startswith("refused:"), completed.stdout
    assert "--allow-udfs" in completed.stdout
    assert not canary.exists()


BORROW = """
import sys, uuid
from pyspark.sql import SparkSession

port, admin, reader = sys.argv[1:4]
session = str(uuid.uuid4())
def open_as(token):
    return SparkSession.Builder().remote(
        f"sc://localhost:{port}/;session_id={session};token={token}"
    ).create()
open_as(admin).sql("CREATE TEMPORARY VIEW admins AS SELECT 1 AS x").collect()
try:
    open_as(reader).sql("SELECT * FROM admins").collect()
    print("borrowed")
except Exception as exc:
    print("refused:", "PERMISSION_DENIED" in str(exc))
"""


def test_a_reader_cannot_borrow_an_admins_connect_session(server: ServeProcess) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            BORROW,
            str(server.connect_port),
            server.secrets.admin,
            server.secrets.reader,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip() == "refused: True", completed.stdout


def test_no_secret_is_a_setting_a_client_can_read(server: ServeProcess) -> None:
    secrets = server.secrets
    outcome, rows = connect_client(server, secrets.admin, "SET -v")
    assert outcome == "ok"
    text = json.dumps(rows)
    for value in (secrets.admin, secrets.reader, secrets.pipeline, CANARY_VALUE):
        assert value not in text
    connection = server.jdbc("reader")
    try:
        text = json.dumps(query(connection, "SET -v"))
    finally:
        connection.close()
    for value in (secrets.admin, secrets.reader, secrets.pipeline, CANARY_VALUE):
        assert value not in text


def test_the_server_log_has_no_secret(server: ServeProcess) -> None:
    secrets = server.secrets
    for log in (server.home / "logs").rglob("*"):
        if log.is_file():
            text = log.read_text(errors="replace")
            for value in (secrets.admin, secrets.reader, secrets.pipeline):
                assert value not in text, log


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    process = ServeProcess(
        tmp_path_factory.mktemp("no-auth-home") / "home", options=("--no-auth",)
    ).start()
    try:
        yield process
    finally:
        if process.alive():
            process.terminate()


def test_no_auth_lets_clients_in_as_admins_still_without_a_shell(
    open_server: ServeProcess, places: dict[str, Path]
) -> None:
    assert not (open_server.home / "secrets.json").exists()
    connection = hive.connect(host="127.0.0.1", port=open_server.jdbc_port, username="someone")
    try:
        assert query(connection, "CREATE DATABASE IF NOT EXISTS laptop") == []
        canary = places["root"] / "no-auth-transform"
        with pytest.raises(Exception, match="script transformation"):
            query(connection, f"SELECT TRANSFORM('x') USING 'touch {canary}' AS (o STRING)")
        assert not canary.exists()
    finally:
        connection.close()
    outcome, rows = connect_client(open_server, None, "SELECT 1")
    assert (outcome, rows) == ("ok", [[1]])


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT file_content('/etc/shadow')",
        "SELECT file_content(p) FROM VALUES ('/etc/shadow') AS t(p)",
        "SELECT * FROM list_files('/')",
        "SELECT TRANSFORM('x') USING 'id' AS (o STRING)",
    ],
    ids=["literal", "column", "listing", "transform"],
)
def test_spark_connect_clients_meet_the_same_checks(server: ServeProcess, sql: str) -> None:
    for token in (server.secrets.reader, server.secrets.admin):
        outcome, message = connect_client(server, token, sql)
        assert outcome == "error", message
        assert "pixels-sql serve: refused for a" in message, message[:2000]
