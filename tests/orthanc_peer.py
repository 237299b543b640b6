"""Orthanc (Debian's ``orthanc`` package) as a test peer, started with a configuration of its
own in a temporary folder, never as the system service: HTTP on a free loopback port, no remote
access, no authentication; optionally its DICOM port (the DIMSE tests) and its DICOMweb plugin
(Debian's ``orthanc-dicomweb``: the DICOMweb comparison and bench-dicomweb). Both packages come
from scripts/check-dicom-tools."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import requests

from tests.serving import free_port

# Where Debian's orthanc-dicomweb puts the plugin (scripts/check-dicom-tools checks this path).
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
DICOMWEB_ROOT = "/dicom-web/"


class Orthanc:
    """Orthanc from Debian, started with a configuration of its own in ``folder``.

    With ``peers`` (the DIMSE tests) it listens for DICOM on a free loopback port as
    ``ae_title`` and knows those peers; with ``peers=None`` its DICOM server is off
    (``DicomServerEnabled`` false: no DICOM port at all). With ``dicomweb`` it loads the
    DICOMweb plugin, served under :data:`DICOMWEB_ROOT` (:attr:`dicomweb_url`)."""

    def __init__(
        self,
        folder: Path,
        ae_title: str = "ORTHANC",
        peers: dict[str, tuple[str, int]] | None = None,
        *,
        dicomweb: bool = False,
        settings: dict[str, object] | None = None,
    ) -> None:
        self.folder = folder
        self.ae_title = ae_title
        self.http_port = free_port()
        self.dicom_port = free_port() if peers is not None else None
        folder.mkdir(parents=True, exist_ok=True)
        config: dict[str, object] = {
            "Name": "pixels-sql-test",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAet": ae_title,
            "Plugins": [],
        }
        if peers is not None:
            config |= {
                "DicomPort": self.dicom_port,
                "DicomModalities": {
                    title: [title, host, port] for title, (host, port) in peers.items()
                },
                "DicomAlwaysAllowStore": True,
                "DicomCheckModalityHost": False,
            }
        else:
            config["DicomServerEnabled"] = False
        if dicomweb:
            if not DICOMWEB_PLUGIN.exists():
                raise FileNotFoundError(
                    f"{DICOMWEB_PLUGIN} is missing: run scripts/check-dicom-tools"
                )
            config["Plugins"] = [str(DICOMWEB_PLUGIN)]
            # WADO-URI off: only the DICOMweb services (PS3.18 10) are compared.
            config["DicomWeb"] = {"Enable": True, "Root": DICOMWEB_ROOT, "EnableWado": False}
        config |= settings or {}
        self.config = folder / "orthanc.json"
        self.config.write_text(json.dumps(config))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return self.url + DICOMWEB_ROOT.rstrip("/")

    def start(self) -> Orthanc:
        binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        self.process = subprocess.Popen(
            [binary, str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "orthanc.log", "wb"),  # noqa: SIM115 (kept for the run)
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/system", timeout=2).ok:
                    return self
            except requests.ConnectionError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.2)
        raise TimeoutError("Orthanc did not start: " + (self.folder / "orthanc.log").read_text())

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)

    def upload(self, path: Path) -> str:
        return self.upload_bytes(path.read_bytes())

    def upload_bytes(self, content: bytes, session: requests.Session | None = None) -> str:
        answer = (session or requests).post(f"{self.url}/instances", data=content, timeout=60)
        answer.raise_for_status()
        return answer.json()["ID"]

    def instance_uids(self) -> set[str]:
        found = set()
        for identifier in requests.get(f"{self.url}/instances", timeout=60).json():
            tags = requests.get(f"{self.url}/instances/{identifier}/simplified-tags", timeout=60)
            found.add(tags.json()["SOPInstanceUID"])
        return found

    def file_of(self, sop_uid: str) -> bytes:
        found = requests.post(
            f"{self.url}/tools/find",
            json={"Level": "Instance", "Query": {"SOPInstanceUID": sop_uid}},
            timeout=60,
        ).json()
        return requests.get(f"{self.url}/instances/{found[0]}/file", timeout=60).content
