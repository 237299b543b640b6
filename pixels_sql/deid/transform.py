"""De-identify one DICOM file: PS3.15 Annex E applied to every data set in it, written as a new
PS3.10 file.

The actions of :class:`~pixels_sql.deid.profile.Profile` are applied to the top-level data set
and to every item of every sequence kept, at any depth (PS3.15 E.1.1: the profile applies to
attributes "wherever they occur"). Attributes the table does not list are kept, except:

- private attributes (odd groups): removed, unless Retain Safe Private keeps those Table
  E.3.10-1 lists for their private creator (PS3.15 E.3.10);
- curves (groups 50xx) and overlays (groups 60xx): removed whole — the table removes their data
  and comments, and an overlay plane without its data is not a valid one (PS3.3 C.9.2);
- group lengths (gggg,0000): removed, as they would no longer be right (PS3.5 7.2);
- the preamble: zeroed (it may hold another format's header, PS3.10 7.5);
- the File Meta Information: made anew (PS3.10 7.1) with the new SOP Instance UID.

Then Patient Identity Removed (0012,0062) = YES, De-identification Method (0012,0063) and its
Code Sequence (0012,0064) with the CID 7050 codes of the profile and options, and Longitudinal
Temporal Information Modified (0028,0303). Values not touched are written as they were read,
byte for byte (pydicom writes unconverted elements unchanged), and so is the pixel data.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import io
import struct
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.pixels import pack_bits
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from pixels_sql.deid.keys import Pseudonyms
from pixels_sql.deid.ocr import TextRegion, text_in_pixels
from pixels_sql.deid.pixels import (
    MATCH_KEYS,
    OCR_SOURCE,
    SIZE_KEYS,
    CleanedRegion,
    DecodedImage,
    PixelPolicy,
    black_value,
    blackout,
    matching_rule,
)
from pixels_sql.deid.profile import Action, Profile
from pixels_sql.dicom.encoding import LONG_LENGTH_VRS, MAX_SEQUENCE_DEPTH, UNDEFINED_LENGTH
from pixels_sql.dicom.meta import read_pydicom_file, transfer_syntax
from pixels_sql.dicom.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION
from pixels_sql.errors import DicomReadError, classify

PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
BURNED_IN_ANNOTATION = 0x00280301
PIXEL_DATA = 0x7FE00010
KEEP = Action("K", "K", "K")
# The Code Sequence Macro's value and meaning (PS3.3 Table 8.8-1): Code Value, Code Meaning,
# Long Code Value, URN Code Value.
CODE_ATTRIBUTES = (0x00080100, 0x00080104, 0x00080119, 0x00080120)

# A dummy value per VR (PS3.15 E.1.1 D: "a non-zero length value that may be a dummy value and
# consistent with the VR").
DUMMY: dict[str, Any] = {
    "AE": "ANONYMOUS",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "UC": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "PN": "ANONYMIZED",
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "UV": 0,
    "SV": 0,
    "FL": 0.0,
    "FD": 0.0,
    "UR": "ANONYMIZED",
    "AT": 0,
    # Binary: zeros, one value of the VR's width (PS3.5 Table 6.2-1)
    "OB": b"\0\0",
    "UN": b"\0\0",
    "OW": b"\0\0",
    "OF": b"\0" * 4,
    "OL": b"\0" * 4,
    "OD": b"\0" * 8,
    "OV": b"\0" * 8,
}
TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "TM", "DS", "IS", "LO", "LT", "SH", "ST", "UC", "UT", "UR"}
    | {"PN", "UI"}
)


class DeidError(DicomReadError):
    """A file that cannot be de-identified; ``reason`` is one of errors.REASONS."""


@dataclass
class Deidentified:
    """The new file's bytes and what the mapping database keeps about it."""

    data: bytes
    sop_instance_uid: str
    original_sop_instance_uid: str
    patient: str  # the original patient key (PatientID and issuer, or a stand-in)
    patient_id: str  # its pseudonym
    shift_days: int | None  # None: dates were not shifted
    uids: dict[str, str] = field(default_factory=dict)  # original -> new, every UID replaced
    cleaned_regions: list[CleanedRegion] = field(default_factory=list)  # pixels blacked out


