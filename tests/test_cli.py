"""The pixels-sql command in separate processes: persistence, one process per home, output."""

from __future__ import annotations

import csv
import io
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from pixels_sql.cli import EXAMPLES, build_parser
from pixels_sql.home import HomeLock
from pixels_sql.output import render
from pixels_sql.servers.discovery import running_server
from tests import browser
from tests.conftest import copy_samples

ROOT = Path(__file__).parent.parent
# Files a person may want to look at after a run (screenshots); kept out of git.
ARTIFACTS = ROOT / "test-artifacts"


def pixels_sql(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pixels_sql.cli",
            *args,
            "--home",
            str(home),
            # Two cores for the commands that start a Spark (the others take no --master).
            *(() if args[0] in ("viewer-url", "token", "stop") else ("--master", "local[2]")),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """`make demo`'s command in a fresh folder (./pixels-home made there), as a user runs it:
    the embedded pipeline on the bundled samples. The folder and what the command printed."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\ndemo:") :].splitlines()[2].strip()
    assert recipe == "$(VENV)/bin/pixels-sql demo", recipe
    work = tmp_path_factory.mktemp("demo")
    completed = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "pixels-sql"), "demo"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=work,
        env={k: v for k, v in os.environ.items() if k != "PIXELS_SQL_HOME"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return work, completed


def test_make_demo_prints_what_the_readme_shows(demo) -> None:
    """The sample files catalogued into pixels_demo of ./pixels-home, ending with the README's
    lines (its "…" stands for the folder)."""
    work, completed = demo
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("`make demo` catalogs") :]
    shown = section[section.index("```\n") + 4 :]
    shown = shown[: shown.index("```")].splitlines()
    printed = completed.stdout.splitlines()[-len(shown) :]
    assert [line.replace(str(work), "/…") for line in printed] == shown, completed.stdout
    assert completed.stderr.startswith(f"pixels-sql: new home {work / 'pixels-home'}\n")
    # Per-statement progress names the line where the SELECT of the listing's counts starts.
    script = (ROOT / "sql" / "10_catalog.sql").read_text().splitlines()
    counted = next(i for i, line in enumerate(script) if "AS files_to_read" in line)
    select = max(i for i in range(counted + 1) if script[i].startswith("SELECT"))
    assert f"10_catalog.sql:{select + 1}: ok" in completed.stderr


def test_tables_persist_for_a_second_process(demo) -> None:
    work, _ = demo
    completed = pixels_sql(
        "sql",
        "SELECT relative_path, Modality FROM object_catalog WHERE meta IS NOT NULL"
        " ORDER BY relative_path",
        "--format",
        "csv",
        "--database",
        "pixels_demo",
        home=work / "pixels-home",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = list(csv.reader(io.StringIO(completed.stdout)))
    assert rows[0] == ["relative_path", "Modality"]
    assert ["pydicom/CT_small.dcm", "CT"] in rows
    assert len(rows) == 1 + 231  # the README's instances
    assert "files_to_read" not in completed.stdout  # nothing was re-ingested


def test_a_cut_is_said_on_stderr_never_in_the_data(spark) -> None:
    from pixels_sql.cli import TABLE_ROWS, execute
    from pixels_sql.scripts import iter_sql

    query = list(iter_sql("SELECT id FROM range(60)", {}))
    for fmt, limit, printed in [("table", None, TABLE_ROWS), ("json", 5, 5), ("csv", None, 60)]:
        out, err = io.StringIO(), io.StringIO()
        execute(spark, query, out=out, err=err, fmt=fmt, limit=limit)
        lines = out.getvalue().splitlines()
        data = lines[2:] if fmt == "table" else lines[1:] if fmt == "csv" else lines
        assert len(data) == printed, (fmt, lines)
        cut = printed < 60
        assert ("rows shown" in err.getvalue()) == cut, fmt
        assert "rows" not in out.getvalue().replace("range", "")


def test_bad_statement_names_its_location(demo, tmp_path: Path) -> None:
    work, _ = demo
    script = tmp_path / "bad.sql"
    script.write_text("SELECT 1;\nSELECT * FROM no_such_table;\n")
    completed = pixels_sql("run", str(script), home=work / "pixels-home")
    assert completed.returncode == 1
    assert f"{script}:2:" in completed.stderr
    assert "TABLE_OR_VIEW_NOT_FOUND" in completed.stderr


def test_second_process_on_a_busy_home_is_told_why(tmp_path: Path) -> None:
    home = tmp_path / "busy"
    script = tmp_path / "one.sql"
    script.write_text("SELECT 1;\n")
    with HomeLock(home):
        completed = pixels_sql("run", str(script), home=home)
    assert completed.returncode == 1
    assert "in use by pixels-sql pid" in completed.stderr
    assert "one process at a time" in completed.stderr


def test_a_read_only_command_never_makes_a_home(tmp_path: Path) -> None:
    home = tmp_path / "nowhere"
    for command in (["sql", "SELECT 1"], ["gallery"], ["viewer-url", "1.2.3"]):
        completed = pixels_sql(*command, home=home)
        assert completed.returncode == 1
        assert completed.stderr == (
            f"pixels-sql: no pixels-sql home at {home}; run `pixels-sql ingest` first, or pass"
            " --home (or set PIXELS_SQL_HOME)\n"
        )
        assert not home.exists()


def test_the_home_is_found_from_the_working_folder_up(tmp_path: Path) -> None:
    """Without --home or $PIXELS_SQL_HOME a command uses the nearest pixels-home holding a
    home, from its working folder up (as git finds its repository); else ./pixels-home."""
    project = tmp_path / "project"
    deep = project / "notebooks" / "week1"
    deep.mkdir(parents=True)
    (project / "notebooks" / "pixels-home").mkdir()  # a folder of that name, not a home
    (project / "pixels-home" / "metastore_db").mkdir(parents=True)
    environment = {k: v for k, v in os.environ.items() if k != "PIXELS_SQL_HOME"}
    command = [sys.executable, "-m", "pixels_sql.cli", "viewer-url", "1.2.3"]
    found = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=deep, env=environment
    )
    assert found.returncode == 0, found.stderr
    assert f"no server runs on {project / 'pixels-home'}:" in found.stderr
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    missing = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=alone, env=environment
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"pixels-sql: no pixels-sql home at {alone / 'pixels-home'};")
    assert not (alone / "pixels-home").exists()


def test_parse_errors_stop_scripts_before_spark_starts(tmp_path: Path) -> None:
    script = tmp_path / "typo.sql"
    script.write_text("SELECT 1;\n\nSELEC * FROM object_catalog;\nSHOW TABLES IN pixels;\n")
    completed = pixels_sql("run", str(script), home=tmp_path / "unused")
    assert completed.returncode == 1
    # Where, the line and a caret, in Spark's manner; none of sqlglot's internals.
    assert f"{script}:3:9: SQL does not parse near 'FROM'" in completed.stderr
    assert "  SELEC * FROM object_catalog\n          ^^^^\n" in completed.stderr
    assert "sqlglot" not in completed.stderr.replace("--no-parse-check", "")
    assert "Falling back" not in completed.stderr  # SHOW TABLES IN parses quietly
    assert not (tmp_path / "unused" / "metastore_db").exists()
    assert completed.stderr.startswith(f"pixels-sql: new home {tmp_path / 'unused'}\n")


def test_table_rendering() -> None:
    text = render(["a", "meta"], [(1, "x" * 100), (None, "y")], "table", width=10)
    assert text.splitlines() == [
        "a    | meta",
        "------+------------",
        "1    | xxxxxxxxx…",
        "NULL | y",
    ]


def test_every_command_has_help() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {
        "ingest",
        "run",
        "sql",
        "demo",
        "gallery",
        "serve",
        "token",
        "viewer-url",
        "stop",
        "deidentify",
        "store",
    }
    assert all(command.format_help() for command in commands.values())


def test_each_command_lists_its_own_options_and_examples_that_parse() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    spark_commands = {"ingest", "run", "sql", "demo", "gallery", "serve", "deidentify"}
    for name, command in commands.items():
        options = {option for action in command._actions for option in action.option_strings}
        assert "--home" in options, name
        assert ("--master" in options) == (name in spark_commands), name
        assert ("--limit" in options) == (name in {"run", "sql"}), name
        engine_commands = {"ingest", "run", "sql", "gallery", "deidentify"}
        assert ("--no-server" in options) == (name in engine_commands), name
        shown = command.format_help()
        assert "examples:\n" in shown, name
        for example in EXAMPLES[name]:
            assert example in shown
            words = shlex.split(example.split(" > ")[0])
            assert words[:2] == ["pixels-sql", name], example
            parsed = parser.parse_args(words[1:])
            assert parsed.command == name and parsed.master == "local[*]", example


def readme_block(heading: str) -> list[str]:
    """The command lines of the first bash block under a README heading."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(heading) :]
    block = section[section.index("```bash\n") + len("```bash\n") :]
    block = block[: block.index("```")]
    return [line for line in block.splitlines() if line.strip()]


@dataclass
class ReadmeRun:
    work: Path  # the folder the lines ran in (gallery.html lands there)
    data: Path  # the DICOM folder the lines name
    outputs: list[str]  # what each line printed
    opening: list[list[dict[str, str]]]  # the rows of the README's opening SQL statements


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory: pytest.TempPathFactory) -> ReadmeRun:
    """The README's "Use it on your files" lines, run as written: only the folder is ours and
    the home is set the way the README says ($PIXELS_SQL_HOME). They run in a folder of their
    own (the gallery lands there) that sees the checkout's .venv, as the README's reader does."""
    work = tmp_path_factory.mktemp("readme")
    data = copy_samples(work / "dicom")
    (work / ".venv").symlink_to(ROOT / ".venv")
    lines = readme_block("## Use it on your files")
    assert lines[0].startswith(".venv/bin/pixels-sql ingest /data/dicom")
    outputs = []
    opening: list[list[dict[str, str]]] = []
    for line in lines:
        if line.startswith(".venv/bin/pixels-sql stop"):
            # Before the engine stops: the README's opening SQL, each statement as a query.
            for statement in readme_sql():
                queried = subprocess.run(
                    [
                        ".venv/bin/pixels-sql",
                        "sql",
                        statement.replace("/data/dicom", str(data)),
                        *("--format", "csv"),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=600,
                    cwd=work,
                    env={**os.environ, "PIXELS_SQL_HOME": str(work / "home")},
                )
                assert queried.returncode == 0, (statement, queried.stderr[-3000:])
                opening.append(list(csv.DictReader(io.StringIO(queried.stdout))))
        command = line.split("#", 1)[0].replace("/data/dicom", str(data))
        completed = subprocess.run(
            command,
            shell=True,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=work,
            env={
                **os.environ,
                "PYTHONWARNINGS": "ignore",
                "PIXELS_SQL_HOME": str(work / "home"),
                "PIXELS_SQL_ENGINE": "on",  # as a user runs them: through the warm engine
            },
            executable="/bin/bash",
        )
        assert completed.returncode == 0, (line, completed.stderr[-3000:])
        outputs.append(completed.stdout)
        if line.startswith(".venv/bin/pixels-sql stop"):
            assert "stopped the server of" in completed.stderr
    assert running_server(work / "home") is None  # the last line stopped the engine
    return ReadmeRun(work, data, outputs, opening)


def readme_sql() -> list[str]:
    """The statements of the README's opening SQL block."""
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("```sql\n") + len("```sql\n") :]
    block = block[: block.index("```")]
    return [statement.strip() for statement in block.split(";") if statement.strip()]


