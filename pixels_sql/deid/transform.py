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

import datetime as dt
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes

from pixels_sql.deid.keys import Pseudonyms
from pixels_sql.deid.profile import Action, Profile
from pixels_sql.dicom.meta import read_pydicom_file, transfer_syntax
from pixels_sql.dicom.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION
from pixels_sql.errors import DicomReadError, classify

PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
ISSUER_OF_PATIENT_ID = 0x00100021
PATIENT_BIRTH_DATE = 0x00100030
STUDY_INSTANCE_UID = 0x0020000D
BURNED_IN_ANNOTATION = 0x00280301
PIXEL_DATA = 0x7FE00010
MAX_DEPTH = 32
UNDEFINED_LENGTH = 0xFFFFFFFF
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


def deidentify(
    data: bytes,
    profile: Profile,
    key: bytes,
    *,
    name: str = "<bytes>",
    allow_burned_in: bool = False,
) -> Deidentified:
    """De-identify the PS3.10 file (or bare data set) ``data``; raise :class:`DicomReadError`
    with a reason for a file that is not one, or ``burned_in_unhandled`` for an image whose
    Burned In Annotation is YES (unless ``allow_burned_in``)."""
    if not data:
        raise DeidError(name, "empty", "the file has zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = read_pydicom_file(name, io.BytesIO(data), len(data))
            return _Transform(dataset, profile, key, name, allow_burned_in).run()
    except DicomReadError:
        raise
    except Exception as error:  # the file's bytes, not our code: a reason, not a crash
        raise classify(name, error) from None


class _Transform:
    def __init__(
        self, dataset: Dataset, profile: Profile, key: bytes, name: str, allow_burned_in: bool
    ) -> None:
        self.dataset = dataset
        self.profile = profile
        self.actions = profile.actions()
        self.safe_private = profile.safe_private()
        self.names = Pseudonyms(key)
        self.name = name
        self.allow_burned_in = allow_burned_in
        self.patient = _patient_key(dataset)
        self.modified_dates = "retain_longitudinal_modified_dates" in profile.options
        self.shift = self.names.shift_days(self.patient) if self.modified_dates else None
        # A data set encoded other than its file meta says (seen in the wild, pydicom reads it
        # as it finds it) is written as the file meta says: elements read without a VR get one.
        self.explicit = not transfer_syntax(dataset).is_implicit_VR

    def run(self) -> Deidentified:
        dataset = self.dataset
        if (
            not self.allow_burned_in
            and str(dataset.get("BurnedInAnnotation", "")).strip().upper() == "YES"
        ):
            raise DeidError(
                self.name,
                "burned_in_unhandled",
                "Burned In Annotation is YES and no pixel cleaning covers the image",
            )
        original_sop = str(dataset.get("SOPInstanceUID", "") or "").strip()
        if not original_sop or not str(dataset.get("SOPClassUID", "") or "").strip():
            raise DeidError(
                self.name, "not_an_instance", "no SOP Class UID or SOP Instance UID to replace"
            )
        self._apply(dataset, 0)
        self._mark(dataset)
        syntax = transfer_syntax(dataset)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = dataset.get("SOPClassUID", "")
        meta.MediaStorageSOPInstanceUID = dataset.get("SOPInstanceUID", "")
        meta.TransferSyntaxUID = syntax
        meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION
        dataset.file_meta = meta
        dataset.preamble = b"\0" * 128
        out = io.BytesIO()
        pydicom.dcmwrite(out, dataset, enforce_file_format=True)
        return Deidentified(
            data=out.getvalue(),
            sop_instance_uid=str(dataset.get("SOPInstanceUID", "")),
            original_sop_instance_uid=original_sop,
            patient=self.patient,
            patient_id=self.names.patient_id(self.patient),
            shift_days=self.shift,
            uids=dict(self.names.uids),
        )

    # -- the walk ---------------------------------------------------------------------------

    def _apply(self, dataset: Dataset, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise DeidError(self.name, "too_deep", f"sequences nested deeper than {MAX_DEPTH}")
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

    def _mark(self, dataset: Dataset) -> None:
        dataset.PatientIdentityRemoved = "YES"
        dataset.DeidentificationMethod = f"PS3.15 {self.profile.edition} Basic Profile"[:64]
        items = Sequence()
        for option in self.profile.method_options():
            code = getattr(codes.DCM, option.code_keyword)
            item = Dataset()
            item.CodeValue = code.value
            item.CodingSchemeDesignator = code.scheme_designator
            item.CodeMeaning = code.meaning
            items.append(item)
        dataset.DeidentificationMethodCodeSequence = items
        if self.modified_dates:
            dataset.LongitudinalTemporalInformationModified = "MODIFIED"
        elif "retain_longitudinal_full_dates" in self.profile.options:
            dataset.LongitudinalTemporalInformationModified = "UNMODIFIED"
        else:
            dataset.LongitudinalTemporalInformationModified = "REMOVED"


def _dummy_codes(item: Dataset) -> None:
    """An item of a sequence replaced by a dummy: its code (PS3.3 Table 8.8-1) says nothing."""
    for tag in CODE_ATTRIBUTES:
        if tag in item:
            element = item[tag]
            element.value = DUMMY.get(element.VR)


def _patient_key(dataset: Dataset) -> str:
    """Who the file is about, as a stable text: Patient ID with its issuer (PS3.3 C.7.1.1);
    without an ID, name and birth date; without those, the study (its own pseudonymous
    patient)."""
    patient_id = str(dataset.get("PatientID", "") or "").strip()
    if patient_id:
        return f"id\0{patient_id}\0{str(dataset.get('IssuerOfPatientID', '') or '').strip()}"
    name = str(dataset.get("PatientName", "") or "").strip()
    birth = str(dataset.get("PatientBirthDate", "") or "").strip()
    if name or birth:
        return f"name\0{name}\0{birth}"
    return f"study\0{str(dataset.get('StudyInstanceUID', '') or '').strip()}"


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
