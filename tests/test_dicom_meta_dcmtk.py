"""dicom_meta against an independent DICOM JSON writer: DCMTK's ``dcm2json``, over the corpus.

The pydicom comparison (test_dicom_meta_conformance.py) holds every reader to pydicom, and so
would hide a deviation both share. DCMTK is written independently; where the two disagree
with PS3.18 F.2, this test decides. It normalises only what the standard leaves open:

- number spelling: DCMTK prints doubles with 17 digits that do not always round-trip, and FL
  values with 9 digits (compared at float32 precision);
- bulk data: DCMTK writes every binary value inline; we write long ones as BulkDataURIs (their
  bytes are checked against pydicom elsewhere) — only the VR is compared;
- Specific Character Set: DCMTK converts text to UTF-8 and writes "ISO_IR 192"; we keep the
  source's value (F.2.2 note 3), and our text is already Unicode;
- VR UN: DCMTK keeps UN; we take the data dictionary's VR where it has one (PS3.5 6.2.2);
- PN: trailing empty components ("OB^^^^" is "OB", PS3.5 6.2.1.1), which DCMTK drops;
- a trailing NUL in a text value other than UI, which DCMTK keeps as a character.

DCMTK refuses to write encapsulated (compressed) pixel data inline: for those files it reads a
copy cut just before the Pixel Data element, found by its bytes, and the comparison leaves out
Pixel Data and what follows it.
"""

from __future__ import annotations

import functools
import json
import math
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pixels_sql.dicom import fastmeta
from pixels_sql.dicom import meta as meta_module
from pixels_sql.dicom.meta import read_model
from tests.corpus import EXPECTED_UNREADABLE, corpus_files

DCM2JSON = shutil.which("dcm2json")
if DCM2JSON is None:
    raise RuntimeError(
        "dcm2json (Debian's dcmtk) is missing: run `make dicom-tools` (scripts/check-dicom-tools)"
    )

CORPUS = [path for path in corpus_files() if path.name not in EXPECTED_UNREADABLE]

# Files DCMTK cannot convert, with the reason. Each is checked to still fail.
DCMTK_FAILS = {
    "explicit_VR-UN.dcm": "a Specific Character Set value DCMTK cannot convert ('49')",
    "J2K_pixelrep_mismatch.dcm": "a Specific Character Set DCMTK's iconv cannot open",
    "SC_rgb_jpeg.dcm": "a non-standard VR ('  ') that DCMTK's parser rejects",
}
# DCMTK's exit code for "JSON InlineBinary encoding not supported for compressed pixel data".
COMPRESSED_PIXELS_REFUSED = 81
# Pixel Data (7FE0,0010) with undefined length: explicit VR (tag, VR, 2 reserved bytes,
# length) or implicit VR (tag, length); PS3.5 A.4.
ENCAPSULATED_PIXEL_DATA = re.compile(rb"\xe0\x7f\x10\x00(?:O[BW]\x00\x00)?\xff\xff\xff\xff")
PIXEL_DATA_KEY = "7FE00010"
NON_FINITE = re.compile(r"(?<=[\[,])(?:-?inf|nan)(?=[\],])")
NON_FINITE_TEXT = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


@functools.cache
def dcmtk_json(path: Path, scratch: Path) -> tuple[dict[str, Any] | None, bool, str]:
    """dcm2json's JSON of ``path`` (None if it fails), whether it read a cut copy, stderr."""
    completed = subprocess.run(
        [DCM2JSON, "+m", "-fc", str(path)], capture_output=True, text=True, check=False
    )
    cut = False
    if completed.returncode == COMPRESSED_PIXELS_REFUSED:
        data = path.read_bytes()
        found = ENCAPSULATED_PIXEL_DATA.search(data)
        assert found is not None, f"{path.name}: DCMTK refused pixel data we cannot find"
        copy = scratch / path.name
        copy.write_bytes(data[: found.start()])
        completed = subprocess.run(
            [DCM2JSON, "+m", "-fc", str(copy)], capture_output=True, text=True, check=False
        )
        cut = True
    if completed.returncode != 0:
        return None, cut, completed.stderr
    return json.loads(completed.stdout), cut, completed.stderr