def deidentify_with_pydicom(
    data: bytes, profile: Profile, key: bytes, name: str, policy: PixelPolicy
) -> Deidentified:
    """De-identify the PS3.10 file (or bare data set) ``data`` through a pydicom Dataset (any
    encoding pydicom reads), as :func:`pixels_sql.deid.files.deidentify` for every file the
    byte walk (:func:`pixels_sql.deid.fast.deidentify_fast`, the same arguments) does not
    handle; raise :class:`DicomReadError` with a reason for a file that is not one, or
    ``burned_in_unhandled`` for an image whose Burned In Annotation is YES and whose text no
    rule or OCR cleans (unless ``policy.allow_burned_in``)."""
    return _with_dataset(
        data, name, lambda dataset: _Transform(dataset, data, profile, key, name, policy).run()
    )


def _with_dataset(data: bytes, name: str, action: Callable[[Dataset], Any]) -> Any:
    """``action`` on the data set pydicom reads from ``data`` (its value checks off, its
    warnings quiet); any failure is the file's reason (:class:`DicomReadError`), not a crash."""
    try:
        with warnings.catch_warnings(), _no_value_validation():
            warnings.simplefilter("ignore")
            return action(read_pydicom_file(name, io.BytesIO(data), len(data)))
    except DicomReadError:
        raise
    except Exception as error:  # the file's bytes, not our code: a reason, not a crash
        raise classify(name, error) from None


def decoded_image(dataset: Dataset, name: str, cleaner: str) -> DecodedImage:
    """The image's pixels as pydicom decodes them (a copy to write into), and how to read
    them; ``undecodable`` naming the ``cleaner`` that needed them when they do not decode."""
    try:
        pixels = dataset.pixel_array.copy()
    except Exception as error:
        raise DeidError(
            name, "undecodable", f"{cleaner}: its pixels do not decode: {error}"
        ) from None
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if samples == 3 and photometric.startswith("YBR"):
        photometric = "RGB"  # pydicom's pixel_array converts YCbCr to RGB
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    return DecodedImage(pixels, frames, samples, photometric)


def burned_in_text(data: bytes, name: str = "<bytes>") -> list[TextRegion]:
    """The burned-in text OCR finds in the image of the PS3.10 file ``data`` (ocr.py);
    :class:`DicomReadError` with a reason for a file that is not an image that decodes."""

    def read(dataset: Dataset) -> list[TextRegion]:
        if PIXEL_DATA not in dataset:
            raise DeidError(name, "no_pixel_data", "the data set has no Pixel Data")
        return text_in_pixels(decoded_image(dataset, name, "OCR"), name)

    return _with_dataset(data, name, read)


@contextlib.contextmanager
def _no_value_validation() -> Iterator[None]:
    """pydicom checks every value it reads or is given against its VR's rules (40% of the
    time here): values read are copied as they are, values set are this module's own."""
    settings = pydicom.config.settings
    before = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = before


class FileRun:
    """One file's de-identification as both paths (this module's and fast.py's) start it: the
    profile's actions, the keyed pseudonyms, the file's name for messages."""

    def __init__(
        self, data: bytes, profile: Profile, key: bytes, name: str, policy: PixelPolicy
    ) -> None:
        self.data = data
        self.profile = profile
        self.actions = profile.actions()
        self.safe_private = profile.safe_private()
        self.names = Pseudonyms(key)
        self.name = name
        self.policy = policy
        self.modified_dates = "retain_longitudinal_modified_dates" in profile.options
        self.patient = ""
        self.shift: int | None = None

    def know_patient(self, patient: str) -> None:
        """The file's patient (:func:`patient_key`), and so its date shift."""
        self.patient = patient
        self.shift = self.names.shift_days(patient) if self.modified_dates else None


