"""Typed header values: a header's DICOM JSON model (PS3.18 F.2) turned into one value per
attribute, typed by its VR as BigQuery's DICOM export types them, and the *shape* of those
values (keyword -> SQL type), from which the ``object_header`` table's columns come.

The value rules live here once, with no Spark: the SQL functions of
``pixels_sql/functions/header.py`` call :func:`header_shape`, :func:`plan` and
:func:`typed_json` on the JSON the catalog already holds (``object_catalog.meta``), so no file
is read twice and zip members and objects work as any file does.

- A standard attribute (in the PS3.6 dictionary, repeating groups excepted) gets a column named
  by its keyword, typed by its dictionary VR and VM (the registry's ``attributes.sql_type``,
  ``pixels_sql/dicom/attributes``): VM 1 a scalar, any other
  VM an ARRAY; SQ an ARRAY of STRUCTs of its items' attributes, recursively; DS and IS keep
  their text and get a numeric twin ``<Keyword>_number``.
- A binary attribute (OB, OD, OF, OL, OV, OW, UN) holds its BulkDataURI, or its inline base64
  text (the registry types them STRING).
- Private attributes, unknown tags and repeating-group elements (50xx, 60xx: one keyword for
  many tags) go to ``OtherElements``, one entry each (:data:`OTHER_ELEMENT_TYPE`), their bulk
  data as a URI.
- A value that does not fit its column (a malformed DA/DT/TM, a DS/IS that is no number, a VR
  other than the dictionary's, several values of a VM 1 attribute, a sequence item attribute
  the table's column has no field for) leaves the column NULL and goes to ``OtherElements`` as
  text with ``issue`` set: one bad element never costs its row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from functools import cache, lru_cache
from typing import Any

import orjson
from pydicom.datadict import DicomDictionary

from pixels_sql.dicom import attributes

# Shape: keyword -> Spark type in catalog form ("string", "array<double>", ...) for a leaf,
# or a nested Shape for a sequence (ARRAY<STRUCT<...>> of its items).
Shape = dict[str, "str | Shape"]

OTHER_ELEMENTS = "OtherElements"
NUMBER_SUFFIX = "_number"
# One entry of OtherElements. tag: the element's tag, nested ones as a path through their
# sequences and item indexes (``00081140[0].00091001``); values: each value as text (a sequence
# item as its DICOM JSON); issue: NULL for an element that is simply not a column, else why its
# value left its column.
OTHER_ELEMENT_TYPE = (
    "struct<tag:string,keyword:string,private_creator:string,vr:string,"
    "values:array<string>,bulk_data_uri:string,issue:string>"
)
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")

# Why a value left its column (OtherElements.issue, the header_issues view).
MALFORMED = "malformed"  # not a valid value of its VR (DA, DT, TM, DS, IS, AT, ...)
VR_MISMATCH = "vr_mismatch"  # a VR the dictionary does not give this attribute
MULTIPLE_VALUES = "multiple_values"  # several values where the dictionary says VM 1
NOT_IN_COLUMN = "not_in_column"  # a sequence item attribute its column has no field for
TYPE_MISMATCH = "type_mismatch"  # the table's column has another type than this VR gives
TOO_DEEP = "too_deep"  # a sequence nested deeper than MAX_TYPED_DEPTH: kept as JSON text

# Sequences are typed down to this many levels (BigQuery's limit on nested STRUCT/ARRAY levels
# is 15 too); deeper ones stay whole in OtherElements. Spark recurses over a type's nesting when
# it analyses, generates code for and writes a column: the readers' 128 levels (a hostile file)
# made a StackOverflowError in a task — which ends the JVM — on a JVM running C1-compiled code.
MAX_TYPED_DEPTH = 15

# Binary VRs: their values are bytes (PS3.5 6.2), kept as inline text or a bulk data URI.
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


def _catalog_form(ddl: str) -> str:
    """A type as the registry writes it (``ARRAY<STRUCT<Alphabetic: STRING, ...>>``) in the
    catalog form SQL's ``typeof`` gives (``array<struct<Alphabetic:string,...>>``), so that a
    table's columns and a header's shape compare as text."""
    text = re.sub(r"\b([A-Z]+)\b(?!:)", lambda match: match.group(1).lower(), ddl)
    return text.replace(": ", ":").replace(", ", ",")


PERSON_NAME_TYPE = _catalog_form(attributes.PERSON_NAME_TYPE)


class _Attribute:
    """What the registry says of one standard tag, resolved once per process."""

    __slots__ = ("column", "keyword", "multiple", "twin", "twin_name", "vr", "vrs")

    def __init__(self, keyword: str, vr: str, vm: str) -> None:
        self.keyword = keyword
        # PS3.6 gives a few attributes alternative VRs ("US or SS", "US or OW"): a value of any
        # of them belongs to the attribute.
        self.vrs = tuple(part.strip() for part in vr.split(" or "))
        self.vr = self.vrs[0]
        self.multiple = attributes.is_multiple(vm)
        self.column: str | None = None
        self.twin: str | None = None
        self.twin_name = keyword + NUMBER_SUFFIX
        if self.vr != attributes.SEQUENCE_VR:
            self.column = _catalog_form(attributes.sql_type(vr, self.multiple))
            number = attributes.NUMERIC_TWIN_TYPES_BY_VR.get(self.vr)
            if number is not None:
                self.twin = _catalog_form(f"ARRAY<{number}>" if self.multiple else number)


@cache
def _attributes() -> dict[str, _Attribute]:
    """Standard attributes by their 8-hex-digit tag, as the DICOM JSON model spells tags: the
    registry's (``attributes.by_tag``) for every tag of the PS3.6 dictionary. Repeating-group
    tags (50xx, 60xx: one keyword for many groups) are not among them."""
    table = {}
    for tag in DicomDictionary:
        found = attributes.by_tag(tag)
        if found is None or found.vr in ("NONE", ""):
            continue  # item and delimitation tags
        try:
            table[f"{tag:08X}"] = _Attribute(found.keyword, found.vr, found.vm)
        except attributes.UnknownVRError:
            continue
    return table


def compiled_table() -> list[tuple[int, bytes, str, bool, bool, bool]]:
    """The standard attributes as the compiled typed sink takes them (``_fastmeta.c``,
    ``configure_typed``), in rising tag order: (tag, keyword, the dictionary's VRs as in
    "US or SS", VM other than 1, the column holds text, the first VR is SQ)."""
    return [
        (
            int(tag, 16),
            info.keyword.encode("ascii"),
            " or ".join(info.vrs),
            info.multiple,
            info.column == "string",
            info.vr == attributes.SEQUENCE_VR,
        )
        for tag, info in sorted(_attributes().items())
    ]


def attribute(tag: str) -> _Attribute | None:
    """The dictionary's attribute of an 8-hex-digit tag (upper case), None if not standard."""
    return _attributes().get(tag)


