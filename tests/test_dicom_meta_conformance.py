"""dicom_meta's pure reader against pydicom's own DICOM JSON, over the whole public corpus."""

from __future__ import annotations

import base64
import json
import math
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pydicom
import pytest

from pixels_sql.dicom import fastmeta
from pixels_sql.dicom import meta as meta_module
from pixels_sql.dicom.bulk import bulk_uri_factory
from pixels_sql.dicom.fastmeta import read_fast
from pixels_sql.dicom.meta import INLINE_BINARY_MAX_BYTES, read_model
from pixels_sql.errors import DicomReadError
from tests.corpus import (
    DECLARED_DEFLATED,
    EXPECTED_UNREADABLE,
    corpus_files,
    declared_deflated_bytes,
)

CORPUS = corpus_files()


def reference_json(path: Path) -> dict[str, Any]:
    """pydicom's to_json_dict of the dataset plus its file meta, every binary value inline."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dataset = pydicom.dcmread(path)
        except pydicom.errors.InvalidDicomError:
            dataset = pydicom.dcmread(path, force=True)
        result = dataset.file_meta.to_json_dict() if dataset.file_meta is not None else {}
        try:
            result.update(dataset.to_json_dict())
        except ValueError:
            result.update(element_by_element(dataset))
            result.update(numbers_pydicom_refuses(dataset, result))
    return without_pydicom_deviations(dict(sorted(result.items())))


def element_by_element(dataset: pydicom.Dataset) -> dict[str, Any]:
    """to_json_dict of each top-level element pydicom can convert (as Dataset.to_json_dict
    would give it: binary values up to 1024 bytes inline)."""
    converted = {}
    for tag in dataset.keys():  # noqa: SIM118 (tags, without converting the elements)
        try:
            converted[f"{int(tag):08X}"] = dataset[tag].to_json_dict(None, 1024)
        except ValueError:
            continue
    return converted


def numbers_pydicom_refuses(dataset: pydicom.Dataset, converted: dict[str, Any]) -> dict:
    """The DS and IS elements pydicom's to_json_dict could not convert ("1A" as IS), as
    DCMTK's dcm2json writes them: each value that is no number as its text without the spaces
    around it (test_dicom_meta_dcmtk compares the whole file with DCMTK)."""
    found = {}
    for tag in dataset.keys():  # noqa: SIM118 (tags, without converting the elements)
        key = f"{int(tag):08X}"
        raw = dataset._dict[tag]
        if key in converted or getattr(raw, "VR", None) not in ("DS", "IS"):
            continue
        values: list[Any] = []
        text = raw.value.decode("latin_1") if isinstance(raw.value, bytes) else str(raw.value)
        for part in text.strip(" \x00").split("\\"):
            text = part.strip(" ")
            try:
                values.append(int(text) if raw.VR == "IS" else float(text))
            except ValueError:
                values.append(text)
        found[key] = {"vr": raw.VR, "Value": values}
    return found


# Where pydicom's to_json_dict departs from PS3.18 F.2 and pixels-sql does not (checked against
# DCMTK's dcm2json in test_dicom_meta_dcmtk.py). The reference is corrected, never our output:
DEVIATIONS = {
    "empty value among several": 'pydicom writes "" (or a PN object with empty groups); F.2.5'
    " says null",
    "empty sequence": 'pydicom writes "Value": []; F.2.5: an empty attribute has no Value',
    "padding of all but the last value": 'pydicom keeps "DERIVED " in "DERIVED \\PRIMARY" for'
    " AS/CS/DA/DT/TM/UI; PS3.5 6.2: trailing spaces are not significant",
    "a DS or IS that is no number": "pydicom's to_json_dict raises; DCMTK writes the text as a"
    " JSON string, and so does pixels-sql (numbers_pydicom_refuses)",
}
_PADDED = {"AS", "CS", "DA", "DT", "TM", "UI"}


def without_pydicom_deviations(meta: dict[str, Any]) -> dict[str, Any]:
    corrected: dict[str, Any] = {}
    for key, element in meta.items():
        element = dict(element)
        values = element.get("Value")
        if element.get("vr") == "SQ" and values is not None:
            if values:
                element["Value"] = [without_pydicom_deviations(item) for item in values]
            else:
                del element["Value"]
        elif values is not None and len(values) > 1:
            if element.get("vr") in _PADDED:
                values = [v.rstrip(" \x00") if isinstance(v, str) else v for v in values]
            element["Value"] = [
                None if v == "" or (isinstance(v, dict) and not any(v.values())) else v
                for v in values
            ]
        corrected[key] = element
    return corrected


def read_bulk(uri: str) -> bytes:
    parts = urlsplit(uri)
    query = parse_qs(parts.query)
    offset, length = int(query["offset"][0]), int(query["length"][0])
    with open(unquote(parts.path), "rb") as handle:
        handle.seek(offset)
        return handle.read(length)


DEFLATED_BULK = "<value inside the deflate stream>"


def normalise(meta: Any, deflated: bool = False) -> Any:
    """Resolve BulkDataURIs to inline bytes, drop group lengths, compare numbers by value.

    In a deflated file (PS3.5 A.5) a long binary value has no file offset: the bulk-data policy
    gives the bare file URI, so long values on both sides become one marker.
    """
    if isinstance(meta, dict):
        out = {}
        for key, value in meta.items():
            if key == "BulkDataURI":
                if "?offset=" in value:
                    out["InlineBinary"] = base64.b64encode(read_bulk(value)).decode()
                else:
                    out["InlineBinary"] = DEFLATED_BULK
            elif (
                key == "InlineBinary"
                and deflated
                and len(base64.b64decode(value)) > (INLINE_BINARY_MAX_BYTES)
            ):
                out["InlineBinary"] = DEFLATED_BULK
            elif len(key) == 8 and key.endswith("0000"):
                continue  # group length: excluded by contract
            else:
                out[key] = normalise(value, deflated)
        return out
    if isinstance(meta, list):
        return [normalise(item, deflated) for item in meta]
    if isinstance(meta, float) and not math.isfinite(meta):
        return "NaN" if math.isnan(meta) else ("Infinity" if meta > 0 else "-Infinity")
    return meta


@pytest.fixture(params=["one-call", "compiled", "fast", "general"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every reader is held to the reference: the fast one where it applies (the compiled
    module's one-call JSON writer, its compiled element loop building objects, and its
    pure-Python one), and the general (pydicom-based) one for the rest."""
    monkeypatch.setattr(meta_module, "FAST_READER", request.param != "general")
    monkeypatch.setattr(fastmeta, "COMPILED", request.param in ("one-call", "compiled"))
    return request.param


