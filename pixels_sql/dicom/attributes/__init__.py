"""The attribute registry: every DICOM attribute pixels-sql names, and what each one is to it.

One record per attribute (:class:`Attribute`, in :data:`ATTRIBUTES` by keyword): its tag, VR and
VM as PS3.6 gives them, its information level (PS3.3's patient / study / series / instance), and
its roles here — a promoted column of ``object_catalog`` (:data:`CATALOG_COLUMNS`: name, SQL type,
position), a QIDO-RS matching key and the kind of matching it takes, a DICOMweb index column, an
attribute of QIDO-RS results. Everything that lists these attributes comes from here: the
Python consumers import the registry, and the checked-in SQL, dbt and Markdown files hold
regions generated from it (``python -m pixels_sql.dicom.attributes --write``; ``--check``,
run by tests/test_attributes.py, fails when one differs). Any attribute the registry does not
name is looked up in the PS3.6 dictionary (pydicom's datadict): :func:`by_tag` does both.

Pure Python: no Spark import, so the DICOM layer and the generator run without a JVM.

>>> ATTRIBUTES["StudyDate"].column.sql_type, ATTRIBUTES["StudyDate"].level
('DATE', 'study')
>>> by_tag(0x00180060).keyword, by_tag(0x00180060).vr  # KVP: from the PS3.6 dictionary
('KVP', 'DS')
>>> sql_type("DS", multiple=True), sql_type("PN", multiple=False)
('ARRAY<STRING>', 'STRUCT<Alphabetic: STRING, Ideographic: STRING, Phonetic: STRING>')
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from pydicom.datadict import dictionary_has_tag, get_entry, tag_for_keyword

# --- SQL types by VR -------------------------------------------------------------------------
#
# As BigQuery's DICOM export types its columns (and the typed header table, dicom/typed.py):
# text VRs are strings; DS and IS stay text too (a DS such as "1.50" or " 7" is text in the
# file, PS3.5 6.2, and a value that is not a number must not be lost), with a numeric twin
# (NUMERIC_TWIN_TYPES_BY_VR); TM is kept as text: Spark 4.3 has a TIME type but refuses it
# unless spark.sql.timeType.enabled is set (UNSUPPORTED_TIME_TYPE, off by default), and a TM
# may be a partial value ("14", "1430", PS3.5 6.2 Table 6.2-1) that a TIME would not tell from
# "14:00:00"; binary VRs (OB, OW, UN, ...) hold a BulkDataURI or InlineBinary text (PS3.18
# F.2.6-F.2.7), never the bytes. A sequence's type depends on its items' attributes:
# :func:`sequence_type`.
PERSON_NAME_TYPE: Final = "STRUCT<Alphabetic: STRING, Ideographic: STRING, Phonetic: STRING>"
SQL_TYPES_BY_VR: dict[str, str] = {
    "AE": "STRING",
    "AS": "STRING",
    "CS": "STRING",
    "LO": "STRING",
    "LT": "STRING",
    "SH": "STRING",
    "ST": "STRING",
    "UC": "STRING",
    "UI": "STRING",
    "UR": "STRING",
    "UT": "STRING",
    "DS": "STRING",
    "IS": "STRING",
    "DA": "DATE",
    "TM": "STRING",
    "DT": "TIMESTAMP",
    "FL": "DOUBLE",
    "FD": "DOUBLE",
    "SS": "BIGINT",
    "US": "BIGINT",
    "SL": "BIGINT",
    "UL": "BIGINT",
    "SV": "BIGINT",
    "UV": "BIGINT",
    "AT": "BIGINT",
    "PN": PERSON_NAME_TYPE,
    "OB": "STRING",
    "OD": "STRING",
    "OF": "STRING",
    "OL": "STRING",
    "OV": "STRING",
    "OW": "STRING",
    "UN": "STRING",
}
# The typed twin of the numbers kept as text: DS is a decimal, IS an integer (PS3.5 6.2).
NUMERIC_TWIN_TYPES_BY_VR: dict[str, str] = {"DS": "DOUBLE", "IS": "BIGINT"}
SEQUENCE_VR: Final = "SQ"


class UnknownVRError(ValueError):
    """A VR that PS3.5 Table 6.2-1 does not define."""


def _base_vr(vr: str) -> str:
    # PS3.6 lists a few attributes with alternative VRs ("US or SS", "OB or OW"); pydicom
    # spells them "US or SS". The first one types the column: each alternative of a pair has
    # the same SQL type (BIGINT for US/SS, STRING for the binary ones).
    return vr.split(" or ")[0].strip()


def sql_type(vr: str, multiple: bool) -> str:
    """The SQL type of an attribute of ``vr``; ``multiple`` (VM above 1): an ARRAY of it.

    >>> sql_type("US", False), sql_type("FD", True), sql_type("US or SS", False)
    ('BIGINT', 'ARRAY<DOUBLE>', 'BIGINT')
    """
    base = _base_vr(vr)
    if base == SEQUENCE_VR:
        raise ValueError("a sequence's SQL type depends on its items: use sequence_type(fields)")
    try:
        single = SQL_TYPES_BY_VR[base]
    except KeyError:
        raise UnknownVRError(f"unknown VR {vr!r} (PS3.5 Table 6.2-1)") from None
    return f"ARRAY<{single}>" if multiple else single


def sequence_type(fields: Iterable[tuple[str, str]]) -> str:
    """The SQL type of a sequence (SQ) whose items hold ``fields`` (name, SQL type): an ARRAY of
    STRUCTs, one per item (PS3.5 7.5).

    >>> sequence_type([("CodeValue", "STRING"), ("ReferencedFrameNumber", "ARRAY<STRING>")])
    'ARRAY<STRUCT<CodeValue: STRING, ReferencedFrameNumber: ARRAY<STRING>>>'
    """
    inner = ", ".join(f"{name}: {kind}" for name, kind in fields)
    return f"ARRAY<STRUCT<{inner}>>"


def is_multiple(vm: str) -> bool:
    """Whether a PS3.6 value multiplicity allows more than one value ("1" does not; "2",
    "1-n", "3-3n" do).

    >>> is_multiple("1"), is_multiple("1-n"), is_multiple("2"), is_multiple("1-3")
    (False, True, True, True)
    """
    return vm.strip() != "1"


# --- Roles -----------------------------------------------------------------------------------

Level = Literal["patient", "study", "series", "instance"]
LEVELS: tuple[Level, ...] = ("patient", "study", "series", "instance")
QidoLevel = Literal["study", "series", "instance"]
QIDO_LEVELS: tuple[QidoLevel, ...] = ("study", "series", "instance")

# How a QIDO-RS matching key's values are matched (PS3.4 C.2.2.2): servers/dicomweb/query.py
# turns each into its match kinds.
# Every kind but UID_MATCH also takes a list of values, any of which matches (C.2.2.2.8).
STRING_MATCH: Final = "string"  # exact, or with * and ? wildcards (C.2.2.2.1, .4)
PN_MATCH: Final = "pn"  # person name: wildcard, case-insensitive (C.2.2.2.1, .4)
DATE_MATCH: Final = "date"  # a date or a range of them (C.2.2.2.5)
TIME_MATCH: Final = "time"  # a time or a range of them (C.2.2.2.5)
NUMBER_MATCH: Final = "number"  # IS: equal as integers, no wildcards (C.2.2.2.1, .4)
UID_MATCH: Final = "uid"  # a list of UIDs (C.2.2.2.2)
MODALITIES_MATCH: Final = "modalities"  # ModalitiesInStudy: any series' Modality matches
MATCH_KINDS = (
    STRING_MATCH,
    PN_MATCH,
    DATE_MATCH,
    TIME_MATCH,
    NUMBER_MATCH,
    UID_MATCH,
    MODALITIES_MATCH,
)


@dataclass(frozen=True)
class CatalogColumn:
    """A column of ``object_catalog``, in table order: a file's own column, a promoted
    attribute (``attribute``: its keyword; the column has the keyword's name) or a status
    column."""

    name: str
    sql_type: str
    description: str
    attribute: str | None = None

    @property
    def position(self) -> int:
        """Its 0-based position in ``object_catalog``."""
        return CATALOG_COLUMN_NAMES.index(self.name)


@dataclass(frozen=True)
class Qido:
    """An attribute's part in QIDO-RS (PS3.18 10.6): the ``level`` whose results carry it
    (Tables 10.6.3-3 to -5; a study's results carry the patient's attributes too), ``match``:
    how it is matched as a key (one of MATCH_KINDS; None: returned, not matched),
    ``computed``: made by the service (counts, ModalitiesInStudy, RetrieveURL), not read from
    a header; ``sequence``: the keyword of the sequence whose items hold it (a key matched by
    sequence matching, PS3.4 C.2.2.2.6, written ``Sequence.Keyword`` in a query, PS3.18
    8.3.4.1; results carry the whole sequence)."""

    level: QidoLevel
    match: str | None = None
    computed: bool = False
    sequence: str | None = None

    @property
    def nested(self) -> bool:
        return self.sequence is not None


@dataclass(frozen=True)
class IndexColumn:
    """A column of the DICOMweb index (servers/dicomweb/index.py): its ``level``'s table
    (studies, series, instances) and the column's name there."""

    level: QidoLevel
    name: str


@dataclass(frozen=True)
class Attribute:
    """A DICOM attribute pixels-sql names. ``column`` is its promoted ``object_catalog`` column
    (None: read it from ``meta``), ``qido`` its part in QIDO-RS, ``index`` its DICOMweb index
    column, ``view_type`` its column's type in dbt's ``instance_attributes`` view (None:
    none)."""

    keyword: str
    tag: int
    vr: str
    vm: str
    level: Level
    column: CatalogColumn | None = None
    qido: Qido | None = None
    index: IndexColumn | None = None
    view_type: str | None = None

    @property
    def hex(self) -> str:
        """The DICOM JSON key: 8 upper-case hex digits (PS3.18 F.2.1)."""
        return f"{self.tag:08X}"

    @property
    def tag_text(self) -> str:
        """``(gggg,eeee)``, as PS3.6 writes a tag."""
        return f"({self.tag >> 16:04X},{self.tag & 0xFFFF:04X})"

    @property
    def multiple(self) -> bool:
        return is_multiple(self.vm)

    @property
    def sql_type(self) -> str:
        """Its type in the typed header table (BigQuery's export mapping); the promoted column's
        own type is ``column.sql_type``."""
        return sql_type(self.vr, self.multiple)


# --- The data --------------------------------------------------------------------------------
#
# keyword, tag, VR, VM (PS3.6; tests/test_attributes.py checks them against pydicom's
# dictionary), information level: the PS3.3 module the attribute belongs to (Patient,
# General Study / Patient Study, General Series / General Equipment, the image and SOP Common
# modules); the File Meta Information's TransferSyntaxUID (PS3.10 7.1) describes one instance.
_ATTRIBUTES: tuple[tuple[str, int, str, str, Level], ...] = (
    ("TransferSyntaxUID", 0x00020010, "UI", "1", "instance"),
    ("SpecificCharacterSet", 0x00080005, "CS", "1-n", "instance"),
    ("ImageType", 0x00080008, "CS", "2-n", "instance"),
    ("SOPClassUID", 0x00080016, "UI", "1", "instance"),
    ("SOPInstanceUID", 0x00080018, "UI", "1", "instance"),
    ("StudyDate", 0x00080020, "DA", "1", "study"),
    ("SeriesDate", 0x00080021, "DA", "1", "series"),
    ("StudyTime", 0x00080030, "TM", "1", "study"),
    ("SeriesTime", 0x00080031, "TM", "1", "series"),
    ("AccessionNumber", 0x00080050, "SH", "1", "study"),
    ("InstanceAvailability", 0x00080056, "CS", "1", "instance"),
    ("Modality", 0x00080060, "CS", "1", "series"),
    ("ModalitiesInStudy", 0x00080061, "CS", "1-n", "study"),
    ("Manufacturer", 0x00080070, "LO", "1", "series"),
    ("InstitutionName", 0x00080080, "LO", "1", "series"),
    ("ReferringPhysicianName", 0x00080090, "PN", "1", "study"),
    ("TimezoneOffsetFromUTC", 0x00080201, "SH", "1", "instance"),
    ("StudyDescription", 0x00081030, "LO", "1", "study"),
    ("SeriesDescription", 0x0008103E, "LO", "1", "series"),
    ("ManufacturerModelName", 0x00081090, "LO", "1", "series"),
    ("RetrieveURL", 0x00081190, "UR", "1", "instance"),
    ("AvailableTransferSyntaxUID", 0x00083002, "UI", "1-n", "instance"),
    ("PatientName", 0x00100010, "PN", "1", "patient"),
    ("PatientID", 0x00100020, "LO", "1", "patient"),
    ("PatientBirthDate", 0x00100030, "DA", "1", "patient"),
    ("PatientSex", 0x00100040, "CS", "1", "patient"),
    ("PatientAge", 0x00101010, "AS", "1", "study"),
    ("BodyPartExamined", 0x00180015, "CS", "1", "series"),
    ("SliceThickness", 0x00180050, "DS", "1", "instance"),
    ("KVP", 0x00180060, "DS", "1", "instance"),
    ("StudyInstanceUID", 0x0020000D, "UI", "1", "study"),
    ("SeriesInstanceUID", 0x0020000E, "UI", "1", "series"),
    ("StudyID", 0x00200010, "SH", "1", "study"),
    ("SeriesNumber", 0x00200011, "IS", "1", "series"),
    ("InstanceNumber", 0x00200013, "IS", "1", "instance"),
    ("NumberOfStudyRelatedSeries", 0x00201206, "IS", "1", "study"),
    ("NumberOfStudyRelatedInstances", 0x00201208, "IS", "1", "study"),
    ("NumberOfSeriesRelatedInstances", 0x00201209, "IS", "1", "series"),
    ("SamplesPerPixel", 0x00280002, "US", "1", "instance"),
    ("PhotometricInterpretation", 0x00280004, "CS", "1", "instance"),
    ("NumberOfFrames", 0x00280008, "IS", "1", "instance"),
    ("Rows", 0x00280010, "US", "1", "instance"),
    ("Columns", 0x00280011, "US", "1", "instance"),
    ("PixelSpacing", 0x00280030, "DS", "2", "instance"),
    ("BitsAllocated", 0x00280100, "US", "1", "instance"),
    ("BitsStored", 0x00280101, "US", "1", "instance"),
    ("ScheduledProcedureStepID", 0x00400009, "SH", "1", "series"),
    ("PerformedProcedureStepStartDate", 0x00400244, "DA", "1", "series"),
    ("PerformedProcedureStepStartTime", 0x00400245, "TM", "1", "series"),
    ("RequestAttributesSequence", 0x00400275, "SQ", "1", "series"),
    ("RequestedProcedureID", 0x00401001, "SH", "1", "series"),
)

# object_catalog's columns in table order (a public contract: names, types and order never
# change; a new column goes last before the partition column ingest_run, and into
# tables.ADDED_COLUMNS for the tables made before it). The
# promoted attributes' types are the catalog's own, not sql_type(): StudyDate a DATE, the IS
# and US numbers INT, PatientName the Alphabetic group as text (PS3.18 F.2.2).
_FILE_COLUMNS = (
    CatalogColumn("rowId", "BIGINT", "`xxhash64(path)`: stable across runs"),
    CatalogColumn("path", "STRING", "the file's path as Spark lists it (`file:/…`)"),
    CatalogColumn("modificationTime", "TIMESTAMP", "as listed"),
    CatalogColumn("length", "BIGINT", "bytes"),
    CatalogColumn("relative_path", "STRING", "relative to `${path}`"),
    CatalogColumn("local_path", "STRING", "operating-system path the Python functions open"),
    CatalogColumn("extension", "STRING", "lower-case characters after the last dot ('' if none)"),
    CatalogColumn("path_tags", "ARRAY<STRING>", "the path split on `/ \\ . _ -` and spaces"),
    CatalogColumn("meta", "VARIANT", "the DICOM JSON of `dicom_meta`; NULL for a failed file"),
)
_PROMOTED: tuple[tuple[str, str, str], ...] = (
    ("StudyInstanceUID", "STRING", ""),
    ("SeriesInstanceUID", "STRING", ""),
    ("SOPInstanceUID", "STRING", ""),
    ("SOPClassUID", "STRING", ""),
    ("TransferSyntaxUID", "STRING", ""),
    ("PatientID", "STRING", ""),
    ("PatientName", "STRING", ", Alphabetic group"),
    ("AccessionNumber", "STRING", ""),
    ("Modality", "STRING", ""),
    ("BodyPartExamined", "STRING", ""),
    ("Manufacturer", "STRING", ""),
    ("StudyDate", "DATE", "; NULL when not a valid `YYYYMMDD`"),
    ("StudyDescription", "STRING", ""),
    ("SeriesDescription", "STRING", ""),
    ("SeriesNumber", "INT", ""),
    ("InstanceNumber", "INT", ""),
    ("Rows", "INT", ""),
    ("Columns", "INT", ""),
    ("NumberOfFrames", "INT", ""),
)
_STATUS_COLUMNS = (
    CatalogColumn(
        "meta_error_reason",
        "STRING",
        "reason code when the header could not be read (see `dicom_meta_error`)",
    ),
    CatalogColumn(
        "meta_error_message",
        "STRING",
        "the detail; with `meta_error_reason` NULL, a warning about a header that was read"
        " (`trailing_bytes: …`, see `dicom_meta_result`)",
    ),
    CatalogColumn("ingested_at", "TIMESTAMP", "when the file was read"),
    CatalogColumn(
        "deleted_at", "TIMESTAMP", "when a run found the file gone; NULL: present at the last run"
    ),
    CatalogColumn(
        "meta_json_version",
        "INT",
        "the version of `dicom_meta`'s JSON in `meta` (2 now); an older one is re-read by the"
        " next run",
    ),
    CatalogColumn(
        "ingest_run",
        "STRING",
        "partition: the run that wrote the row (`yyyyMMddHHmmssSSS`, `-failed` for failed"
        " files, `-deleted` for deletions)",
    ),
)

# dbt's instance_attributes view (dbt/models/instance_attributes.sql): more attributes of each
# instance, read from meta when queried, in its column order, with the column's type (an
# ARRAY<STRING>: every value, as text).
_VIEW_COLUMNS: tuple[tuple[str, str], ...] = (
    ("PatientSex", "STRING"),
    ("PatientAge", "STRING"),
    ("ManufacturerModelName", "STRING"),
    ("ImageType", "ARRAY<STRING>"),
    ("PhotometricInterpretation", "STRING"),
    ("BitsStored", "INT"),
    ("SliceThickness", "DOUBLE"),
    ("PixelSpacing", "ARRAY<STRING>"),
)

# QIDO-RS: keyword -> its part. The matching keys are those PS3.18 Table 10.6.1-5 requires of a
# service plus a few people filter on; the results carry the attributes of Tables 10.6.3-3 to
# -5. servers/dicomweb/query.py and index.py read this.
_QIDO: dict[str, Qido] = {
    "SpecificCharacterSet": Qido("study"),
    "StudyDate": Qido("study", DATE_MATCH),
    "StudyTime": Qido("study", TIME_MATCH),
    "AccessionNumber": Qido("study", STRING_MATCH),
    "ModalitiesInStudy": Qido("study", MODALITIES_MATCH, computed=True),
    "ReferringPhysicianName": Qido("study", PN_MATCH),
    "TimezoneOffsetFromUTC": Qido("study"),
    "StudyDescription": Qido("study", STRING_MATCH),
    "PatientName": Qido("study", PN_MATCH),
    "PatientID": Qido("study", STRING_MATCH),
    "PatientBirthDate": Qido("study"),
    "PatientSex": Qido("study"),
    "StudyInstanceUID": Qido("study", UID_MATCH),
    "StudyID": Qido("study", STRING_MATCH),
    "NumberOfStudyRelatedSeries": Qido("study", computed=True),
    "NumberOfStudyRelatedInstances": Qido("study", computed=True),
    "SeriesDate": Qido("series", DATE_MATCH),
    "SeriesTime": Qido("series", TIME_MATCH),
    "Modality": Qido("series", STRING_MATCH),
    "SeriesDescription": Qido("series", STRING_MATCH),
    "BodyPartExamined": Qido("series", STRING_MATCH),
    "SeriesInstanceUID": Qido("series", UID_MATCH),
    "SeriesNumber": Qido("series", NUMBER_MATCH),
    "NumberOfSeriesRelatedInstances": Qido("series", computed=True),
    "PerformedProcedureStepStartDate": Qido("series", DATE_MATCH),
    "PerformedProcedureStepStartTime": Qido("series", TIME_MATCH),
    "RequestAttributesSequence": Qido("series"),
    "ScheduledProcedureStepID": Qido("series", STRING_MATCH, sequence="RequestAttributesSequence"),
    "RequestedProcedureID": Qido("series", STRING_MATCH, sequence="RequestAttributesSequence"),
    "SOPClassUID": Qido("instance", UID_MATCH),
    "SOPInstanceUID": Qido("instance", UID_MATCH),
    "InstanceAvailability": Qido("instance", computed=True),
    "RetrieveURL": Qido("instance", computed=True),
    "AvailableTransferSyntaxUID": Qido("instance", computed=True),
    "InstanceNumber": Qido("instance", NUMBER_MATCH),
    "SamplesPerPixel": Qido("instance"),
    "PhotometricInterpretation": Qido("instance"),
    "NumberOfFrames": Qido("instance"),
    "Rows": Qido("instance"),
    "Columns": Qido("instance"),
    "BitsAllocated": Qido("instance"),
}
# The DICOMweb index's columns (its tables studies, series, instances), in table order: the
# matching keys, what its results are ordered by (StudyTime) and what WADO-RS needs of an
# instance (TransferSyntaxUID). ModalitiesInStudy is computed from the study's series.
_INDEX: dict[str, IndexColumn] = {
    "StudyInstanceUID": IndexColumn("study", "study_uid"),
    "PatientName": IndexColumn("study", "patient_name"),
    "PatientID": IndexColumn("study", "patient_id"),
    "AccessionNumber": IndexColumn("study", "accession"),
    "StudyDate": IndexColumn("study", "study_date"),
    "StudyTime": IndexColumn("study", "study_time"),
    "StudyDescription": IndexColumn("study", "study_description"),
    "ReferringPhysicianName": IndexColumn("study", "referring_physician"),
    "StudyID": IndexColumn("study", "study_id"),
    "ModalitiesInStudy": IndexColumn("study", "modalities"),
    "SeriesInstanceUID": IndexColumn("series", "series_uid"),
    "Modality": IndexColumn("series", "modality"),
    "SeriesNumber": IndexColumn("series", "series_number"),
    "SeriesDescription": IndexColumn("series", "series_description"),
    "BodyPartExamined": IndexColumn("series", "body_part"),
    "SeriesDate": IndexColumn("series", "series_date"),
    "SeriesTime": IndexColumn("series", "series_time"),
    "PerformedProcedureStepStartDate": IndexColumn("series", "pps_start_date"),
    "PerformedProcedureStepStartTime": IndexColumn("series", "pps_start_time"),
    # A JSON array of the sequence's items, each an object of its matching keys' values
    # (sequence matching, PS3.4 C.2.2.2.6: one item must match every key asked).
    "RequestAttributesSequence": IndexColumn("series", "request_attributes"),
    "SOPInstanceUID": IndexColumn("instance", "sop_uid"),
    "SOPClassUID": IndexColumn("instance", "sop_class_uid"),
    "InstanceNumber": IndexColumn("instance", "instance_number"),
    "TransferSyntaxUID": IndexColumn("instance", "transfer_syntax"),
}


def _build() -> tuple[tuple[CatalogColumn, ...], dict[str, Attribute]]:
    promoted = tuple(
        CatalogColumn(keyword, kind, f"{_tag_text(keyword)}{note}", attribute=keyword)
        for keyword, kind, note in _PROMOTED
    )
    columns = (*_FILE_COLUMNS, *promoted, *_STATUS_COLUMNS)
    by_column = {column.attribute: column for column in promoted}
    view_types = dict(_VIEW_COLUMNS)
    attributes = {
        keyword: Attribute(
            keyword,
            tag,
            vr,
            vm,
            level,
            column=by_column.get(keyword),
            qido=_QIDO.get(keyword),
            index=_INDEX.get(keyword),
            view_type=view_types.get(keyword),
        )
        for keyword, tag, vr, vm, level in _ATTRIBUTES
    }
    unknown = (set(by_column) | set(_QIDO) | set(_INDEX) | set(view_types)) - set(attributes)
    if unknown:
        raise AssertionError(f"roles given to attributes not in the registry: {sorted(unknown)}")
    return columns, attributes


def _tag_text(keyword: str) -> str:
    tag = next(tag for name, tag, *_ in _ATTRIBUTES if name == keyword)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


CATALOG_COLUMNS: tuple[CatalogColumn, ...]
ATTRIBUTES: dict[str, Attribute]
CATALOG_COLUMNS, ATTRIBUTES = _build()
CATALOG_COLUMN_NAMES: tuple[str, ...] = tuple(column.name for column in CATALOG_COLUMNS)
ATTRIBUTES_BY_TAG: dict[int, Attribute] = {a.tag: a for a in ATTRIBUTES.values()}
# The promoted attributes, in object_catalog's column order.
PROMOTED: tuple[Attribute, ...] = tuple(
    ATTRIBUTES[c.attribute] for c in CATALOG_COLUMNS if c.attribute is not None
)


def by_tag(tag: int) -> Attribute | None:
    """The registry's attribute of ``tag``, else one from the PS3.6 dictionary (no roles, level
    ``instance``); None for a private or unknown tag, and for one of a repeating group (50xx,
    60xx: PS3.5 7.6 gives its 16 groups one keyword, so none is an attribute of its own).

    >>> by_tag(0x0020000D).column.name
    'StudyInstanceUID'
    >>> by_tag(0x00091001) is None, by_tag(0xFFFEE000) is None  # private; an Item tag
    (True, True)
    """
    found = ATTRIBUTES_BY_TAG.get(tag)
    if found is not None:
        return found
    if not dictionary_has_tag(tag):
        return None
    vr, vm, _name, _retired, keyword = get_entry(tag)
    if not keyword or vr == "NONE":
        # "NONE": the item and delimitation tags (FFFE,E000/E00D/E0DD), which PS3.5 7.5 gives
        # no VR: they delimit a sequence's items, they are no attribute.
        return None
    # PS3.6 says nothing of information levels: an attribute the registry does not know is
    # taken as the instance's own, the most specific level.
    return Attribute(keyword, tag, vr, vm, "instance")


def by_keyword(keyword: str) -> Attribute | None:
    """The registry's attribute named ``keyword``, else the PS3.6 dictionary's (as
    :func:`by_tag`); None for a name that is no keyword.

    >>> by_keyword("Modality").qido.match, by_keyword("RescaleSlope").tag == 0x00281053
    ('string', True)
    >>> by_keyword("Modalty") is None
    True
    """
    found = ATTRIBUTES.get(keyword)
    if found is not None:
        return found
    tag = tag_for_keyword(keyword)
    return None if tag is None else by_tag(tag)


def qido_attributes(level: QidoLevel) -> tuple[Attribute, ...]:
    """The attributes QIDO-RS results carry at ``level``, in tag order."""
    return tuple(
        sorted(
            (a for a in ATTRIBUTES.values() if a.qido is not None and a.qido.level == level),
            key=lambda a: a.tag,
        )
    )


def qido_key(attribute: Attribute) -> str:
    """How a QIDO-RS query names a matching key: its keyword, or ``Sequence.Keyword`` for one
    within a sequence's items (PS3.18 8.3.4.1)."""
    sequence = attribute.qido.sequence if attribute.qido is not None else None
    return f"{sequence}.{attribute.keyword}" if sequence else attribute.keyword


def matching_keys(level: QidoLevel) -> dict[str, str]:
    """QIDO-RS matching keys of ``level``: :func:`qido_key` -> matching kind (MATCH_KINDS)."""
    return {qido_key(a): a.qido.match for a in qido_attributes(level) if a.qido.match is not None}


# Spark SQL keywords among the catalog's column names: written quoted (`Rows`), as the
# pipeline's scripts always have.
_SQL_WORDS = frozenset({"ROWS", "COLUMNS"})


def quoted(name: str) -> str:
    """A column name as the SQL files write it.

    >>> quoted("Rows"), quoted("Modality")
    ('`Rows`', 'Modality')
    """
    return f"`{name}`" if name.upper() in _SQL_WORDS else name


# The columns of dbt's instance_attributes view, in its order.
VIEW_ATTRIBUTES: tuple[Attribute, ...] = tuple(ATTRIBUTES[keyword] for keyword, _ in _VIEW_COLUMNS)

# The DICOMweb index's columns of each level, in its tables' column order.
INDEX_COLUMNS: dict[QidoLevel, tuple[Attribute, ...]] = {
    level: tuple(ATTRIBUTES[k] for k, column in _INDEX.items() if column.level == level)
    for level in QIDO_LEVELS
}


def first_value_sql(attribute: Attribute, kind: str = "string", meta: str = "meta") -> str:
    """Spark SQL for the first value of ``attribute`` in the DICOM JSON VARIANT ``meta``, as
    ``kind`` (a variant_get type); a person name's Alphabetic group (PS3.18 F.2.2).

    >>> first_value_sql(ATTRIBUTES["PatientName"])
    "try_variant_get(meta, '$.00100010.Value[0].Alphabetic', 'string')"
    """
    suffix = ".Alphabetic" if _base_vr(attribute.vr) == "PN" else ""
    return f"try_variant_get({meta}, '$.{attribute.hex}.Value[0]{suffix}', '{kind}')"


def item_keys(sequence: Attribute) -> tuple[Attribute, ...]:
    """The matching keys within ``sequence``'s items (``qido.sequence``), in registry order."""
    return tuple(
        a for a in ATTRIBUTES.values() if a.qido is not None and a.qido.sequence == sequence.keyword
    )


def sequence_items_sql(sequence: Attribute, meta: str = "meta") -> str:
    """Spark SQL for ``sequence``'s items as a JSON array text, each item an object of the
    first values of its :func:`item_keys` (absent ones left out); NULL without the sequence.

    >>> sequence_items_sql(ATTRIBUTES["RequestAttributesSequence"])[:58]
    "to_json(transform(try_variant_get(meta, '$.00400275.Value'"
    """
    items = f"try_variant_get({meta}, '$.{sequence.hex}.Value', 'array<variant>')"
    fields = ", ".join(
        f"'{a.keyword}', try_variant_get(item, '$.{a.hex}.Value[0]', 'string')"
        for a in item_keys(sequence)
    )
    return f"to_json(transform({items}, item -> named_struct({fields})))"


def column_sql(attribute: Attribute, meta: str = "meta") -> str:
    """Spark SQL computing ``attribute``'s promoted column from ``meta`` (sql/20_meta.sql): a
    DATE from ``YYYYMMDD`` text (NULL when malformed, PS3.5 6.2 DA), else the first value as
    the column's type.

    >>> column_sql(ATTRIBUTES["SeriesNumber"])
    "try_variant_get(meta, '$.00200011.Value[0]', 'int')"
    """
    if attribute.column is None:
        raise ValueError(f"{attribute.keyword} is not a column of object_catalog")
    kind = attribute.column.sql_type
    if kind == "DATE":
        return date_sql(first_value_sql(attribute, "string", meta))
    return first_value_sql(attribute, kind.lower(), meta)


# A DA value (PS3.5 6.2: YYYYMMDD; the retired ACR-NEMA form YYYY.MM.DD still read, as pydicom
# and dicom/typed.py read it) as a DATE, NULL when malformed.
_ACR_NEMA_DATE = "'^([0-9]{4})[.]([0-9]{2})[.]([0-9]{2})$'"


def date_sql(text: str) -> str:
    """Spark SQL for the DATE of the DA text ``text`` (NULL when it is not a date).

    >>> date_sql("d")
    "try_to_date(regexp_replace(d, '^([0-9]{4})[.]([0-9]{2})[.]([0-9]{2})$', '$1$2$3'), 'yyyyMMdd')"
    """
    return f"try_to_date(regexp_replace({text}, {_ACR_NEMA_DATE}, '$1$2$3'), 'yyyyMMdd')"


def column_text_sql(attribute: Attribute, meta: str = "meta") -> str:
    """Spark SQL for ``attribute``'s first value as DICOM text: its catalog column turned back
    into the value's text (a DATE as ``YYYYMMDD``), else read from ``meta``.

    >>> column_text_sql(ATTRIBUTES["StudyDate"]), column_text_sql(ATTRIBUTES["StudyID"])
    ("date_format(StudyDate, 'yyyyMMdd')", "try_variant_get(meta, '$.00200010.Value[0]', 'string')")
    """
    if attribute.vr == SEQUENCE_VR:
        return sequence_items_sql(attribute, meta)
    column = attribute.column
    if column is None:
        return first_value_sql(attribute, "string", meta)
    name = quoted(column.name)
    if column.sql_type == "DATE":
        return f"date_format({name}, 'yyyyMMdd')"
    if column.sql_type != "STRING":
        return f"CAST({name} AS STRING)"
    return name