# --- shapes ------------------------------------------------------------------------------------


def header_shape(meta: Mapping[str, Any]) -> Shape:
    """The columns one header needs: keyword -> type (a nested shape for a sequence)."""
    return _shape_of(_skeleton(meta))


# A skeleton: the tags of a data set, each with the skeleton of its items merged (a sequence),
# or None. What a header's columns depend on, from a header (:func:`_skeleton`) or from the
# type Spark's ``schema_of_variant`` / ``schema_of_variant_agg`` gives a header's VARIANT
# (:func:`variant_skeleton`).
Skeleton = dict[str, "Skeleton | None"]


def _skeleton(dataset: Mapping[str, Any]) -> Skeleton:
    skeleton: Skeleton = {}
    for tag, element in dataset.items():
        items = None
        if isinstance(element, dict) and element.get("vr") == "SQ":
            items = {}
            for item in element.get("Value") or ():
                if isinstance(item, dict):
                    _merge_skeletons(items, _skeleton(item))
        skeleton[tag] = items
    return skeleton


def _merge_skeletons(into: Skeleton, other: Skeleton) -> None:
    for tag, items in other.items():
        present = into.get(tag)
        if present is None:
            into[tag] = items
        elif items is not None:
            _merge_skeletons(present, items)


def _shape_into(skeleton: Skeleton, shape: Shape, depth: int = 0) -> None:
    table = _attributes()
    for tag, items in skeleton.items():
        info = table.get(tag)
        if info is None:
            continue
        if info.vr == attributes.SEQUENCE_VR:
            if depth >= MAX_TYPED_DEPTH:
                continue  # too deep to type: OtherElements (TOO_DEEP)
            item_shape = shape.get(info.keyword)
            if not isinstance(item_shape, dict):
                item_shape = shape[info.keyword] = {}
            if items is not None:
                _shape_into(items, item_shape, depth + 1)
            continue
        shape[info.keyword] = info.column  # type: ignore[assignment]
        if info.twin is not None:
            shape[info.twin_name] = info.twin


def skeleton_json(meta: Mapping[str, Any]) -> str:
    """A header's *skeleton* as text: the standard tags of each typed data set in order, a
    sequence the typed row holds as the skeletons of its items, each written once where items in
    a row have the same (``{"00081140": [{...}, ...], "00080060": 0}``). What the compiled
    typed sink writes beside the typed row; headers of one protocol mostly share it, so a run's
    columns come from its few distinct skeletons (:func:`skeleton_shape`). Items that differ
    (an SR's content tree, an RT structure set's contours) keep one entry each."""
    return _dumps(_compiled_skeleton(meta, 0))


