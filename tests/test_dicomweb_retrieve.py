"""WADO-RS retrieval over real HTTP: transcoding (PS3.18 8.7.3, 8.7.4), driven by dicomweb-client
(PyPI) — every instance and every frame of the served corpus with and without a transfer
syntax, the transcoded pixels against pydicom's decode of the original (DCMTK's dcmdjpeg for
12-bit JPEG) — and the rendered resources (PS3.18 8.3.5, 10.4.1.1.3) of every image, against
dicom_thumbnail's renderer."""

from __future__ import annotations

import io
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from pixels_sql.dicom.thumbnail import RenderOptions, render_thumbnail
from pixels_sql.servers.dicomweb.rendered import RENDERED_MAX
from tests.corpus import pydicom_data_dir
from tests.dicomweb_service import ZIPPED, build_folder, running_service

EXPLICIT = str(ExplicitVRLittleEndian)
TWELVE_BIT = ("JPEG-lossy.dcm", "JPGExtended.dcm")
# Served beside the usual test folder (tests/dicomweb_service.py), each under a new SOP Instance
# UID (the folder serves one file of each UID, and these share theirs with another): 12-bit
# JPEG Extended, JPEG baseline, JPEG-LS, RLE, JPEG 2000 multi-frame, big endian, 1-bit SEG.
EXTRA = (
    "JPEG-lossy.dcm",
    "JPGExtended.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "SC_rgb_rle_2frame.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "liver.dcm",
    "liver_expb.dcm",
)
UNALIGNED = "seg_5x5.dcm"  # 1-bit frames of 25 bits: frame 2 starts inside a byte
# An instance of its own study whose JPEG 2000 codestream is damaged.
DAMAGED_UIDS = (generate_uid(), generate_uid(), generate_uid())
STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def read(source: Path | bytes) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes) else source)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build_folder(tmp_path_factory.mktemp("transcode"))
    (root / "extra").mkdir()
    for name in EXTRA:
        dataset = read(Path(get_testdata_file(name, download=False)))
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.save_as(root / "extra" / name)
    seg = read(Path(get_testdata_file("liver.dcm", download=False)))
    masks = np.random.default_rng(5).integers(0, 2, size=(3, 5, 5), dtype=np.uint8)
    seg.Rows, seg.Columns, seg.NumberOfFrames = 5, 5, 3
    seg.PixelData = np.packbits(masks.ravel(), bitorder="little").tobytes()
    del seg.PerFrameFunctionalGroupsSequence
    seg.SOPInstanceUID = seg.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    seg.save_as(root / "extra" / UNALIGNED)
    damaged = read(pydicom_data_dir() / "US1_J2KR.dcm")
    damaged.SOPInstanceUID = damaged.file_meta.MediaStorageSOPInstanceUID = DAMAGED_UIDS[2]
    damaged.StudyInstanceUID, damaged.SeriesInstanceUID = DAMAGED_UIDS[:2]
    (root / "damaged").mkdir()
    damaged.save_as(root / "damaged" / "US1_J2KR.dcm")
    data = bytearray((root / "damaged" / "US1_J2KR.dcm").read_bytes())
    start = data.index(b"\xff\x4f\xff\x51")  # SOC, SIZ: the codestream begins
    data[start + 4 : start + 60] = bytes(56)  # the SIZ segment: no decoder reads on
    (root / "damaged" / "US1_J2KR.dcm").write_bytes(bytes(data))
    return root


@pytest.fixture(scope="module")
def service(spark, folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_service(
        spark, folder, tmp_path_factory.mktemp("landing"), "dicomweb_retrieve_test"
    ) as url:
        yield url


@pytest.fixture(scope="module")
def client(service: str) -> DICOMwebClient:
    return DICOMwebClient(service)


@pytest.fixture(scope="module")
def files(folder: Path) -> dict[str, tuple[Path, pydicom.Dataset]]:
    """Every served instance by SOP Instance UID (first path wins for copies, as served)."""
    found: dict[str, tuple[Path, pydicom.Dataset]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".zip"):
        if path.parent.name in ("bad", "damaged"):
            continue
        try:
            dataset = read(path)
            str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID)
        except Exception:
            continue
        found.setdefault(str(dataset.SOPInstanceUID), (path, dataset))
    found.setdefault(str(read(ZIPPED).SOPInstanceUID), (ZIPPED, read(ZIPPED)))
    return found