class _Transform(FileRun):
    def __init__(
        self,
        dataset: Dataset,
        data: bytes,
        profile: Profile,
        key: bytes,
        name: str,
        policy: PixelPolicy,
    ) -> None:
        super().__init__(data, profile, key, name, policy)
        self.dataset = dataset
        self.know_patient(_patient_key(dataset))
        # A data set encoded other than its file meta says (seen in the wild, pydicom reads it
        # as it finds it) is written as the file meta says: elements read without a VR get one.
        self.explicit = not transfer_syntax(dataset).is_implicit_VR

    def run(self) -> Deidentified:
        dataset = self.dataset
        rule = matching_rule(match_values(dataset))
        cleaned: list[CleanedRegion] = []
        if rule is not None:
            image = decoded_image(dataset, self.name, rule.name)
            cleaned = [CleanedRegion(r.x, r.y, r.width, r.height, rule.name) for r in rule.regions]
        elif self.policy.ocr and PIXEL_DATA in dataset:
            image = decoded_image(dataset, self.name, "OCR")
            found = text_in_pixels(image, self.name)
            cleaned = [CleanedRegion(t.x, t.y, t.width, t.height, OCR_SOURCE) for t in found]
        if cleaned:
            self._clean_pixels(dataset, image, cleaned)
        elif (
            not self.policy.allow_burned_in
            and str(dataset.get("BurnedInAnnotation", "")).strip().upper() == "YES"
        ):
            raise DeidError(
                self.name,
                "burned_in_unhandled",
                "Burned In Annotation is YES and no pixel cleaning covers the image"
                + (" (OCR found no text)" if self.policy.ocr else ""),
            )
        original_sop = str(dataset.get("SOPInstanceUID", "") or "").strip()
        if not original_sop or not str(dataset.get("SOPClassUID", "") or "").strip():
            raise DeidError(
                self.name, "not_an_instance", "no SOP Class UID or SOP Instance UID to replace"
            )
        self._apply(dataset, 0)
        return Deidentified(
            data=_serialise(dataset, self.data, self.profile, bool(cleaned)),
            sop_instance_uid=str(dataset.get("SOPInstanceUID", "")),
            original_sop_instance_uid=original_sop,
            patient=self.patient,
            patient_id=self.names.patient_id(self.patient),
            shift_days=self.shift,
            uids=dict(self.names.uids),
            cleaned_regions=cleaned,
        )

    def _clean_pixels(
        self, dataset: Dataset, image: DecodedImage, regions: list[CleanedRegion]
    ) -> None:
        """Clean Pixel Data: ``regions`` black in every frame, the image written uncompressed
        (pixels.py) in the byte order the rest of the data set was read in: a big endian file
        (PS3.5 A.3, retired) stays big endian, as its other binary values (palettes, LUTs) are
        copied as read; any other is written little endian, in its own syntax when that is
        native, else Explicit VR Little Endian."""
        pixels, samples, photometric = image.pixels, image.samples, image.photometric
        bits_allocated = int(dataset.get("BitsAllocated", 8))
        bits_stored = int(dataset.get("BitsStored", bits_allocated))
        signed = int(dataset.get("PixelRepresentation", 0) or 0) == 1
        blackout(pixels, regions, black_value(photometric, bits_stored, signed), image.frames)
        syntax = transfer_syntax(dataset)
        if syntax.is_little_endian:
            native = not (syntax.is_compressed or syntax.is_deflated)
            output_syntax = syntax if native else ExplicitVRLittleEndian
        else:
            output_syntax = syntax
        if bits_allocated == 1:  # stored packed, 8 pixels a byte (PS3.5 8.1.1)
            dataset.PixelData = pack_bits(pixels)
        else:
            order = "<" if syntax.is_little_endian else ">"
            dataset.PixelData = pixels.astype(pixels.dtype.newbyteorder(order)).tobytes()
        element = dataset["PixelData"]
        element.VR = "OW" if pixels.dtype.itemsize > 1 else "OB"
        element.is_undefined_length = False  # native now, not encapsulated
        dataset.PhotometricInterpretation = photometric
        if samples > 1:
            dataset.PlanarConfiguration = 0
        for tag in (0x7FE00001, 0x7FE00002):  # offset tables of encapsulated frames only
            if tag in dataset:
                del dataset[tag]
        dataset.file_meta.TransferSyntaxUID = output_syntax
        dataset.BurnedInAnnotation = "NO"

    # -- the walk ---------------------------------------------------------------------------

    def _apply(self, dataset: Dataset, depth: int) -> None:
        if depth > MAX_SEQUENCE_DEPTH:
            raise DeidError(
                self.name, "too_deep", f"sequences nested deeper than {MAX_SEQUENCE_DEPTH}"
            )
        private: list[int] = []
        for tag in list(dataset.keys()):
            group, element = tag >> 16, tag & 0xFFFF
            if element == 0 or group == 0x0002:
                del dataset[tag]  # group lengths; a file meta element inside the data set
            elif group % 2:
                private.append(tag)
            elif 0x5000 <= group <= 0x60FF and (group & 0xFF00) in (0x5000, 0x6000):
                del dataset[tag]  # curves and overlays
            else:
                self._act(dataset, tag, self.actions.get(f"{tag:08X}", KEEP), depth)
        if private:
            self._private(dataset, private, depth)

    def _act(self, dataset: Dataset, tag: int, action: Action, depth: int) -> None:
        code = action.code
        if code == "X":
            del dataset[tag]
            return
        if code == "K" and not _may_be_sequence(dataset, tag):
            if self.explicit and dataset.get_item(tag).VR is None:
                dataset[tag]  # read implicit, written explicit: it needs its VR
            return  # kept as read: not even converted
        if code in ("Z", "D", "U") and self._replace_unread(dataset, tag, code, depth):
            return
        if code == "C" and self._clean_unread(dataset, tag, action, depth):
            return
        element = dataset[tag]
        if element.VR == "SQ":
            if code == "Z" and action.table == "Z":
                element.value = Sequence()
                return
            for item in element.value:  # the profile inside (see profile.py)
                if code == "D":
                    _dummy_codes(item)
                self._apply(item, depth + 1)
            return
        if code == "C":
            if self._clean(element):
                return
            self._act(dataset, tag, Action(action.basic, action.basic, action.table), depth)
            return
        if code == "U" or (code == "D" and element.VR == "UI"):
            element.value = _map_values(element.value, self.names.uid)
        elif code == "Z":
            element.value = (
                self.names.patient_name(self.patient) if tag == PATIENT_NAME and depth == 0 else ""
            )
            if element.VR not in TEXT_VRS:
                element.value = None
        elif code == "D":
            if tag == PATIENT_ID and depth == 0:
                element.value = self.names.patient_id(self.patient)
            else:
                element.value = DUMMY.get(element.VR)

    def _replace_unread(self, dataset: Dataset, tag: int, code: str, depth: int) -> bool:
        """Z, D or U on a value still as read: the new element made from the raw one's VR and
        (for a UID) its bytes, without pydicom converting the old value first. False when the
        VR is not plain (a sequence, an ambiguous or unknown one): the caller converts."""
        raw = dataset.get_item(tag)
        if not isinstance(raw, RawDataElement):
            return False
        vr = raw.VR or _dictionary_vr(tag)
        if vr is None or vr == "SQ" or (code == "U" and vr != "UI"):
            return False
        if code == "U" or (code == "D" and vr == "UI"):
            text = (raw.value or b"").decode("ascii", "replace").rstrip("\0 ")
            values = [self.names.uid(uid) for uid in text.split("\\")] if text else []
            value: Any = values[0] if len(values) == 1 else values
        elif code == "Z":
            is_name = tag == PATIENT_NAME and depth == 0
            value = self.names.patient_name(self.patient) if is_name else None
        elif tag == PATIENT_ID and depth == 0:
            value = self.names.patient_id(self.patient)
        else:
            value = DUMMY.get(vr)
        dataset[tag] = DataElement(tag, vr, value)
        return True

    def _clean_unread(self, dataset: Dataset, tag: int, action: Action, depth: int) -> bool:
        """C on a value still as read, as :meth:`_clean` does it, without converting it first;
        False when the caller must convert it (a sequence, an unknown VR)."""
        raw = dataset.get_item(tag)
        if not isinstance(raw, RawDataElement):
            return False
        vr = raw.VR or _dictionary_vr(tag)
        if vr is None or vr == "SQ":
            return False
        if self.modified_dates and vr == "TM":
            return True  # kept as read
        if self.modified_dates and vr in ("DA", "DT"):
            text = (raw.value or b"").decode("ascii", "replace").strip("\0 ")
            try:
                values = [_shift_date(item, vr, self.shift or 0) for item in text.split("\\")]
            except ValueError:
                values = None
            if values is not None:
                dataset[tag] = DataElement(tag, vr, values[0] if len(values) == 1 else values)
                return True
        self._act(dataset, tag, Action(action.basic, action.basic, action.table), depth)
        return True

    def _clean(self, element: DataElement) -> bool:
        """Clean ``element`` in place where the transform can (dates with Modified Dates; a
        time of day stays as it is when dates move by whole days); False: give it the Basic
        Profile's action."""
        if not self.modified_dates or self.shift is None:
            return False
        if element.VR == "TM":
            return True
        if element.VR not in ("DA", "DT"):
            return False
        shift = self.shift
        try:
            element.value = _map_values(
                element.value, lambda text: _shift_date(text, element.VR, shift)
            )
        except ValueError:
            return False
        return True

    def _private(self, dataset: Dataset, tags: list[int], depth: int) -> None:
        kept_blocks: set[int] = set()
        creators: dict[int, str] = {}
        for tag in tags:
            if 0x0010 <= (tag & 0xFFFF) <= 0x00FF:
                value = dataset[tag].value
                creators[tag] = str(value).strip() if isinstance(value, str) else ""
        for tag in tags:
            element = tag & 0xFFFF
            if 0x0010 <= element <= 0x00FF:
                continue
            group = tag >> 16
            creator_tag = (group << 16) | (element >> 8)
            creator = creators.get(creator_tag)
            if element > 0x00FF and (creator, group, element & 0xFF) in self.safe_private:
                kept_blocks.add(creator_tag)
                if _may_be_sequence(dataset, tag) and dataset[tag].VR == "SQ":
                    for item in dataset[tag].value:
                        self._apply(item, depth + 1)
            else:
                del dataset[tag]
        for tag in creators:
            if tag not in kept_blocks:
                del dataset[tag]

    # -- what the file says about its de-identification --------------------------------------


