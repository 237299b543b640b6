"""Server benchmark (issue 9): the JDBC endpoint of `pixels-sql serve` vs an embedded session.

    .venv/bin/python -m bench.server [--files 10000] [--runs 200] [--catalog 1000]

Two phases, one after the other (never both at once: a 2-core machine), each with its own
home (Derby admits one process per home) and the same Spark master (local[2]):

1. ``pixels-sql serve --master local[2]`` as a subprocess on free loopback ports; the sql/
   pipeline (catalog, meta, views; no thumbnails) is run on ``bench/data/meta-<catalog>`` by
   ``pixels-sql run`` (a Spark Connect client of that server), then, through ONE PyHive
   connection (HiveServer2 protocol, SASL PLAIN, cursor reused):
   - the round trip of a small catalog query
     (``SELECT count(*) FROM pixels.object_catalog WHERE Modality = 'CT'``) and of
     ``SELECT 1``, ``--runs`` times each after a few untimed ones: p50/p95;
   - ``SELECT sum(length(dicom_meta(path))) FROM read_files(<meta-N>, ...)`` over N =
     ``--files`` files (made as bench/meta.py makes them), best of 3 runs, after one untimed
     query over 50 other files that starts the Python workers;
   then SIGTERM, and the server must exit with 0.
2. The same in this process: ``pixels_sql.session(home, master='local[2]')``, the pipeline by
   ``pixels_sql.pipeline.run_pipeline`` on the same files, ``spark.sql(q).collect()``.

Prints the table and writes bench/results/server.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from bench.meta import DATA, RESULTS, ROOT, _generate_part, generate

HOST = "127.0.0.1"
CORES = 2
READY_LINE = "pixels-sql serve: ready"
READY_TIMEOUT = 240.0
STOP_TIMEOUT = 120.0
DATABASE = "pixels"
PIPELINE_SCRIPTS = [
    ROOT.parent / "sql" / name
    for name in ("00_database.sql", "10_catalog.sql", "20_meta.sql", "90_views.sql")
]
CATALOG_QUERY = f"SELECT count(*) FROM {DATABASE}.object_catalog WHERE Modality = 'CT'"
TRIVIAL_QUERY = "SELECT 1"
WARMUP_RUNS = 10
META_RUNS = 3


def meta_query(folder: Path) -> str:
    """Materialises every file's metadata (its JSON length summed): all rows reach the UDF."""
    return (
        "SELECT count(*), sum(length(dicom_meta(path)))"
        f" FROM read_files('{folder}', recursiveFileLookup => true, pathGlobFilter => '*.dcm')"
    )


# --- timing -----------------------------------------------------------------------------------


def latencies(run: Callable[[str], list[Any]], query: str, runs: int) -> dict[str, Any]:
    """p50/p95 (ms) of ``run(query)`` over ``runs`` runs, after WARMUP_RUNS untimed ones."""
    rows = None
    for _ in range(WARMUP_RUNS):
        rows = run(query)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        rows = run(query)
        times.append((time.perf_counter() - started) * 1000)
    return {
        "runs": runs,
        "p50_ms": float(np.percentile(times, 50)),
        "p95_ms": float(np.percentile(times, 95)),
        "min_ms": min(times),
        "max_ms": max(times),
        "mean_ms": float(np.mean(times)),
        "result": [list(row) for row in rows or []],
    }


def best_of(run: Callable[[str], list[Any]], query: str, runs: int) -> dict[str, Any]:
    times, rows = [], None
    for _ in range(runs):
        started = time.perf_counter()
        rows = run(query)
        times.append(time.perf_counter() - started)
    return {"seconds": min(times), "all_seconds": times, "result": [list(r) for r in rows or []]}


def measure(run: Callable[[str], list[Any]], meta_folder: Path, runs: int) -> dict[str, Any]:
    """The three measurements of one phase, through ``run`` (a JDBC cursor or spark.sql)."""
    result: dict[str, Any] = {
        "trivial": latencies(run, TRIVIAL_QUERY, runs),
        "catalog": latencies(run, CATALOG_QUERY, runs),
    }
    run(meta_query(warmup_folder()))  # Python workers started and imports done, untimed
    result["meta"] = best_of(run, meta_query(meta_folder), META_RUNS)
    return result