@pytest.fixture(scope="module")
def expected(files, tmp_path_factory) -> dict[str, np.ndarray]:
    """The original pixels of each image: pydicom's decode, DCMTK's for 12-bit JPEG (the only
    decoders of it here are ours: imagecodecs)."""
    scratch = tmp_path_factory.mktemp("dcmtk")
    dcmdjpeg = shutil.which("dcmdjpeg")
    assert dcmdjpeg, "dcmdjpeg (Debian's dcmtk) is missing: run `make dicom-tools`"
    pixels = {}
    for sop, (path, dataset) in files.items():
        if "PixelData" not in dataset:
            continue
        if path.name in TWELVE_BIT:
            target = scratch / path.name
            subprocess.run([dcmdjpeg, str(path), str(target)], check=True, capture_output=True)
            pixels[sop] = read(target).pixel_array
        else:
            if "TransferSyntaxUID" not in dataset.file_meta:  # a bare data set
                dataset.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
            pixels[sop] = dataset.pixel_array
    return pixels


def uids(dataset: pydicom.Dataset) -> tuple[str, str, str]:
    return (
        str(dataset.StudyInstanceUID),
        str(dataset.SeriesInstanceUID),
        str(dataset.SOPInstanceUID),
    )


def native(frame: np.ndarray, dataset: pydicom.Dataset) -> bytes:
    """A decoded frame as native little endian pixel data (PS3.5 8.1.1; 1-bit packed)."""
    bits = int(dataset.BitsAllocated)
    if bits == 1:
        return np.packbits(frame.ravel(), bitorder="little").tobytes()
    dtype = frame.dtype.newbyteorder("<") if frame.dtype.kind == "f" else None
    dtype = dtype or np.dtype(f"<{frame.dtype.kind}{bits // 8}")
    return frame.astype(dtype).tobytes()


def test_every_instance_comes_as_explicit_vr_little_endian_by_default(
    client, files, expected
) -> None:
    """PS3.18 8.7.3.5.2: application/dicom without transfer-syntax is Explicit VR Little Endian,
    whatever the stored syntax; the pixels are the original's."""
    syntaxes = set()
    for sop, (path, dataset) in files.items():
        # dicomweb-client asks for transfer-syntax=* unless told otherwise: a bare type here.
        retrieved = client.retrieve_instance(*uids(dataset), media_types=("application/dicom",))
        assert retrieved.file_meta.TransferSyntaxUID == EXPLICIT, path.name
        assert retrieved.SOPInstanceUID == sop
        syntaxes.add(str(dataset.file_meta.get("TransferSyntaxUID", "bare")))
        if sop in expected:
            assert np.array_equal(retrieved.pixel_array, expected[sop]), path.name
    # Implicit, explicit and big endian, RLE, JPEG baseline, 12-bit and lossless, JPEG-LS,
    # JPEG 2000 (and a bare data set).
    assert len(syntaxes) >= 9, syntaxes


def test_a_study_is_transcoded_instance_by_instance(client, files) -> None:
    study = next(d for p, d in files.values() if p.name == "emri_small.dcm").StudyInstanceUID
    retrieved = client.retrieve_study(str(study), media_types=("application/dicom",))
    members = {sop for sop, (_, d) in files.items() if d.StudyInstanceUID == study}
    assert {str(d.SOPInstanceUID) for d in retrieved} == members
    assert {str(d.file_meta.TransferSyntaxUID) for d in retrieved} == {EXPLICIT}


LOSSLESS_TARGETS = [
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
]
TARGET_SOURCES = [
    "MR_small_RLE.dcm",
    "US1_J2KR.dcm",
    "SC_rgb_rle_2frame.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "JPEG-lossy.dcm",
    "MR_small_bigendian.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
]


@pytest.mark.parametrize("target", LOSSLESS_TARGETS)
def test_asked_lossless_syntaxes_are_produced_or_refused_with_the_offer(
    client, files, expected, target
) -> None:
    produced = 0
    for name in TARGET_SOURCES:
        sop, (_, dataset) = next((k, v) for k, v in files.items() if v[0].name == name)
        # The client's request and multipart decoder (its own check of the Accept header
        # knows no Implicit VR Little Endian nor Deflated for instances).
        url = f"{client.base_url}/studies/{'/series/'.join(uids(dataset)[:2])}"
        accept = f'multipart/related; type="application/dicom"; transfer-syntax={target}'
        try:
            response = client._http_get(f"{url}/instances/{sop}", headers={"Accept": accept})
        except requests.HTTPError as exc:
            # Only an encoder's profile may rule an image out (PS3.5 8.2), said with the offer.
            assert exc.response.status_code == 406, name
            assert "offered: *, 1.2.840.10008.1.2.1" in exc.response.text, exc.response.text
            continue
        (part,) = list(client._decode_multipart_message(response, stream=False))
        retrieved = read(bytes(part))
        assert retrieved.file_meta.TransferSyntaxUID == target, name
        assert np.array_equal(retrieved.pixel_array, expected[sop]), (name, target)
        produced += 1
    assert produced >= 3