def match_values(dataset: Dataset) -> dict[str, Any]:
    """What the pixel rules match on (pixels.MATCH_KEYS as text, ImageType as its values;
    Rows and Columns as numbers)."""
    values: dict[str, Any] = {key: str(dataset.get(key, "") or "") for key in MATCH_KEYS}
    image_type = dataset.get("ImageType")
    values["ImageType"] = (
        []
        if image_type is None
        else [str(v) for v in image_type]
        if not isinstance(image_type, str)
        else [image_type]
    )
    for key in SIZE_KEYS:
        value = dataset.get(key)
        values[key] = None if value is None else int(value)
    return values


def _mark(dataset: Dataset, profile: Profile, cleaned: bool = False) -> None:
    """What the file says about its de-identification (PS3.15 E.1.1, E.3.6): Patient Identity
    Removed, De-identification Method and its Code Sequence (CID 7050), Longitudinal Temporal
    Information Modified."""
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = f"PS3.15 {profile.edition} Basic Profile"[:64]
    items = Sequence()
    for option in profile.method_options(cleaned):
        code = getattr(codes.DCM, option.code_keyword)
        item = Dataset()
        item.CodeValue = code.value
        item.CodingSchemeDesignator = code.scheme_designator
        item.CodeMeaning = code.meaning
        items.append(item)
    dataset.DeidentificationMethodCodeSequence = items
    if "retain_longitudinal_modified_dates" in profile.options:
        dataset.LongitudinalTemporalInformationModified = "MODIFIED"
    elif "retain_longitudinal_full_dates" in profile.options:
        dataset.LongitudinalTemporalInformationModified = "UNMODIFIED"
    else:
        dataset.LongitudinalTemporalInformationModified = "REMOVED"


