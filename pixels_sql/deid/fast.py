"""De-identification on the bytes: the common file (PS3.10, Explicit VR Little Endian or an
encapsulated syntax, a single-byte or UTF-8 character set) walked element by element without
building a pydicom Dataset.

The profile's actions are those of :mod:`pixels_sql.deid.transform` (which handles every other
file): the same table, the same choices, the same pseudonyms, the same marks — a test holds the
two to the same result on the corpus and on the marked files. An element left as it is, a
sequence whose items nothing changed, and the pixel data are copied byte for byte; a changed
element is encoded here (text values, zero-filled binary dummies); a walked sequence whose items
changed is written with undefined lengths (PS3.5 7.5.2), its items too. Anything else (implicit
VR, big endian, deflated, undefined lengths where only a sequence may have one, a character set
of several bytes) returns None: the caller uses the pydicom path.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR, tag_for_keyword

from pixels_sql.deid.pixels import MATCH_KEYS, SIZE_KEYS, PixelPolicy, matching_rule, rules
from pixels_sql.deid.profile import Action, Profile
from pixels_sql.deid.transform import (
    BURNED_IN_ANNOTATION,
    CODE_ATTRIBUTES,
    DUMMY,
    KEEP,
    PATIENT_ID,
    PATIENT_NAME,
    PIXEL_DATA,
    Deidentified,
    DeidError,
    FileRun,
    _file_meta,
    _marks_encoded,
    _shift_date,
    patient_key,
)
from pixels_sql.dicom.encoding import (
    IMPLICIT_OR_BIG_OR_DEFLATED,
    ITEM_DELIMITER_TAG,
    ITEM_TAG,
    LONG_LENGTH_VRS,
    MAX_SEQUENCE_DEPTH,
    SEQUENCE_DELIMITER_TAG,
    UNDEFINED_LENGTH,
)
from pixels_sql.dicom.fastmeta import charset_codec

_SPECIFIC_CHARACTER_SET = 0x00080005
_MATCH_TAGS = {keyword: tag_for_keyword(keyword) for keyword in MATCH_KEYS}
_SIZE_TAGS = {keyword: tag_for_keyword(keyword) for keyword in SIZE_KEYS}
_UID_VALUES = {  # read to key the patient and to check the instance
    "PatientID": 0x00100020,
    "IssuerOfPatientID": 0x00100021,
    "PatientName": PATIENT_NAME,
    "PatientBirthDate": 0x00100030,
    "StudyInstanceUID": 0x0020000D,
    "SOPClassUID": 0x00080016,
    "SOPInstanceUID": 0x00080018,
}
_BINARY_ZEROS = {
    "US": 2,
    "SS": 2,
    "UL": 4,
    "SL": 4,
    "FL": 4,
    "AT": 4,
    "FD": 8,
    "SV": 8,
    "UV": 8,
    "OB": 2,
    "UN": 2,
    "OW": 2,
    "OF": 4,
    "OL": 4,
    "OD": 8,
    "OV": 8,
}


def _known_vr(tag: int) -> bool:
    """Whether PS3.6 gives ``tag`` a VR other than UN (pydicom reads a UN value as that VR)."""
    try:
        return dictionary_VR(tag) != "UN"
    except KeyError:
        return False


class NotHere(Exception):
    """The file needs the pydicom path."""


@dataclass
class _Element:
    tag: int
    vr: bytes
    start: int  # of its header
    value: int  # of its value
    end: int  # after it (after the delimiter of an undefined length)
    items: list[tuple[int, int, int]] | None = None  # sequence items: (start, value, end)


def deidentify_fast(
    data: bytes, profile: Profile, key: bytes, name: str, policy: PixelPolicy
) -> Deidentified | None:
    """The file de-identified as :func:`pixels_sql.deid.transform.deidentify_with_pydicom`
    would, or None when this walk does not handle it."""
    try:
        return _Walk(data, profile, key, name, policy).run()
    except (NotHere, struct.error, IndexError, UnicodeDecodeError):
        return None


class _Walk(FileRun):
    def __init__(
        self, data: bytes, profile: Profile, key: bytes, name: str, policy: PixelPolicy
    ) -> None:
        super().__init__(data, profile, key, name, policy)
        self.codec = "latin_1"

    # -- reading ------------------------------------------------------------------------------

    def _meta(self) -> tuple[str, int]:
        data = self.data
        if len(data) < 144 or data[128:132] != b"DICM":
            raise NotHere
        position, syntax = 132, None
        while position + 8 <= len(data) and data[position : position + 2] == b"\x02\x00":
            element = self._element(position, len(data))
            if element.tag == 0x00020010:
                syntax = data[element.value : element.end].rstrip(b"\0 ").decode("ascii")
            position = element.end
        if syntax is None or syntax in IMPLICIT_OR_BIG_OR_DEFLATED:
            raise NotHere
        return syntax, position

    def _element(self, position: int, end: int) -> _Element:
        data = self.data
        group, number = struct.unpack_from("<HH", data, position)
        tag = group << 16 | number
        vr = data[position + 4 : position + 6]
        if not (vr.isalpha() and vr.isupper()):
            raise NotHere  # not explicit VR here
        if vr in LONG_LENGTH_VRS:
            (length,) = struct.unpack_from("<I", data, position + 8)
            value = position + 12
        else:
            (length,) = struct.unpack_from("<H", data, position + 6)
            value = position + 8
        if length == UNDEFINED_LENGTH:
            if vr == b"SQ":
                items, after = self._items(value, end, undefined=True)
                return _Element(tag, vr, position, value, after, items)
            if tag == PIXEL_DATA:
                return _Element(tag, vr, position, value, self._fragments_end(value, end))
            raise NotHere
        if value + length > end:
            raise NotHere  # ill-formed: the pydicom path gives the reason
        if vr == b"SQ":
            items, _after = self._items(value, value + length, undefined=False)
            return _Element(tag, vr, position, value, value + length, items)
        return _Element(tag, vr, position, value, value + length)

    def _items(self, position: int, end: int, undefined: bool) -> tuple[list, int]:
        data, items = self.data, []
        while position + 8 <= end:
            tag = struct.unpack_from("<I", data, position)[0]
            tag = (tag & 0xFFFF) << 16 | tag >> 16
            (length,) = struct.unpack_from("<I", data, position + 4)
            if tag == SEQUENCE_DELIMITER_TAG:
                return items, position + 8
            if tag != ITEM_TAG:
                raise NotHere
            value = position + 8
            if length == UNDEFINED_LENGTH:
                after = self._dataset_end(value, end)
                items.append((position, value, after))
                position = after
            else:
                items.append((position, value, value + length))
                position = value + length
        if undefined:
            raise NotHere  # ill-formed: the pydicom path gives the reason
        return items, position

    def _dataset_end(self, position: int, end: int) -> int:
        """After the item delimiter closing the item whose elements start at ``position``."""
        data = self.data
        while position + 8 <= end:
            group, number = struct.unpack_from("<HH", data, position)
            if (group << 16 | number) == ITEM_DELIMITER_TAG:
                return position + 8
            position = self._element(position, end).end
        raise NotHere  # ill-formed: the pydicom path gives the reason

    def _fragments_end(self, position: int, end: int) -> int:
        data = self.data
        while position + 8 <= end:
            group, number, length = struct.unpack_from("<HHI", data, position)
            if (group << 16 | number) == SEQUENCE_DELIMITER_TAG:
                return position + 8
            position += 8 + length
        raise NotHere  # ill-formed: the pydicom path gives the reason

    def _elements(self, position: int, end: int, delimited: bool) -> list[_Element]:
        elements = []
        while position + 8 <= end:
            if delimited:
                group, number = struct.unpack_from("<HH", self.data, position)
                if (group << 16 | number) == ITEM_DELIMITER_TAG:
                    break
            element = self._element(position, end)
            elements.append(element)
            position = element.end
        if position != end and not delimited:
            raise NotHere  # bytes after the last element: the pydicom path reads what it can
        return elements

    def _match_values(self, by_tag: dict[int, _Element]) -> dict[str, object]:
        """What the pixel rules match on, as transform.match_values gives it."""
        values: dict[str, object] = {}
        for keyword, tag in _MATCH_TAGS.items():
            element = by_tag.get(tag)
            text = "" if element is None else self.data[element.value : element.end]
            parts = [p.strip(" \0") for p in (text.decode(self.codec) if text else "").split("\\")]
            values[keyword] = parts if keyword == "ImageType" else "\\".join(parts)
        if values["ImageType"] == [""]:
            values["ImageType"] = []
        for keyword, tag in _SIZE_TAGS.items():
            element = by_tag.get(tag)
            values[keyword] = (
                None
                if element is None or element.end - element.value != 2
                else struct.unpack_from("<H", self.data, element.value)[0]
            )
        return values

    def _text(self, element: _Element | None) -> str:
        if element is None:
            return ""
        raw = self.data[element.value : element.end]
        if b"\\" in raw:
            raise NotHere  # several values: pydicom's text of them is its own
        return raw.decode(self.codec).strip(" \0").strip()

    # -- the walk -----------------------------------------------------------------------------

    def run(self) -> Deidentified | None:
        syntax, start = self._meta()
        top = self._elements(start, len(self.data), delimited=False)
        by_tag = {element.tag: element for element in top}
        charset = by_tag.get(_SPECIFIC_CHARACTER_SET)
        codec = charset_codec(self.data[charset.value : charset.end] if charset else b"")
        if codec is None:
            raise NotHere
        self.codec = codec
        if rules() and matching_rule(self._match_values(by_tag)) is not None:
            raise NotHere  # its pixels are cleaned: the pydicom path decodes them
        if self.policy.ocr and PIXEL_DATA in by_tag:
            raise NotHere  # its pixels are read for text: the pydicom path decodes them
        values = {name: self._text(by_tag.get(tag)) for name, tag in _UID_VALUES.items()}
        burned = self._text(by_tag.get(BURNED_IN_ANNOTATION)).upper()
        if not self.policy.allow_burned_in and burned == "YES":
            raise DeidError(
                self.name,
                "burned_in_unhandled",
                "Burned In Annotation is YES and no pixel cleaning covers the image",
            )
        if not values["SOPInstanceUID"] or not values["SOPClassUID"]:
            raise DeidError(
                self.name, "not_an_instance", "no SOP Class UID or SOP Instance UID to replace"
            )
        self.know_patient(patient_key(values))
        marks = _marks_encoded(self.profile, False, True)
        body = self._dataset(top, 0, marks)
        new_uid = self.names.uids.get(values["SOPInstanceUID"], values["SOPInstanceUID"])
        head = _file_meta(values["SOPClassUID"], new_uid, syntax)
        return Deidentified(
            data=head + b"".join(body),
            sop_instance_uid=new_uid,
            original_sop_instance_uid=values["SOPInstanceUID"],
            patient=self.patient,
            patient_id=self.names.patient_id(self.patient),
            shift_days=self.shift,
            uids=dict(self.names.uids),
        )

    def _dataset(
        self,
        elements: list[_Element],
        depth: int,
        marks: dict[int, bytes] | None = None,
        dummy_codes: bool = False,
    ) -> list[bytes]:
        if depth > MAX_SEQUENCE_DEPTH:
            raise DeidError(
                self.name, "too_deep", f"sequences nested deeper than {MAX_SEQUENCE_DEPTH}"
            )
        out: list[tuple[int, bytes]] = []
        private = []
        for element in elements:
            tag = element.tag
            group, number = tag >> 16, tag & 0xFFFF
            if number == 0 or group == 0x0002 or (marks and tag in marks):
                continue
            if group % 2:
                private.append(element)
            elif 0x5000 <= group <= 0x60FF and (group & 0xFF00) in (0x5000, 0x6000):
                continue
            elif dummy_codes and tag in CODE_ATTRIBUTES:
                vr = element.vr.decode()
                out.append((tag, self._encode(tag, vr, DUMMY.get(vr))))
            else:
                action = self.actions.get(f"{tag:08X}", KEEP)
                encoded = self._act(element, action, depth)
                if encoded is not None:
                    out.append((tag, encoded))
        if private:
            out.extend(self._private(private, depth))
        if marks:
            out.extend(marks.items())
        out.sort(key=lambda pair: pair[0])
        return [encoded for _tag, encoded in out]

    def _act(self, element: _Element, action: Action, depth: int) -> bytes | None:
        code, tag, vr = action.code, element.tag, element.vr.decode()
        data = self.data
        if code == "X":
            return None
        if vr == "UN" and code != "K" and _known_vr(tag):
            raise NotHere  # pydicom reads it with its dictionary VR: left to that path
        if element.items is not None:  # a sequence
            if code == "Z" and action.table == "Z":
                return self._encode(tag, "SQ", b"")
            return self._sequence(element, depth, dummy_codes=code == "D")
        if code == "K":
            return data[element.start : element.end]
        if code == "C":
            if self.modified_dates and vr == "TM":
                return data[element.start : element.end]
            if self.modified_dates and vr in ("DA", "DT"):
                text = data[element.value : element.end].decode("ascii").strip(" \0")
                try:
                    shifted = [_shift_date(item, vr, self.shift or 0) for item in text.split("\\")]
                except ValueError:
                    shifted = None
                if shifted is not None:
                    return self._encode(tag, vr, "\\".join(shifted) if text else "")
            return self._act(element, Action(action.basic, action.basic, action.table), depth)
        if code == "U" or (code == "D" and vr == "UI"):
            text = data[element.value : element.end].decode("ascii").strip(" \0")
            if code == "U" and vr != "UI" and not text.replace(".", "").replace("\\", "").isdigit():
                raise NotHere  # a UID in another VR: left to the pydicom path
            mapped = [self.names.uid(uid) for uid in text.split("\\")] if text else []
            return self._encode(tag, vr, "\\".join(mapped))
        if code == "Z":
            if tag == PATIENT_NAME and depth == 0:
                return self._encode(tag, vr, self.names.patient_name(self.patient))
            return self._encode(tag, vr, "")
        if code == "D":
            if tag == PATIENT_ID and depth == 0:
                return self._encode(tag, vr, self.names.patient_id(self.patient))
            return self._encode(tag, vr, DUMMY.get(vr))
        raise NotHere  # a code this walk does not know

    def _sequence(self, element: _Element, depth: int, dummy_codes: bool) -> bytes:
        """The sequence with the profile applied inside its items: the original bytes when no
        item changed, else undefined lengths throughout."""
        data = self.data
        items = []
        changed = False
        for start, value, end in element.items or []:
            delimited = data[start + 4 : start + 8] == b"\xff\xff\xff\xff"
            inner_end = end - 8 if delimited else end
            elements = self._elements(value, inner_end, delimited=False)
            encoded = b"".join(self._dataset(elements, depth + 1, dummy_codes=dummy_codes))
            changed = changed or encoded != data[value:inner_end]
            items.append(encoded)
        if not changed:
            return data[element.start : element.end]
        parts = [
            struct.pack(
                "<HH2sHI", element.tag >> 16, element.tag & 0xFFFF, b"SQ", 0, UNDEFINED_LENGTH
            )
        ]
        for encoded in items:
            parts.append(struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED_LENGTH) + encoded)
            parts.append(struct.pack("<HHI", 0xFFFE, 0xE00D, 0))
        parts.append(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
        return b"".join(parts)

    def _private(self, elements: list[_Element], depth: int) -> list[tuple[int, bytes]]:
        data = self.data
        creators: dict[int, tuple[str, _Element]] = {}
        for element in elements:
            if 0x0010 <= element.tag & 0xFFFF <= 0x00FF:
                text = data[element.value : element.end].decode(self.codec).strip(" \0").strip()
                creators[element.tag] = (text, element)
        kept: list[tuple[int, bytes]] = []
        blocks: set[int] = set()
        for element in elements:
            number = element.tag & 0xFFFF
            if number <= 0x00FF:
                continue
            group = element.tag >> 16
            creator_tag = group << 16 | number >> 8
            creator = creators.get(creator_tag, ("", None))[0]
            if (creator, group, number & 0xFF) in self.safe_private:
                blocks.add(creator_tag)
                if element.items is not None:
                    kept.append((element.tag, self._sequence(element, depth, False)))
                else:
                    kept.append((element.tag, data[element.start : element.end]))
        for tag in blocks:
            creator_element = creators[tag][1]
            kept.append((tag, data[creator_element.start : creator_element.end]))
        return kept

    # -- writing ------------------------------------------------------------------------------

    def _encode(self, tag: int, vr: str, value: object) -> bytes:
        """One element, Explicit VR Little Endian: ``value`` text (padded to even length, UI
        with NUL, PS3.5 6.2), None or empty (zero length), a binary VR's zeros, or the bytes
        of a sequence's items."""
        if isinstance(value, bytes):
            raw = value
        elif value is None or value == "":
            raw = b""
        elif isinstance(value, int | float) and vr in _BINARY_ZEROS:
            raw = b"\0" * _BINARY_ZEROS[vr]  # DUMMY's numbers are zeros
        else:
            raw = str(value).encode("ascii")
            if len(raw) % 2:
                raw += b"\0" if vr == "UI" else b" "
        group, number = tag >> 16, tag & 0xFFFF
        if vr.encode() in LONG_LENGTH_VRS:
            return struct.pack("<HH2sHI", group, number, vr.encode(), 0, len(raw)) + raw
        if len(raw) > 0xFFFF:
            raise NotHere
        return struct.pack("<HH2sH", group, number, vr.encode(), len(raw)) + raw