def test_a_lossy_syntax_is_never_made(service, files) -> None:
    _, dataset = next(v for v in files.values() if v[0].name == "MR_small.dcm")
    url = f"{service}/studies/{'/series/'.join(uids(dataset)[:2])}/instances/{uids(dataset)[2]}"
    for lossy in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.91"):
        accept = f'multipart/related; type="application/dicom"; transfer-syntax={lossy}'
        answer = requests.get(url, headers={"Accept": accept}, timeout=60)
        assert answer.status_code == 406
        assert "is not produced here; transcoding offers" in answer.text
        assert str(RLELossless) in answer.text and str(JPEG2000Lossless) in answer.text


def test_every_frame_comes_native_by_default(client, files, expected) -> None:
    """PS3.18 8.7.4: application/octet-stream without transfer-syntax: each frame's native
    little endian bytes, decoded from compressed frames, 1-bit frames from bit 0."""
    checked = set()
    for sop, (path, dataset) in files.items():
        if sop not in expected:
            continue
        count = int(dataset.get("NumberOfFrames", 1) or 1)
        frames = client.retrieve_instance_frames(
            *uids(dataset),
            frame_numbers=list(range(1, count + 1)),
            media_types=("application/octet-stream",),
        )
        array = expected[sop] if count > 1 else expected[sop][np.newaxis]
        assert frames == [native(array[i], dataset) for i in range(count)], path.name
        checked.add(path.name)
    assert {"US1_J2KR.dcm", "JPEG-lossy.dcm", UNALIGNED, "liver.dcm"} <= checked


def test_frames_in_an_encapsulated_media_type(client, files, expected) -> None:
    import imagecodecs  # independent readers of bare codestreams (OpenJPEG, CharLS)

    sop, (_, dataset) = next(
        (k, v) for k, v in files.items() if v[0].name == "SC_rgb_rle_2frame.dcm"
    )
    for media, decode in (
        ("image/jp2", imagecodecs.jpeg2k_decode),
        ("image/jls", imagecodecs.jpegls_decode),
    ):
        frames = client.retrieve_instance_frames(
            *uids(dataset), frame_numbers=[2, 1], media_types=(media,)
        )
        assert np.array_equal(decode(frames[0]), expected[sop][1]), media
        assert np.array_equal(decode(frames[1]), expected[sop][0]), media


def test_frames_no_encoder_can_hold_are_406_with_the_offer(service, files) -> None:
    _, dataset = next(v for v in files.values() if v[0].name == "liver.dcm")
    study, series, sop = uids(dataset)
    url = f"{service}/studies/{study}/series/{series}/instances/{sop}/frames/1"
    answer = requests.get(
        url, headers={"Accept": 'multipart/related; type="image/jp2"'}, timeout=60
    )
    assert answer.status_code == 406
    assert "offered: application/octet-stream; transfer-syntax=*" in answer.text


def test_bulk_data_of_encapsulated_pixel_data_answers_as_frames(client, files, expected) -> None:
    """PS3.18 8.7.4 / 10.4.1.1.3: the BulkDataURI of compressed Pixel Data gives its frames,
    native by default, as stored with transfer-syntax=*."""
    sop, (_, dataset) = next(
        (k, v) for k, v in files.items() if v[0].name == "emri_small_jpeg_2k_lossless.dcm"
    )
    meta = client.retrieve_instance_metadata(*uids(dataset))
    uri = meta["7FE00010"]["BulkDataURI"]
    count = int(dataset.NumberOfFrames)
    decoded = client.retrieve_bulkdata(uri, media_types=("application/octet-stream",))
    assert decoded == [native(expected[sop][i], dataset) for i in range(count)]
    stored = client.retrieve_bulkdata(uri, media_types=(("image/jp2", "*"),))
    assert stored == list(generate_frames(dataset.PixelData, number_of_frames=count))