@functools.lru_cache(maxsize=64)
def _marks_encoded(
    profile: Profile, implicit: bool, little: bool, cleaned: bool = False
) -> dict[int, bytes]:
    """:func:`_mark`'s elements encoded, once per profile and encoding: the same in every file
    (the code sequence alone is a third of a small file's writing)."""
    marks = Dataset()
    _mark(marks, profile, cleaned)
    encoded = {}
    for tag in marks.keys():  # noqa: SIM118 (tags)
        out = DicomBytesIO()
        out.is_implicit_VR, out.is_little_endian = implicit, little
        write_data_element(out, marks[tag])
        encoded[int(tag)] = out.getvalue()
    return encoded


# -- writing ---------------------------------------------------------------------------------


def _serialise(dataset: Dataset, data: bytes, profile: Profile, cleaned: bool) -> bytes:
    """The PS3.10 file of ``dataset`` with :func:`_mark`'s elements: a zero preamble, new File
    Meta Information, then each top-level element — copied from ``data`` when the walk left it
    as read (most of a header and the pixel data: no re-encoding), encoded when it changed. A
    data set read in another encoding than its syntax says, or deflated, is written by pydicom
    whole."""
    syntax = transfer_syntax(dataset)
    implicit, little = dataset.original_encoding
    if syntax.is_deflated or (implicit, little) != (syntax.is_implicit_VR, syntax.is_little_endian):
        _mark(dataset, profile, cleaned)
        return _pydicom_file(dataset, syntax)
    marks = _marks_encoded(profile, implicit, little, cleaned)
    sop_class, sop_instance = dataset.get("SOPClassUID", ""), dataset.get("SOPInstanceUID", "")
    parts = [_file_meta(str(sop_class), str(sop_instance), syntax)]
    for tag in sorted({*dataset.keys(), *marks}):
        if tag in marks:
            parts.append(marks[tag])
            continue
        raw = dataset.get_item(tag)
        if (
            isinstance(raw, RawDataElement)
            and raw.length != UNDEFINED_LENGTH
            and (implicit or raw.VR is not None)
        ):
            header = 8 if implicit or raw.VR.encode() not in LONG_LENGTH_VRS else 12
            parts.append(data[raw.value_tell - header : raw.value_tell + raw.length])
            continue
        element = dataset[tag]
        text = _encoded_text(element, implicit, little)
        if text is not None:
            parts.append(text)
            continue
        encoded = DicomBytesIO()
        encoded.is_implicit_VR, encoded.is_little_endian = implicit, little
        write_data_element(encoded, element)
        parts.append(encoded.getvalue())
    return b"".join(parts)