def _compiled_skeleton(dataset: Mapping[str, Any], depth: int) -> dict[str, Any]:
    table = _attributes()
    skeleton: dict[str, Any] = {}
    for tag, element in dataset.items():
        info = table.get(tag)
        if info is None:
            continue
        if (
            info.vr == attributes.SEQUENCE_VR
            and depth < MAX_TYPED_DEPTH
            and isinstance(element, dict)
            and element.get("vr") == attributes.SEQUENCE_VR
        ):
            # An item like the one before it is written once: per-frame items of a multi-frame
            # header make one entry, and headers of one protocol one skeleton.
            written: list[dict[str, Any]] = []
            last = None  # the text of the last item written
            for item in element.get("Value") or ():
                if isinstance(item, dict):
                    item_skeleton = _compiled_skeleton(item, depth + 1)
                    text = _dumps(item_skeleton)
                    if text != last:
                        written.append(item_skeleton)
                        last = text
            skeleton[tag] = written
        else:
            skeleton[tag] = 0
    return skeleton


def skeleton_shape(text: str | bytes) -> Shape:
    """:func:`header_shape` of the headers whose skeleton (:func:`skeleton_json`) is ``text``."""
    return _shape_of(_merged_skeleton(orjson.loads(text)))


def _in_tag_order(skeleton: Skeleton) -> Skeleton:
    return {
        tag: None if items is None else _in_tag_order(items)
        for tag, items in sorted(skeleton.items())
    }


def _merged_skeleton(written: Mapping[str, Any]) -> Skeleton:
    skeleton: Skeleton = {}
    for tag, items in written.items():
        if isinstance(items, list):
            merged: Skeleton = {}
            for item in items:
                _merge_skeletons(merged, _merged_skeleton(item))
            skeleton[tag] = merged
        else:
            skeleton[tag] = None
    return skeleton


def variant_shape(schema: str) -> Shape:
    """:func:`header_shape` of the headers whose VARIANT type is ``schema``: what
    ``schema_of_variant(meta)`` (one header) or ``schema_of_variant_agg(meta)`` (many, merged)
    returns, e.g. ``OBJECT<`00081140`: OBJECT<Value: ARRAY<OBJECT<...>>, vr: STRING>, ...>``.
    Computed in the JVM, so a run's headers need no Python for their shapes."""
    return _shape_of(_variant_type_skeleton(schema))


def _variant_type_skeleton(schema: str) -> Skeleton:
    """The skeleton of the headers whose VARIANT type is ``schema`` (empty if not an object)."""
    parsed = _VariantTypeParser(schema).parse()
    return _variant_skeleton(parsed) if isinstance(parsed, dict) else {}


def _shape_of(skeleton: Skeleton) -> Shape:
    shape: Shape = {}
    _shape_into(skeleton, shape)
    return shape


def _variant_skeleton(obj: dict[str, Any]) -> Skeleton:
    skeleton: Skeleton = {}
    for tag, element in obj.items():
        items = None
        value = element.get("Value") if isinstance(element, dict) else None
        # A sequence's Value is an array of item objects (merged by Spark); any other Value
        # (an array of strings: a VR other than SQ) has no items.
        if isinstance(value, tuple) and isinstance(value[1], dict):
            items = _variant_skeleton(value[1])
        skeleton[tag] = items
    return skeleton


class _TypeText(ABC):
    """A reader of Spark's type text: ``struct`` (or ``OBJECT``) fields, ``array``, a leaf
    type; names bare or in backticks (a backtick doubled inside). :meth:`parse` is the
    subclass's: what each form becomes."""

    LEAF = re.compile(r"[A-Za-z_0-9]+(\([0-9, ]+\))?")

    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0

    def _fields(self, opening: str) -> dict[str, Any] | None:
        """The ``name:type`` fields (a space may follow ``:`` and ``,``) after ``opening`` at
        the position, or None if it is not there."""
        text = self.text
        if not text.startswith(opening, self.position):
            return None
        self.position += len(opening)
        fields: dict[str, Any] = {}
        while text[self.position] != ">":
            name = self._name()
            self._expect(":")
            fields[name] = self.parse()
            if text.startswith(",", self.position):
                self.position += 1
                if text.startswith(" ", self.position):
                    self.position += 1
        self.position += 1
        return fields

    def _element(self, opening: str) -> Any:
        """The element type of an array after ``opening``, or None if it is not there."""
        if not self.text.startswith(opening, self.position):
            return None
        self.position += len(opening)
        element = self.parse()
        self._expect(">")
        return element

    def _leaf(self) -> str:
        match = self.LEAF.match(self.text, self.position)
        if match is None:
            raise ValueError(f"not a type at {self.position}: {self.text[:200]!r}")
        self.position = match.end()
        return match.group(0)

    @abstractmethod
    def parse(self) -> Any:
        """The type at the position, in the subclass's form."""

    def _name(self) -> str:
        text = self.text
        if text[self.position] != "`":
            end = text.index(":", self.position)
            name = text[self.position : end]
            self.position = end
            return name
        parts = []
        end = self.position + 1
        while True:
            if text[end] == "`":
                if text.startswith("``", end):
                    parts.append("`")
                    end += 2
                    continue
                break
            parts.append(text[end])
            end += 1
        self.position = end + 1
        return "".join(parts)

    def _expect(self, token: str) -> None:
        if not self.text.startswith(token, self.position):
            raise ValueError(f"expected {token!r} at {self.position}: {self.text[:200]!r}")
        self.position += len(token)
        if token == ":" and self.text.startswith(" ", self.position):
            self.position += 1