def test_an_undecodable_instance_is_a_406_and_the_server_goes_on(service, client) -> None:
    """A JPEG 2000 codestream with its SIZ segment zeroed: every decoder refuses it in the
    worker; the answers say so (instance and frame), and the next request is served."""
    study, series, sop = DAMAGED_UIDS
    base = f"{service}/studies/{study}/series/{series}/instances/{sop}"
    answer = requests.get(base, timeout=60)
    assert answer.status_code == 406
    assert "undecodable" in answer.text and "JPEG 2000" in answer.text
    accept = {"Accept": 'multipart/related; type="application/octet-stream"'}
    frame = requests.get(f"{base}/frames/1", headers=accept, timeout=60)
    assert frame.status_code == 406 and "undecodable" in frame.text
    stored = requests.get(base, headers={"Accept": STORED}, timeout=60)
    assert stored.status_code == 200  # as stored: nothing to decode
    assert len(client.search_for_studies()) > 0


def test_a_transcoding_over_the_worker_memory_fails_alone(tmp_path: Path) -> None:
    """worker_memory caps a worker's address space (RLIMIT_AS): a 128 MiB image transcoded
    under a 400 MiB cap fails in its worker (a MemoryError, or pylibjpeg-rle's allocator abort:
    the worker dies and is replaced), and the pool goes on serving."""
    from pixels_sql.servers.dicomweb.limits import MIB, HttpLimits
    from pixels_sql.servers.dicomweb.render import RenderPool

    dataset = read(Path(get_testdata_file("MR_small.dcm", download=False)))
    dataset.Rows = dataset.Columns = 8192
    dataset.PixelData = np.zeros((8192, 8192), dtype="<i2").tobytes()
    big = tmp_path / "big.dcm"
    dataset.save_as(big)
    pool = RenderPool(HttpLimits(render_workers=1, worker_memory=400 * MIB))
    try:
        result, reason, message = pool.run_blocking(("instance", str(big), RLELossless, 1 << 30))
        assert result is None and reason in ("too_large", "decoder_crash"), (reason, message)
        small = get_testdata_file("MR_small.dcm", download=False)
        result, reason, _ = pool.run_blocking(("instance", small, EXPLICIT, 1 << 30))
        assert reason == "" and read(result).file_meta.TransferSyntaxUID == EXPLICIT
    finally:
        pool.close()


def test_any_media_type_with_a_syntax_gets_that_syntax_media_type(service, files) -> None:
    """type="*/*" naming a transfer syntax: the frames in that syntax, typed by its media type
    (PS3.18 Table 8.7.3-2)."""
    _, dataset = next(v for v in files.values() if v[0].name == "MR_small_RLE.dcm")
    study, series, sop = uids(dataset)
    url = f"{service}/studies/{study}/series/{series}/instances/{sop}/frames/1"
    accept = f'multipart/related; type="*/*"; transfer-syntax={JPEG2000Lossless}'
    answer = requests.get(url, headers={"Accept": accept}, timeout=60)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith('multipart/related; type="image/jp2"')
    assert f"Content-Type: image/jp2; transfer-syntax={JPEG2000Lossless}".encode() in answer.content


# --- Rendered resources ----------------------------------------------------------------------


def _rendered(url: str, accept: str = "image/png", **params: str) -> requests.Response:
    return requests.get(f"{url}/rendered", headers={"Accept": accept}, params=params, timeout=120)


def _images(answer: requests.Response) -> list[bytes]:
    from pixels_sql.servers.dicomweb.http import parse_multipart

    assert answer.status_code == 200, answer.text
    return [body for _, body in parse_multipart(answer.content, answer.headers["content-type"])]


def _renderer(path: Path, options: RenderOptions, fmt: str = "png") -> bytes:
    return render_thumbnail(str(path), RENDERED_MAX, fmt, options)


def test_every_image_renders_as_dicom_thumbnail_renders_it(service, files, expected) -> None:
    """Each instance with pixel data, 12-bit JPEG included, is its first frame through the
    renderer of dicom_thumbnail (worker processes change nothing)."""
    first = RenderOptions(frame=1)
    for sop, (path, dataset) in files.items():
        if sop not in expected or path.suffix == ".zip" or path == ZIPPED:
            continue
        url = f"{service}/studies/{'/series/'.join(uids(dataset)[:2])}/instances/{sop}"
        answer = _rendered(url)
        assert answer.status_code == 200, (path.name, answer.text)
        assert answer.headers["content-type"] == "image/png"
        assert answer.content == _renderer(path, first), path.name
    twelve = [files[sop][0].name for sop in expected if files[sop][0].name in TWELVE_BIT]
    assert sorted(twelve) == sorted(TWELVE_BIT)