def test_readme_use_it_on_your_files_runs_as_written(readme_run: ReadmeRun) -> None:
    outputs = readme_run.outputs
    files = sum(1 for path in readme_run.data.rglob("*") if path.is_file())
    assert f"ingest: {files} new, 0 changed, 0 deleted" in outputs[0]
    assert "StudyInstanceUID" in outputs[1]
    assert "not_dicom" in outputs[2]
    assert (readme_run.work / "gallery.html").is_file()


def test_the_readmes_opening_sql_runs_on_the_catalog(readme_run: ReadmeRun) -> None:
    listed, by_modality, names = readme_run.opening
    files = sorted(path for path in readme_run.data.rglob("*") if path.is_file())
    assert len(listed) == len(files)
    assert sum(int(row["length"]) for row in listed) == sum(p.stat().st_size for p in files)
    counts = {row["Modality"]: int(row["files"]) for row in by_modality}
    assert counts["CT"] == 1 and counts["MR"] == 4, counts  # mr/ and the multi-frame emri_small
    assert sum(counts.values()) == len(files)
    # Headers with a StudyDate from 2000 on: two values each (name, slice thickness).
    assert names and all(len(row) == 2 for row in names), names


def test_gallery_in_a_real_browser(readme_run: ReadmeRun) -> None:
    """The gallery opens from disk in headless Chromium, one decoded image per instance: the
    gallery the README's last line wrote (a pixels-sql gallery over the sample folder)."""
    gallery = readme_run.outputs[-2]
    assert gallery.startswith("gallery: "), gallery
    ARTIFACTS.mkdir(exist_ok=True)
    output = Path(shutil.copyfile(readme_run.work / "gallery.html", ARTIFACTS / "gallery.html"))
    renderable = 6  # the 8 readable files less the RT Plan and RT Ion Plan without pixels
    assert f"({renderable} images)" in gallery
    attributes = browser.body_attributes(output.as_uri())
    assert attributes["data-images-ok"] == str(renderable)
    assert attributes["data-images-broken"] == "0"
    page = output.read_text()
    assert page.count("<figure") == renderable
    assert "CT · " in page and "MR · " in page
    shot = browser.screenshot(output.as_uri(), ARTIFACTS / "gallery.png")
    image = Image.open(shot)
    assert image.size == (1280, 1600)
    # Images were painted, not a blank page.
    assert len(set(image.convert("L").get_flattened_data())) > 50
