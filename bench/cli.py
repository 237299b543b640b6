"""The `pixels-sql` command's latency with the warm engine against its embedded Spark (issue 28),
measured in one run, end to end as a user times it (a subprocess per command).

    .venv/bin/python -m bench.cli [--files 785] [--new 11] [--queries 20] [--cores 2]

On ``bench/data/meta-mr-N`` (real MR headers with 64x64 pixels, ``bench.meta.generate_mr``;
ingests make thumbnails, as `pixels-sql ingest` does by default), each phase in its own
temporary home, one after the other (never two Sparks at once on 2 cores):

- **embedded** (``--no-server``, the baseline): a catalog query 3 times; the first ingest of the
  N files; then 3 incremental ingests of ``--new`` more files each;
- **engine**: its start on a new home; the first ingest of the N files; 3 incremental ingests;
  the catalog query ``--queries`` times; then, the engine stopped, the first query on the cold
  (ingested) home, which starts it again.

The driver JVMs' class archive (pixels_sql/jvm_classes.py) lives in a folder of the run, empty at
its start. First, an installation's first use: an engine started on a scratch home without an
archive (the command's time), then stopped (the stop writes the archive: its time). Both phases
then map it, as every use after the first does.

Targets: repeated query < 1 s (median), cold first query < 15 s, incremental ingest of 11 files
< 10 s, 785 files < 30 s. Prints medians, the ratios embedded / engine, and writes
``bench/results/cli.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.meta import RESULTS, generate_mr

QUERY = "SELECT Modality, count(*) AS files FROM object_catalog GROUP BY Modality"
TARGETS = {"query": 1.0, "cold_query": 15.0, "incremental_ingest": 10.0, "first_ingest": 30.0}


def environment(base: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PIXELS_SQL_ENGINE": "on",
        "PIXELS_SQL_CLASS_ARCHIVE": str(base / "jvm-classes"),
    }


def timed(*args: str, home: Path, master: str, engine: bool) -> float:
    command = [sys.executable, "-m", "pixels_sql.cli", *args, "--home", str(home)]
    command += ["--master", master]
    if not engine:
        command.append("--no-server")
    env = environment(home.parent.parent)
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr[-2000:]}")
    return seconds


def stop(home: Path) -> float:
    """`pixels-sql stop` on ``home``; its seconds."""
    command = [sys.executable, "-m", "pixels_sql.cli", "stop", "--home", str(home)]
    began = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True, env=environment(home.parent.parent))
    return time.perf_counter() - began


def one_statement(base: Path) -> Path:
    """A script that reads nothing: running it starts an engine and no more."""
    script = base / "one.sql"
    script.write_text("SELECT 1 AS one;\n")
    return script


def first_use(base: Path, master: str) -> dict[str, object]:
    """An installation's first engine: started without a class archive, stopped (writing it)."""
    home = base / "first-use" / "home"
    script = one_statement(base)
    result: dict[str, object] = {}
    result["engine_start"] = timed("run", str(script), home=home, master=master, engine=True)
    result["stop"] = stop(home)
    result["class_archive"] = sorted(p.name for p in (base / "jvm-classes").glob("*.jsa"))
    return result


def phase(engine: bool, base: Path, args: argparse.Namespace, master: str) -> dict[str, object]:
    home = base / ("engine" if engine else "embedded") / "home"
    data = base / ("engine" if engine else "embedded") / "dicom"
    shutil.copytree(generate_mr(args.files), data / "first", ignore=shutil.ignore_patterns(".*"))
    extra = sorted(p for p in generate_mr(args.new * 3).rglob("*") if p.is_file())
    extra = [p for p in extra if not p.name.startswith(".")]
    result: dict[str, object] = {}
    if engine:
        # The engine's start on a new home (a script that reads nothing starts it).
        script = one_statement(base)
        result["engine_start"] = timed("run", str(script), home=home, master=master, engine=True)
    result["first_ingest"] = timed("ingest", str(data), home=home, master=master, engine=engine)
    increments = []
    for round_ in range(3):
        folder = data / f"new-{round_}"
        folder.mkdir(parents=True)
        for index, path in enumerate(extra[round_ * args.new : (round_ + 1) * args.new]):
            shutil.copyfile(path, folder / f"{index:03d}.dcm")
        increments.append(timed("ingest", str(data), home=home, master=master, engine=engine))
    result["incremental_ingests"] = increments
    result["incremental_ingest"] = statistics.median(increments)
    queries = [
        timed("sql", QUERY, home=home, master=master, engine=engine)
        for _ in range(args.queries if engine else 3)
    ]
    result["queries"] = queries
    result["query"] = statistics.median(queries)
    if engine:
        stop(home)
        # The first query on a cold home: an ingested home, no engine running.
        result["cold_query"] = timed("sql", QUERY, home=home, master=master, engine=True)
        stop(home)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=785)
    parser.add_argument("--new", type=int, default=11)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    master = f"local[{args.cores}]"
    base = Path(tempfile.mkdtemp(prefix="pixels-bench-cli-"))
    try:
        first = first_use(base, master)
        embedded = phase(False, base, args, master)
        engine = phase(True, base, args, master)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    load = os.getloadavg()[0]
    lines = [
        f"# pixels-sql command latency: warm engine vs embedded ({args.files} MR files,"
        f" +{args.new} per incremental ingest, local[{args.cores}])",
        "",
        "| measure | embedded s | engine s | embedded / engine | target (engine) |",
        "|---|---|---|---|---|",
    ]
    for key, target in TARGETS.items():
        ours = float(engine[key])  # type: ignore[arg-type]
        theirs = embedded.get(key)
        base_text = "" if theirs is None else f"{float(theirs):.2f}"  # type: ignore[arg-type]
        ratio = "" if theirs is None else f"{float(theirs) / ours:.1f}x"  # type: ignore[arg-type]
        met = "met" if ours < target else "NOT met"
        lines.append(f"| {key} | {base_text} | {ours:.2f} | {ratio} | < {target:g} s: {met} |")
    archive = "written" if first["class_archive"] else "NOT written"
    lines += [
        "",
        f"an installation's first use (no class archive yet): engine start"
        f" {float(first['engine_start']):.1f} s, its stop writing the archive ({archive})"  # type: ignore[arg-type]
        f" {float(first['stop']):.1f} s; with the archive, engine start on a new home"  # type: ignore[arg-type]
        f" {float(engine['engine_start']):.1f} s; load average at the end {load:.1f}",  # type: ignore[arg-type]
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = {"files": args.files, "new": args.new, "cores": args.cores, "load": load}
    summary |= {"first_use": first, "embedded": embedded, "engine": engine, "targets": TARGETS}
    (RESULTS / "cli.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / "cli.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