def _float32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def _same_number(ours: Any, theirs: Any, vr: str) -> bool:
    if isinstance(ours, bool) or isinstance(theirs, bool):
        return ours == theirs
    if not isinstance(ours, (int, float)) or not isinstance(theirs, (int, float)):
        return ours == theirs
    if vr == "FL":
        return _float32(ours) == _float32(theirs)
    return math.isclose(ours, theirs, rel_tol=1e-15, abs_tol=0.0)


def _person_name(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    groups = {group: text.rstrip("^") for group, text in value.items()}
    return {group: text for group, text in groups.items() if text} or None


def differences(ours: dict[str, Any], theirs: dict[str, Any], where: str = "") -> list[str]:
    """Where the two DICOM JSON objects differ, after the normalisations of the module doc."""
    found: list[str] = []
    for key in sorted(set(ours) | set(theirs)):
        here = f"{where}/{key}"
        if key not in theirs or key not in ours:
            found.append(f"{here}: only in {'ours' if key in ours else 'DCMTK'}")
            continue
        mine, other = ours[key], theirs[key]
        vr = mine.get("vr")
        if other.get("vr") == "UN" and vr != "UN":
            continue
        if vr != other.get("vr"):
            found.append(f"{here}: VR {vr} vs {other.get('vr')}")
            continue
        if {"InlineBinary", "BulkDataURI"} & (set(mine) | set(other)) or key == "00080005":
            continue
        mine_values, other_values = mine.get("Value"), other.get("Value")
        if vr == "PN":
            mine_values = [_person_name(v) for v in mine_values or []] or None
            other_values = [_person_name(v) for v in other_values or []] or None
            if mine_values is not None and not any(mine_values):
                mine_values = None
            if other_values is not None and not any(other_values):
                other_values = None
        elif vr not in ("UI", "SQ") and other_values is not None:
            other_values = [v.rstrip("\x00") if isinstance(v, str) else v for v in other_values]
        if (mine_values is None) != (other_values is None):
            found.append(f"{here}: Value {mine_values!r} vs {other_values!r}")
            continue
        if mine_values is None:
            continue
        if len(mine_values) != len(other_values):
            found.append(f"{here}: {len(mine_values)} values vs {len(other_values)}")
            continue
        for index, (a, b) in enumerate(zip(mine_values, other_values, strict=True)):
            if vr == "SQ":
                found += differences(a, b, f"{here}[{index}]")
            elif not _same_number(a, b, vr):
                found.append(f"{here}[{index}]: {a!r} vs {b!r}")
    return found


@pytest.fixture(params=["compiled", "fast", "general"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(meta_module, "FAST_READER", request.param != "general")
    monkeypatch.setattr(fastmeta, "COMPILED", request.param == "compiled")
    return request.param


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dcmtk")


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_meta_matches_dcm2json(path: Path, reader: str, scratch: Path) -> None:
    theirs, cut, stderr = dcmtk_json(path, scratch)
    if path.name in DCMTK_FAILS:
        assert theirs is None, f"DCMTK now reads {path.name}: take it off DCMTK_FAILS"
        return
    assert theirs is not None, f"dcm2json failed on {path.name}: {stderr}"
    ours = json.loads(meta_module.dumps(read_model(str(path))))
    if cut:
        ours = {key: value for key, value in ours.items() if key < PIXEL_DATA_KEY}
    assert differences(ours, theirs) == []


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
def test_numbers_that_are_no_numbers_stay_text(tmp_path: Path, reader: str, syntax: str) -> None:
    """A DS or IS value that is no number is written as its text, as DCMTK writes it, and the
    file keeps its header (explicit VR: the walk; implicit VR: the general backend)."""
    from tests.corpus import new_dataset

    dataset = new_dataset("1.2.840.10008.5.1.4.1.1.4", syntax)
    dataset.SliceThickness = "7.25"
    dataset.SeriesNumber = "8765"
    dataset.InstanceNumber = "4321"
    dataset.PixelSpacing = ["0.5", "0.75"]
    dataset.SpacingBetweenSlices = "6.25"
    path = tmp_path / "numbers.dcm"
    dataset.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    # Same lengths, so the file stays well formed: only the values' text changes. Each value
    # is found after its own tag (little endian, explicit or implicit VR: the value starts 4
    # bytes after the tag, PS3.5 7.1.2/7.1.3), not by its text: a new random UID may hold it.
    for tag, good, bad in [
        (0x00180050, b"7.25", b"1e  "),
        (0x00200011, b"8765", b" 1x "),
        (0x00200013, b"4321", b"1.5 "),
        (0x00280030, b"0.5\\0.75", b"0.5\\ -- "),
        (0x00180088, b"6.25", b"abc "),
    ]:
        element = re.escape(struct.pack("<HH", tag >> 16, tag & 0xFFFF)) + b".{4}"
        (found,) = re.finditer(element + re.escape(good), data, re.DOTALL)
        data = data[: found.end() - len(good)] + bad + data[found.end() :]
    path.write_bytes(data)

    ours = json.loads(meta_module.dumps(read_model(str(path))))
    assert ours["00180050"]["Value"] == ["1e"]
    assert ours["00200011"]["Value"] == ["1x"]
    assert ours["00200013"]["Value"] == ["1.5"]
    assert ours["00280030"]["Value"] == [0.5, "--"]
    assert ours["00180088"]["Value"] == ["abc"]
    theirs, _cut, stderr = dcmtk_json(path, tmp_path)
    assert theirs is not None, stderr
    assert differences(ours, theirs) == []


def test_empty_values_follow_f25(tmp_path: Path, reader: str) -> None:
    """PS3.18 F.2.5 on values the corpus lacks: empty values among several in every string
    family, an empty attribute, an empty sequence; NaN in FL/FD as strings — as DCMTK writes."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from tests.corpus import new_dataset

    dataset = new_dataset("1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.1.2.1")
    dataset.add_new(0x00080008, "CS", "ORIGINAL \\\\PRIMARY")
    dataset.add_new(0x00100010, "PN", "Doe^John\\\\Roe^Jane")
    dataset.add_new(0x00100020, "LO", "")
    dataset.add_new(0x00101001, "PN", "A\\")
    dataset.add_new(0x00181030, "LO", "bar\\\\foo")
    dataset.add_new(0x00200032, "DS", ["1.5", "", "2"])
    dataset.add_new(0x00201041, "DS", "")
    dataset.add_new(0x00081115, "SQ", Sequence())
    dataset.add_new(0x00081140, "SQ", Sequence([Dataset()]))
    dataset.add_new(0x00189087, "FD", float("nan"))
    dataset.add_new(0x00189089, "FD", [float("inf"), -1.0])
    dataset.add_new(0x00186028, "FL", float("-inf"))
    path = tmp_path / "f25.dcm"
    dataset.save_as(path, enforce_file_format=True)

    ours = json.loads(meta_module.dumps(read_model(str(path))))
    assert ours["00080008"]["Value"] == ["ORIGINAL", None, "PRIMARY"]
    assert ours["00100010"]["Value"] == [
        {"Alphabetic": "Doe^John"},
        None,
        {"Alphabetic": "Roe^Jane"},
    ]
    assert ours["00101001"]["Value"] == [{"Alphabetic": "A"}, None]
    assert ours["00181030"]["Value"] == ["bar", None, "foo"]
    assert ours["00200032"]["Value"] == [1.5, None, 2.0]
    assert ours["00100020"] == {"vr": "LO"}
    assert ours["00201041"] == {"vr": "DS"}
    assert ours["00081115"] == {"vr": "SQ"}
    assert ours["00081140"] == {"vr": "SQ", "Value": [{}]}
    assert ours["00189087"]["Value"] == ["NaN"]
    assert ours["00189089"]["Value"] == ["Infinity", -1.0]
    assert ours["00186028"]["Value"] == ["-Infinity"]
    # DCMTK writes non-finite numbers only with -ee, as bare nan/inf (not JSON): spell them as
    # the strings F.2 implementations use before parsing.
    written = subprocess.run(
        [DCM2JSON, "+m", "-fc", "-ee", str(path)], capture_output=True, text=True, check=True
    ).stdout
    spelled = NON_FINITE.sub(lambda m: f'"{NON_FINITE_TEXT[m.group(0)]}"', written)
    assert differences(ours, json.loads(spelled)) == []