TEXT_HEADER_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UI"}
)


def _encoded_text(element: DataElement, implicit: bool, little: bool) -> bytes | None:
    """The element's encoding when its value is this module's own: None, or ASCII ``str``
    values of a text VR (PS3.5 6.2: padded to even length, UI with NUL, the rest with a space).
    None otherwise (pydicom encodes it)."""
    vr, value = element.VR, element.value
    if vr not in TEXT_HEADER_VRS:
        return None
    if value is None or value == "":
        text = b""
    elif type(value) is str:
        text = value.encode("ascii", "strict") if value.isascii() else None
    elif type(value) is list and all(type(item) is str and item.isascii() for item in value):
        text = "\\".join(value).encode("ascii")
    else:
        return None
    if text is None or len(text) > 0xFFFE:
        return None
    if len(text) % 2:
        text += b"\0" if vr == "UI" else b" "
    group, number = element.tag >> 16, element.tag & 0xFFFF
    if implicit:
        return struct.pack("<HHI", group, number, len(text)) + text
    order = "<" if little else ">"
    return struct.pack(f"{order}HH2sH", group, number, vr.encode(), len(text)) + text


def _pydicom_file(dataset: Dataset, syntax: str) -> bytes:
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.get("SOPClassUID", "")
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.get("SOPInstanceUID", "")
    dataset.file_meta.TransferSyntaxUID = syntax
    dataset.file_meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    dataset.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    dataset.preamble = b"\0" * 128
    out = io.BytesIO()
    pydicom.dcmwrite(out, dataset, enforce_file_format=True)
    return out.getvalue()


