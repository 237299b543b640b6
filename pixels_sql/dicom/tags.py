"""Find attributes in DICOM JSON by keyword or tag, and the PS3.6 data dictionary as rows."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, NamedTuple

from pydicom.datadict import DicomDictionary, tag_for_keyword

_HEX_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_PAREN_TAG = re.compile(r"^\(\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)$")
_PLAIN_PAIR = re.compile(r"^([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})$")


class UnknownKeyError(ValueError):
    """A key that is neither a PS3.6 keyword nor a tag in one of the accepted spellings."""


@lru_cache(maxsize=4096)
def normalise_key(key: str) -> str:
    """Return the DICOM JSON key (8 upper-case hex digits) for a keyword or tag spelling.

    Accepted: ``'PatientName'``, ``'00100010'``, ``'(0010,0010)'``, ``'0010,0010'``.

    >>> normalise_key('PatientName'), normalise_key('(0010,0010)'), normalise_key('0010,0010')
    ('00100010', '00100010', '00100010')
    """
    text = key.strip()
    if _HEX_TAG.match(text):
        return text.upper()
    match = _PAREN_TAG.match(text) or _PLAIN_PAIR.match(text)
    if match:
        return (match.group(1) + match.group(2)).upper()
    tag = tag_for_keyword(text)
    if tag is None:
        raise UnknownKeyError(
            f"unknown DICOM attribute {key!r}: use a PS3.6 keyword such as 'PatientName', "
            "or a tag as '00100010' or '(0010,0010)'"
        )
    return f"{tag:08X}"


def _scalar(value: Any) -> str | None:
    """One DICOM JSON value as text; PN gives its Alphabetic group (PS3.18 F.2.2)."""
    if value is None:
        return None
    if isinstance(value, dict):
        alphabetic = value.get("Alphabetic")
        return None if alphabetic is None else str(alphabetic)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def tag_values(meta: dict[str, Any] | None, key: str) -> list[str | None] | None:
    """All values of an attribute as text, or None when the attribute is absent.

    Sequences give each item as its DICOM JSON text; binary values give their InlineBinary or
    BulkDataURI.
    """
    if meta is None:
        return None
    element = meta.get(normalise_key(key))
    if not isinstance(element, dict):
        return None
    if "Value" in element:
        values = element["Value"]
        if element.get("vr") == "SQ":
            return [json.dumps(item, separators=(",", ":")) for item in values]
        return [_scalar(value) for value in values]
    for binary in ("InlineBinary", "BulkDataURI"):
        if binary in element:
            return [str(element[binary])]
    return []


def tag_value(meta: dict[str, Any] | None, key: str) -> str | None:
    """The first value of an attribute as text (PN → Alphabetic), None when absent or empty."""
    values = tag_values(meta, key)
    return values[0] if values else None


class DictionaryEntry(NamedTuple):
    """One row of the PS3.6 data dictionary view."""

    tag: str
    json_key: str
    keyword: str
    name: str
    vr: str
    vm: str
    retired: bool


def dictionary_entries() -> list[DictionaryEntry]:
    """The PS3.6 data dictionary as pydicom ships it, ordered by tag.

    Repeating groups (e.g. overlays, 60xx) are listed once by their first group.
    """
    rows = [
        DictionaryEntry(
            tag=f"({tag >> 16:04X},{tag & 0xFFFF:04X})",
            json_key=f"{tag:08X}",
            keyword=keyword,
            name=name,
            vr=vr,
            vm=vm,
            retired=retired == "Retired",
        )
        for tag, (vr, vm, name, retired, keyword) in DicomDictionary.items()
    ]
    return sorted(rows, key=lambda row: row.tag)
