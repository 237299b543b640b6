"""STOW-RS (PS3.18 10.5): store instances sent by a client into the home, through the intake
(servers/intake.py) that C-STORE uses too: each part is landed, fsynced and put into the search
index before the answer goes out, so a search right after the answer finds it; the catalog
tables get it from the intake's next background run, seconds later.

Off unless ``pixels-sql serve --allow-store``. What a part whose SOP Instance UID is held
already becomes (the same bytes: success, nothing written; other bytes: the newer kept, or
refused with 0111H when the held copy is a user's file) is the intake's rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pixels_sql.servers.dicomweb.http import (
    HTTPError,
    Request,
    Response,
    json_response,
    parse_multipart,
)
from pixels_sql.servers.dicomweb.query import Resource
from pixels_sql.servers.intake import CANNOT_UNDERSTAND, Receipt

if TYPE_CHECKING:
    from pixels_sql.servers.dicomweb.service import Service

DICOM = "application/dicom"


def _reference(receipt: Receipt | None) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if receipt is not None and receipt.sop_class_uid:
        item["00081150"] = {"vr": "UI", "Value": [receipt.sop_class_uid]}
    if receipt is not None and receipt.sop_uid:
        item["00081155"] = {"vr": "UI", "Value": [receipt.sop_uid]}
    return item


def store(service: Service, request: Request, resource: Resource | None = None) -> Response:
    """Store the request's instances: when ``resource`` names a study, only those of it."""
    intake = service.options.intake
    if intake is None:
        raise HTTPError(403, "storing is off: start the server with pixels-sql serve --allow-store")
    study = resource.study if resource is not None else None
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/related"):
        raise HTTPError(415, 'send instances as multipart/related; type="application/dicom"')
    parts = parse_multipart(request.body, content_type)
    if not parts:
        raise HTTPError(400, "the request has no parts")
    stored: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    source = "STOW-RS"
    for headers, content in parts:
        part_type = headers.get("content-type", DICOM).split(";")[0].strip().lower()
        if part_type != DICOM:
            failed.append({**_reference(None), **_reason(CANNOT_UNDERSTAND)})
            continue
        receipt = intake.receive(content, source, study=study)
        if not receipt.acknowledged:
            assert receipt.reason is not None
            failed.append({**_reference(receipt), **_reason(receipt.reason)})
            continue
        url = (
            f"{request.base_url}/studies/{receipt.study_uid}/series/{receipt.series_uid}"
            f"/instances/{receipt.sop_uid}"
        )
        stored.append({**_reference(receipt), "00081190": {"vr": "UR", "Value": [url]}})
    answer: dict[str, Any] = {}
    if study is not None:
        answer["00081190"] = {"vr": "UR", "Value": [f"{request.base_url}/studies/{study}"]}
    if failed:
        answer["00081198"] = {"vr": "SQ", "Value": failed}
    if stored:
        answer["00081199"] = {"vr": "SQ", "Value": stored}
    status = 200 if not failed else (202 if stored else 409)
    return json_response(answer, status=status)


def _reason(code: int) -> dict[str, Any]:
    return {"00081197": {"vr": "US", "Value": [code]}}
