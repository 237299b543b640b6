"""Files with a unique marker in every attribute of PS3.15 Table E.1-1 (tests/test_deid.py).

From a corpus template, every attribute the table names by a tag gets a marker value its VR
allows, at the top level and again inside items nested one and two levels deep in a sequence
the table does not name (so it is kept and walked); each sequence the table names gets an item
with a marked UID reference and a marked identifying attribute. Private attributes (one block
of a made-up creator, one safe attribute of Table E.3.10-1), a curve, an overlay, the File Meta
Information and the preamble get markers too.

A text or byte marker is unique in the whole file and appears nowhere else, so finding which
markers a de-identified file still holds is a byte search (:func:`surviving`).
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pixels_sql.deid.standard import PRIVATE_TAG, read_profile, read_safe_private

# A sequence the table does not name: kept, so the walk must go inside it.
CONTAINER = 0x00081115  # Referenced Series Sequence
ITEM_IDENTIFIER = 0x00101040  # Patient's Address (X): the identifying attribute in items
ITEM_REFERENCE = 0x00081155  # Referenced SOP Instance UID (U)
MARKER_CREATOR = "PIXELS SQL MARKERS"
DATE_BASE = {0: dt.date(1600, 1, 1), 1: dt.date(1700, 1, 1), 2: dt.date(1800, 1, 1)}
# Tags a data set cannot hold (command group) or that the file meta holds.
SKIPPED_GROUPS = (0x0000, 0x0002)
TEXT_VRS = {"AE", "CS", "SH", "LO", "LT", "ST", "UT", "UC", "PN", "UR"}
BYTE_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}


@dataclass
class Marker:
    """One marked attribute: where it is, its VR and the value written."""

    tag: int
    depth: int
    vr: str
    value: object
    text: bytes | None  # what a byte search finds; None: a binary number
    parent: int | None = None  # the table sequence whose item holds it


@dataclass
class MarkedFile:
    data: bytes
    markers: list[Marker] = field(default_factory=list)
    private_markers: dict[str, bytes] = field(default_factory=dict)  # what -> marker bytes
    safe_private: tuple[str, int, int] = ("", 0, 0)  # (creator, group, element byte) used

    def top(self) -> dict[int, Marker]:
        return {marker.tag: marker for marker in self.markers if marker.depth == 0}


def _vr(tag: int, name: str) -> str:
    try:
        vr = dictionary_VR(tag)
    except KeyError:  # newer than pydicom's dictionary
        return "SQ" if name.endswith("Sequence") else "LO"
    return vr.split(" or ")[0]


def _value(vr: str, index: int, depth: int) -> tuple[object, bytes | None]:
    prefix = "MKLM"[depth] + "K"
    if vr in TEXT_VRS:
        text = f"{prefix}{index:04d}"
        return text, text.encode()
    if vr == "DA":
        text = (DATE_BASE[depth] + dt.timedelta(days=index)).strftime("%Y%m%d")
        return text, text.encode()
    if vr == "DT":
        text = (DATE_BASE[depth] + dt.timedelta(days=index)).strftime("%Y%m%d") + "121314"
        return text, text.encode()
    if vr == "TM":
        text = f"23595{depth}.{index:06d}"
        return text, text.encode()
    if vr in ("IS", "DS"):
        text = f"9{depth}{index:09d}"
        return text, text.encode()
    if vr == "UI":
        text = f"1.2.999.77.{depth + 1}.{10000 + index}"
        return text, text.encode()
    if vr == "AS":
        return f"{index % 1000:03d}D", None
    if vr in BYTE_VRS:
        raw = f"{prefix}B{index:05d}".encode()
        return raw, raw
    if vr in ("US", "SS"):
        return 1000 + index, None
    if vr in ("UL", "SL", "SV", "UV"):
        return 100_000 + index, None
    if vr in ("FL", "FD"):
        return float(100_000 + index), None
    if vr == "AT":
        return 0x00100010, None
    raise ValueError(f"no marker for VR {vr}")


def _sequence_item(index: int, depth: int, parent: int) -> tuple[Dataset, list[Marker]]:
    item = Dataset()
    uid = f"1.2.999.78.{depth + 1}.{10000 + index}"
    text = f"MS{depth}{index:04d}"
    item.add_new(ITEM_REFERENCE, "UI", uid)
    item.add_new(ITEM_IDENTIFIER, "LO", text)
    markers = [
        Marker(ITEM_REFERENCE, depth + 1, "UI", uid, uid.encode(), parent),
        Marker(ITEM_IDENTIFIER, depth + 1, "LO", text, text.encode(), parent),
    ]
    return item, markers


def _mark(dataset: Dataset, depth: int, markers: list[Marker]) -> None:
    for index, row in enumerate(read_profile()):
        if row.tag == PRIVATE_TAG or "x" in row.tag:
            continue
        tag = int(row.tag, 16)
        if tag >> 16 in SKIPPED_GROUPS or tag == CONTAINER:
            continue
        vr = _vr(tag, row.name)
        if vr == "SQ":
            item, inside = _sequence_item(index, depth, tag)
            dataset.add_new(tag, "SQ", Sequence([item]))
            markers.append(Marker(tag, depth, "SQ", None, None))
            markers.extend(inside)
            continue
        value, text = _value(vr, index, depth)
        dataset.add_new(tag, vr, value)
        markers.append(Marker(tag, depth, vr, value, text))


def marked_file(template: Path) -> MarkedFile:
    """The template with every marker (see the module docstring), as PS3.10 bytes."""
    dataset = pydicom.dcmread(template)
    markers: list[Marker] = []
    _mark(dataset, 0, markers)
    # Nested: the container's item holds every marker again, and a container one level deeper.
    outer, inner = Dataset(), Dataset()
    _mark(outer, 1, markers)
    _mark(inner, 2, markers)
    outer.add_new(CONTAINER, "SQ", Sequence([inner]))
    dataset.add_new(CONTAINER, "SQ", Sequence([outer]))
    # Private: a made-up creator's block, and one attribute Table E.3.10-1 calls safe.
    private: dict[str, bytes] = {}
    dataset.add_new(0x00090010, "LO", MARKER_CREATOR)
    dataset.add_new(0x00091001, "LO", "MP0001")
    dataset.add_new(0x00091002, "OB", b"MPB00002")
    private["made-up text"] = b"MP0001"
    private["made-up bytes"] = b"MPB00002"
    creator, group, element = _safe_text_attribute()
    dataset.add_new((group << 16) | 0x0011, "LO", creator)
    dataset.add_new((group << 16) | 0x1100 | element, "LO", "MQ0001")
    private["safe"] = b"MQ0001"
    # Curves and overlays (groups 50xx, 60xx), the file meta and the preamble.
    dataset.add_new(0x50003000, "OB", b"MCV00001")
    dataset.add_new(0x60003000, "OW", b"MOV00001")
    dataset.add_new(0x60004000, "LT", "MO0002")
    private["curve"], private["overlay"], private["overlay comment"] = (
        b"MCV00001",
        b"MOV00001",
        b"MO0002",
    )
    dataset.file_meta.SourceApplicationEntityTitle = "MF0001"
    dataset.file_meta.PrivateInformationCreatorUID = "1.2.999.79.1"
    dataset.file_meta.PrivateInformation = b"MFB00002"
    private["file meta AE"], private["file meta UID"] = b"MF0001", b"1.2.999.79.1"
    private["file meta bytes"] = b"MFB00002"
    dataset.preamble = b"MPREAMBLE1".ljust(128, b"\0")
    private["preamble"] = b"MPREAMBLE1"
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return MarkedFile(out.getvalue(), markers, private, (creator, group, element))


def _safe_text_attribute() -> tuple[str, int, int]:
    for row in read_safe_private():
        if row.vr in ("LO", "SH", "CS") and row.element[:4] != "0009":
            return row.creator, int(row.element[:4], 16), int(row.element[6:], 16)
    raise AssertionError("Table E.3.10-1 has no text attribute outside group 0009")


def surviving(data: bytes, texts: list[bytes]) -> set[bytes]:
    """Which of ``texts`` the bytes ``data`` still hold."""
    return {text for text in texts if text in data}
