"""The DICOMweb service (QIDO-RS, WADO-RS, STOW-RS) over real HTTP, driven by a DICOMweb client
not written here (dicomweb-client from PyPI), against expectations read from the files with
pydicom."""

from __future__ import annotations

import http.client
import io
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

from tests.corpus import PYDICOM_TEST_FILES
from tests.dicomweb_service import ZIPPED, build_folder, read, running_service


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_folder(tmp_path_factory.mktemp("dicomweb"))


@pytest.fixture(scope="module")
def service(spark, folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_service(spark, folder, tmp_path_factory.mktemp("landing"), "dicomweb_test") as url:
        yield url


@pytest.fixture(scope="module")
def client(service: str) -> DICOMwebClient:
    return DICOMwebClient(service)


@pytest.fixture(scope="module")
def files(folder: Path) -> dict[str, tuple[Path, pydicom.Dataset]]:
    """Every good instance of the folder by SOP Instance UID (pydicom's reading), zip member
    included; the first path wins for copies, as the service does."""
    found: dict[str, tuple[Path, pydicom.Dataset]] = {}
    paths = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix != ".zip" and p.parent.name != "bad"  # failed in the catalog
    )
    for path in paths:
        try:
            dataset = read(path)
            uid = str(dataset.SOPInstanceUID)
            str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID)
        except Exception:
            continue
        found.setdefault(uid, (path, dataset))
    member = read(ZIPPED)
    found.setdefault(str(member.SOPInstanceUID), (ZIPPED, member))
    return found


def uids(results: list[dict[str, Any]], key: str) -> set[str]:
    return {result[key]["Value"][0] for result in results}


def by_name(files, name: str) -> tuple[str, tuple[Path, pydicom.Dataset]]:
    """(SOP Instance UID, (path, dataset)) of the instance read from the file called ``name``."""
    return next((k, v) for k, v in sorted(files.items()) if v[0].name == name)


def instance_url(service: str, dataset: pydicom.Dataset) -> str:
    return (
        f"{service}/studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}"
        f"/instances/{dataset.SOPInstanceUID}"
    )


def study_uids(files, keep=lambda d: True) -> set[str]:
    return {str(d.StudyInstanceUID) for _, d in files.values() if keep(d)}


# -- QIDO-RS -----------------------------------------------------------------------------------


def test_all_studies_series_and_instances_are_found(client, files) -> None:
    assert uids(client.search_for_studies(), "0020000D") == study_uids(files)
    series = client.search_for_series()
    assert uids(series, "0020000E") == {str(d.SeriesInstanceUID) for _, d in files.values()}
    assert uids(client.search_for_instances(), "00080018") == set(files)


