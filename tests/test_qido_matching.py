"""QIDO-RS matching (PS3.4 C.2.2.2, PS3.18 8.3.4 and Table 10.6.1-5) on the DICOMweb index:
studies made in memory, put into an index as received instances are, and searched through the
parser every request and C-FIND identifier goes through (no Spark), then over real HTTP by the
service of ``pixels-sql serve``. The answers expected are the standard's, worked out by hand
for each study below."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from pixels_sql.servers.dicomweb.http import parse_multipart
from pixels_sql.servers.dicomweb.index import CatalogIndex, index_row
from pixels_sql.servers.dicomweb.query import (
    DIMSE_SEPARATORS,
    Level,
    QueryError,
    fuzzy_name_matches,
    parse_search,
    time_bounds,
    time_key,
    wildcard_matches,
)
from pixels_sql.servers.dicomweb.server import start_dicomweb
from pixels_sql.servers.dicomweb.service import ServiceOptions
from tests.serving import free_port

# (accession, patient name, study date, study time, [(modality, series number, series date,
# series time, performed step date, performed step time, [instance numbers])])
STUDIES: list[tuple[str, str, str, str, list[tuple[Any, ...]]]] = [
    (
        "A1",
        "Doe^John",
        "20190305",
        "0930",
        [("CT", "1", "20190305", "093512", "20190305", "0935", ["1", "2"])],
    ),
    ("A2", "DOE^JANE", "20200615", "14", [("MR", "3", "20200615", "140000.25", "", "", ["01"])]),
    (
        "A3",
        "José^Doe",
        "20211201",
        "120000.5",
        [("CT", "2", "", "", "20211201", "1201", ["7"]), ("SEG", "10", "", "", "", "", ["1"])],
    ),
    ("A4", "", "20211231", "120001", [("MG", "4", "", "", "", "", ["3"])]),
    ("a5", "Smith^Anna", "", "1200", [("SR", "", "", "", "", "", ["2"])]),
]


# (study, series) -> the items of its RequestAttributesSequence: (RequestedProcedureID,
# ScheduledProcedureStepID).
REQUESTS = {(0, 0): [("RP1", "S1"), ("RP2", "")], (1, 0): [("RP3", "T9")]}


def _uid(*parts: int) -> str:
    return "2.25." + ".".join(str(p) for p in parts)


def _model(study: int, series: int, instance: int) -> dict[str, Any]:
    accession, name, study_date, study_time, series_list = STUDIES[study]
    modality, number, date, time, pps_date, pps_time, instances = series_list[series]
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = _uid(study + 1, series + 1, instance + 1)
    ds.StudyInstanceUID = _uid(study + 1)
    ds.SeriesInstanceUID = _uid(study + 1, series + 1)
    ds.AccessionNumber, ds.PatientName, ds.PatientID = accession, name, f"P{study}"
    ds.StudyDate, ds.StudyTime, ds.StudyDescription = study_date, study_time, f"STUDY {study}"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, number, instances[instance]
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = pps_date, pps_time
    for procedure, step in REQUESTS.get((study, series), []):
        item = Dataset()
        item.RequestedProcedureID = procedure
        if step:
            item.ScheduledProcedureStepID = step
        ds.setdefault("RequestAttributesSequence", []).value.append(item)
    return ds.to_json_dict()


@pytest.fixture(scope="module")
def index() -> CatalogIndex:
    built = CatalogIndex(None, "no_catalog")  # type: ignore[arg-type]  # never refreshed
    for study, (*_, series_list) in enumerate(STUDIES):
        for series, (*_, instances) in enumerate(series_list):
            for instance in range(len(instances)):
                model = _model(study, series, instance)
                built.add(index_row(model, f"file:/s{study}/{series}/{instance}.dcm", 1, 1))
    return built


def studies(index: CatalogIndex, query: str, separators: str | None = None) -> list[str]:
    """The accession numbers of a study search's results, in the service's order."""
    params = [tuple(pair.split("=", 1)) for pair in query.split("&")] if query else []
    extra = {} if separators is None else {"separators": separators}
    search = parse_search(Level.STUDY, params, **extra)  # type: ignore[arg-type]
    rows = index.search(search)
    found = {_uid(n + 1): accession for n, (accession, *_) in enumerate(STUDIES)}
    return [found[row[0]] for row in rows]


def series(index: CatalogIndex, query: str) -> set[tuple[str, str]]:
    params = [tuple(pair.split("=", 1)) for pair in query.split("&")]
    rows = index.search(parse_search(Level.SERIES, params))  # type: ignore[arg-type]
    modalities = {
        _uid(s + 1, n + 1): (STUDIES[s][0], entry[0])
        for s, study in enumerate(STUDIES)
        for n, entry in enumerate(study[4])
    }
    return {modalities[row[1]] for row in rows}


def instances(index: CatalogIndex, query: str) -> set[str]:
    params = [tuple(pair.split("=", 1)) for pair in query.split("&")]
    rows = index.search(parse_search(Level.INSTANCE, params))  # type: ignore[arg-type]
    return {row[2] for row in rows}


def test_a_value_list_matches_any_of_its_values(index: CatalogIndex) -> None:
    # PS3.4 C.2.2.2.8 multiple value matching; PS3.18 8.3.4.1 writes the list with commas.
    assert series(index, "Modality=CT,MR") == {("A1", "CT"), ("A2", "MR"), ("A3", "CT")}
    assert series(index, "Modality=CT\\SEG") == {("A1", "CT"), ("A3", "CT"), ("A3", "SEG")}
    assert sorted(studies(index, "AccessionNumber=A1,a5,A9")) == ["A1", "a5"]
    assert sorted(studies(index, "PatientID=P1,P3")) == ["A2", "A4"]


def test_wildcards_in_every_text_key_and_in_modalities_in_study(index: CatalogIndex) -> None:
    assert sorted(studies(index, "ModalitiesInStudy=M*")) == ["A2", "A4"]  # MR, MG
    assert sorted(studies(index, "ModalitiesInStudy=S?G")) == ["A3"]
    assert sorted(studies(index, "ModalitiesInStudy=SR,C*")) == ["A1", "A3", "a5"]
    assert sorted(studies(index, "AccessionNumber=A?")) == ["A1", "A2", "A3", "A4"]
    assert series(index, "Modality=?R") == {("A2", "MR"), ("a5", "SR")}
    # Case-sensitive outside person names (C.2.2.2.1): "a5" only.
    assert studies(index, "AccessionNumber=a*") == ["a5"]
    assert sorted(studies(index, "StudyDescription=STUDY [0-9]*,STUDY 0")) == ["A1"]


def test_universal_matching_includes_empty_values(index: CatalogIndex) -> None:
    # C.2.2.2.3 and C.2.2.2.4: '*' alone, or an empty value, matches every study, A4's empty
    # PatientName included.
    assert len(studies(index, "PatientName=*")) == 5
    assert len(studies(index, "PatientName=")) == 5
    assert len(studies(index, "PatientName=Nobody,*")) == 5


def test_empty_value_matching(index: CatalogIndex) -> None:
    # PS3.4 C.2.2.2.1.1: '""' finds the entities whose attribute is empty or absent.
    assert studies(index, 'PatientName=""') == ["A4"]
    assert studies(index, 'StudyDate=""') == ["a5"]
    assert len(series(index, 'RequestAttributesSequence.RequestedProcedureID=""')) == 4


def test_person_names_match_case_insensitively(index: CatalogIndex) -> None:
    assert sorted(studies(index, "PatientName=doe*")) == ["A1", "A2"]
    assert sorted(studies(index, "PatientName=DOE^JOHN,smith^anna")) == ["A1", "a5"]
    assert studies(index, "PatientName=Doe") == []  # a literal value is the whole name


def test_fuzzy_matching_of_person_names(index: CatalogIndex) -> None:
    assert sorted(studies(index, "PatientName=john&fuzzymatching=true")) == ["A1"]
    assert sorted(studies(index, "PatientName=doe&fuzzymatching=true")) == ["A1", "A2", "A3"]
    assert sorted(studies(index, "fuzzymatching=true&PatientName=jose doe")) == ["A3"]
    assert studies(index, "PatientName=john doe jr&fuzzymatching=true") == []
    assert studies(index, "PatientName=john&fuzzymatching=false") == []
    with pytest.raises(QueryError, match="fuzzymatching must be true or false"):
        studies(index, "fuzzymatching=maybe")


def test_fuzzy_name_rule() -> None:
    assert fuzzy_name_matches("Doe^John", "JOHN D")
    assert fuzzy_name_matches("Müller^Hans", "muller")
    assert fuzzy_name_matches("Doe^John", "J* doe")
    assert not fuzzy_name_matches("Doe^John", "john john")  # each word begins another one
    assert not fuzzy_name_matches(None, "john")
    # Hostile names and queries: the matching stays polynomial (no regular expression
    # backtracking, no search over assignments).
    assert not fuzzy_name_matches("^".join(["a"] * 200), " ".join(["a"] * 199 + ["b"]))
    assert not fuzzy_name_matches("Doe^Johnathan", "*" * 60 + "Z")
    assert not fuzzy_name_matches("a" * 200, "*a" * 60 + "*b")
    assert wildcard_matches("a*b?c", "axxbyc") and not wildcard_matches("a?", "a")


def test_date_ranges_and_value_lists_of_ranges(index: CatalogIndex) -> None:
    assert sorted(studies(index, "StudyDate=20200101-20211201")) == ["A2", "A3"]
    assert sorted(studies(index, "StudyDate=-20191231,20211231")) == ["A1", "A4"]
    assert sorted(studies(index, "StudyDate=20211201-")) == ["A3", "A4"]  # a5's is empty
    assert series(index, "SeriesDate=20200615") == {("A2", "MR")}
    assert series(index, "PerformedProcedureStepStartDate=20190101-20211231") == {
        ("A1", "CT"),
        ("A3", "CT"),
    }


def test_time_ranges_cover_each_bound_s_precision(index: CatalogIndex) -> None:
    # Stored: A1 09:30, A2 14 (14:00), A3 12:00:00.5, A4 12:00:01, a5 12:00.
    # 000000-120000 ends at 12:00:00.999999 (the upper bound's precision is the second).
    assert sorted(studies(index, "StudyTime=000000-120000")) == ["A1", "A3", "a5"]
    assert sorted(studies(index, "StudyTime=12")) == ["A3", "A4", "a5"]  # 12:00 to 12:59:59.999999
    assert sorted(studies(index, "StudyTime=1200-1300,14")) == ["A2", "A3", "A4", "a5"]
    assert sorted(studies(index, "StudyTime=120000.6-")) == ["A2", "A4"]
    assert series(index, "SeriesTime=140000.25") == {("A2", "MR")}
    assert series(index, "PerformedProcedureStepStartTime=1200-1300") == {("A3", "CT")}
    for bad in ("25", "1260", "12:00-", "noon", "1-2"):
        with pytest.raises(QueryError):
            studies(index, f"StudyTime={bad}")


def test_time_keys() -> None:
    assert time_key("14") == "140000.000000"
    assert time_key("14:30:05") is None  # the retired form: malformed, as dicom/typed.py has it
    assert time_key("143005.5") == "143005.500000"
    assert time_key("1x") is None and time_key("2500") is None
    assert time_bounds("1430") == ("143000.000000", "143059.999999")


def test_integer_strings_match_as_integers(index: CatalogIndex) -> None:
    assert series(index, "SeriesNumber=1,10") == {("A1", "CT"), ("A3", "SEG")}
    assert series(index, "SeriesNumber=+03") == {("A2", "MR")}
    assert instances(index, "InstanceNumber=1") == {_uid(1, 1, 1), _uid(2, 1, 1), _uid(3, 2, 1)}
    with pytest.raises(QueryError, match="integer"):
        series(index, "SeriesNumber=1*")


def test_orderby(index: CatalogIndex) -> None:
    # Absent values last in both directions.
    assert studies(index, "orderby=PatientName") == ["A2", "A1", "A3", "a5", "A4"]
    assert studies(index, "orderby=-PatientName") == ["a5", "A3", "A1", "A2", "A4"]
    assert studies(index, "orderby=StudyTime") == ["A1", "a5", "A3", "A4", "A2"]
    assert studies(index, "orderby=-AccessionNumber,StudyDate")[:2] == ["a5", "A4"]
    search = parse_search(Level.STUDY, [("orderby", "SeriesNumber,Rows")])
    assert search.order == [] and len(search.warnings) == 2
    ordered = parse_search(Level.SERIES, [("orderby", "-SeriesNumber")])
    rows = index.search(ordered)
    assert [row[1] for row in rows][:2] == [_uid(3, 2), _uid(4, 1)]  # 10, 4 (as integers)


def test_c_find_values_split_on_backslashes_only(index: CatalogIndex) -> None:
    assert studies(index, "AccessionNumber=A1\\A2", DIMSE_SEPARATORS) == ["A2", "A1"]
    assert studies(index, "StudyDescription=STUDY 0,STUDY 1", DIMSE_SEPARATORS) == []


def test_an_empty_value_in_a_list_and_deep_keys_are_refused() -> None:
    with pytest.raises(QueryError, match="stands alone"):
        parse_search(Level.SERIES, [("Modality", 'CT,""')])
    with pytest.raises(QueryError, match="dot-separated"):
        parse_search(Level.SERIES, [(".".join(["Rows"] * 1600), "1")])
    with pytest.raises(QueryError, match="dot-separated"):
        parse_search(Level.SERIES, [("includefield", "RequestAttributesSequence..Rows")])


def test_list_sizes_are_bounded() -> None:
    with pytest.raises(QueryError, match="at most 1000"):
        parse_search(Level.STUDY, [("AccessionNumber", ",".join(["A"] * 1001))])
    with pytest.raises(QueryError, match="more than 1000"):
        parse_search(Level.STUDY, [("orderby", ",".join(["StudyDate"] * 1001))])


def test_keys_within_request_attributes_sequence(index: CatalogIndex) -> None:
    # PS3.18 Table 10.6.1-5's series keys within RequestAttributesSequence, written
    # Sequence.Key (8.3.4.1); any item's value matches (PS3.4 C.2.2.2.6).
    key = "RequestAttributesSequence.RequestedProcedureID"
    assert series(index, f"{key}=RP2") == {("A1", "CT")}
    assert series(index, f"{key}=RP3,RP1") == {("A1", "CT"), ("A2", "MR")}
    assert series(index, "00400275.00400009=?9") == {("A2", "MR")}
    assert series(index, "RequestAttributesSequence.ScheduledProcedureStepID=S*") == {("A1", "CT")}
    assert len(series(index, f"{key}=*")) == 6  # universal: series without the sequence too
    # One item must match every key (C.2.2.2.6): RP2 and S1 are in different items of A1's.
    step = "RequestAttributesSequence.ScheduledProcedureStepID"
    assert series(index, f"{key}=RP2&{step}=S1") == set()
    assert series(index, f"{key}=RP1&{step}=S1") == {("A1", "CT")}
    assert series(index, f'{key}=RP2&{step}=""') == {("A1", "CT")}
    # Empty value matching alone: an item without a value, or no item at all.
    assert ("A1", "CT") in series(index, f'{step}=""') and len(series(index, f'{step}=""')) == 5
    # The sequence itself is in the series' results.
    rows = index.search(parse_search(Level.SERIES, [(key, "RP3")]))
    assert '"00400275"' in rows[0][2]


# --- Over HTTP ------------------------------------------------------------------------------
# The same index served by the DICOMweb service of `pixels-sql serve`, asked by a real client.


@pytest.fixture(scope="module")
def service(spark, index: CatalogIndex) -> Iterator[str]:
    port = free_port()
    server = start_dicomweb(spark, "unused", "127.0.0.1", port, ServiceOptions(), index=index)
    try:
        yield f"http://127.0.0.1:{port}/dicomweb"
    finally:
        server.stop()


def test_the_issue_s_examples_get_the_standard_s_answer(service: str) -> None:
    answer = requests.get(f"{service}/series?Modality=CT,MR", timeout=30)
    assert answer.status_code == 200 and "warning" not in answer.headers
    assert len(answer.json()) == 3
    assert len(requests.get(f"{service}/studies?ModalitiesInStudy=M*", timeout=30).json()) == 2
    answer = requests.get(f"{service}/studies?StudyTime=000000-120000", timeout=30)
    assert "warning" not in answer.headers
    accessions = {r["00080050"]["Value"][0] for r in answer.json()}
    assert accessions == {"A1", "A3", "a5"}
    answer = requests.get(f"{service}/series?PerformedProcedureStepStartTime=-1000", timeout=30)
    assert [r["0020000E"]["Value"][0] for r in answer.json()] == [_uid(1, 1)]


def test_a_dicomweb_client_s_fuzzy_and_paged_searches(service: str) -> None:
    client = DICOMwebClient(service)
    found = client.search_for_studies(search_filters={"PatientName": "jose"}, fuzzymatching=True)
    assert [r["00080050"]["Value"][0] for r in found] == ["A3"]
    ordered = client.search_for_studies(
        search_filters={"orderby": "PatientName"}, limit=2, offset=1
    )
    assert [r["00080050"]["Value"][0] for r in ordered] == ["A1", "A3"]


def test_searches_answer_in_the_media_type_asked(service: str) -> None:
    url = f"{service}/studies?PatientName=doe*"
    for accept in ("application/json", "application/dicom+json", "*/*"):
        answer = requests.get(url, headers={"Accept": accept}, timeout=30)
        assert answer.headers["content-type"] == "application/dicom+json"
        assert len(answer.json()) == 2
    for accept in ('multipart/related; type="application/dicom+xml"', "application/dicom+xml"):
        answer = requests.get(url, headers={"Accept": accept}, timeout=30)
        assert answer.status_code == 200
        assert 'type="application/dicom+xml"' in answer.headers["content-type"]
        parts = parse_multipart(answer.content, answer.headers["content-type"])
        names = set()
        for headers, body in parts:
            assert headers["content-type"] == "application/dicom+xml"
            root = ElementTree.fromstring(body)
            assert root.tag == "{http://dicom.nema.org/PS3.19/models/NativeDICOM}NativeDicomModel"
            namespace = {"d": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}
            name = root.find("d:DicomAttribute[@keyword='PatientName']/d:PersonName", namespace)
            assert name is not None
            family = name.find("d:Alphabetic/d:FamilyName", namespace).text  # type: ignore[union-attr]
            given = name.find("d:Alphabetic/d:GivenName", namespace).text  # type: ignore[union-attr]
            names.add(f"{family}^{given}")
            count = root.find("d:DicomAttribute[@tag='00201208']/d:Value", namespace)
            assert count is not None and count.get("number") == "1" and int(count.text or 0) >= 1
        assert names == {"Doe^John", "DOE^JANE"}
    refused = requests.get(url, headers={"Accept": "text/html"}, timeout=30)
    assert refused.status_code == 406 and "application/dicom+json" in refused.text
