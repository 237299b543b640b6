"""QIDO-RS (PS3.18 10.6): search for studies, series and instances in the catalog. The
``find_*`` functions make the results of a parsed search; C-FIND (servers/dimse/find.py) calls
them too, so both protocols match and answer alike.

Results come from the service's index (index.py); attributes asked for with ``includefield``
that the index does not hold are read from a catalogued file's header with dicom_meta's reader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pixels_sql.servers.dicomweb.http import (
    HTTPError,
    Request,
    Response,
    json_response,
    multipart_response,
    parse_accept,
    warning_headers,
)
from pixels_sql.servers.dicomweb.index import element_json
from pixels_sql.servers.dicomweb.query import Level, Resource, Search, parse_search
from pixels_sql.servers.dicomweb.xml import DICOM_XML, native_dicom_model

if TYPE_CHECKING:
    from pixels_sql.servers.dicomweb.service import Service


def _uids(vr_value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [vr_value]}


def _count(number: int) -> dict[str, Any]:
    return {"vr": "IS", "Value": [number]}


def _url(url: str) -> dict[str, Any]:
    return {"vr": "UR", "Value": [url]}


_ONLINE = {"vr": "CS", "Value": ["ONLINE"]}


def _study(row: tuple[Any, ...], base: str) -> dict[str, Any]:
    study_uid, text, modalities, n_series, n_instances = row
    result = element_json(text)
    if modalities:
        result["00080061"] = {"vr": "CS", "Value": modalities.split("\\")}
    result["00080056"] = _ONLINE
    result["00081190"] = _url(f"{base}/studies/{study_uid}")
    result["00201206"] = _count(n_series)
    result["00201208"] = _count(n_instances)
    return result


def find_studies(service: Service, search: Search, base: str) -> list[dict[str, Any]]:
    """The results of a study search (DICOM JSON, one per study): QIDO-RS's and C-FIND's."""
    rows = service.index.search(search)
    results = [_study(row, base) for row in rows]
    service.include_fields(search, results, [(row[0], None, None) for row in rows], base)
    return [_sorted(r) for r in results]


def find_series(
    service: Service, search: Search, base: str, within: Resource | None = None
) -> list[dict[str, Any]]:
    """The results of a series search, in the study ``within`` or in all studies."""
    study = within.study if within is not None else None
    rows = service.index.search(search, study_uid=study)
    results = []
    for row in rows:
        study_uid, series_uid, text, n_instances = row[:4]
        result = element_json(text)
        if study is None:  # all series: their studies' attributes too (PS3.18 10.6.3.3.2)
            result = {**_study((study_uid, *row[4:]), base), **result}
        result["0020000D"] = _uids(study_uid)
        result["00080056"] = _ONLINE
        result["00081190"] = _url(f"{base}/studies/{study_uid}/series/{series_uid}")
        result["00201209"] = _count(n_instances)
        results.append(result)
    service.include_fields(search, results, [(row[0], row[1], None) for row in rows], base)
    return [_sorted(r) for r in results]


def find_instances(
    service: Service, search: Search, base: str, within: Resource | None = None
) -> list[dict[str, Any]]:
    """The results of an instance search, in the study or series ``within`` or across them."""
    study, series = (within.study, within.series) if within is not None else (None, None)
    rows = service.index.search(search, study_uid=study, series_uid=series)
    results = []
    for row in rows:
        study_uid, series_uid, sop_uid, text, syntax, series_text, n_series_instances = row[:7]
        result = element_json(text)
        if series is None:  # not within one series: the series' attributes too
            result = {**element_json(series_text), **result}
            result["00201209"] = _count(n_series_instances)
        if study is None:
            result = {**_study((study_uid, *row[7:]), base), **result}
        result["0020000D"] = _uids(study_uid)
        result["0020000E"] = _uids(series_uid)
        result["00080056"] = _ONLINE
        if syntax:
            result["00083002"] = _uids(syntax)  # AvailableTransferSyntaxUID: as stored
        result["00081190"] = _url(
            f"{base}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
        )
        results.append(result)
    service.include_fields(search, results, [(row[0], row[1], row[2]) for row in rows], base)
    return [_sorted(r) for r in results]


# What a search answers in (PS3.18 10.6.3.1): DICOM JSON (also as plain application/json), or
# each result a NativeDicomModel part of a multipart/related.
JSON_TYPES = ("application/dicom+json", "application/json", "application/*", "*/*")


def _wants_xml(request: Request) -> bool:
    """Whether the Accept header asks for XML; 406 when it accepts neither offer."""
    for entry in parse_accept(request.headers.get("accept")):
        if entry.media_type in JSON_TYPES:
            return False
        if entry.media_type == DICOM_XML or (
            entry.media_type == "multipart/related" and entry.params.get("type") == DICOM_XML
        ):
            return True
    raise HTTPError(
        406,
        "search results are application/dicom+json (or application/json), or"
        f' multipart/related; type="{DICOM_XML}"',
    )


def _answer(xml: bool, results: list[dict[str, Any]], search: Search) -> Response:
    if not xml:
        return json_response(results, warnings=search.warnings)
    response = multipart_response(
        ((DICOM_XML, [native_dicom_model(result)]) for result in results), DICOM_XML
    )
    response.headers += warning_headers(search.warnings)
    return response


def search_studies(service: Service, request: Request) -> Response:
    xml = _wants_xml(request)  # a 406 before any work
    search = parse_search(Level.STUDY, request.query, service.limits)
    return _answer(xml, find_studies(service, search, request.base_url), search)


def search_series(service: Service, request: Request, resource: Resource | None = None) -> Response:
    xml = _wants_xml(request)
    search = parse_search(Level.SERIES, request.query, service.limits)
    return _answer(xml, find_series(service, search, request.base_url, resource), search)


def search_instances(
    service: Service, request: Request, resource: Resource | None = None
) -> Response:
    xml = _wants_xml(request)
    search = parse_search(Level.INSTANCE, request.query, service.limits)
    return _answer(xml, find_instances(service, search, request.base_url, resource), search)


def _sorted(result: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(result.items()))
