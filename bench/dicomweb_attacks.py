"""DICOMweb under the attacks of issue 26 (item 5), at full scale, against the service as
``pixels-sql serve`` runs it (its default limits, pixels_sql/servers/dicomweb/limits.py):

    .venv/bin/python -m bench.dicomweb_attacks [--studies 1000] [--connections 20000] [--renders 8]

The server is a process of its own (``--serve``: an embedded session, the catalog ingested,
``start_dicomweb`` as ``serve`` calls it), so that its memory and descriptors are measured
apart from the attacker (this process and its helpers). Data, made once into bench/data/: the
studies of bench.dicomweb (``--studies`` x 2 small files), a 1164 x 1164 16-bit image (a
2.7 MB frame, the attack's size) and a 4096 x 4096 16-bit image for the renders. Each attack
has a baseline measured in the same run:

1. Frame amplification: ``frames/1,1,…`` x 1000 of the 2.7 MB frame (the attack: answered at
   once now, past max_frames_bytes), then the largest list the limits allow (x N up to 1 GiB),
   streamed: the server's peak RSS over its idle RSS, in frames (target < 2).
2. A 1 GiB POST to the read-only server: bytes the attacker got to send before the 403
   (target < 10 MiB), against the 1 GiB declared.
3. ``--connections`` half-open connections (sending nothing; from two helper processes, the
   per-process descriptor limit here being 20,000), from another loopback address and then
   from the client's own: QIDO latency (a new connection each time) while they are opened and
   while they are held (target: every one < 1 s), against QIDO with no load; the server's open
   descriptors.
4. ``--renders`` concurrent ``rendered?viewport=4096`` of the 4096 x 4096 image: QIDO p50/p95
   meanwhile (target p95 < 100 ms) against QIDO with no load.

Results: bench/results/dicomweb_attacks.json and .md (and printed).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pydicom
import requests

from bench.dicomweb import generate, percentiles
from bench.ingest import git_state
from bench.meta import DATA, RESULTS
from pixels_sql.dicom.synthetic import monochrome_image

DATABASE = "bench_attacks"
FRAME_SIDE = 1164  # 1164 x 1164 x 2 bytes: 2.7 MB
RENDER_SIDE = 4096
FLOOD_ADDRESS = "127.0.0.2"
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux <netinet/in.h>
ACCEPT_FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
MIB = 1024**2


# -- the server (a process of its own) --------------------------------------------------------


def serve(folders: list[str], home: str, port: int) -> None:
    import pixels_sql
    from pixels_sql.ingest import ingest
    from pixels_sql.servers.dicomweb.server import start_dicomweb
    from pixels_sql.servers.dicomweb.service import ServiceOptions

    spark = pixels_sql.session(Path(home), master="local[2]")
    for folder in folders:
        ingest(spark, folder, DATABASE, thumbnails=False)
    server = start_dicomweb(spark, DATABASE, "127.0.0.1", port, ServiceOptions())
    print("ready", flush=True)
    sys.stdin.read()  # until the bench closes the pipe
    server.stop()
    spark.stop()


def large_images() -> Path:
    folder = DATA / "dicomweb-attacks"
    done = folder / ".complete"
    if done.exists():
        return folder
    template = pydicom.data.get_testdata_file("CT_small.dcm", download=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for side in (FRAME_SIDE, RENDER_SIDE):
            monochrome_image(template, folder / f"ct{side}.dcm", rows=side, columns=side)
    done.write_text("1\n")
    return folder


class Server:
    def __init__(self, folders: list[Path], home: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = (home / "bench-server.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.dicomweb_attacks", "--serve", str(home), str(self.port)]
            + [str(folder) for folder in folders],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        if line.strip() != "ready":
            raise RuntimeError(f"the server did not start: see {self.log.name}")
        self.url = f"http://127.0.0.1:{self.port}/dicomweb"

    def rss(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def idle_rss(self) -> int:
        samples = []
        for _ in range(20):
            samples.append(self.rss())
            time.sleep(0.01)
        return sorted(samples)[len(samples) // 2]

    def stop(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def instance_url(base: str, path: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
    return (
        f"{base}/studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}"
        f"/instances/{dataset.SOPInstanceUID}"
    )


def qido_once(base: str) -> float:
    """A search on a new connection (as a client that is not one of the attacker's); its
    seconds, or infinity if it failed (the connection refused or reset, an error status)."""
    started = time.perf_counter()
    try:
        answer = requests.get(f"{base}/studies", params={"limit": "100"}, timeout=60)
        answer.raise_for_status()
    except requests.RequestException as exc:
        print(f"QIDO failed: {exc}", file=sys.stderr)
        return math.inf
    if len(answer.json()) != 100:
        raise RuntimeError("the search found fewer than 100 studies")
    return time.perf_counter() - started


def latencies(seconds: list[float]) -> dict[str, Any]:
    """percentiles() of the searches that answered, and how many failed."""
    answered = [value for value in seconds if math.isfinite(value)]
    found = (
        percentiles(answered)
        if answered
        else {"n": 0, "p50_ms": math.nan, "p95_ms": math.nan, "max_ms": math.nan}
    )
    return {**found, "failed": len(seconds) - len(answered)}


def qido_baseline(base: str, runs: int = 100) -> dict[str, Any]:
    qido_once(base)
    return latencies([qido_once(base) for _ in range(runs)])


# -- 1. frames --------------------------------------------------------------------------------


def measure_frames(server: Server, image: Path) -> dict[str, Any]:
    url = instance_url(server.url, image) + "/frames/"
    frame_bytes = FRAME_SIDE * FRAME_SIDE * 2
    warm = requests.get(url + "1", headers={"Accept": ACCEPT_FRAMES}, timeout=60)
    warm.raise_for_status()
    report: dict[str, Any] = {"frame_bytes": frame_bytes}

    def streamed(count: int) -> dict[str, Any]:
        baseline = server.idle_rss()
        peak = baseline
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, server.rss())
                time.sleep(0.002)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        received = 0
        try:
            with requests.get(
                url + ",".join(["1"] * count),
                headers={"Accept": ACCEPT_FRAMES},
                stream=True,
                timeout=600,
            ) as answer:
                status = answer.status_code
                for chunk in answer.iter_content(1 << 20):
                    received += len(chunk)
        finally:
            done.set()
            sampler.join()
        return {
            "frames": count,
            "status": status,
            "bytes_received": received,
            "seconds": time.perf_counter() - started,
            "idle_rss_mib": baseline / MIB,
            "peak_rss_over_idle_mib": (peak - baseline) / MIB,
            "peak_rss_over_idle_frames": (peak - baseline) / frame_bytes,
        }

    report["attack_x1000"] = streamed(1000)
    from pixels_sql.servers.dicomweb.limits import DEFAULT_LIMITS

    allowed = min(DEFAULT_LIMITS.max_frames, DEFAULT_LIMITS.max_frames_bytes // frame_bytes)
    report["largest_allowed"] = streamed(allowed)
    return report


# -- 2. a 1 GiB POST --------------------------------------------------------------------------


def measure_post(server: Server) -> dict[str, Any]:
    declared = 1024**3
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    sock.sendall(
        (
            f"POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            'Content-Type: multipart/related; type="application/dicom"; boundary=x\r\n'
            f"Content-Length: {declared}\r\n\r\n"
        ).encode()
    )
    sent = 0
    stop = threading.Event()

    def push() -> None:
        nonlocal sent
        piece = b"\0" * (64 * 1024)  # the count is of pieces the kernel took whole
        try:
            while sent < declared and not stop.is_set():
                sock.sendall(piece)
                sent += len(piece)
        except OSError:
            pass

    started = time.perf_counter()
    sender = threading.Thread(target=push)
    sender.start()
    answer = b""
    while b"\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    seconds = time.perf_counter() - started
    stop.set()
    sender.join()
    sock.close()
    return {
        "declared_bytes": declared,
        "status_line": answer.split(b"\r\n")[0].decode(errors="replace"),
        "bytes_sent_before_close_mib": sent / MIB,
        "seconds_to_answer": seconds,
    }


# -- 3. half-open connections -----------------------------------------------------------------


def hold_connections(port: int, count: int, source: str) -> None:
    """A helper process: open ``count`` connections from ``source`` that send nothing, say how
    many, hold them until stdin closes."""
    sockets, refused = [], 0
    for _ in range(count):
        sock = socket.socket()
        # The port is chosen at connect(), not at bind(): binding 20,000 sockets to one address
        # with port 0 searches the free ports each time, which slowed the attacker, not the server.
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        try:
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", port))
        except OSError:
            refused += 1
            sock.close()
            continue
        sockets.append(sock)
    print(f"{len(sockets)} {refused}", flush=True)
    sys.stdin.read()


def measure_flood(server: Server, connections: int, source: str) -> dict[str, Any]:
    helpers = 2
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.dicomweb_attacks",
                "--hold",
                str(server.port),
                str(connections // helpers),
                source,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(helpers)
    ]
    during: list[float] = []
    started = time.perf_counter()
    opened = refused = 0
    with concurrent.futures.ThreadPoolExecutor(helpers) as pool:
        results = [pool.submit(p.stdout.readline) for p in processes]  # type: ignore[union-attr]
        while not all(r.done() for r in results):
            during.append(qido_once(server.url))
            time.sleep(0.05)
        for result in results:
            counts = result.result().split()
            opened += int(counts[0])
            refused += int(counts[1])
    open_seconds = time.perf_counter() - started
    descriptors = server.descriptors()
    held = [qido_once(server.url) for _ in range(50)]
    for process in processes:
        if process.stdin:
            process.stdin.close()
        process.wait(timeout=60)
    return {
        "source": source,
        "connections_opened_by_attacker": opened,
        "connect_failures": refused,
        "seconds_to_open": open_seconds,
        "server_descriptors_while_held": descriptors,
        "qido_while_opening": latencies(during) if during else None,
        "qido_while_held": latencies(held),
    }


# -- 4. renders -------------------------------------------------------------------------------


def measure_renders(server: Server, image: Path, renders: int) -> dict[str, Any]:
    url = instance_url(server.url, image) + f"/rendered?viewport={RENDER_SIDE},{RENDER_SIDE}"
    started = time.perf_counter()
    single = requests.get(url, timeout=600)
    single.raise_for_status()
    one_render = time.perf_counter() - started
    during: list[float] = []
    with concurrent.futures.ThreadPoolExecutor(renders) as pool:
        started = time.perf_counter()
        futures = [pool.submit(requests.get, url, timeout=600) for _ in range(renders)]
        while not all(f.done() for f in futures):
            during.append(qido_once(server.url))
            time.sleep(0.05)
        answers = [f.result() for f in futures]
        all_renders = time.perf_counter() - started
    return {
        "renders": renders,
        "one_render_seconds": one_render,
        "statuses": sorted(a.status_code for a in answers),
        "png_bytes": len(single.content),
        "seconds_for_all": all_renders,
        "qido_during": latencies(during),
    }


# -- report -----------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    frames, post = report["frames"], report["post"]
    lines = [
        f"# DICOMweb attacks ({report['date']}, git {report['git']}, {report['cpus']} CPUs)",
        "",
        f"Load average (1 min) {report['load_average_start']:.1f} at the start,"
        f" {report['load_average_end']:.1f} at the end.",
        "",
        "Default limits (pixels_sql/servers/dicomweb/limits.py); the server a process of its own.",
        "",
        "## 1. Frame amplification (2.7 MB frame)",
        "",
        "| request | status | bytes received | s | idle RSS MiB | peak over idle MiB | in frames |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("attack_x1000", "largest_allowed"):
        row = frames[name]
        lines.append(
            f"| frames x{row['frames']} | {row['status']} | {row['bytes_received']:,} |"
            f" {row['seconds']:.2f} | {row['idle_rss_mib']:.0f} |"
            f" {row['peak_rss_over_idle_mib']:.1f} | {row['peak_rss_over_idle_frames']:.2f} |"
        )
    lines += [
        "",
        "## 2. A 1 GiB POST to the read-only server",
        "",
        f"`{post['status_line']}` after {post['seconds_to_answer'] * 1000:.0f} ms;"
        f" the attacker sent {post['bytes_sent_before_close_mib']:.2f} MiB of the"
        f" {post['declared_bytes'] / MIB:,.0f} MiB declared before the server closed.",
        "",
        "## 3. Half-open connections",
        "",
        "| flood from | opened | s to open | server fds | QIDO p50/p95/max ms (failed) while"
        " opening | while held |",
        "|---|---|---|---|---|---|",
    ]
    for flood in report["floods"]:
        opening, held = flood["qido_while_opening"], flood["qido_while_held"]
        opening_text = (
            f"{opening['p50_ms']:.1f} / {opening['p95_ms']:.1f} / {opening['max_ms']:.1f}"
            f" (n={opening['n']}, {opening['failed']} failed)"
            if opening
            else "-"
        )
        lines.append(
            f"| {flood['source']} | {flood['connections_opened_by_attacker']:,} |"
            f" {flood['seconds_to_open']:.1f} | {flood['server_descriptors_while_held']} |"
            f" {opening_text} | {held['p50_ms']:.1f} / {held['p95_ms']:.1f} /"
            f" {held['max_ms']:.1f} (n={held['n']}, {held['failed']} failed) |"
        )
    base = report["qido_baseline"]
    renders = report["renders"]
    during = renders["qido_during"]
    lines += [
        "",
        f"Baseline (no load, same run): QIDO p50 {base['p50_ms']:.1f} ms, p95"
        f" {base['p95_ms']:.1f} ms, max {base['max_ms']:.1f} ms (n={base['n']}).",
        "",
        f"## 4. {renders['renders']} concurrent renders of a 4096 x 4096 image",
        "",
        f"One render alone {renders['one_render_seconds']:.2f} s; all {renders['renders']}"
        f" {renders['seconds_for_all']:.1f} s (statuses {renders['statuses']}). QIDO meanwhile:"
        f" p50 {during['p50_ms']:.1f} ms, p95 {during['p95_ms']:.1f} ms, max"
        f" {during['max_ms']:.1f} ms (n={during['n']}, {during['failed']} failed); with no load p50"
        f" {base['p50_ms']:.1f} / p95 {base['p95_ms']:.1f} ms"
        f" (p95 ratio {during['p95_ms'] / base['p95_ms']:.1f}x).",
    ]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[4:], sys.argv[2], int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--hold":
        hold_connections(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=20000)
    parser.add_argument("--renders", type=int, default=8)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    studies = generate(args.studies, 2) / "tree"
    large = large_images()
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "git": git_state(),
        "cpus": os.cpu_count(),
        # Other work on the machine moves the latencies: the 1-minute load at the start and end.
        "load_average_start": os.getloadavg()[0],
    }
    home = Path(tempfile.mkdtemp(prefix="pixels-bench-attacks-"))
    server = Server([studies, large], home)
    try:
        print("baseline", file=sys.stderr)
        report["qido_baseline"] = qido_baseline(server.url)
        print("frames", file=sys.stderr)
        report["frames"] = measure_frames(server, large / f"ct{FRAME_SIDE}.dcm")
        print("post", file=sys.stderr)
        report["post"] = measure_post(server)
        print("floods", file=sys.stderr)
        report["floods"] = [
            measure_flood(server, args.connections, source)
            for source in (FLOOD_ADDRESS, "127.0.0.1")
        ]
        print("renders", file=sys.stderr)
        report["renders"] = measure_renders(server, large / f"ct{RENDER_SIDE}.dcm", args.renders)
    except BaseException:
        server.stop()
        print(f"the server's home and log are kept in {home}", file=sys.stderr)
        raise
    server.stop()
    shutil.rmtree(home, ignore_errors=True)
    report["load_average_end"] = os.getloadavg()[0]
    (RESULTS / "dicomweb_attacks.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render(report)
    (RESULTS / "dicomweb_attacks.md").write_text(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