def test_study_results_are_conformant_dicom_json(client, files) -> None:
    for study in client.search_for_studies():
        assert all(len(key) == 8 and key.upper() == key for key in study), study.keys()
        uid = study["0020000D"]["Value"][0]
        members = [d for _, d in files.values() if str(d.StudyInstanceUID) == uid]
        assert study["00201208"] == {"vr": "IS", "Value": [len(members)]}
        assert study["00201206"]["Value"] == [len({str(d.SeriesInstanceUID) for d in members})]
        modalities = sorted({d.Modality for d in members if d.get("Modality")})
        if modalities:
            assert study["00080061"] == {"vr": "CS", "Value": modalities}
        if "00100010" in study and "Value" in study["00100010"]:
            assert study["00100010"]["vr"] == "PN"
            assert study["00100010"]["Value"][0]["Alphabetic"] == str(members[0].PatientName)
        assert study["00081190"]["vr"] == "UR"
        assert study["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{uid}")


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        (
            {"PatientName": "doe*"},
            lambda d: str(d.get("PatientName", "")).lower().startswith("doe"),
        ),
        (
            {"PatientName": "D?E^J*"},
            lambda d: str(d.get("PatientName", "")).upper().startswith("DOE^J"),
        ),
        (
            {"PatientName": "CompressedSamples^?R1"},
            lambda d: str(d.get("PatientName", "")) == "CompressedSamples^MR1",
        ),
        ({"PatientID": "4MR1"}, lambda d: d.get("PatientID") == "4MR1"),
        (
            {"AccessionNumber": "ACC*"},
            lambda d: str(d.get("AccessionNumber", "")).startswith("ACC"),
        ),
        ({"AccessionNumber": "XYZ-9"}, lambda d: d.get("AccessionNumber") == "XYZ-9"),
        (
            {"StudyDescription": "Chest*"},
            lambda d: str(d.get("StudyDescription", "")).startswith("Chest"),
        ),
        ({"StudyDate": "20040119"}, lambda d: d.get("StudyDate") == "20040119"),
        (
            {"StudyDate": "20000101-20041231"},
            lambda d: "20000101" <= d.get("StudyDate", "") <= "20041231",
        ),
        ({"StudyDate": "-20011231"}, lambda d: "" < d.get("StudyDate", "") <= "20011231"),
        ({"StudyDate": "20100101-"}, lambda d: d.get("StudyDate", "") >= "20100101"),
        ({"ModalitiesInStudy": "MR"}, lambda d: d.get("Modality") == "MR"),
        ({"ModalitiesInStudy": "CT,US"}, lambda d: d.get("Modality") in ("CT", "US")),
        ({"StudyDescription": "*"}, lambda d: True),
    ],
    ids=lambda value: str(value) if isinstance(value, dict) else "",
)
def test_study_matching(client, files, filters, keep) -> None:
    found = client.search_for_studies(search_filters=filters)
    expected = study_uids(files, keep)
    assert expected, f"the corpus has no study for {filters}: the test would prove nothing"
    assert uids(found, "0020000D") == expected


def test_uid_list_and_tag_keys_match(client, files) -> None:
    chosen = sorted(study_uids(files))[:2]
    found = client.search_for_studies(search_filters={"0020000D": ",".join(chosen)})
    assert uids(found, "0020000D") == set(chosen)


def test_series_and_instance_matching(client, files) -> None:
    mr_series = {str(d.SeriesInstanceUID) for _, d in files.values() if d.get("Modality") == "MR"}
    found = client.search_for_series(search_filters={"Modality": "MR"})
    assert uids(found, "0020000E") == mr_series
    sop, (_, dataset) = sorted(files.items())[0]
    study, series = str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID)
    within = client.search_for_instances(study, series, search_filters={"SOPInstanceUID": sop})
    assert uids(within, "00080018") == {sop}
    assert within[0]["0020000E"]["Value"] == [series]
    in_study = client.search_for_series(study)
    assert uids(in_study, "0020000E") == {
        str(d.SeriesInstanceUID) for _, d in files.values() if str(d.StudyInstanceUID) == study
    }


def test_paging_walks_every_instance_once(client, files) -> None:
    everything = client.search_for_instances()
    pages = [
        client.search_for_instances(limit=3, offset=start) for start in range(0, len(files), 3)
    ]
    assert [r["00080018"]["Value"][0] for page in pages for r in page] == [
        r["00080018"]["Value"][0] for r in everything
    ]
    assert all(len(page) <= 3 for page in pages)


def test_includefield_adds_attributes(client, files) -> None:
    sop, (_, dataset) = next((k, v) for k, v in sorted(files.items()) if "SliceThickness" in v[1])
    plain = client.search_for_instances(search_filters={"SOPInstanceUID": sop})[0]
    assert "00180050" not in plain
    asked = client.search_for_instances(
        search_filters={"SOPInstanceUID": sop}, fields=["SliceThickness", "00180088"]
    )[0]
    assert asked["00180050"]["Value"] == [float(dataset.SliceThickness)]
    everything = client.search_for_studies(fields=["all"])
    plain_studies = client.search_for_studies()
    assert [set(s) for s in everything] == [set(s) for s in plain_studies]