def warmup_folder() -> Path:
    folder = DATA / "meta-warmup"  # the same 50 files bench/meta.py warms up with
    if not folder.exists():
        _generate_part((0, 50, 0, str(folder)))
    return folder


# --- phase 1: serve + JDBC --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class Server:
    """``pixels-sql serve`` as a subprocess: started, waited for, stopped with SIGTERM."""

    def __init__(self, home: Path, log: Path, allow: Path) -> None:
        self.home = home
        self.allow = allow  # the folder the JDBC client (an admin) reads
        self.jdbc_port = free_port()
        self.connect_port = free_port()
        while self.connect_port == self.jdbc_port:
            self.connect_port = free_port()
        self.log = log
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._ready = threading.Event()

    def start(self) -> float:
        command = [
            sys.executable,
            "-m",
            "pixels_sql.cli",
            "serve",
            "--home",
            str(self.home),
            "--jdbc-port",
            str(self.jdbc_port),
            "--connect-port",
            str(self.connect_port),
            "--master",
            f"local[{CORES}]",
            "--allow-path",
            str(self.allow),
        ]
        started = time.perf_counter()
        with open(self.log, "w") as stderr:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=stderr, text=True
            )
        threading.Thread(target=self._drain, args=(self.process.stdout,), daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"serve did not become ready: {self.lines}\n{tail}")
        return time.perf_counter() - started

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            if line.startswith(READY_LINE):
                self._ready.set()

    def stop(self) -> int | None:
        """SIGTERM, then wait; the exit code (killed after STOP_TIMEOUT: None)."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


def run_pipeline_cli(home: Path, folder: Path) -> float:
    """``pixels-sql run`` of the pipeline: a Spark Connect client of the server of ``home``."""
    command = [
        sys.executable,
        "-m",
        "pixels_sql.cli",
        "run",
        *map(str, PIPELINE_SCRIPTS),
        "--param",
        f"path={folder}",
        "--home",
        str(home),
    ]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"pipeline through the server failed:\n{completed.stderr[-3000:]}")
    return time.perf_counter() - started


def jdbc_phase(meta_folder: Path, catalog_folder: Path, runs: int, work: Path) -> dict[str, Any]:
    from pyhive import hive

    from pixels_sql.servers.secrets import ADMIN_USER, read_secrets

    home = work / "serve-home"
    server = Server(home, work / "serve.stderr.log", meta_folder)
    load = os.getloadavg()
    report: dict[str, Any] = {"ready_seconds": server.start(), "load_average_start": load}
    try:
        report["pipeline_seconds"] = run_pipeline_cli(home, catalog_folder)
        started = time.perf_counter()
        secrets = read_secrets(home)
        assert secrets is not None
        connection = hive.connect(
            host=HOST,
            port=server.jdbc_port,
            username=ADMIN_USER,
            auth="CUSTOM",
            password=secrets.admin,
            database="default",
        )
        report["connect_ms"] = (time.perf_counter() - started) * 1000
        cursor = connection.cursor()

        def run(query: str) -> list[Any]:
            cursor.execute(query)
            return cursor.fetchall()

        try:
            report.update(measure(run, meta_folder, runs))
        finally:
            cursor.close()
            connection.close()
    finally:
        code = server.stop()
    report["load_average_end"] = os.getloadavg()
    report["exit_code"] = code
    report["server_output"] = server.lines
    if code != 0:
        tail = server.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"serve exited with {code} after SIGTERM:\n{tail}")
    return report


# --- phase 2: embedded ------------------------------------------------------------------------


def embedded_phase(
    meta_folder: Path, catalog_folder: Path, runs: int, work: Path
) -> dict[str, Any]:
    import pixels_sql
    from pixels_sql.pipeline import run_pipeline

    load, started = os.getloadavg(), time.perf_counter()
    spark = pixels_sql.session(work / "embedded-home", master=f"local[{CORES}]")
    report: dict[str, Any] = {
        "ready_seconds": time.perf_counter() - started,
        "load_average_start": load,
    }
    try:
        started = time.perf_counter()
        run_pipeline(spark, {"path": str(catalog_folder)}, PIPELINE_SCRIPTS)
        report["pipeline_seconds"] = time.perf_counter() - started

        def run(query: str) -> list[Any]:
            return spark.sql(query).collect()

        report.update(measure(run, meta_folder, runs))
        report["load_average_end"] = os.getloadavg()
    finally:
        spark.stop()
    return report


# --- report -----------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    jdbc, embedded = report["jdbc"], report["embedded"]
    files = report["files"]
    lines = [
        "| measurement | JDBC (serve) | in-process (embedded) | ratio JDBC / in-process |",
        "|---|---|---|---|",
    ]
    for key, label in (
        ("catalog", f"`{CATALOG_QUERY}` ({report['catalog_files']}-file pipeline catalog)"),
        ("trivial", f"`{TRIVIAL_QUERY}`"),
    ):
        for stat in ("p50", "p95"):
            a, b = jdbc[key][f"{stat}_ms"], embedded[key][f"{stat}_ms"]
            lines.append(
                f"| {label}, {stat} of {report['runs']} runs (ms) | {a:.1f} | {b:.1f} |"
                f" {a / b:.2f}x |"
            )
    a, b = jdbc["meta"]["seconds"], embedded["meta"]["seconds"]
    runs_a = ", ".join(f"{s:.2f}" for s in jdbc["meta"]["all_seconds"])
    runs_b = ", ".join(f"{s:.2f}" for s in embedded["meta"]["all_seconds"])
    lines.append(
        f"| `sum(length(dicom_meta(path)))` over {files} files, s, best of {META_RUNS}"
        f" (runs: JDBC {runs_a}; in-process {runs_b}) | {a:.2f} | {b:.2f} | {a / b:.2f}x |"
    )
    lines.append(
        f"| start until ready, s (serve: subprocess until its ready line; embedded:"
        f" `pixels_sql.session`) | {jdbc['ready_seconds']:.1f} |"
        f" {embedded['ready_seconds']:.1f} | |"
    )
    lines.append(
        f"| sql/ pipeline on the catalog files, s (`pixels-sql run` over Spark Connect;"
        f" `run_pipeline` in-process) | {jdbc['pipeline_seconds']:.1f} |"
        f" {embedded['pipeline_seconds']:.1f} | |"
    )
    lines.append(f"| opening the JDBC connection, ms | {jdbc['connect_ms']:.0f} | | |")
    lines.append(
        "| load average (1 min) at the start / end of the phase |"
        f" {jdbc['load_average_start'][0]:.1f} / {jdbc['load_average_end'][0]:.1f} |"
        f" {embedded['load_average_start'][0]:.1f} / {embedded['load_average_end'][0]:.1f} | |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10000, help="files for dicom_meta")
    parser.add_argument("--runs", type=int, default=200, help="timed runs of the small queries")
    parser.add_argument("--catalog", type=int, default=1000, help="files in the catalog")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    meta_folder = generate(args.files)
    catalog_folder = generate(args.catalog)
    warmup_folder()

    work = Path(tempfile.mkdtemp(prefix="pixels-bench-server-"))
    try:
        jdbc = jdbc_phase(meta_folder, catalog_folder, args.runs, work)
        embedded = embedded_phase(meta_folder, catalog_folder, args.runs, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for key in ("trivial", "catalog", "meta"):
        if jdbc[key]["result"] != embedded[key]["result"]:
            raise RuntimeError(
                f"{key}: JDBC returned {jdbc[key]['result']}, in-process {embedded[key]['result']}"
            )
    if embedded["meta"]["result"][0][0] != args.files:
        raise RuntimeError(f"dicom_meta saw {embedded['meta']['result']} of {args.files} files")
    report = {
        "cores": CORES,
        "files": args.files,
        "runs": args.runs,
        "catalog_files": args.catalog,
        "warmup_runs": WARMUP_RUNS,
        "catalog_query": CATALOG_QUERY,
        "meta_query": meta_query(meta_folder),
        "jdbc_client": "PyHive 0.7.0 (HiveServer2 Thrift, SASL PLAIN), one connection, one cursor",
        "machine_cpus": os.cpu_count(),
        "jdbc": jdbc,
        "embedded": embedded,
        "ratios": {
            "catalog_p50": jdbc["catalog"]["p50_ms"] / embedded["catalog"]["p50_ms"],
            "catalog_p95": jdbc["catalog"]["p95_ms"] / embedded["catalog"]["p95_ms"],
            "meta": jdbc["meta"]["seconds"] / embedded["meta"]["seconds"],
        },
    }
    (RESULTS / "server.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    markdown = render(report)
    (RESULTS / "server.md").write_text(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