def test_a_study_and_a_series_render_as_one_part_per_image(service, files, expected) -> None:
    by_study: dict[str, list[str]] = {}
    for sop, (_, dataset) in files.items():
        by_study.setdefault(str(dataset.StudyInstanceUID), []).append(sop)
    study = max(by_study, key=lambda uid: sum(sop in expected for sop in by_study[uid]))
    images = [sop for sop in by_study[study] if sop in expected]
    assert len(images) >= 2
    accept = 'multipart/related; type="image/jpeg"'
    parts = _images(_rendered(f"{service}/studies/{study}", accept))
    assert len(parts) == len(images) and all(p.startswith(b"\xff\xd8") for p in parts)
    series = str(files[images[0]][1].SeriesInstanceUID)
    in_series = [s for s in images if str(files[s][1].SeriesInstanceUID) == series]
    parts = _images(_rendered(f"{service}/studies/{study}/series/{series}", "image/png"))
    assert len(parts) == len(in_series)
    expected_images = {_renderer(files[s][0], RenderOptions(frame=1)) for s in in_series}
    assert set(parts) == expected_images


def test_frames_render_each_frame(service, files) -> None:
    (sop,) = [s for s, (p, _) in files.items() if p.name == "SC_rgb_rle_2frame.dcm"]
    path, dataset = files[sop]
    url = f"{service}/studies/{'/series/'.join(uids(dataset)[:2])}/instances/{sop}"
    one = requests.get(f"{url}/frames/2/rendered", headers={"Accept": "image/png"}, timeout=60)
    assert one.status_code == 200
    assert one.content == _renderer(path, RenderOptions(frame=2))
    both = requests.get(
        f"{url}/frames/2,1/rendered",
        headers={"Accept": 'multipart/related; type="image/png"'},
        timeout=60,
    )
    assert _images(both) == [_renderer(path, RenderOptions(frame=n)) for n in (2, 1)]
    assert one.content != both.content
    missing = requests.get(f"{url}/frames/3/rendered", timeout=60)
    assert missing.status_code == 404 and "has 2" in missing.text


def test_viewport_window_and_quality(service, files) -> None:
    (sop,) = [s for s, (p, _) in files.items() if p.name == "CT_small.dcm"]
    path, dataset = files[sop]
    url = f"{service}/studies/{'/series/'.join(uids(dataset)[:2])}/instances/{sop}"
    fitted = Image.open(io.BytesIO(_rendered(url, viewport="64,32").content))
    assert fitted.size == (32, 32)  # a 128 x 128 image fitted into 64 x 32
    region = _rendered(url, viewport="100,100,10,20,40,60")
    assert region.content == _renderer(
        path, RenderOptions(frame=1, region=(10, 20, 40, 60), box=(100, 100))
    )
    assert Image.open(io.BytesIO(region.content)).size == (40, 60)
    windowed = _rendered(url, window="40,400,linear")
    assert windowed.content == _renderer(path, RenderOptions(frame=1, window=(40, 400, "LINEAR")))
    assert windowed.content != _rendered(url).content
    sigmoid = _rendered(url, window="40,400,sigmoid").content
    assert sigmoid not in (windowed.content, _rendered(url).content)
    small = _rendered(url, "image/jpeg", quality="5").content
    large = _rendered(url, "image/jpeg", quality="95").content
    assert small.startswith(b"\xff\xd8") and len(small) < len(large)
    assert _rendered(url, "image/gif").content.startswith(b"GIF8")
    assert _rendered(url, "*/*").headers["content-type"] == "image/jpeg"  # the default
    warned = _rendered(url, annotation="patient")
    assert warned.status_code == 200 and "annotation" in warned.headers["warning"]
    for bad in (
        {"viewport": "0,10"},
        {"viewport": "64,64,0,0,-10,10"},
        {"window": "40"},
        {"window": "40,0"},
        {"window": "40,400,cubic"},
        {"quality": "101"},
    ):
        assert _rendered(url, **bad).status_code == 400, bad
    outside = _rendered(url, viewport="64,64,500,0,10,10")
    assert outside.status_code == 400 and "outside" in outside.text
    assert _rendered(url, "text/html").status_code == 406


def test_a_study_without_images_is_404(service, files) -> None:
    (sop,) = [s for s, (p, _) in files.items() if p.name == "rtplan.dcm"]
    study = str(files[sop][1].StudyInstanceUID)
    answer = _rendered(f"{service}/studies/{study}")
    assert answer.status_code == 404 and "no instance of it renders" in answer.text