# -- WADO-RS -----------------------------------------------------------------------------------


def test_retrieved_instances_are_the_files(client, files) -> None:
    for sop, (path, dataset) in files.items():
        study, series = str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID)
        # The client's own request and multipart decoder, without its parsing into a Dataset.
        response = client._http_get(
            f"{client.base_url}/studies/{study}/series/{series}/instances/{sop}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        (part,) = list(client._decode_multipart_message(response, stream=False))
        original = path.read_bytes()
        if original[128:132] == b"DICM":
            assert part == original, path.name
        else:  # a bare data set is sent as PS3.10: meta header first, its bytes unchanged
            assert part.endswith(original) and part[128:132] == b"DICM", path.name
            assert read(io.BytesIO(part)).SOPInstanceUID == sop


def test_series_and_study_retrieve_every_instance(client, files) -> None:
    _, dataset = next(iter(files.values()))
    study = str(dataset.StudyInstanceUID)
    retrieved = client.retrieve_study(study)
    assert {str(d.SOPInstanceUID) for d in retrieved} == {
        sop for sop, (_, d) in files.items() if str(d.StudyInstanceUID) == study
    }


def _without_bulk(dataset: pydicom.Dataset, bulk: set[int]) -> dict[int, Any]:
    return {
        int(element.tag): element.value
        for element in dataset
        if int(element.tag) not in bulk and element.tag.element != 0
    }


def test_metadata_round_trips_through_pydicom(client, files) -> None:
    """Dataset.from_json of the metadata equals the file's data set, minus bulk data."""
    for sop, (path, dataset) in files.items():
        study, series = str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID)
        meta = client.retrieve_instance_metadata(study, series, sop)
        bulk = {int(key, 16) for key, element in meta.items() if "BulkDataURI" in element}
        bulk.add(0x7FE00010)
        ours = pydicom.Dataset.from_json(meta, bulk_data_uri_handler=lambda *args: None)
        body = {tag: value for tag, value in _without_bulk(ours, bulk).items() if tag >> 16 != 2}
        assert body == _without_bulk(dataset, bulk), path.name
        if dataset.file_meta:
            header = {t: v for t, v in _without_bulk(ours, bulk).items() if t >> 16 == 2}
            assert header == _without_bulk(dataset.file_meta, bulk), path.name


def test_bulk_data_uris_resolve_to_the_value(client, files) -> None:
    sop, (_, dataset) = by_name(files, "CT_small.dcm")
    meta = client.retrieve_instance_metadata(
        str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID), sop
    )
    uri = meta["7FE00010"]["BulkDataURI"]
    assert uri.startswith(client.base_url)
    (value,) = client.retrieve_bulkdata(uri)
    assert value == dataset.PixelData


def test_frames_are_stored_frames(client, files) -> None:
    checked = 0
    for sop, (path, dataset) in files.items():
        if "PixelData" not in dataset or dataset.file_meta.get("TransferSyntaxUID") is None:
            continue
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        syntax = dataset.file_meta.TransferSyntaxUID
        if syntax.is_compressed:
            expected = list(generate_frames(dataset.PixelData, number_of_frames=frames))
        else:
            size = len(dataset.PixelData) // frames
            expected = [dataset.PixelData[i * size : (i + 1) * size] for i in range(frames)]
        got = client.retrieve_instance_frames(
            str(dataset.StudyInstanceUID),
            str(dataset.SeriesInstanceUID),
            sop,
            frame_numbers=list(range(1, frames + 1)),
            media_types=(("application/octet-stream", "*"),),
        )
        assert got == expected, path.name
        checked += 1
    assert checked >= 6


