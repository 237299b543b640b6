"""C-FIND (PS3.4 C.4.1) over the DICOMweb index, with QIDO-RS's matcher: an identifier's keys
become the (keyword, value) pairs of a QIDO-RS query (query.parse_search), and the answers are
QIDO-RS's results (qido.find_*) cut to the keys the identifier asks for.

Levels: PATIENT (Patient Root: the studies matched on the patient keys, one answer per
Patient ID), STUDY, SERIES and IMAGE. Matching is relational: keys of the levels above may be
given or left out (PS3.4 C.4.1.2.2.2 requires only the hierarchical form, which this covers).
The same identifiers select what C-MOVE and C-GET send (:func:`instances_of`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from pixels_sql.dicom.attributes import ATTRIBUTES
from pixels_sql.servers.dicomweb.qido import find_instances, find_series, find_studies
from pixels_sql.servers.dicomweb.query import (
    DIMSE_SEPARATORS,
    Level,
    QueryError,
    Search,
    parse_search,
)

if TYPE_CHECKING:
    from pixels_sql.servers.dicomweb.index import Instance
    from pixels_sql.servers.dicomweb.service import Service

log = logging.getLogger("pixels_sql.dimse")

# PS3.4 C.4.1.1.3.1 Query/Retrieve Level -> the QIDO-RS search level it is.
LEVELS = {"STUDY": Level.STUDY, "SERIES": Level.SERIES, "IMAGE": Level.INSTANCE}
PATIENT = "PATIENT"
# The instances one C-MOVE or C-GET sends at most (PS3.7 C.4.2.1.6: sub-operation counts are
# US). A C-FIND answers at most the service's max_results (servers/dicomweb/limits.py).
MAX_ANSWERS = 65535
# Identifier elements that are not matching keys (PS3.4 C.4.1.1.3).
_NOT_KEYS = {0x00080005, 0x00080052, 0x00080054, 0x00080056}
# Patient Root's PATIENT level: its attributes, and the counts computed from the studies.
_PATIENT_COUNTS = {
    0x00201200: "studies",  # NumberOfPatientRelatedStudies
    0x00201202: "series",  # NumberOfPatientRelatedSeries
    0x00201204: "instances",  # NumberOfPatientRelatedInstances
}


# Statuses of a refused query or retrieve (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4).
IDENTIFIER_DOES_NOT_MATCH = 0xA900
OUT_OF_RESOURCES = 0xA700  # C-FIND: more matches than the service answers
TOO_MANY_SUBOPERATIONS = 0xA702  # C-MOVE/C-GET: more instances than one retrieve can count
# What a retrieve must name (PS3.4 C.4.2.2.1: the unique keys of its level, or the patient).
UNIQUE_KEYS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID"}


class IdentifierError(ValueError):
    """A query or retrieve this service refuses, with the status that says why."""

    def __init__(self, message: str, status: int = IDENTIFIER_DOES_NOT_MATCH) -> None:
        super().__init__(message)
        self.status = status


def _level(keyword: str) -> str | None:
    """The information level of an attribute the registry names (PS3.3's modules)."""
    attribute = ATTRIBUTES.get(keyword)
    return attribute.level if attribute is not None else None


def _text(value: Any) -> str:
    """A key's value as QIDO-RS takes it: a list of values backslash-joined (PS3.5 6.4)."""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(_text(item) for item in value)
    return "" if value is None else str(value)


def query_level(identifier: Dataset) -> str:
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in (*LEVELS, PATIENT):
        raise IdentifierError(
            f"Query/Retrieve Level {level or '(none)'!r} is not one of"
            " PATIENT, STUDY, SERIES, IMAGE"
        )
    return level


def _pairs(identifier: Dataset, patient_only: bool) -> list[tuple[str, str]]:
    """The identifier's matching keys with a value, as QIDO-RS query parameters."""
    pairs = []
    for element in identifier:
        if element.tag in _NOT_KEYS or element.tag.is_private:
            continue
        keyword = keyword_for_tag(element.tag)
        if not keyword:
            continue
        if patient_only and _level(keyword) != "patient":
            continue
        if element.VR == "SQ":
            # Sequence matching (PS3.4 C.2.2.2.6): the keys of its one item, as QIDO-RS
            # writes them (Sequence.Key); an empty item or none asks for the sequence only.
            if len(element.value) == 1:
                pairs += [
                    (f"{keyword}.{key}", text) for key, text in _pairs(element.value[0], False)
                ]
            continue
        text = _text(element.value).strip()
        if text:
            pairs.append((keyword, text))
    return pairs


def _search(service: Service, level: Level, identifier: Dataset, patient_only: bool) -> Search:
    try:
        search = parse_search(
            level, _pairs(identifier, patient_only), service.limits, DIMSE_SEPARATORS
        )
    except QueryError as exc:
        raise IdentifierError(str(exc)) from None
    # One more than answered: a query matching more is refused, not cut short silently.
    search.limit = service.limits.max_results + 1
    search.offset = 0
    # Keys the index does not hold are read from each answer's first header (includefield).
    search.include_tags = [
        f"{element.tag:08X}"
        for element in identifier
        if element.tag not in _NOT_KEYS and not element.tag.is_private
    ]
    if len(search.include_tags) > service.limits.max_list_values:
        raise IdentifierError(
            f"{len(search.include_tags)} keys: at most {service.limits.max_list_values}"
            " are answered (max_list_values)"
        )
    for warning in search.warnings:
        log.info("C-FIND: %s", warning)
    return search


def find(service: Service, identifier: Dataset, ae_title: str) -> Iterator[Dataset]:
    """The C-FIND answers to ``identifier``: each a Dataset of the keys it asked for (and the
    Query/Retrieve Level), in the index's order."""
    level = query_level(identifier)
    if level == PATIENT:
        results = _patients(service, identifier)
    else:
        search = _search(service, LEVELS[level], identifier, patient_only=False)
        finder = {
            Level.STUDY: find_studies,
            Level.SERIES: find_series,
            Level.INSTANCE: find_instances,
        }[LEVELS[level]]
        results = finder(service, search, "")
    limit = service.limits.max_results
    for result in results[:limit]:
        yield _answer(identifier, result, level, ae_title)
    if len(results) > limit:
        raise IdentifierError(
            f"more than {limit} matches (max_results): narrow the query", OUT_OF_RESOURCES
        )


def _patients(service: Service, identifier: Dataset) -> list[dict[str, Any]]:
    search = _search(service, Level.STUDY, identifier, patient_only=True)
    patients: dict[str, dict[str, Any]] = {}
    studies = find_studies(service, search, "")
    if len(studies) > service.limits.max_results:
        raise IdentifierError(
            f"the patients match more than {service.limits.max_results} studies"
            " (max_results): narrow the query",
            OUT_OF_RESOURCES,
        )
    for study in studies:
        patient_id = _first(study, "00100020") or ""
        patient = patients.get(patient_id)
        if patient is None:
            patient = {
                tag: element
                for tag, element in study.items()
                if _level(keyword_for_tag(int(tag, 16))) == "patient"
            }
            patient.update({f"{tag:08X}": {"vr": "IS", "Value": [0]} for tag in _PATIENT_COUNTS})
            patients[patient_id] = patient
        counts = {
            "studies": 1,
            "series": _first(study, "00201206"),
            "instances": _first(study, "00201208"),
        }
        for tag, what in _PATIENT_COUNTS.items():
            patient[f"{tag:08X}"]["Value"][0] += int(counts[what] or 0)
    return list(patients.values())


def _first(result: dict[str, Any], tag: str) -> Any:
    values = result.get(tag, {}).get("Value")
    return values[0] if values else None


def _answer(identifier: Dataset, result: dict[str, Any], level: str, ae_title: str) -> Dataset:
    """The keys ``identifier`` asks for, valued from ``result`` (a key the result lacks is
    returned empty, PS3.4 C.4.1.1.3.2)."""
    answer = Dataset()
    wanted = {}
    for element in identifier:
        if element.tag.is_private or element.tag in (0x00080005,):
            continue
        tag = f"{element.tag:08X}"
        if tag in result:
            wanted[tag] = result[tag]
        else:
            answer[element.tag] = DataElement(element.tag, element.VR, None)
    if wanted:
        answer.update(Dataset.from_json(wanted))
    answer.QueryRetrieveLevel = level
    if "RetrieveAETitle" in identifier:
        answer.RetrieveAETitle = ae_title
    text = [value for value in answer.values() if isinstance(value.value, str)]
    if any(not value.value.isascii() for value in text) or "SpecificCharacterSet" in identifier:
        # The results are Unicode text (the index's JSON): UTF-8 says all of it (PS3.5 6.1).
        answer.SpecificCharacterSet = "ISO_IR 192"
    return answer


def instances_of(service: Service, identifier: Dataset) -> list[Instance]:
    """The catalogued instances a C-MOVE or C-GET identifier selects. An identifier must have
    a unique key with a value (PS3.4 C.4.2.2.1: the level's UIDs, or a Patient ID): an empty
    one would select the whole catalog."""
    level = query_level(identifier)
    search = _search(service, Level.INSTANCE, identifier, patient_only=False)
    search.include_tags = []
    search.limit = MAX_ANSWERS + 1
    if not any(match.keyword in UNIQUE_KEYS for match in search.matches):
        raise IdentifierError(
            f"a {level} level retrieve needs a unique key with a value"
            f" ({', '.join(sorted(UNIQUE_KEYS))})"
        )
    rows = service.index.search(search)
    if len(rows) > MAX_ANSWERS:
        raise IdentifierError(
            f"more than {MAX_ANSWERS} instances: one retrieve counts at most that many"
            " (PS3.7 C.4.2.1.6)",
            TOO_MANY_SUBOPERATIONS,
        )
    found = []
    for row in rows:
        instance = service.index.instance(row[2])
        if instance is not None:
            found.append(instance)
    return found
