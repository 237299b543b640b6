"""The home's warm engine (issue 28): the CLI's commands run in one background Spark that the
first command starts and later ones reuse; it stops by itself when idle, or with
`pixels-sql stop`. Driven as a user drives it: `pixels-sql` subprocesses."""

from __future__ import annotations

import csv
import io
import os
import pty
import select
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pixels_sql import jvm_classes
from pixels_sql.home import process_alive
from pixels_sql.servers.discovery import running_server
from pixels_sql.servers.engine import socket_path
from tests.conftest import SAMPLE_FILES, copy_samples
from tests.serving import free_port

ROOT = Path(__file__).parent.parent
STARTING = "starting the engine of"


def pixels_sql(
    *args: str, home: Path, cwd: Path = ROOT, wait: bool = True
) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    command = [sys.executable, "-m", "pixels_sql.cli", *args, "--home", str(home)]
    env = {**os.environ, "PIXELS_SQL_ENGINE": "on", "PYTHONWARNINGS": "ignore"}
    if not wait:
        return subprocess.Popen(
            command, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    return subprocess.run(
        command, cwd=cwd, env=env, text=True, capture_output=True, timeout=600, check=False
    )


def one_script(folder: Path) -> Path:
    """A script that only reads (a first command on a fresh home: `sql` would make none)."""
    script = folder / "one.sql"
    script.write_text("SELECT 1 AS one;\n")
    return script


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return condition()


@pytest.fixture(scope="module")
def warm_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home whose engine the first command starts (stopped at the end by `pixels-sql stop`,
    which test_stop_ends_the_engine checks; a failed test leaves it to its idle timeout)."""
    home = tmp_path_factory.mktemp("engine-home") / "home"
    first = pixels_sql(
        "run",
        str(one_script(home.parent)),
        "--master",
        "local[2]",
        "--idle-timeout",
        "600",
        home=home,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    lines = first.stdout.splitlines()
    assert (lines[0], lines[2]) == ("one", "1")
    assert STARTING in first.stderr
    yield home
    server = running_server(home)
    if server is not None:
        os.kill(server.pid, signal.SIGTERM)


def test_the_first_command_starts_a_private_engine(warm_home: Path) -> None:
    server = running_server(warm_home)
    assert server is not None and process_alive(server.pid)
    assert server.jdbc_port == 0 and server.http_port is None  # no public endpoint
    assert stat.S_IMODE(socket_path(warm_home).stat().st_mode) == 0o600
    log = warm_home / "logs" / "engine.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert "engine of the pixels-sql commands" in log.read_text()


def test_later_commands_reuse_it(warm_home: Path, tmp_path: Path) -> None:
    engine = running_server(warm_home)
    assert engine is not None
    # An ingest given a relative folder, from another working folder.
    copy_samples(tmp_path / "dicom", {"a/CT_small.dcm": SAMPLE_FILES["ct/CT_small.dcm"]})
    ingested = pixels_sql("ingest", "dicom", "--no-thumbnails", home=warm_home, cwd=tmp_path)
    assert ingested.returncode == 0, ingested.stderr[-3000:]
    assert "ingest: 1 new" in ingested.stdout
    query = pixels_sql(
        "sql",
        "SELECT relative_path, Modality FROM object_catalog",
        "--format",
        "csv",
        "--master",
        "local[1]",
        home=warm_home,
    )
    assert query.returncode == 0, query.stderr[-3000:]
    # The engine runs with the master it started with, and says so.
    assert query.stderr.startswith("pixels-sql: --master is ignored: the engine of"), query.stderr
    assert list(csv.reader(io.StringIO(query.stdout))) == [
        ["relative_path", "Modality"],
        ["a/CT_small.dcm", "CT"],
    ]
    for done in (ingested, query):
        assert STARTING not in done.stderr
    assert running_server(warm_home) == engine  # the same process answered both


def test_two_commands_at_once(warm_home: Path) -> None:
    queries = [
        pixels_sql(
            "sql", f"SELECT {n} AS n, count(*) AS c FROM range(100000)", home=warm_home, wait=False
        )
        for n in (1, 2)
    ]
    for n, process in enumerate(queries, 1):
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        assert out.splitlines()[-1].split() == [str(n), "|", "100000"]


def test_machine_formats_print_every_row(warm_home: Path) -> None:
    done = pixels_sql("sql", "SELECT id FROM range(10000)", "--format", "csv", home=warm_home)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert rows == [["id"], *([str(i)] for i in range(10000))]
    assert "rows shown" not in done.stderr


def test_errors_come_back_in_one_message(warm_home: Path) -> None:
    # A query that does not parse: Spark's own message, line, position and caret; no sqlglot.
    typo = pixels_sql("sql", "SELEC * FROM object_catalog", home=warm_home)
    assert typo.returncode == 1
    assert "[PARSE_SYNTAX_ERROR] Syntax error at or near 'SELEC'" in typo.stderr
    assert "SELEC * FROM object_catalog\n^^^" in typo.stderr
    assert "Traceback" not in typo.stderr and "sqlglot" not in typo.stderr
    missing = pixels_sql("sql", "SELECT * FROM no_such_table", home=warm_home)
    assert missing.returncode == 1 and "TABLE_OR_VIEW_NOT_FOUND" in missing.stderr


def test_no_server_goes_around_the_engine(warm_home: Path) -> None:
    # With an engine running, --no-server is a Spark Connect client of it (as of any server).
    done = pixels_sql("sql", "SELECT 42 AS answer", "--no-server", home=warm_home)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "42"


def test_an_interrupted_command_cancels_its_jobs(warm_home: Path) -> None:
    server = running_server(warm_home)
    assert server is not None
    query = "SELECT count(*) FROM range(1000000000000)"  # hours of work
    process = pixels_sql("sql", query, home=warm_home, wait=False)
    time.sleep(8)
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "pixels-sql: interrupted" in err, err[-3000:]
    # The engine's JVM goes idle: the command's jobs were cancelled when its client left.
    java = subprocess.run(
        ["pgrep", "-P", str(server.pid), "java"], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    time.sleep(3)
    before = jvm_cpu_ticks(java)
    time.sleep(4)
    # Running, the query takes two cores: 800 ticks in 4 s.
    assert jvm_cpu_ticks(java) - before < 200


def jvm_cpu_ticks(pid: str) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (proc(5))


def test_stop_ends_the_engine(warm_home: Path) -> None:
    server = running_server(warm_home)
    assert server is not None
    stopped = pixels_sql("stop", home=warm_home)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped the server of {warm_home}" in stopped.stderr
    assert not process_alive(server.pid)
    assert running_server(warm_home) is None and not socket_path(warm_home).exists()
    again = pixels_sql("stop", home=warm_home)
    assert again.returncode == 0 and "no engine or server runs" in again.stderr


def test_concurrent_first_commands_share_one_engine_held_by_the_python_api_then_idle(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    scripts = []
    for n in (1, 2):
        scripts.append(tmp_path / f"n{n}.sql")
        scripts[-1].write_text(f"SELECT {n} AS n;\n")
    first = [
        pixels_sql(
            "run", str(script), "--master", "local[2]", "--idle-timeout", "5", home=home, wait=False
        )
        for script in scripts
    ]
    outputs = [process.communicate(timeout=600) for process in first]
    for n, (process, (out, err)) in enumerate(zip(first, outputs, strict=True), 1):
        assert process.returncode == 0, err[-3000:]
        lines = out.splitlines()
        assert (lines[0], lines[2]) == ("n", str(n))
    assert sum(STARTING in err for _out, err in outputs) == 1  # one engine started
    # The Python API finds the engine, and holds it while its process runs (longer than the
    # idle timeout here); then the engine stops by itself.
    job = (
        "import sys, time, pixels_sql\n"
        "spark = pixels_sql.connect(sys.argv[1])\n"
        "print(spark.sql('SELECT 7 AS n').first().n)\n"
        "time.sleep(12)\n"
        "print(spark.sql('SELECT 8 AS n').first().n)\n"
        "spark.stop()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", job, str(home)],
        capture_output=True,
        text=True,
        env={**os.environ, "PIXELS_SQL_ENGINE": "on"},
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["7", "8"] and STARTING not in done.stderr
    assert wait_until(lambda: running_server(home) is None, 120), "the idle engine still runs"
    log = (home / "logs" / "engine.log").read_text()
    assert log.count("engine of the pixels-sql commands") == 1 and "idle for 5 s" in log
    assert not socket_path(home).exists()


def in_a_terminal(args: list[str], ready: bytes, env: dict[str, str]) -> tuple[str, int]:
    """Run ``pixels-sql args`` on a pseudo-terminal, type Ctrl-C once ``ready`` is printed (the
    terminal sends SIGINT to the whole foreground process group, as a user's does); return
    what it printed and its exit status."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the terminal's session leader, as a shell's command is
        os.environ.update(env)
        os.execv(sys.executable, [sys.executable, "-m", "pixels_sql.cli", *args])
    printed = b""
    deadline = time.monotonic() + 300
    typed = False
    while time.monotonic() < deadline:
        readable, _, _ = select.select([terminal], [], [], 0.5)
        if readable:
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # the child closed the terminal: it ended
                break
            if not chunk:
                break
            printed += chunk
        if not typed and ready in printed:
            time.sleep(2)
            os.write(terminal, b"\x03")
            typed = True
    _, status = os.waitpid(pid, 0)
    os.close(terminal)
    assert typed, printed.decode(errors="replace")[-3000:]
    return printed.decode(errors="replace"), os.waitstatus_to_exitcode(status)


def test_ctrl_c_in_a_terminal_stops_serve_cleanly(tmp_path: Path) -> None:
    ports = [str(free_port()) for _ in range(3)]
    printed, status = in_a_terminal(
        [
            "serve",
            "--home",
            str(tmp_path / "home"),
            "--master",
            "local[1]",
            "--jdbc-port",
            ports[0],
            "--connect-port",
            ports[1],
            "--http-port",
            ports[2],
        ],
        b"pixels-sql serve: ready",
        {"PYTHONWARNINGS": "ignore"},
    )
    assert status == 0, printed[-3000:]
    assert "pixels-sql serve: stopping" in printed and "pixels-sql serve: stopped" in printed
    assert "Traceback" not in printed and "KeyboardInterrupt" not in printed


def test_ctrl_c_in_a_terminal_interrupts_a_long_run(tmp_path: Path) -> None:
    script = tmp_path / "long.sql"
    script.write_text("SELECT 1 AS started;\nSELECT count(*) FROM range(1000000000000);\n")
    printed, status = in_a_terminal(
        [
            "run",
            str(script),
            "--home",
            str(tmp_path / "home"),
            "--master",
            "local[1]",
            "--no-server",
        ],
        b"long.sql:1: ok",
        {"PYTHONWARNINGS": "ignore"},
    )
    assert status == 130, printed[-3000:]
    assert "pixels-sql: interrupted" in printed
    assert "Traceback" not in printed and "KeyboardInterrupt" not in printed


def test_ctrl_c_in_a_terminal_stops_a_stream_after_its_batch(tmp_path: Path) -> None:
    """`ingest --stream` (which runs on its own, never in the engine): Ctrl-C lets the
    micro-batch under way finish, says "stopping" and "stopped", prints the summary, exit 0;
    the checkpoint then holds that batch as committed."""
    folder = copy_samples(tmp_path / "scans", {"ct/CT_small.dcm": SAMPLE_FILES["ct/CT_small.dcm"]})
    printed, status = in_a_terminal(
        [
            "ingest",
            str(folder),
            "--stream",
            "--checkpoint",
            str(tmp_path / "checkpoint"),
            "--no-thumbnails",
            "--home",
            str(tmp_path / "home"),
            "--master",
            "local[1]",
        ],
        b"micro-batch 0:",
        {"PYTHONWARNINGS": "ignore"},
    )
    assert status == 0, printed[-3000:]
    assert "pixels-sql ingest: stopping" in printed and "pixels-sql ingest: stopped" in printed
    assert "stream: 1 micro-batches" in printed and "files: 1" in printed, printed[-3000:]
    assert (tmp_path / "checkpoint" / "commits" / "0").is_file()
    assert "Traceback" not in printed and "KeyboardInterrupt" not in printed


def java_children(pid: int) -> list[int]:
    """The JVMs ``pid`` started (its driver: spark-submit execs java)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = status.read_text().rsplit(")", 1)
        except OSError:
            continue
        if int(rest.split()[1]) == pid and name.endswith("(java"):
            found.append(int(status.parent.name))
    return found


def test_the_first_engine_writes_the_class_archive_and_the_next_maps_it(tmp_path: Path) -> None:
    """The product's class archive (jvm_classes.py), which the suite otherwise turns off: the
    first engine writes it as it stops, the next one's JVM maps it. The first `stop` is sent
    as soon as the first command is answered, before the engine's endpoints are up."""
    home, folder = tmp_path / "home", tmp_path / "jvm-classes"
    env = {**os.environ, "PIXELS_SQL_ENGINE": "on", "PIXELS_SQL_CLASS_ARCHIVE": str(folder)}
    for variable in jvm_classes.USER_OPTION_VARIABLES:
        env.pop(variable, None)  # the suite's own archive (SPARK_SUBMIT_OPTS)
    script = one_script(tmp_path)

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pixels_sql.cli", *args, "--home", str(home)],
            env=env,
            text=True,
            capture_output=True,
            timeout=600,
            check=False,
        )

    try:
        first = command("run", str(script), "--master", "local[2]")
        assert first.returncode == 0 and STARTING in first.stderr, first.stderr[-3000:]
        stopped = command("stop")
        assert f"stopped the server of {home}" in stopped.stderr, stopped.stderr
        archives = list(folder.iterdir())
        assert [path.suffix for path in archives] == [".jsa"], archives  # no partial file left
        assert "writing the JVM class archive" in (home / "logs" / "engine.log").read_text()

        again = command("run", str(script), "--master", "local[2]")
        assert again.returncode == 0 and STARTING in again.stderr, again.stderr[-3000:]
        server = running_server(home)
        assert server is not None
        jvms = java_children(server.pid)
        assert len(jvms) == 1
        assert str(archives[0]) in Path(f"/proc/{jvms[0]}/maps").read_text()
    finally:
        assert command("stop").returncode == 0
    assert list(folder.iterdir()) == archives  # mapped, not written again


def test_a_starting_engine_is_waited_for_except_by_its_own_commands(tmp_path: Path) -> None:
    """An engine takes its owner's commands before it writes server.json: a process looking
    for the server meanwhile (`pixels-sql stop`) waits for the file; the engine's own commands
    and a file left by a dead server do not wait. A listening socket stands for the engine."""
    import socket
    import threading

    from pixels_sql.servers import engine
    from pixels_sql.servers.discovery import STATE_FILE, ServerInfo

    home = tmp_path / "home"
    home.mkdir()
    with (
        socket.socket(socket.AF_UNIX) as engine_socket,
        socket.socket() as connect_endpoint,
    ):
        engine_socket.bind(str(socket_path(home)))
        engine_socket.listen(16)
        connect_endpoint.bind(("127.0.0.1", 0))
        connect_endpoint.listen(16)
        info = ServerInfo(
            pid=os.getpid(),
            host="127.0.0.1",
            jdbc_port=0,
            connect_port=connect_endpoint.getsockname()[1],
            home=str(home),
        )
        engine._SERVED.add(home)
        try:
            began = time.monotonic()
            assert running_server(home) is None  # the engine's own command: no wait
            assert time.monotonic() - began < 1
        finally:
            engine._SERVED.discard(home)
        writer = threading.Timer(1.5, info.write, args=(home,))
        writer.start()
        began = time.monotonic()
        assert running_server(home) == info  # waited for the file
        assert time.monotonic() - began >= 1.0
        writer.join()
        # A file whose endpoint does not answer (a dead server's): no wait.
        connect_endpoint.close()
        began = time.monotonic()
        assert (home / STATE_FILE).exists() and running_server(home) is None
        assert time.monotonic() - began < 5