def test_rendered_and_thumbnail_are_images(service, files) -> None:
    _, (_, dataset) = by_name(files, "CT_small.dcm")
    url = instance_url(service, dataset)
    rendered = requests.get(f"{url}/rendered", headers={"Accept": "image/png"}, timeout=60)
    assert rendered.status_code == 200 and rendered.content.startswith(b"\x89PNG")
    thumbnail = requests.get(f"{url}/thumbnail", headers={"Accept": "image/jpeg"}, timeout=60)
    assert thumbnail.status_code == 200 and thumbnail.content.startswith(b"\xff\xd8")


# -- the OHIF viewer in a real browser ----------------------------------------------------------

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# Non-blank pixels of the largest 2D canvas of the page (the viewport draws the image there).
CANVAS_PIXELS = """() => Math.max(0, ...[...document.querySelectorAll('canvas')].map(canvas => {
  const context = canvas.getContext('2d');
  if (!context || !canvas.width || !canvas.height) return 0;
  const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let lit = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] || data[i + 1] || data[i + 2]) lit++;
  return lit;
}))"""


def lit_pixels(page: Any) -> int:
    """The viewport's non-blank pixels once the image is drawn (0 if it never is, in 60 s)."""
    lit = 0
    for _ in range(120):
        lit = page.evaluate(CANVAS_PIXELS)
        if lit > 10_000:
            break
        page.wait_for_timeout(500)
    return lit


def test_the_viewer_lists_the_studies_and_renders_one(service, files) -> None:
    """Study list, click a study, open it in the Basic Viewer: the image is drawn. Then the
    page `pixels-sql viewer-url` prints for another study (a multi-frame MR) draws too."""
    from playwright.sync_api import sync_playwright

    from pixels_sql.servers.viewer import study_url
    from tests.browser import FLAGS, chromium

    origin = service.removesuffix("/dicomweb")
    studies = study_uids(files)
    _, (_, multiframe) = by_name(files, "emri_small.dcm")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium(), args=[flag for flag in FLAGS if flag != "--headless"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{origin}/", wait_until="load", timeout=120_000)
            page.get_by_text(f"of {len(studies)}").wait_for(timeout=60_000)
            listed = page.inner_text("body")
            page.screenshot(path=str(ARTIFACTS / "viewer-study-list.png"))
            for name in ("Doe, John", "Smith, Anna", "Last, First mid pre"):
                assert name in listed, name
            page.get_by_text("e+1").first.click()  # CT_small's study description
            page.get_by_text("Basic Viewer").first.click()
            clicked = lit_pixels(page)
            page.screenshot(path=str(ARTIFACTS / "viewer-ct-small.png"))
            page.goto(study_url(origin, str(multiframe.StudyInstanceUID)), timeout=120_000)
            linked = lit_pixels(page)
            page.screenshot(path=str(ARTIFACTS / "viewer-emri-small.png"))
        finally:
            browser.close()
    assert clicked > 10_000, f"the opened study shows {clicked} non-blank pixels"
    assert linked > 1_000, f"the linked study shows {linked} non-blank pixels"


def eventually(search: Callable[[], list], count: int, seconds: float = 180) -> list:
    """The search's results once it finds ``count`` of them (or what it found at the end)."""
    deadline = time.monotonic() + seconds
    found = search()
    while len(found) < count and time.monotonic() < deadline:
        time.sleep(1)
        found = search()
    return found


# -- STOW-RS -----------------------------------------------------------------------------------


def test_stored_instances_become_searchable(client) -> None:
    study = generate_uid()
    sent = []
    for name in ("CT_small.dcm", "MR_small.dcm"):
        dataset = read(PYDICOM_TEST_FILES / name)
        dataset.StudyInstanceUID = study
        dataset.SeriesInstanceUID = generate_uid()
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        sent.append(dataset)
    answer = client.store_instances(sent)
    assert len(answer.ReferencedSOPSequence) == 2
    # Catalogued in the background: searchable once the landing folder's ingest run ends.
    found = eventually(lambda: client.search_for_instances(study), len(sent))
    assert uids(found, "00080018") == {str(d.SOPInstanceUID) for d in sent}
    back = client.retrieve_instance(
        study, str(sent[0].SeriesInstanceUID), str(sent[0].SOPInstanceUID)
    )
    assert back.PatientName == sent[0].PatientName


def test_bad_parts_are_reported_and_good_ones_stored(service, client) -> None:
    dataset = read(PYDICOM_TEST_FILES / "CT_small.dcm")
    dataset.StudyInstanceUID, dataset.SOPInstanceUID = generate_uid(), generate_uid()
    good = io.BytesIO()
    dataset.save_as(good)
    boundary = "pixels-sql-test"
    body = (
        b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                + content
                + b"\r\n"
                for content in (b"not a DICOM file at all", good.getvalue())
            ]
        )
        + f"--{boundary}--\r\n".encode()
    )
    response = requests.post(
        f"{service}/studies",
        data=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
        },
        timeout=300,
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert len(answer["00081198"]["Value"]) == 1  # FailedSOPSequence
    assert answer["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    assert len(answer["00081199"]["Value"]) == 1
    sop = str(dataset.SOPInstanceUID)
    assert eventually(
        lambda: client.search_for_instances(search_filters={"SOPInstanceUID": sop}), 1
    )


# -- errors and attacks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/studies/..%2F..%2Fetc%2Fpasswd",
        "/studies/1.2.3/series/..%2F..%2F..%2Fetc/instances/1.2",
        "/studies/1.2.3/series/4.5/instances/6.7/bulk/0/100",
        "/studies/1.2%27%20OR%201%3D1%20--/metadata",
        "/studies?StudyDate=2020-01-01",
        "/studies?limit=-1",
        "/studies?NoSuchAttribute=1",
        "/studies/1.2.3/series/4.5/instances/6.7/frames/0",
    ],
)
def test_hostile_requests_get_a_short_4xx(service, path) -> None:
    response = requests.get(service + path, timeout=30)
    assert response.status_code in (400, 404), (path, response.status_code)
    assert "Traceback" not in response.text and "/etc/passwd" not in response.text
    assert len(response.text) < 300