def _file_meta(sop_class: str, sop_instance: str, syntax: str) -> bytes:
    """Preamble, prefix and File Meta Information (PS3.10 7.1): explicit VR little endian."""

    def element(element_number: int, vr: str, value: bytes) -> bytes:
        if vr == "OB":
            return struct.pack("<HH2sHI", 2, element_number, b"OB", 0, len(value)) + value
        return struct.pack("<HH2sH", 2, element_number, vr.encode(), len(value)) + value

    def uid(text: str) -> bytes:
        value = text.encode("ascii")
        return value + b"\0" * (len(value) % 2)

    version = IMPLEMENTATION_VERSION.encode("ascii")
    group = b"".join(
        [
            element(0x0001, "OB", b"\0\1"),
            element(0x0002, "UI", uid(sop_class)),
            element(0x0003, "UI", uid(sop_instance)),
            element(0x0010, "UI", uid(str(syntax))),
            element(0x0012, "UI", uid(IMPLEMENTATION_CLASS_UID)),
            element(0x0013, "SH", version + b" " * (len(version) % 2)),
        ]
    )
    length = struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(group))
    return b"\0" * 128 + b"DICM" + length + group


def _dummy_codes(item: Dataset) -> None:
    """An item of a sequence replaced by a dummy: its code (PS3.3 Table 8.8-1) says nothing."""
    for tag in CODE_ATTRIBUTES:
        if tag in item:
            element = item[tag]
            element.value = DUMMY.get(element.VR)


PATIENT_KEY_ATTRIBUTES = (
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "StudyInstanceUID",
)


def patient_key(values: Mapping[str, str]) -> str:
    """Who the file is about, as a stable text, from the stripped values of
    :data:`PATIENT_KEY_ATTRIBUTES`: Patient ID with its issuer (PS3.3 C.7.1.1); without an ID,
    name and birth date; without those, the study (its own pseudonymous patient)."""
    patient_id = values.get("PatientID", "")
    if patient_id:
        return f"id\0{patient_id}\0{values.get('IssuerOfPatientID', '')}"
    name, birth = values.get("PatientName", ""), values.get("PatientBirthDate", "")
    if name or birth:
        return f"name\0{name}\0{birth}"
    return f"study\0{values.get('StudyInstanceUID', '')}"


def _patient_key(dataset: Dataset) -> str:
    return patient_key(
        {name: str(dataset.get(name, "") or "").strip() for name in PATIENT_KEY_ATTRIBUTES}
    )


def _may_be_sequence(dataset: Dataset, tag: int) -> bool:
    raw = dataset.get_item(tag)
    vr = raw.VR if isinstance(raw, RawDataElement | DataElement) else None
    if vr == "SQ":
        return True
    if vr is None and isinstance(raw, RawDataElement) and raw.length == UNDEFINED_LENGTH:
        return True  # implicit VR, undefined length: only a sequence can be (PS3.5 7.5.1)
    if vr not in (None, "UN"):
        return False
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False


def _dictionary_vr(tag: int) -> str | None:
    """The one VR PS3.6 gives ``tag``, or None (unknown, private, or "US or SS")."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    return None if " " in vr else vr


def _map_values(value: Any, function: Callable[[str], str]) -> Any:
    if value is None or value == "":
        return value
    if isinstance(value, bytes):
        return function(value.decode("ascii", "replace").strip("\0 ")).encode("ascii")
    if isinstance(value, str):
        return function(value)
    return [function(str(item)) for item in value]


def _shift_date(text: str, vr: str, days: int) -> str:
    """``text`` (DA ``YYYYMMDD`` or DT ``YYYYMMDD...``) moved back by ``days``; a DT keeps its
    time and offset; a partial date (``YYYY``, ``YYYYMM``) cannot move by days: ValueError."""
    text = text.strip()
    if not text:
        return text
    if len(text) < 8 or not text[:8].isdigit():
        raise ValueError(f"{vr} {text!r} has no full date")
    moved = dt.datetime.strptime(text[:8], "%Y%m%d").date() - dt.timedelta(days=days)
    return f"{moved.year:04d}{moved.month:02d}{moved.day:02d}" + (text[8:] if vr == "DT" else "")