def read_for(reader: str, path: Path) -> dict:
    """The file's DICOM JSON as the reader under test gives it (the one-call writer only runs
    through read_json; read_model builds objects)."""
    if reader == "one-call":
        return json.loads(meta_module.read_json(str(path)).decode())
    return json.loads(json.dumps(read_model(str(path))))


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_meta_matches_pydicom(path: Path, reader: str) -> None:
    if path.name in EXPECTED_UNREADABLE:
        with pytest.raises(DicomReadError) as error:
            read_for(reader, path)
        assert error.value.reason == EXPECTED_UNREADABLE[path.name]
        assert str(path) in str(error.value)
        return
    ours = read_for(reader, path)
    assert list(ours) == sorted(ours), "keys must be in tag order"
    reference = reference_json(path)
    deflated = reference.get("00020010", {}).get("Value") == ["1.2.840.10008.1.2.1.99"]
    assert normalise(ours, deflated) == normalise(reference, deflated)


def test_the_corrupt_sample_is_what_its_maker_makes() -> None:
    assert DECLARED_DEFLATED.read_bytes() == declared_deflated_bytes()
    with pytest.raises(DicomReadError) as error:
        read_model(str(DECLARED_DEFLATED))
    assert error.value.reason == "corrupt"


def test_bulk_data_uris_address_the_element_bytes() -> None:
    """Reading `length` bytes at `offset` gives pydicom's value of the same element."""
    checked = 0
    for path in CORPUS:
        if path.name in EXPECTED_UNREADABLE:
            continue
        meta = read_model(str(path))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path, force=True)
        for key, element in meta.items():
            uri = element.get("BulkDataURI")
            if uri is None or "?offset=" not in uri:
                continue
            query = parse_qs(urlsplit(uri).query)
            assert int(query["length"][0]) > INLINE_BINARY_MAX_BYTES
            assert read_bulk(uri) == dataset[int(key, 16)].value, (path.name, key)
            checked += 1
    assert checked > 100


def test_fast_reader_covers_most_of_the_corpus() -> None:
    """The conformance test above proves something about the fast reader only where it runs."""
    handled = total = 0
    for path in CORPUS:
        if path.name in EXPECTED_UNREADABLE:
            continue
        total += 1
        with open(path, "rb") as handle:
            found = read_fast(
                str(path),
                handle,
                path.stat().st_size,
                bulk_uri_factory("file:///x", False),
                handle.fileno(),
            )
        handled += found is not None
    assert handled / total > 0.6, (handled, total)
