"""DICOM networking (issue 30) against a real ``pixels-sql serve --dicom-port --allow-store``,
driven by independent clients and peers, all on loopback: DCMTK from Debian (echoscu, storescu,
findscu, movescu, getscu, storescp) and Orthanc, a PACS, started with its own configuration.

- C-ECHO; an AE title not in the peers file is rejected and the server keeps serving;
- C-STORE of a corpus with every common transfer syntax: each data set lands byte for byte as
  DCMTK's own receiver (storescp +B) keeps it, is found by QIDO-RS and C-FIND as soon as
  storescu returns, is retrieved by WADO-RS as landed, and reaches object_catalog;
- C-FIND at every level answers what QIDO-RS answers for the same keys;
- C-MOVE to storescp and C-GET send exactly the selected instances, byte for byte;
- `pixels-sql store` sends files and catalogued instances (--where) as stored;
- Orthanc C-STOREs a study to pixels-sql, and pixels-sql C-MOVEs a series to Orthanc;
- a malformed PDU, a peer that drops mid-association, an unknown SOP class: refused, and the
  server goes on; kill -9 during a store, restart, send again: each instance once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid
from pyhive.exc import OperationalError

from pixels_sql.servers.dicomweb.http import parse_multipart
from tests.dimse_peers import (
    DCMTK_UNKNOWN,
    Orthanc,
    build_corpus,
    data_set_bytes,
    read,
    received_by_uid,
    storescp,
    storescu,
    storescu_config,
    syntax_of,
)
from tests.serving import ServeProcess, free_port

pytestmark = pytest.mark.skipif(
    shutil.which("storescu") is None, reason="DCMTK missing: run scripts/check-dicom-tools"
)

# The peers file: DCMTK's tools under their default calling AE titles, storescp as DEST, Orthanc,
# and pixels-sql store's own title.
# Instances sent by the kill -9 test (`make stress-dimse` sends 2,000).
KILL_INSTANCES = int(os.environ.get("PIXELS_SQL_DIMSE_KILL_INSTANCES", "300"))
CALLERS = ("ECHOSCU", "STORESCU", "FINDSCU", "MOVESCU", "GETSCU", "PIXELS")


class Site:
    """The module's server and the ports of its peers (fixed before the server starts: the
    peers file names them)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dicom_port = free_port()
        self.dest_port = free_port()
        self.orthanc = Orthanc(
            root / "orthanc", "ORTHANC", {"PIXELS": ("127.0.0.1", self.dicom_port)}
        )
        peers = [(title, "127.0.0.1", 104) for title in CALLERS]
        peers += [("DEST", "127.0.0.1", self.dest_port)]
        peers += [("ORTHANC", "127.0.0.1", self.orthanc.dicom_port)]
        self.peers = root / "peers.toml"
        self.peers.write_text(
            "".join(
                f'[[peer]]\nae_title = "{title}"\nhost = "{host}"\nport = {port}\n\n'
                for title, host, port in peers
            )
        )
        self.server = self.serve_process()
        self.corpus = build_corpus(root / "corpus")

    def serve_process(self) -> ServeProcess:
        """The server of the home, on new ports but the DIMSE one (the peers file names it)."""
        return ServeProcess(
            self.root / "home",
            options=(
                "--allow-store",
                "--dicom-port",
                str(self.dicom_port),
                "--dicom-peers",
                str(self.peers),
            ),
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}/dicomweb"

    @property
    def landing(self) -> Path:
        return self.server.home / "landing" / "stow"

    def landed(self, sop_uid: str) -> Path:
        (found,) = self.landing.glob(f"*/*/{sop_uid}.dcm")
        return found

    def qido(self, resource: str, **params: str) -> list[dict]:
        answer = requests.get(f"{self.base}/{resource}", params=params, timeout=60)
        answer.raise_for_status()
        return answer.json()

    def catalogued(self, sop_uids: set[str]) -> set[str]:
        quoted = ", ".join(f"'{uid}'" for uid in sorted(sop_uids))
        with contextlib.closing(self.server.jdbc()) as connection:
            cursor = connection.cursor()
            try:
                # instance_copies (sql/90_views.sql): made by the run's last statements, so a
                # first run has ended when it exists.
                cursor.execute(
                    "SELECT SOPInstanceUID, count(*) FROM pixels.instance_copies"
                    f" WHERE SOPInstanceUID IN ({quoted}) GROUP BY SOPInstanceUID"
                )
            except OperationalError as exc:  # the first run has not made the view yet
                assert "TABLE_OR_VIEW_NOT_FOUND" in str(exc)
                return set()
            rows = cursor.fetchall()
        assert all(count == 1 for _, count in rows), rows  # never two live copies
        return {uid for uid, _ in rows}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    made = Site(tmp_path_factory.mktemp("dimse"))
    made.server.start()
    try:
        yield made
    finally:
        if made.server.alive():
            made.server.terminate()
        made.orthanc.stop()


