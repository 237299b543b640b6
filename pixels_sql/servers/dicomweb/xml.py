"""DICOM JSON results as PS3.19's Native DICOM Model (XML), for searches asked for
``multipart/related; type="application/dicom+xml"`` (PS3.18 10.6.3, 8.7.3): one part per
result, the same attributes as the JSON answer (PS3.18 F.2 and PS3.19 A.1 describe one model).

Built with ElementTree, so every value is escaped as XML text, never pasted into markup.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree

from pydicom.datadict import keyword_for_tag

DICOM_XML = "application/dicom+xml"
NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
# A person name group's components, in the order PS3.5 6.2 gives them ('^'-separated).
NAME_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
NAME_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def native_dicom_model(result: Mapping[str, Any]) -> bytes:
    """One data set (DICOM JSON, PS3.18 F.2) as a NativeDicomModel document (PS3.19 A.1).

    >>> native_dicom_model({"00100020": {"vr": "LO", "Value": ["P<1>"]}})[-92:]
    b'keyword="PatientID"><Value number="1">P&lt;1&gt;</Value></DicomAttribute></NativeDicomModel>'
    """
    root = ElementTree.Element("NativeDicomModel", {"xmlns": NAMESPACE, "xml:space": "preserve"})
    _attributes(root, result)
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)


def _attributes(parent: ElementTree.Element, data_set: Mapping[str, Any]) -> None:
    for tag, element in sorted(data_set.items()):
        attributes = {"tag": tag, "vr": element.get("vr", "UN")}
        keyword = keyword_for_tag(int(tag, 16))
        if keyword:
            attributes["keyword"] = keyword
        node = ElementTree.SubElement(parent, "DicomAttribute", attributes)
        if "BulkDataURI" in element:
            ElementTree.SubElement(node, "BulkData", {"uri": _text(element["BulkDataURI"])})
        elif "InlineBinary" in element:
            ElementTree.SubElement(node, "InlineBinary").text = _text(element["InlineBinary"])
        for number, value in enumerate(element.get("Value", ()), start=1):
            _value(node, attributes["vr"], number, value)


def _value(node: ElementTree.Element, vr: str, number: int, value: Any) -> None:
    if vr == "SQ":
        item = ElementTree.SubElement(node, "Item", {"number": str(number)})
        _attributes(item, value or {})
    elif vr == "PN":
        name = ElementTree.SubElement(node, "PersonName", {"number": str(number)})
        for group in NAME_GROUPS:
            text = value.get(group) if isinstance(value, dict) else None
            if text:
                _name_group(ElementTree.SubElement(name, group), text)
    else:
        # A null value of a multi-valued attribute (PS3.18 F.2.5) is an empty Value element.
        text = "" if value is None else _text(value)
        ElementTree.SubElement(node, "Value", {"number": str(number)}).text = text


def _name_group(group: ElementTree.Element, text: str) -> None:
    for component, part in zip(NAME_COMPONENTS, text.split("^"), strict=False):
        if part:
            ElementTree.SubElement(group, component).text = _text(part)


# Characters XML 1.0 cannot hold (2.2 Char): C0 controls but tab, newline and carriage return,
# lone surrogates, U+FFFE and U+FFFF. A header may hold any of them; each becomes U+FFFD.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(value: Any) -> str:
    """A value as XML text: numbers as the DICOM JSON model writes them (PS3.18 F.2.3)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return json.dumps(value)
    return _NOT_XML.sub("\ufffd", str(value))
