"""STOW-RS (PS3.18 10.5): store instances sent by a client into the home's landing folder and
catalogue them with the ingest pipeline (the same rows as ``pixels-sql ingest``), in the
background: the answer comes once the files are written, searches find them seconds later.

Off unless ``pixels-sql serve --allow-store``. Each part is checked with dicom_meta's reader
before it is kept; it is written under ``<landing>/<StudyUID>/<SeriesUID>/<SOPUID>.dcm`` (UIDs
are digits and dots, so the names are safe), then the landing folder is ingested.

An instance is its SOP Instance UID: a part whose UID is already catalogued (or waiting in the
landing folder) is compared byte for byte with that file. The same bytes again succeed without
writing anything (a client's retry, as PACS answer it); other bytes are refused with failure
reason 0111H, Duplicate SOP Instance (PS3.7 C.4), and logged: what searches and retrievals
return never changes under a client's feet (docs/server.md).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixels_sql.dicom.meta import read_model
from pixels_sql.errors import DicomReadError
from pixels_sql.io.paths import to_local_path
from pixels_sql.io.sources import open_source
from pixels_sql.servers.dicomweb.http import (
    HTTPError,
    Request,
    Response,
    json_response,
    parse_multipart,
)
from pixels_sql.servers.dicomweb.query import QueryError, check_uid

if TYPE_CHECKING:
    from pixels_sql.servers.dicomweb.service import Service

DICOM = "application/dicom"
# PS3.18 Table 10.5.3-2 / PS3.4 Annex GG: failure reasons (US values).
PROCESSING_FAILURE = 0x0110
CANNOT_UNDERSTAND = 0xC000
STUDY_MISMATCH = 0xA900  # "Data Set does not match SOP Class": used for a wrong study
DUPLICATE_SOP_INSTANCE = 0x0111  # PS3.7 C.4: the UID is stored already, with other content
_COMPARE_CHUNK = 1 << 20
log = logging.getLogger("pixels_sql.dicomweb")
# One store writes at a time (two may send the same instance).
_STORE_LOCK = threading.Lock()


def _uid(meta: dict[str, Any], key: str) -> str | None:
    values = meta.get(key, {}).get("Value")
    if not values or not isinstance(values[0], str):
        return None
    try:
        return check_uid(values[0])
    except QueryError:
        return None


def _reference(sop_class: str | None, sop_instance: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if sop_class:
        item["00081150"] = {"vr": "UI", "Value": [sop_class]}
    if sop_instance:
        item["00081155"] = {"vr": "UI", "Value": [sop_instance]}
    return item


def store(service: Service, request: Request, study: str | None = None) -> Response:
    if not service.options.allow_store or service.options.landing is None:
        raise HTTPError(403, "storing is off: start the server with pixels-sql serve --allow-store")
    if study is not None:
        check_uid(study)
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/related"):
        raise HTTPError(415, 'send instances as multipart/related; type="application/dicom"')
    parts = parse_multipart(request.body, content_type)
    if not parts:
        raise HTTPError(400, "the request has no parts")
    landing = service.options.landing
    incoming = landing / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    stored: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    written = 0
    with _STORE_LOCK:
        for headers, content in parts:
            part_type = headers.get("content-type", DICOM).split(";")[0].strip().lower()
            if part_type != DICOM:
                failed.append({**_reference(None, None), **_reason(CANNOT_UNDERSTAND)})
                continue
            handle, temporary = tempfile.mkstemp(dir=incoming, suffix=".dcm")
            with os.fdopen(handle, "wb") as out:
                out.write(content)
            try:
                meta = read_model(temporary)
            except DicomReadError:
                meta = None
            uids = {
                key: _uid(meta or {}, tag)
                for key, tag in (
                    ("study", "0020000D"),
                    ("series", "0020000E"),
                    ("sop", "00080018"),
                    ("class", "00080016"),
                )
            }
            reference = _reference(uids["class"], uids["sop"])
            if meta is None or None in (uids["study"], uids["series"], uids["sop"]):
                os.unlink(temporary)
                failed.append({**reference, **_reason(CANNOT_UNDERSTAND)})
                continue
            if study is not None and uids["study"] != study:
                os.unlink(temporary)
                failed.append({**reference, **_reason(STUDY_MISMATCH)})
                continue
            target = landing / uids["study"] / uids["series"] / f"{uids['sop']}.dcm"
            held = _held_copies(service, uids["sop"], target)
            different = [path for path in held if not _same_bytes(path, content)]
            if different:
                os.unlink(temporary)
                log.warning(
                    "STOW-RS refused SOP Instance UID %s: already stored with other content at %s",
                    uids["sop"],
                    ", ".join(different),
                )
                failed.append({**reference, **_reason(DUPLICATE_SOP_INSTANCE)})
                continue
            url = (
                f"{request.base_url}/studies/{uids['study']}/series/{uids['series']}"
                f"/instances/{uids['sop']}"
            )
            stored.append({**reference, "00081190": {"vr": "UR", "Value": [url]}})
            if held:  # these very bytes are stored already: nothing to write or catalogue
                os.unlink(temporary)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temporary, target)
            written += 1
    if written:
        service.schedule_cataloguing()
    answer: dict[str, Any] = {}
    if study is not None:
        answer["00081190"] = {"vr": "UR", "Value": [f"{request.base_url}/studies/{study}"]}
    if failed:
        answer["00081198"] = {"vr": "SQ", "Value": failed}
    if stored:
        answer["00081199"] = {"vr": "SQ", "Value": stored}
    status = 200 if not failed else (202 if stored else 409)
    return json_response(answer, status=status)


def _held_copies(service: Service, sop_uid: str, target: Path) -> list[str]:
    """The files already holding ``sop_uid``: its catalogued copy (the one served) and the
    landing file of an earlier store not catalogued yet."""
    held = []
    catalogued = service.index.instance(sop_uid)
    if catalogued is not None:
        held.append(catalogued.path)
    if target.exists() and (catalogued is None or to_local_path(catalogued.path) != str(target)):
        held.append(str(target))
    return held


def _same_bytes(path: str, content: bytes) -> bool:
    """Whether the file (or zip member) at ``path`` holds exactly ``content``; a file that
    cannot be read counts as different (refusing is what keeps the catalog unchanged)."""
    try:
        with open_source(path) as source:
            if source.size != len(content):
                return False
            fp = source.fp
            fp.seek(0)
            view = memoryview(content)
            for start in range(0, len(content), _COMPARE_CHUNK):
                chunk = view[start : start + _COMPARE_CHUNK]
                if fp.read(len(chunk)) != chunk:
                    return False
            return True
    except (OSError, DicomReadError):
        return False


def _reason(code: int) -> dict[str, Any]:
    return {"00081197": {"vr": "US", "Value": [code]}}


def landing_folder(home: Path) -> Path:
    """Where STOW-RS keeps stored instances in a home."""
    return home / "landing" / "stow"