def dcmtk(*arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(arguments, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, (arguments, result.stdout[-2000:], result.stderr[-3000:])
    return result


def uid_of(path: Path) -> str:
    return str(read(path).SOPInstanceUID)


def echo(site: Site, calling: str = "ECHOSCU") -> subprocess.CompletedProcess[str]:
    return dcmtk(
        "echoscu", "-aet", calling, "-aec", "PIXELS", "127.0.0.1", str(site.dicom_port), check=False
    )


# -- association, echo -------------------------------------------------------------------------


def test_echo_and_an_unknown_calling_ae_is_rejected(site: Site) -> None:
    assert echo(site).returncode == 0
    stranger = echo(site, "STRANGER")
    assert stranger.returncode != 0
    assert "Calling AE Title Not Recognized" in stranger.stderr
    assert echo(site).returncode == 0  # still serving
    log = (site.server.home / "logs" / "dimse.log").read_text()
    assert "association from STRANGER@127.0.0.1" in log and "rejected" in log


# -- C-STORE -----------------------------------------------------------------------------------


def test_store_every_transfer_syntax_lands_as_sent_and_is_searchable_at_once(site: Site) -> None:
    by_dcmtk = [path for path in site.corpus if syntax_of(path) not in DCMTK_UNKNOWN]
    config = storescu_config(by_dcmtk, site.root / "storescu.cfg")
    storescu(by_dcmtk, site.dicom_port, config)
    others = [str(path) for path in site.corpus if path not in by_dcmtk]
    sent = pixels_sql(site, "store", *others, "--to", f"PIXELS@127.0.0.1:{site.dicom_port}")
    assert sent.returncode == 0, sent.stderr[-3000:]
    acknowledged = time.monotonic()
    uids = {uid_of(path) for path in site.corpus}
    # Searchable at once: QIDO-RS and C-FIND over the same index.
    found = {r["00080018"]["Value"][0] for r in site.qido("instances", limit="1000")}
    assert uids <= found, uids - found
    assert time.monotonic() - acknowledged < 5  # the searches above took the time
    # Each data set as DCMTK's own receiver keeps the same transmission, bit for bit.
    reference = site.root / "storescp-reference"
    with storescp(reference, port=site.dest_port):
        storescu(by_dcmtk, site.dest_port, config)
    kept = received_by_uid(reference)
    assert set(kept) == {uid_of(path) for path in by_dcmtk}
    for path in site.corpus:
        uid = uid_of(path)
        landed = site.landed(uid)
        # pynetdicom sends a file's data set as it is; storescu as storescp keeps it.
        expected = data_set_bytes(kept[uid]) if uid in kept else data_set_bytes(path)
        assert data_set_bytes(landed) == expected, path.name
        # WADO-RS returns the landed file as it is.
        meta = read(landed)
        answer = requests.get(
            f"{site.base}/studies/{meta.StudyInstanceUID}/series/{meta.SeriesInstanceUID}"
            f"/instances/{uid}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        ((_, content),) = parse_multipart(answer.content, answer.headers["content-type"])
        assert content == landed.read_bytes()
    # And the catalog tables get them from the intake's background run.
    deadline = time.monotonic() + 120
    while (catalogued := site.catalogued(uids)) != uids and time.monotonic() < deadline:
        time.sleep(2)
    assert catalogued == uids


def test_the_same_instance_again_and_a_newer_version(site: Site) -> None:
    path = site.corpus[1]
    config = storescu_config([path], site.root / "one.cfg")
    uid = uid_of(path)
    before = site.landed(uid).stat().st_mtime_ns
    storescu([path], site.dicom_port, config)  # a retry: the same bytes
    assert site.landed(uid).stat().st_mtime_ns == before
    newer = read(path)
    newer.InstanceNumber = 77
    changed = site.root / "newer.dcm"
    newer.save_as(changed, enforce_file_format=False)
    storescu([changed], site.dicom_port, config)  # kept: the newer replaces it
    results = site.qido("instances", SOPInstanceUID=uid)
    assert len(results) == 1
    assert [str(v) for v in results[0]["00200013"]["Value"]] == ["77"]
    assert read(site.landed(uid)).InstanceNumber == 77  # the landing file is the newer


# -- C-FIND ------------------------------------------------------------------------------------


def findscu(site: Site, root: str, *keys: str) -> list[pydicom.Dataset]:
    folder = site.root / f"find-{time.monotonic_ns()}"
    folder.mkdir()
    arguments = ["findscu", "-aec", "PIXELS", root, "-X", "-od", str(folder)]
    for key in keys:
        arguments += ["-k", key]
    dcmtk(*arguments, "127.0.0.1", str(site.dicom_port))
    return [read(path) for path in sorted(folder.glob("rsp*.dcm"))]


@pytest.mark.parametrize(
    ("level", "keys", "resource", "params", "uid_key"),
    [
        ("STUDY", ["PatientName=doe*"], "studies", {"PatientName": "doe*"}, "StudyInstanceUID"),
        ("STUDY", ["PatientID=P-002"], "studies", {"PatientID": "P-002"}, "StudyInstanceUID"),
        ("SERIES", ["Modality=MR"], "series", {"Modality": "MR"}, "SeriesInstanceUID"),
        # A value list (PS3.4 C.2.2.2.8: backslashes in C-FIND, commas in QIDO-RS).
        ("SERIES", ["Modality=MR\\CT"], "series", {"Modality": "MR,CT"}, "SeriesInstanceUID"),
        # A time range (C.2.2.2.5).
        ("STUDY", ["StudyTime=-235959"], "studies", {"StudyTime": "-235959"}, "StudyInstanceUID"),
        (
            "STUDY",
            ["ModalitiesInStudy=CT\\SC"],
            "studies",
            {"ModalitiesInStudy": "CT,SC"},
            "StudyInstanceUID",
        ),
        (
            "IMAGE",
            ["StudyDate=20200101-", "PatientName=DOE^JANE"],
            "instances",
            {"StudyDate": "20200101-", "PatientName": "DOE^JANE"},
            "SOPInstanceUID",
        ),
    ],
)
def test_find_answers_what_qido_answers(
    site: Site, level: str, keys: list[str], resource: str, params: dict, uid_key: str
) -> None:
    returned = [uid_key, "PatientName", "NumberOfStudyRelatedInstances"]
    answers = findscu(site, "-S", f"QueryRetrieveLevel={level}", *keys, *returned)
    results = site.qido(resource, **params, limit="1000")
    tag = f"{pydicom.datadict.tag_for_keyword(uid_key):08X}"
    expected = {r[tag]["Value"][0] for r in results}
    assert expected, "the query should match something"
    assert {str(a.get(uid_key)) for a in answers} == expected
    by_uid = {r[tag]["Value"][0]: r for r in results}
    for answer in answers:
        result = by_uid[str(answer.get(uid_key))]
        assert answer.QueryRetrieveLevel == level
        assert str(answer.PatientName) == result["00100010"]["Value"][0]["Alphabetic"]
        assert int(answer.NumberOfStudyRelatedInstances) == result["00201208"]["Value"][0]


def test_find_at_patient_level(site: Site) -> None:
    answers = findscu(
        site,
        "-P",
        "QueryRetrieveLevel=PATIENT",
        "PatientID=P-001",
        "PatientName",
        "NumberOfPatientRelatedInstances",
    )
    assert [str(a.PatientID) for a in answers] == ["P-001"]
    studies = site.qido("studies", PatientID="P-001")
    assert int(answers[0].NumberOfPatientRelatedInstances) == sum(
        s["00201208"]["Value"][0] for s in studies
    )


# -- C-MOVE and C-GET --------------------------------------------------------------------------


def test_move_sends_exactly_the_selected_series(site: Site) -> None:
    # Of syntaxes storescp knows: a series of one it refuses has no context to go in.
    series = {
        str(read(path).SeriesInstanceUID): uid_of(path)
        for path in site.corpus
        if syntax_of(path) not in DCMTK_UNKNOWN
    }
    chosen = sorted(series)[:3]
    received = site.root / "moved"
    with storescp(received, port=site.dest_port):
        for series_uid in chosen:
            dcmtk(
                *("movescu", "-aec", "PIXELS", "-aem", "DEST", "-S"),
                *("-k", "QueryRetrieveLevel=SERIES", "-k", f"SeriesInstanceUID={series_uid}"),
                *("127.0.0.1", str(site.dicom_port)),
            )
    kept = received_by_uid(received)
    assert set(kept) == {series[uid] for uid in chosen}
    for uid, path in kept.items():
        assert data_set_bytes(path) == data_set_bytes(site.landed(uid))


def test_a_retrieve_without_a_unique_key_is_refused(site: Site) -> None:
    """A modality alone would select the whole catalog: A900, not a silent Success."""
    # pynetdicom associates with the destination before it takes the refusal: DEST listens.
    with storescp(site.root / "moved-nothing", port=site.dest_port):
        answer = dcmtk(
            *("movescu", "-aec", "PIXELS", "-aem", "DEST", "-S"),
            *("-k", "QueryRetrieveLevel=SERIES", "-k", "Modality=MR"),
            *("127.0.0.1", str(site.dicom_port)),
            check=False,
        )
    # A900H: DCMTK 3.6.7 names it by its C-STORE meaning, DataSetDoesNotMatchSOPClass.
    assert "DoesNotMatchSOPClass" in answer.stderr + answer.stdout, answer.stderr
    assert not list((site.root / "moved-nothing").iterdir())


def test_a_peer_s_title_from_another_address_is_rejected(site: Site) -> None:
    from pynetdicom import AE

    ae = AE(ae_title="ECHOSCU")  # a peer of the peers file, at 127.0.0.1
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(
        "127.0.0.1", site.dicom_port, ae_title="PIXELS", bind_address=("127.0.0.2", 0)
    )
    assert assoc.is_rejected
    assert echo(site).returncode == 0
    log = (site.server.home / "logs" / "dimse.log").read_text()
    assert "rejected: AE title ECHOSCU is a peer at 127.0.0.1" in log


def test_move_to_an_unknown_destination_is_refused(site: Site) -> None:
    answer = dcmtk(
        *("movescu", "-aec", "PIXELS", "-aem", "NOWHERE", "-S"),
        *("-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={generate_uid()}"),
        *("127.0.0.1", str(site.dicom_port)),
        check=False,
    )
    assert "MoveDestinationUnknown" in answer.stderr + answer.stdout


@pytest.mark.parametrize(
    ("syntax", "prefer"),
    [("1.2.840.10008.1.2.1", "+x="), ("1.2.840.10008.1.2.4.90", "+xv")],
)
def test_get_returns_the_instances_on_the_same_association(
    site: Site, syntax: str, prefer: str
) -> None:
    (path,) = [p for p in site.corpus if p.name.endswith(f"-{syntax}.dcm")]
    meta = read(path)
    received = site.root / f"got-{syntax}"
    received.mkdir()
    dcmtk(
        *("getscu", "-aec", "PIXELS", "-S", prefer, "+B", "-od", str(received)),
        *("-k", "QueryRetrieveLevel=SERIES", "-k", f"SeriesInstanceUID={meta.SeriesInstanceUID}"),
        *("127.0.0.1", str(site.dicom_port)),
    )
    kept = received_by_uid(received)
    assert set(kept) == {str(meta.SOPInstanceUID)}
    assert data_set_bytes(kept[str(meta.SOPInstanceUID)]) == data_set_bytes(
        site.landed(str(meta.SOPInstanceUID))
    )


# -- pixels-sql store --------------------------------------------------------------------------


def pixels_sql(site: Site, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pixels_sql.cli", *arguments, "--home", str(site.server.home)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_store_command_sends_files_and_catalogued_instances(site: Site) -> None:
    received = site.root / "sent-files"
    with storescp(received, port=site.dest_port):
        sent = pixels_sql(
            site, "store", str(site.root / "corpus"), "--to", f"DEST@127.0.0.1:{site.dest_port}"
        )
    # storescp (DCMTK 3.6.7) refuses the syntaxes it does not know: those fail, alone.
    unknown = [path for path in site.corpus if syntax_of(path) in DCMTK_UNKNOWN]
    assert sent.returncode == 1
    assert f"store: {len(site.corpus) - len(unknown)} sent, {len(unknown)} failed" in sent.stdout
    for path in unknown:
        assert f"{path}: the peer accepts no context for" in sent.stderr
    kept = received_by_uid(received)
    for path in site.corpus:  # pynetdicom sends the file's data set as it is
        if path not in unknown:
            assert data_set_bytes(kept[uid_of(path)]) == data_set_bytes(path)

    chosen = site.root / "sent-catalogued"
    with storescp(chosen, port=site.dest_port):
        sent = pixels_sql(
            site,
            "store",
            "--where",
            "PatientID = 'P-002'",
            "--to",
            f"DEST@127.0.0.1:{site.dest_port}",
        )
    # P-002's files are all of syntaxes storescp knows (build_corpus alternates patients).
    expected = {uid_of(p) for p in site.corpus if read(p).PatientID == "P-002"}
    assert not {syntax_of(p) for p in site.corpus if uid_of(p) in expected} & DCMTK_UNKNOWN
    assert sent.returncode == 0, sent.stderr[:3000]
    assert set(received_by_uid(chosen)) == expected


def test_store_command_reports_a_peer_that_is_not_there(site: Site) -> None:
    sent = pixels_sql(site, "store", str(site.corpus[0]), "--to", f"NOBODY@127.0.0.1:{free_port()}")
    assert sent.returncode == 1
    assert "no association with NOBODY" in sent.stderr
    bad = pixels_sql(site, "store", str(site.corpus[0]), "--to", "not-an-address")
    assert bad.returncode == 1 and "AE_TITLE@host:port" in bad.stderr


# -- a PACS as a peer --------------------------------------------------------------------------


def test_orthanc_stores_to_pixels_sql_and_pixels_sql_moves_to_orthanc(site: Site) -> None:
    orthanc = site.orthanc.start()
    study = generate_uid()
    files = []
    for number, name in enumerate(("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")):
        dataset = read(Path(pydicom.data.get_testdata_file(name)))
        dataset.PatientID, dataset.StudyInstanceUID = "ORTHANC-1", study
        dataset.SeriesInstanceUID = generate_uid()
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        files.append(site.root / f"orthanc-{number}.dcm")
        dataset.save_as(files[-1], enforce_file_format=False)
    identifiers = [orthanc.upload(path) for path in files]
    answer = requests.post(
        f"{orthanc.url}/modalities/PIXELS/store",
        json={"Resources": identifiers, "Synchronous": True},
        timeout=300,
    )
    assert answer.ok, answer.text
    uids = {uid_of(path) for path in files}
    found = {r["00080018"]["Value"][0] for r in site.qido(f"studies/{study}/instances")}
    assert found == uids

    # pixels-sql C-MOVEs one of its series (from the corpus) to Orthanc.
    path = site.corpus[0]
    meta = read(path)
    dcmtk(
        *("movescu", "-aec", "PIXELS", "-aem", "ORTHANC", "-S"),
        *("-k", "QueryRetrieveLevel=SERIES", "-k", f"SeriesInstanceUID={meta.SeriesInstanceUID}"),
        *("127.0.0.1", str(site.dicom_port)),
    )
    assert str(meta.SOPInstanceUID) in orthanc.instance_uids()
    held = site.root / "orthanc-held.dcm"
    held.write_bytes(orthanc.file_of(str(meta.SOPInstanceUID)))
    assert data_set_bytes(held) == data_set_bytes(site.landed(str(meta.SOPInstanceUID)))


# -- faults ------------------------------------------------------------------------------------


def _associate_request(calling: str = "ECHOSCU") -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) proposing Verification."""

    def item(kind: int, body: bytes) -> bytes:
        return struct.pack(">BBH", kind, 0, len(body)) + body

    context = item(
        0x20,
        bytes([1, 0, 0, 0]) + item(0x30, b"1.2.840.10008.1.1") + item(0x40, b"1.2.840.10008.1.2"),
    )
    user = item(0x50, item(0x51, struct.pack(">I", 16384)))
    body = (
        struct.pack(">HH", 1, 0)
        + b"PIXELS".ljust(16)
        + calling.encode().ljust(16)
        + bytes(32)
        + item(0x10, b"1.2.840.10008.3.1.1.1")
        + context
        + user
    )
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def test_bad_peers_are_refused_and_the_server_goes_on(site: Site) -> None:
    # A peer that drops mid-association: half an A-ASSOCIATE-RQ, then gone.
    with socket.create_connection(("127.0.0.1", site.dicom_port), timeout=10) as peer:
        peer.sendall(_associate_request()[:40])
    # A malformed P-DATA PDU on an established association: an abort, not a crash.
    with socket.create_connection(("127.0.0.1", site.dicom_port), timeout=10) as peer:
        peer.sendall(_associate_request())
        assert peer.recv(1) == b"\x02"  # A-ASSOCIATE-AC
        peer.recv(65536)
        peer.sendall(struct.pack(">BBI", 0x04, 0, 6) + b"\xff\xff\xff\xff\x01\x03")
        peer.settimeout(10)
        with contextlib.suppress(OSError):
            assert peer.recv(1) in (b"\x07", b"")  # A-ABORT, or the connection closed
    # An unknown SOP class: its presentation context is rejected.
    from pynetdicom import AE

    ae = AE(ae_title="STORESCU")
    ae.add_requested_context("1.2.3.4.5.6.7", "1.2.840.10008.1.2")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", site.dicom_port, ae_title="PIXELS")
    assert assoc.is_established
    assert [cx.abstract_syntax for cx in assoc.accepted_contexts] == ["1.2.840.10008.1.1"]
    assoc.release()
    assert echo(site).returncode == 0


def test_kill_during_a_store_loses_and_duplicates_nothing(site: Site) -> None:
    """Last: the server is killed and started again."""
    template = read(Path(pydicom.data.get_testdata_file("CT_small.dcm")))
    folder = site.root / "many"
    folder.mkdir()
    study, series = generate_uid(), generate_uid()
    for number in range(KILL_INSTANCES):
        template.StudyInstanceUID, template.SeriesInstanceUID = study, series
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        template.InstanceNumber = number + 1
        template.save_as(folder / f"{number:03d}.dcm", enforce_file_format=False)
    files = sorted(folder.iterdir())
    uids = {uid_of(path) for path in files}
    config = storescu_config(files[:1], site.root / "many.cfg")
    sending = subprocess.Popen(
        [
            *("storescu", "-aec", "PIXELS", "-xf", str(config), "AsStored"),
            *("127.0.0.1", str(site.dicom_port), *map(str, files)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    landed_before_kill = KILL_INSTANCES // 10
    while (
        len(list(site.landing.glob(f"{study}/*/*.dcm"))) < landed_before_kill
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    for pid in site.server.pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    sending.wait(120)
    site.server.process.wait(60)  # type: ignore[union-attr]
    assert 0 < len(list(site.landing.glob(f"{study}/*/*.dcm"))) < len(files)
    # Started again on new ports: the killed one's connections may hold its own for a while
    # (FIN_WAIT); the DIMSE port had none open at the kill but the store's.
    site.server = site.serve_process().start()
    storescu(files, site.dicom_port, config)  # the client sends them all again
    found = {
        r["00080018"]["Value"][0]
        for r in site.qido(f"studies/{study}/instances", limit=str(KILL_INSTANCES))
    }
    assert found == uids
    deadline = time.monotonic() + 180
    while (catalogued := site.catalogued(uids)) != uids and time.monotonic() < deadline:
        time.sleep(3)
    assert catalogued == uids  # each once: catalogued() checks no UID has two live rows
    assert not list((site.landing / ".incoming").glob("*.part"))


# -- refused before anything starts ------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--host", "0.0.0.0"), "needs --dicom-peers FILE"),
        (("--dicom-peers", "{peers}"), "is not valid TOML"),
        (("--ae-title", "BAD\\TITLE"), "not a valid AE title"),
    ],
)
def test_a_dicom_port_that_cannot_be_served_safely_is_refused(
    tmp_path: Path, options: tuple[str, ...], message: str
) -> None:
    peers = tmp_path / "peers.toml"
    peers.write_text("[[peer]\nae_title = ")
    arguments = [option.format(peers=peers) for option in options]
    answer = subprocess.run(
        [
            *(sys.executable, "-m", "pixels_sql.cli", "serve", "--home", str(tmp_path / "home")),
            *("--dicom-port", str(free_port()), *arguments),
            # Not the default ports: a server running on them would be named first.
            *("--jdbc-port", str(free_port()), "--connect-port", str(free_port())),
            *("--http-port", str(free_port())),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert answer.returncode == 1
    assert message in answer.stderr and "Traceback" not in answer.stderr
    assert not (tmp_path / "home" / "logs").exists()  # refused before Spark started