class _VariantTypeParser(_TypeText):
    """Spark's variant schema text: ``OBJECT<name: type, ...>`` -> dict, ``ARRAY<type>`` ->
    ("array", element), anything else its text."""

    def parse(self) -> Any:
        fields = self._fields("OBJECT<")
        if fields is not None:
            return fields
        element = self._element("ARRAY<")
        if element is not None:
            return ("array", element)
        return self._leaf()


def merge_shapes(into: Shape, other: Mapping[str, Any]) -> Shape:
    """Add ``other``'s columns (and sequence item fields) missing from ``into``; an existing
    column keeps its type. Returns ``into``."""
    for name, kind in other.items():
        present = into.get(name)
        if present is None:
            into[name] = _copy(kind)
        elif isinstance(present, dict) and isinstance(kind, dict):
            merge_shapes(present, kind)
    return into


def _copy(kind: str | Mapping[str, Any]) -> str | Shape:
    return kind if isinstance(kind, str) else {name: _copy(sub) for name, sub in kind.items()}


def type_of(kind: str | Mapping[str, Any]) -> str:
    """The Spark type (catalog form) of a shape entry."""
    if isinstance(kind, str):
        return kind
    if not kind:
        # A sequence whose items were all empty so far: a struct needs a field.
        return f"array<struct<{OTHER_ELEMENTS}:array<{OTHER_ELEMENT_TYPE}>>>"
    fields = ",".join(f"{_quote(name)}:{type_of(sub)}" for name, sub in kind.items())
    return f"array<struct<{fields}>>"


def _quote(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else f"`{name}`"


def shape_ddl(shape: Mapping[str, Any]) -> str:
    """``name type, ...`` for a CREATE/ALTER TABLE or from_json schema."""
    return ", ".join(f"`{name}` {type_of(kind)}" for name, kind in shape.items())


def parse_type(text: str) -> str | Shape:
    """A Spark type in catalog form (what SQL's ``typeof`` returns) as a shape entry: a
    ``struct<...>`` whose fields are columns becomes a shape, ``array<struct<...>>`` of a
    sequence a nested shape, anything else stays its text."""
    parser = _TypeParser(text)
    kind = parser.parse()
    if parser.position != len(text):
        raise ValueError(f"unexpected text after a type at {parser.position}: {text!r}")
    return kind


class _TypeParser(_TypeText):
    """Spark's catalog type text (``typeof``): a struct of columns -> a shape, a sequence's
    ``array<struct<...>>`` -> its items' shape, anything else its text."""

    def parse(self) -> str | Shape:
        fields = self._fields("struct<")
        if fields is not None:
            if list(fields) == list(_PN_GROUPS):
                return PERSON_NAME_TYPE
            return fields
        element = self._element("array<")
        if element is not None:
            if isinstance(element, dict):
                # A sequence's items: the struct's fields (OtherElements of an empty one aside).
                if list(element) == [OTHER_ELEMENTS]:
                    return {}
                return element
            return f"array<{element}>"
        return self._leaf()


# --- values ------------------------------------------------------------------------------------


class Malformed(ValueError):
    """A value that is not what its VR allows."""


_DA = re.compile(r"(\d{4})(\d{2})(\d{2})")
# ACR-NEMA's dotted date, which pydicom still reads (PS3.5 6.2, retired form).
_DA_DOTTED = re.compile(r"(\d{4})\.(\d{2})\.(\d{2})")
_TM = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?")
_DT = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?)?)?)?"
    r"([+-]\d{4})?"
)


