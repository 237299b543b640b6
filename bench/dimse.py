"""Receiving over DICOM networking (issue 30): how soon a stored instance is searchable, and how
many instances a second pixels-sql receives against Orthanc on the same machine, same files.

    .venv/bin/python -m bench.dimse [--visibility 1000] [--stow 200] [--throughput 10000]
                                    [--associations 4]

On ``bench/data/meta-mr-20000`` (real MR headers with 64x64 pixels, ``bench.meta.generate_mr``),
disjoint slices of it, against a ``pixels-sql serve --allow-store --dicom-port`` on a new home
(``local[2]``):

- **visibility**: ``--visibility`` instances C-STOREd one by one (pynetdicom, one association);
  after each C-STORE-RSP, the time until QIDO-RS finds it and until C-FIND (a second
  association) finds it; meanwhile a JDBC poller notes when each appears in
  ``object_catalog``. The same for ``--stow`` instances sent by STOW-RS, one request each.
  Targets: p95 < 1 s to QIDO-RS and C-FIND, < 30 s to object_catalog.
- **throughput**: ``--throughput`` instances sent by ``--associations`` DCMTK storescu
  processes at once, to pixels-sql, then to Orthanc (Debian's, its own configuration, storage
  in a temporary folder): instances/s, CPU seconds and peak RSS of each receiver's processes.
  Target: pixels-sql at least at par with Orthanc.

Results: ``bench/results/dimse.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from bench.meta import RESULTS, generate_mr

TARGETS = {"search_p95_s": 1.0, "catalog_p95_s": 30.0}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]

    return {"n": len(ordered), "p50": at(0.5), "p95": at(0.95), "max": ordered[-1]}


class Serve:
    """A `pixels-sql serve --allow-store` on a new home, DIMSE and DICOMweb on free ports."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.jdbc_port = free_port()
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> Serve:
        command = [
            sys.executable,
            *("-m", "pixels_sql.cli", "serve", "--home", str(self.home), "--master", "local[2]"),
            *("--allow-store", "--dicom-port", str(self.dicom_port)),
            *("--http-port", str(self.http_port), "--jdbc-port", str(self.jdbc_port)),
            *("--connect-port", str(free_port())),
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("pixels-sql serve: ready"):
                threading.Thread(target=self.process.stdout.read, daemon=True).start()
                return self
        raise RuntimeError("serve did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(120)

    @property
    def qido(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicomweb"

    def pids(self) -> list[int]:
        return tree(self.process.pid) if self.process else []


def tree(root: int) -> list[int]:
    found, index = [root], 0
    while index < len(found):
        children = Path(f"/proc/{found[index]}/task/{found[index]}/children")
        index += 1
        with contextlib.suppress(OSError):
            found += [int(pid) for pid in children.read_text().split()]
    return found


class Usage:
    """CPU seconds and the peak summed RSS of a process tree, sampled every 0.2 s."""

    def __init__(self, pids: list[int] | Any) -> None:
        self.pids = pids
        self.peak_rss = 0
        self.cpu_start = self._cpu()
        self.cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _current(self) -> list[int]:
        return self.pids() if callable(self.pids) else self.pids

    def _cpu(self) -> float:
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self._current():
            with contextlib.suppress(OSError, IndexError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks
        return total

    def _rss(self) -> int:
        total = 0
        for pid in self._current():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_rss = max(self.peak_rss, self._rss())
            self.cpu = self._cpu() - self.cpu_start

    def stop(self) -> dict[str, float]:
        self.cpu = self._cpu() - self.cpu_start
        self._stop.set()
        self._thread.join()
        return {"cpu_s": round(self.cpu, 1), "peak_rss_mib": round(self.peak_rss / 2**20)}


# -- visibility -------------------------------------------------------------------------------


class CatalogPoller:
    """Notes when each SOP Instance UID first appears live in object_catalog (JDBC, 1 s)."""

    def __init__(self, serve: Serve) -> None:
        from pyhive import hive

        from pixels_sql.servers.secrets import read_secrets

        secrets = read_secrets(serve.home)
        assert secrets is not None
        self.connection = hive.connect(
            host="127.0.0.1",
            port=serve.jdbc_port,
            username="admin",
            auth="CUSTOM",
            password=secrets.admin,
        )
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        cursor = self.connection.cursor()
        while not self._stop.wait(1.0):
            with contextlib.suppress(Exception):  # the table may not exist yet
                cursor.execute(
                    "SELECT SOPInstanceUID FROM pixels.object_catalog WHERE deleted_at IS NULL"
                )
                now = time.monotonic()
                for (uid,) in cursor.fetchall():
                    self.seen.setdefault(uid, now)

    def wait_for(self, uids: set[str], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not uids <= set(self.seen) and time.monotonic() < deadline:
            time.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.connection.close()


def _found_by_qido(serve: Serve, uid: str, since: float) -> float:
    while True:
        answer = requests.get(
            f"{serve.qido}/instances", params={"SOPInstanceUID": uid}, timeout=30
        ).json()
        if answer:
            return time.monotonic() - since
        if time.monotonic() - since > 60:
            return float("inf")
        time.sleep(0.01)


def _found_by_cfind(finder: Any, uid: str, since: float) -> float:
    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.SOPInstanceUID = uid
    while True:
        answers = [
            identifier
            for status, identifier in finder.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            )
            if status and status.Status in (0xFF00, 0xFF01)
        ]
        if answers:
            return time.monotonic() - since
        if time.monotonic() - since > 60:
            return float("inf")
        time.sleep(0.01)


def visibility(serve: Serve, files: list[Path], stow_files: list[Path]) -> dict[str, Any]:
    from pydicom.filereader import read_file_meta_info
    from pynetdicom import AE, _config, build_context
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    _config.STORE_SEND_CHUNKED_DATASET = True
    meta = read_file_meta_info(files[0])
    ae = AE(ae_title="BENCH")
    store = ae.associate(
        "127.0.0.1",
        serve.dicom_port,
        contexts=[build_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])],
        ae_title="PIXELS",
    )
    finder = ae.associate(
        "127.0.0.1",
        serve.dicom_port,
        contexts=[build_context(StudyRootQueryRetrieveInformationModelFind)],
        ae_title="PIXELS",
    )
    assert store.is_established and finder.is_established
    poller = CatalogPoller(serve)
    acked: dict[str, float] = {}
    qido, cfind, store_s = [], [], []
    for path in files:
        uid = str(read_file_meta_info(path).MediaStorageSOPInstanceUID)
        began = time.monotonic()
        status = store.send_c_store(path)
        acked[uid] = time.monotonic()
        assert status and status.Status == 0, status
        store_s.append(acked[uid] - began)
        qido.append(_found_by_qido(serve, uid, acked[uid]))
        cfind.append(_found_by_cfind(finder, uid, acked[uid]))
    store.release()
    finder.release()
    stow_acked: dict[str, float] = {}
    stow_qido = []
    for path in stow_files:
        uid = str(read_file_meta_info(path).MediaStorageSOPInstanceUID)
        boundary = "bench-boundary"
        body = (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + path.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        answer = requests.post(
            f"{serve.qido}/studies",
            data=body,
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
            },
            timeout=60,
        )
        stow_acked[uid] = time.monotonic()
        assert answer.status_code == 200, answer.text
        stow_qido.append(_found_by_qido(serve, uid, stow_acked[uid]))
    everything = {**acked, **stow_acked}
    poller.wait_for(set(everything), 300)
    poller.stop()
    catalog = [poller.seen.get(uid, float("inf")) - t for uid, t in acked.items()]
    stow_catalog = [poller.seen.get(uid, float("inf")) - t for uid, t in stow_acked.items()]
    return {
        "c_store_rsp_s": percentiles(store_s),
        "c_store_to_qido_s": percentiles(qido),
        "c_store_to_cfind_s": percentiles(cfind),
        "c_store_to_catalog_s": percentiles(catalog),
        "stow_to_qido_s": percentiles(stow_qido),
        "stow_to_catalog_s": percentiles(stow_catalog),
    }


# -- throughput -------------------------------------------------------------------------------


def storescu_config(sample: Path, target: Path) -> Path:
    from pydicom.filereader import read_file_meta_info

    meta = read_file_meta_info(sample)
    target.write_text(
        "[[TransferSyntaxes]]\n[TS]\n"
        f"TransferSyntax1 = {meta.TransferSyntaxUID}\n"
        "[[PresentationContexts]]\n[PC]\n"
        f"PresentationContext1 = {meta.MediaStorageSOPClassUID}\\TS\n"
        "[[Profiles]]\n[P]\nPresentationContexts = PC\n"
    )
    return target


def send_parallel(
    files: list[Path], port: int, called: str, config: Path, associations: int, pids: Any
) -> dict[str, Any]:
    slices = [files[number::associations] for number in range(associations)]
    usage = Usage(pids)
    began = time.monotonic()
    processes = [
        subprocess.Popen(
            [
                *("storescu", "-aet", "BENCH", "-aec", called, "-xf", str(config), "P"),
                *("127.0.0.1", str(port), *map(str, part)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for part in slices
    ]
    failures = []
    for process in processes:
        _, stderr = process.communicate()
        if process.returncode != 0:
            failures.append(stderr[-500:])
    seconds = time.monotonic() - began
    return {
        "instances": len(files),
        "seconds": round(seconds, 1),
        "instances_per_s": round(len(files) / seconds, 1),
        **usage.stop(),
        "failures": failures,
    }


def orthanc_throughput(
    files: list[Path], folder: Path, config: Path, associations: int
) -> dict[str, Any]:
    http_port, dicom_port = free_port(), free_port()
    settings = {
        "Name": "bench",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "DicomAlwaysAllowStore": True,
        "DicomCheckModalityHost": False,
        "Plugins": [],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "orthanc.json").write_text(json.dumps(settings))
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    process = subprocess.Popen(
        [binary, str(folder / "orthanc.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"http://127.0.0.1:{http_port}/system", timeout=2).ok:
                    break
            time.sleep(0.2)
        result = send_parallel(files, dicom_port, "ORTHANC", config, associations, [process.pid])
        stats = requests.get(f"http://127.0.0.1:{http_port}/statistics", timeout=60).json()
        result["held"] = stats["CountInstances"]
        return result
    finally:
        process.terminate()
        process.wait(60)


def render(report: dict[str, Any]) -> str:
    lines = [
        "# Receiving over DICOM networking (bench/dimse.py)",
        "",
        f"{report['machine']}; files: {report['data']}",
        "",
        "## Visibility (seconds after the acknowledgement)",
        "",
        "| measure | n | p50 | p95 | max |",
        "|---|---|---|---|---|",
    ]
    for name, values in report["visibility"].items():
        if values:
            lines.append(
                f"| {name} | {values['n']} | {values['p50']:.3f} | {values['p95']:.3f}"
                f" | {values['max']:.3f} |"
            )
    lines += [
        "",
        "## Throughput (storescu, parallel associations)",
        "",
        "| receiver | instances | seconds | instances/s | CPU s | peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("pixels_sql", "orthanc"):
        row = report["throughput"].get(name)
        if row:
            lines.append(
                f"| {name} | {row['instances']} | {row['seconds']} | {row['instances_per_s']}"
                f" | {row['cpu_s']} | {row['peak_rss_mib']} |"
            )
    ratio = report["throughput"].get("ratio")
    if ratio is not None:
        lines += ["", f"pixels-sql / Orthanc instances/s: **{ratio:.2f}x** (target >= 1.0)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visibility", type=int, default=1000)
    parser.add_argument("--stow", type=int, default=200)
    parser.add_argument("--throughput", type=int, default=10000)
    parser.add_argument("--associations", type=int, default=4)
    args = parser.parse_args()
    total = args.visibility + args.stow + args.throughput
    data = generate_mr(max(total, 20000))
    files = sorted(p for p in data.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert len(files) >= total, f"{len(files)} files in {data}, {total} needed"
    seen, shown = files[: args.visibility], files[args.visibility : args.visibility + args.stow]
    bulk = files[args.visibility + args.stow : total]
    report: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "data": f"{data} ({total} of {len(files)})",
        "throughput": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-dimse-") as scratch:
        root = Path(scratch)
        serve = Serve(root / "home").start()
        try:
            if args.visibility or args.stow:
                report["visibility"] = visibility(serve, seen, shown)
                print(json.dumps(report["visibility"], indent=1), flush=True)
            if args.throughput:
                config = storescu_config(bulk[0], root / "storescu.cfg")
                report["throughput"]["pixels_sql"] = send_parallel(
                    bulk, serve.dicom_port, "PIXELS", config, args.associations, serve.pids
                )
                print(json.dumps(report["throughput"], indent=1), flush=True)
        finally:
            serve.stop()
        if args.throughput:
            report["throughput"]["orthanc"] = orthanc_throughput(
                bulk, root / "orthanc", config, args.associations
            )
            ours = report["throughput"]["pixels_sql"]["instances_per_s"]
            theirs = report["throughput"]["orthanc"]["instances_per_s"]
            report["throughput"]["ratio"] = ours / theirs
    report["load_at_end"] = round(os.getloadavg()[0], 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dimse.json").write_text(json.dumps(report, indent=1, default=str))
    (RESULTS / "dimse.md").write_text(render(report))
    print(render(report))
    if "visibility" in report:
        for name in ("c_store_to_qido_s", "c_store_to_cfind_s", "stow_to_qido_s"):
            print(f"{name} p95: {report['visibility'][name]['p95']:.3f} s (target < 1 s)")
        print(
            "c_store_to_catalog_s p95:"
            f" {report['visibility']['c_store_to_catalog_s']['p95']:.1f} s (target < 30 s)"
        )


if __name__ == "__main__":
    main()