@pytest.mark.parametrize(
    "raw_path",
    ["/../../etc/passwd", "/assets/../../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd"],
)
def test_viewer_files_stay_inside_the_viewer(service, raw_path) -> None:
    """Outside /dicomweb only the viewer's own files are served (its page for any other path)."""
    address = urlsplit(service)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    connection.request("GET", raw_path)  # sent as written: no client-side normalising
    answer = connection.getresponse()
    body = answer.read()
    connection.close()
    assert answer.status in (200, 404)
    assert b"root:" not in body and b"/bin/" not in body


def test_sql_injection_in_a_matching_key_matches_nothing(client) -> None:
    for value in ("' OR 1=1 --", "*' OR '1'='1", '"; DROP TABLE studies; --'):
        assert client.search_for_studies(search_filters={"PatientName": value}) == []
    assert client.search_for_studies()  # still there


def test_bulk_data_outside_the_instance_is_refused(service, files) -> None:
    _, (path, dataset) = by_name(files, "CT_small.dcm")
    url = f"{instance_url(service, dataset)}/bulk/{path.stat().st_size}/10"
    assert requests.get(url, timeout=30).status_code == 404


def test_a_file_changed_since_it_was_catalogued_is_not_served(service, folder, tmp_path) -> None:
    """Only what the catalog describes is served: a file rewritten after ingest is refused."""
    target = folder / "ct" / "CT_small.dcm"
    dataset = read(target)
    url = instance_url(service, dataset)
    backup = tmp_path / "CT_small.dcm"
    shutil.copy2(target, backup)
    try:
        target.write_bytes(target.read_bytes() + b"\x00\x00")
        assert requests.get(url, timeout=30).status_code == 404
    finally:
        shutil.copy2(backup, target)