def date_value(text: str) -> str:
    """DA (PS3.5 6.2) as ISO ``YYYY-MM-DD``."""
    match = _DA.fullmatch(text) or _DA_DOTTED.fullmatch(text)
    if match is None:
        raise Malformed(f"DA {text!r} is not YYYYMMDD")
    try:
        return dt.date(*(int(part) for part in match.groups())).isoformat()
    except ValueError as exc:
        raise Malformed(f"DA {text!r}: {exc}") from None


def _fraction(text: str | None) -> int:
    return int(text.ljust(6, "0")) if text else 0


def time_value(text: str) -> str:
    """TM (PS3.5 6.2: HH, HHMM, HHMMSS, HHMMSS.F{1,6}) as ISO ``HH:MM:SS[.ffffff]``. A second
    of 60 (a leap second) is read as 59, as pydicom does; the retired ``HH:MM:SS`` form is
    malformed, as pydicom has it."""
    match = _TM.fullmatch(text)
    if match is None:
        raise Malformed(f"TM {text!r} is not HHMMSS.FFFFFF")
    hour, minute, second, fraction = match.groups()
    seconds = int(second or 0)
    try:
        value = dt.time(int(hour), int(minute or 0), 59 if seconds == 60 else seconds)
    except ValueError as exc:
        raise Malformed(f"TM {text!r}: {exc}") from None
    return value.replace(microsecond=_fraction(fraction)).isoformat()


def datetime_value(text: str) -> str:
    """DT (PS3.5 6.2: YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]) as ISO 8601; missing
    components are their first value (month 1, day 1, hour 0), as pydicom reads them. Without
    an offset the value is read in the session's time zone."""
    match = _DT.fullmatch(text)
    if match is None:
        raise Malformed(f"DT {text!r} is not YYYYMMDDHHMMSS.FFFFFF&ZZXX")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    seconds = int(second or 0)
    try:
        value = dt.datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            59 if seconds == 60 else seconds,
            _fraction(fraction),
        )
        if offset:
            minutes = int(offset[1:3]) * 60 + int(offset[3:5])
            value = value.replace(
                tzinfo=dt.timezone(dt.timedelta(minutes=minutes if offset[0] == "+" else -minutes))
            )
    except ValueError as exc:
        raise Malformed(f"DT {text!r}: {exc}") from None
    return value.isoformat()


_NON_FINITE = {"NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity"}


def decimal_number(value: Any) -> float | str:
    # The DICOM JSON model writes DS as numbers; NaN and infinities as strings (meta.py).
    if isinstance(value, bool):
        raise Malformed(f"DS {value!r} is not a number")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        if value in _NON_FINITE:
            return value
        try:
            return float(value)
        except ValueError:
            pass
    raise Malformed(f"DS {value!r} is not a decimal number")


# BIGINT's range: a UV (or an IS) beyond it does not fit its column.
_BIGINT = range(-(2**63), 2**63)


def _bigint(value: int) -> int:
    if value not in _BIGINT:
        raise Malformed(f"{value} is beyond BIGINT")
    return value


def integer_number(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return _bigint(value)
    if isinstance(value, float) and value.is_integer():
        return _bigint(int(value))
    if isinstance(value, str):
        try:
            return _bigint(int(value.strip()))
        except ValueError:
            pass
    raise Malformed(f"IS {value!r} is not an integer")


def _text(value: Any) -> str:
    """A value as text: numbers as Python writes them (what pydicom's str of a DS/IS gives for
    a number of the JSON model), a person name's groups joined by ``=`` (PS3.5 6.2)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    if isinstance(value, dict):
        if any(group in value for group in _PN_GROUPS):
            groups = [value.get(group) or "" for group in _PN_GROUPS]
            while groups and not groups[-1]:
                groups.pop()
            return "=".join(groups)
        return _dumps(_in_dicom_json_order(value))
    return str(value)


def _in_dicom_json_order(item: Mapping[str, Any]) -> dict[str, Any]:
    """A sequence item as ``dicom_meta`` writes it: each element's ``vr`` first, then its
    value (``Value``, ``InlineBinary`` or ``BulkDataURI``), items inside likewise. The item of a
    header typed from the stored VARIANT (which sorts an object's keys) and of one typed by its
    read (the walk's JSON) then have one text."""
    ordered: dict[str, Any] = {}
    for tag, element in item.items():
        if not isinstance(element, dict) or "vr" not in element:
            ordered[tag] = element
            continue
        rest = {key: value for key, value in element.items() if key != "vr"}
        if element["vr"] == "SQ" and isinstance(rest.get("Value"), list):
            rest["Value"] = [
                _in_dicom_json_order(sub) if isinstance(sub, dict) else sub for sub in rest["Value"]
            ]
        ordered[tag] = {"vr": element["vr"], **rest}
    return ordered


def _string(value: Any) -> str:
    if value.__class__ is not str:
        raise Malformed(f"{value!r} is not text")
    return value


def _number(value: Any) -> float | str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value in _NON_FINITE:
        return value
    raise Malformed(f"{value!r} is not a number")


def _integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return _bigint(value)
    raise Malformed(f"{value!r} is not an integer")


def _attribute_tag(value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"[0-9A-Fa-f]{8}", value):
        return int(value, 16)
    raise Malformed(f"AT {value!r} is not a tag")


def _person_name(value: Any) -> dict[str, str | None]:
    if not isinstance(value, dict):
        raise Malformed(f"PN {value!r} is not a person name")
    return {group: value.get(group) for group in _PN_GROUPS}


def _date(value: Any) -> str:
    return date_value(_string(value))


def _time(value: Any) -> str:
    return time_value(_string(value))


def _datetime(value: Any) -> str:
    return datetime_value(_string(value))


def _decimal_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Malformed(f"DS {value!r} is not text")
    return _text(value)


_CONVERTERS = {
    **dict.fromkeys(("AE", "AS", "CS", "LO", "LT", "SH", "ST", "UC", "UI", "UR", "UT"), _string),
    "DS": _decimal_text,
    "IS": _decimal_text,
    "DA": _date,
    "TM": _time,
    "DT": _datetime,
    "FL": _number,
    "FD": _number,
    **dict.fromkeys(("SS", "US", "SL", "UL", "SV", "UV"), _integer),
    "AT": _attribute_tag,
    "PN": _person_name,
}
_TWINS = {"DS": decimal_number, "IS": integer_number}


def typed_header(meta: Mapping[str, Any], shape: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One row of ``object_header``: keyword -> typed value (JSON-ready: DATE and TIMESTAMP as
    ISO text, the way ``from_json`` reads them) plus ``OtherElements``. ``shape``: the table's
    columns (:func:`plan`); a sequence item attribute it has no field for goes to
    OtherElements. Without it, every attribute of the header fits."""
    return _typed_row(meta, _Columns(shape))


def _typed_row(meta: Mapping[str, Any], columns: _Columns) -> dict[str, Any]:
    other: list[dict[str, Any]] = []
    row = _typed_dataset(meta, columns, "", other)
    row[OTHER_ELEMENTS] = other
    return row


# What becomes of an element, by (tag, VR), decided once per table shape (_Columns.plan).
_VALUE, _SEQUENCE, _BINARY, _OTHER = "value", "sequence", "binary", "other"


class _Columns:
    """A table's columns (a shape; None: any attribute fits) with what becomes of each
    (tag, VR) met in them, decided once: headers of one run repeat the same few thousand."""

    __slots__ = ("children", "depth", "plans", "shape")

    def __init__(self, shape: Mapping[str, Any] | None, depth: int = 0) -> None:
        self.shape = shape
        self.depth = depth  # sequence levels above these columns
        self.plans: dict[tuple[str, Any], tuple[Any, ...]] = {}
        self.children: dict[str, _Columns] = {}

    def plan(self, tag: str, vr: Any) -> tuple[Any, ...]:
        key = (tag, vr if vr.__class__ is str else None)
        found = self.plans.get(key)
        if found is None:
            found = self.plans[key] = self._decide(tag, key[1])
        return found

    def child(self, keyword: str) -> _Columns:
        found = self.children.get(keyword)
        if found is None:
            item_shape = self.shape.get(keyword) if self.shape is not None else None
            found = self.children[keyword] = _Columns(item_shape, self.depth + 1)
        return found

    def _decide(self, tag: str, vr: str | None) -> tuple[Any, ...]:
        info = _attributes().get(tag)
        binary = vr in BINARY_VRS
        if info is None or (binary and vr in info.vrs and info.column != "string"):
            # Private, unknown, or a binary value of an attribute whose column holds numbers
            # (LUT Data, "US or OW"): kept whole, not an issue.
            return (_OTHER, info.keyword if info is not None else None)
        keyword = info.keyword
        if info.vr == attributes.SEQUENCE_VR and self.depth >= MAX_TYPED_DEPTH:
            return (TOO_DEEP, keyword)
        shape = self.shape
        if shape is not None and keyword not in shape:
            return (NOT_IN_COLUMN, keyword)
        if vr not in info.vrs:
            return (VR_MISMATCH, keyword)
        if info.vr == attributes.SEQUENCE_VR:
            if shape is not None and not isinstance(shape.get(keyword), dict):
                return (TYPE_MISMATCH, keyword)
            return (_SEQUENCE, keyword)
        if shape is not None and shape.get(keyword) != info.column:
            return (TYPE_MISMATCH, keyword)
        if binary:
            return (_BINARY, keyword)
        twin = _TWINS.get(vr)
        return (_VALUE, keyword, _CONVERTERS[vr], twin, info.twin_name, info.multiple)


def _typed_dataset(
    dataset: Mapping[str, Any],
    columns: _Columns,
    prefix: str,
    other: list[dict[str, Any]],
) -> dict[str, Any]:
    row: dict[str, Any] = {}
    creators: dict[tuple[str, str], str] | None = None
    for tag, element in dataset.items():
        if element.__class__ is not dict:
            other.append(_other(prefix + tag, None, None, element, MALFORMED))
            continue
        decided = columns.plan(tag, element.get("vr"))
        kind = decided[0]
        if kind is _VALUE:
            values = element.get("Value")
            if not values:
                continue
            _, keyword, convert, twin, twin_name, multiple = decided
            try:
                if multiple:
                    row[keyword] = [None if value is None else convert(value) for value in values]
                    if twin is not None:
                        row[twin_name] = [
                            None if value is None else twin(value) for value in values
                        ]
                elif len(values) > 1:
                    other.append(_other(prefix + tag, keyword, None, element, MULTIPLE_VALUES))
                elif values[0] is not None:
                    # The text is set before its twin: a DS or IS that is no number keeps its
                    # text in the STRING column, and only the twin is NULL.
                    row[keyword] = convert(values[0])
                    if twin is not None:
                        row[twin_name] = twin(values[0])
            except Malformed:
                other.append(_other(prefix + tag, keyword, None, element, MALFORMED))
        elif kind is _SEQUENCE:
            keyword = decided[1]
            item_columns = columns.child(keyword)
            items = []
            for index, item in enumerate(element.get("Value") or ()):
                if item.__class__ is dict:
                    path = f"{prefix}{tag}[{index}]."
                    items.append(_typed_dataset(item, item_columns, path, other))
                else:
                    items.append(None)
            row[keyword] = items
        elif kind is _BINARY:
            # A binary attribute's column holds its bulk data URI, or its inline base64 text.
            text = element.get("BulkDataURI") or element.get("InlineBinary")
            if text is not None:
                row[decided[1]] = text
        elif kind is _OTHER:
            creator = None
            if decided[1] is None and len(tag) == 8 and tag[3] in _ODD_DIGITS:
                if creators is None:
                    creators = _private_creators(dataset)
                creator = creators.get((tag[:4], tag[4:6]))
            other.append(_other(prefix + tag, decided[1], creator, element, None))
        else:  # an issue: the value leaves its column
            other.append(_other(prefix + tag, decided[1], None, element, kind))
    return row


def _private_creators(dataset: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """(group, block) -> private creator, from the (gggg,0010-00FF) elements (PS3.5 7.8.1)."""
    creators = {}
    for tag, element in dataset.items():
        if (
            tag[4:6] == "00"
            and tag[3:4] in _ODD_DIGITS
            and len(tag) == 8
            and "10" <= tag[6:8].upper() <= "FF"
            and isinstance(element, dict)
        ):
            values = element.get("Value") or ()
            if values and isinstance(values[0], str):
                creators[(tag[:4], tag[6:8].upper())] = values[0]
    return creators


# The last hex digit of an odd group number: a private group (PS3.5 7.8).
_ODD_DIGITS = frozenset("13579BDFbdf")


def _other(
    tag: str, keyword: str | None, creator: str | None, element: Any, issue: str | None
) -> dict[str, Any]:
    if not isinstance(element, dict):
        return {"tag": tag, "values": [_text(element)], "issue": issue}
    entry: dict[str, Any] = {"tag": tag, "keyword": keyword, "vr": element.get("vr")}
    if creator is not None:
        entry["private_creator"] = creator
    if "Value" in element:
        values = element["Value"]
        entry["values"] = [None if value is None else _text(value) for value in values]
    elif "InlineBinary" in element:
        entry["values"] = [element["InlineBinary"]]
    if "BulkDataURI" in element:
        entry["bulk_data_uri"] = element["BulkDataURI"]
    if issue is not None:
        entry["issue"] = issue
    return entry


# --- the steps the SQL functions run -------------------------------------------------------------


def skeleton_id(skeleton: str | bytes) -> int:
    """A skeleton's 64-bit name (signed, as SQL's BIGINT): every typed row carries it, and the
    plan names its misfits by it, so a skeleton's text need travel only once per task."""
    data = skeleton.encode() if isinstance(skeleton, str) else skeleton
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big", signed=True)


def plan(
    table_type: str,
    header_types: Iterable[str | None],
    skeletons: Iterable[str | bytes | None] = (),
) -> tuple[str | None, str, str, list[int]]:
    """For a table of type ``table_type`` (its row struct in catalog form, ``typeof``) and the
    headers to write — by their VARIANT types (``schema_of_variant_agg(meta)``,
    :func:`variant_shape`) and by their skeletons (:func:`skeleton_json`, what a read of this run
    gave with each typed row): the columns to add (DDL, None for none), the from_json schema of
    the typed values after adding them, the table's shape after adding them (JSON, for
    :func:`typed_json`), and the *misfits*: the skeletons (by :func:`skeleton_id`) whose columns
    the table has otherwise than their rows were typed for (a nested field an existing sequence
    column lacks, a column of another type), whose rows must be typed again for the table's
    shape.
    Existing columns keep their place and type; new ones come in name order. Nested fields of
    an existing sequence column cannot be added (a parquet table of the Hive metastore refuses
    to change a column's type): their values go to OtherElements (``not_in_column``)."""
    table = parse_type(table_type)
    if not isinstance(table, dict):
        raise ValueError(f"not a row type: {table_type!r}")
    header_columns: Shape = {name: kind for name, kind in table.items() if attribute_column(name)}
    # One skeleton of all the headers, in tag order at every level, then its columns: a
    # sequence's item fields come in the same order whichever headers or road brought them
    # (Spark's VARIANT types sort an object's keys), so the pipeline's table and dbt's agree.
    everything: Skeleton = {}
    for text in header_types:
        if text:
            _merge_skeletons(everything, _variant_type_skeleton(text))
    skeleton_shapes = {}
    for skeleton in skeletons:
        if skeleton:
            written = _merged_skeleton(orjson.loads(skeleton))
            # Its shape first: merging hands its items to `everything`, where later
            # skeletons add to them.
            skeleton_shapes[skeleton] = _shape_of(written)
            _merge_skeletons(everything, written)
    merged = _shape_of(_in_tag_order(everything))
    added = {name: merged[name] for name in sorted(merged) if name not in header_columns}
    header_columns.update(added)
    schema = shape_ddl(header_columns)
    schema = f"{schema}, " if schema else ""
    schema += f"`{OTHER_ELEMENTS}` array<{OTHER_ELEMENT_TYPE}>"
    misfits = [
        skeleton_id(skeleton)
        for skeleton, shape in skeleton_shapes.items()
        if not fits(shape, header_columns)
    ]
    return (shape_ddl(added) or None, schema, _dumps(header_columns), misfits)


def fits(shape: Mapping[str, Any], columns: Mapping[str, Any]) -> bool:
    """Whether a header of ``shape`` typed with no table to fit (:func:`typed_json` without a
    shape) is what it would be typed as for a table of ``columns``: each of its columns there,
    of the same type, each nested field of its sequences too."""
    for name, kind in shape.items():
        column = columns.get(name)
        if isinstance(kind, dict):
            if not isinstance(column, dict) or not fits(kind, column):
                return False
        elif column != kind:
            return False
    return True


def attribute_column(name: str) -> bool:
    """Whether a column of object_header holds an attribute (a keyword or its number twin)."""
    keyword = name[: -len(NUMBER_SUFFIX)] if name.endswith(NUMBER_SUFFIX) else name
    return keyword in _keywords()


@cache
def _keywords() -> frozenset[str]:
    return frozenset(info.keyword for info in _attributes().values())


@lru_cache(maxsize=16)
def _columns(text: str | None) -> _Columns:
    # One per plan: its decisions are kept for every header of the run.
    return _Columns(orjson.loads(text) if text else None)


def typed_json(meta_json: str | bytes | None, shape: str | None) -> str | None:
    """:func:`typed_header` as JSON text for ``from_json``; ``shape``: :func:`plan`'s JSON.
    A header that cannot be walked (not a JSON object) gives a row whose OtherElements says
    why: the file keeps its row."""
    if meta_json is None:
        return None
    columns = _columns(shape or None)
    try:
        meta = orjson.loads(meta_json)
        if not isinstance(meta, dict):
            raise Malformed(f"a header is a JSON object, not {type(meta).__name__}")
        row = _typed_row(meta, columns)
    except Exception as exc:
        # Whatever a header holds, its file keeps a row (with why it could not be typed): a
        # failure here would fail the whole statement, every other file of the run with it.
        text = f"{type(exc).__name__}: {exc}"
        row = {OTHER_ELEMENTS: [{"tag": "", "values": [text], "issue": MALFORMED}]}
    return _dumps(row)


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        # orjson stops at 254 JSON levels: a sequence nests two (its array, its item), so a
        # header at the readers' limit of 128 sequence levels (encoding.MAX_SEQUENCE_DEPTH)
        # needs the standard library's writer.
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
