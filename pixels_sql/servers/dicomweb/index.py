"""The DICOMweb service's read model: an SQLite index of the catalog's live instances.

QIDO-RS answers must come in milliseconds, and a Spark query costs tens to hundreds. So the
service copies what searches need from ``object_catalog`` (one Spark query over the newest live
row of each path) into an in-memory SQLite database: studies, series and instances with their
matching keys, and the DICOM JSON of each level's attributes. It is rebuilt when the catalog
gains a partition (every ingest run that writes adds one); a search reads whichever copy is
current. Searches bind every value from a request as an SQL parameter; column names come from
the attribute registry (pixels_sql/dicom/attributes: which attributes each level holds and
matches), never from a request.

An instance whose SOP Instance UID is catalogued at several paths (copies, or files in
conflict) is served from the copy the catalog's ``instance_copies`` view marks ``served`` (the
one catalogued first, then the first path; sql/90_views.sql): DICOMweb addresses instances by
UID, and the rule lives in that view only.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pixels_sql.dicom.attributes import (
    ATTRIBUTES,
    INDEX_COLUMNS,
    QIDO_LEVELS,
    SEQUENCE_VR,
    Attribute,
    QidoLevel,
    column_text_sql,
    item_keys,
    qido_attributes,
    qido_key,
    quoted,
)
from pixels_sql.dicom.typed import Malformed, date_value
from pixels_sql.servers.dicomweb.query import (
    Level,
    Match,
    MatchKind,
    QueryError,
    Search,
    date_key,
    fuzzy_name_matches,
    time_key,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("pixels_sql.dicomweb")

# Each level's table alias in searches (studies st, series se, instances i).
ALIASES: dict[QidoLevel, str] = {"study": "st", "series": "se", "instance": "i"}


def _result_tags(level: QidoLevel) -> tuple[str, ...]:
    """The attributes a level's search results carry from the instance's DICOM JSON (PS3.18
    Tables 10.6.3-3 to -5, the attribute registry's); computed ones (counts,
    ModalitiesInStudy, RetrieveURL, ...) are added by the views."""
    return tuple(a.hex for a in qido_attributes(level) if not a.qido.computed and not a.qido.nested)


STUDY_TAGS = _result_tags("study")
SERIES_TAGS = _result_tags("series")
INSTANCE_TAGS = _result_tags("instance")

# Each level's index columns read from the catalog (the registry's; a level's computed ones,
# ModalitiesInStudy, are made here from its members).
_READ: dict[QidoLevel, tuple[Attribute, ...]] = {
    level: tuple(a for a in INDEX_COLUMNS[level] if not (a.qido and a.qido.computed))
    for level in QIDO_LEVELS
}
# Index column's attribute -> (table alias, column): what searches match and order on.
COLUMNS = {
    a.keyword: (ALIASES[level], a.index.name) for level in QIDO_LEVELS for a in INDEX_COLUMNS[level]
}
# A key within a sequence's items (Sequence.Key) -> (the sequence's column, the key's keyword):
# the column holds the items as JSON objects (sequence matching).
ITEM_KEYS = {
    qido_key(key): (COLUMNS[a.keyword], key.keyword)
    for level in QIDO_LEVELS
    for a in INDEX_COLUMNS[level]
    if a.vr == SEQUENCE_VR
    for key in item_keys(a)
}
# The longest a search may take (SQLite's progress handler stops it): the index is shared by
# every request, and a search holds it.
SEARCH_SECONDS = 5.0
# How the index holds dates and times, so that a range is a comparison of text: DA as
# YYYYMMDD, TM as HHMMSS.FFFFFF (query.py's keys; a value that is neither is NULL, as the
# catalog's DATE column of a malformed date is).
_COMPARABLE = {"DA": date_key, "TM": time_key}


def _text_columns(level: QidoLevel) -> str:
    return ", ".join(f"{a.index.name} TEXT" for a in INDEX_COLUMNS[level])


SCHEMA = f"""
CREATE TABLE studies (
  {_text_columns("study")},
  n_series INTEGER, n_instances INTEGER, json TEXT, first_sop TEXT, PRIMARY KEY (study_uid));
CREATE TABLE series (
  study_uid TEXT, {_text_columns("series")},
  n_instances INTEGER, json TEXT, first_sop TEXT, PRIMARY KEY (study_uid, series_uid));
CREATE TABLE instances (
  study_uid TEXT, series_uid TEXT, {_text_columns("instance")},
  instance_order INTEGER, path TEXT, length INTEGER, modified_ms INTEGER, json TEXT,
  PRIMARY KEY (sop_uid));
CREATE INDEX studies_date ON studies (study_date DESC, study_uid);
CREATE INDEX studies_patient ON studies (patient_id);
CREATE INDEX series_modality ON series (modality);
CREATE INDEX instances_series ON instances (study_uid, series_uid, instance_order);
"""


def _json_object_sql(tags: Iterable[str]) -> str:
    """Spark SQL for a JSON object text of the given elements of ``meta`` (absent ones left
    out); built from this module's constant tags only."""
    parts = ", ".join(
        f"CASE WHEN variant_get(meta, '$.{tag}') IS NOT NULL"
        f" THEN concat('\"{tag}\":', to_json(variant_get(meta, '$.{tag}'))) END"
        for tag in tags
    )
    return f"concat('{{', concat_ws(',', {parts}), '}}')"


# The pipeline's view of live instances, each with its `served` mark (sql/90_views.sql).
COPIES_VIEW = "instance_copies"


# The index columns' values from the catalog, as text (DICOM's own: a date as YYYYMMDD):
# the promoted columns, and the other attributes from meta.
_INDEX_SOURCES = ",\n           ".join(
    f"{column_text_sql(a)} AS {quoted(a.keyword)}" for level in QIDO_LEVELS for a in _READ[level]
)


def catalog_query(database: str) -> str:
    """The Spark query the index is built from: the served copy of each live instance
    (the ``instance_copies`` view), with a UID at each level."""
    return f"""
    SELECT path, length, unix_millis(modificationTime) AS modified_ms,
           {_INDEX_SOURCES},
           -- A study's and a series' attributes from its first path only (what the index
           -- keeps): not repeated on every row of a 100,000-instance result.
           CASE WHEN row_number() OVER (PARTITION BY StudyInstanceUID ORDER BY path) = 1
             THEN {_json_object_sql(STUDY_TAGS)} END AS study_json,
           CASE WHEN row_number() OVER (
               PARTITION BY StudyInstanceUID, SeriesInstanceUID ORDER BY path) = 1
             THEN {_json_object_sql(SERIES_TAGS)} END AS series_json,
           {_json_object_sql(INSTANCE_TAGS)} AS instance_json
    FROM `{database}`.`{COPIES_VIEW}`
    WHERE served AND meta IS NOT NULL
      AND StudyInstanceUID IS NOT NULL AND SeriesInstanceUID IS NOT NULL
    """


# The catalog's INT columns (SeriesNumber, InstanceNumber): try_variant_get(..., 'int').
_INT = range(-(2**31), 2**31)
_INTEGER_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*")


def _int_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        value = int(value)
    return str(value) if isinstance(value, int) and value in _INT else None


def column_text(attribute: Attribute, model: Mapping[str, Any]) -> str | None:
    """The index column of ``attribute`` from a header's DICOM JSON model, as
    :func:`~pixels_sql.dicom.attributes.column_text_sql` makes it from the catalog (a DATE
    column's text YYYYMMDD, NULL where the catalog's column is NULL): the index of an instance
    received over the network before the catalog holds it (tests/test_intake.py holds the two
    equal on the corpus)."""
    if attribute.vr == SEQUENCE_VR:
        return _sequence_items(attribute, model)
    element = model.get(attribute.hex)
    values = element.get("Value") if isinstance(element, dict) else None
    if not values:
        return None
    first = values[0]
    if attribute.vr.startswith("PN"):
        first = first.get("Alphabetic") if isinstance(first, dict) else None
    if first is None or isinstance(first, dict | list):
        return None
    kind = attribute.column.sql_type if attribute.column is not None else "STRING"
    if kind == "DATE":
        try:
            return date_value(first).replace("-", "") if isinstance(first, str) else None
        except Malformed:
            return None
    if kind == "INT":
        return _int_text(first)
    return str(first)


def _sequence_items(sequence: Attribute, model: Mapping[str, Any]) -> str | None:
    """:func:`~pixels_sql.dicom.attributes.sequence_items_sql` over a DICOM JSON model."""
    element = model.get(sequence.hex)
    items = element.get("Value") if isinstance(element, dict) else None
    if not isinstance(items, list):
        return None
    objects = []
    for item in items:
        found: dict[str, str] = {}
        for key in item_keys(sequence):
            value = item.get(key.hex) if isinstance(item, dict) else None
            values = value.get("Value") if isinstance(value, dict) else None
            first = values[0] if values else None
            if isinstance(first, str | int | float) and not isinstance(first, bool):
                found[key.keyword] = str(first)
        objects.append(found)
    return json.dumps(objects, separators=(",", ":"))


def _json_object(model: Mapping[str, Any], tags: Iterable[str]) -> str:
    """:func:`_json_object_sql` over a DICOM JSON model."""
    return json.dumps({tag: model[tag] for tag in tags if tag in model}, separators=(",", ":"))


def index_row(model: Mapping[str, Any], path: str, length: int, modified_ms: int) -> dict[str, Any]:
    """The row :func:`catalog_query` gives for an instance, from its header's DICOM JSON model:
    what the index holds of an instance received before the catalog has it."""
    return {
        "path": path,
        "length": length,
        "modified_ms": modified_ms,
        **{a.keyword: column_text(a, model) for level in QIDO_LEVELS for a in _READ[level]},
        "study_json": _json_object(model, STUDY_TAGS),
        "series_json": _json_object(model, SERIES_TAGS),
        "instance_json": _json_object(model, INSTANCE_TAGS),
    }


def _first_json(rows: list[dict[str, Any]], key: str) -> str | None:
    return next((row[key] for row in rows if row[key] is not None), None)


@dataclass(frozen=True)
class Instance:
    """A catalogued instance, as WADO-RS needs it."""

    study_uid: str
    series_uid: str
    sop_uid: str
    path: str
    length: int
    modified_ms: int
    transfer_syntax: str | None
    sop_class_uid: str | None = None


def _order(number: str | None) -> int:
    try:
        return int(number) if number is not None else 2**31
    except ValueError:
        return 2**31


def _read_columns(level: QidoLevel, row: dict[str, Any]) -> dict[str, Any]:
    """A level's index columns read from the catalog, from a catalog query row (dates and
    times in the form ranges compare)."""
    return {
        a.index.name: _COMPARABLE[a.vr](row[a.keyword]) if a.vr in _COMPARABLE else row[a.keyword]
        for a in _READ[level]
    }


def _insert(connection: sqlite3.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (column -> value, the same columns in each) into ``table``."""
    if not rows:
        return
    columns = list(rows[0])
    connection.executemany(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        ([row[column] for column in columns] for row in rows),
    )


def _update(connection: sqlite3.Connection, table: str, row: dict[str, Any], key: str) -> None:
    """Set ``row``'s columns of the one row of ``table`` matching ``key`` (its UID columns,
    which ``row`` holds first: study_uid, then series_uid)."""
    uids = [row[name] for name in ("study_uid", "series_uid") if name in row]
    columns = [name for name in row if name not in ("study_uid", "series_uid")]
    assignments = ", ".join(f"{name} = ?" for name in columns)
    connection.execute(
        f"UPDATE {table} SET {assignments} WHERE {key}", [row[name] for name in columns] + uids
    )


def _instance_record(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "study_uid": r["StudyInstanceUID"],
        "series_uid": r["SeriesInstanceUID"],
        **_read_columns("instance", r),
        "instance_order": _order(r["InstanceNumber"]),
        "path": r["path"],
        "length": r["length"],
        "modified_ms": r["modified_ms"],
        "json": r["instance_json"],
    }


def build_database(
    rows: Iterable[dict[str, Any]], received: Iterable[dict[str, Any]] = ()
) -> sqlite3.Connection:
    """An SQLite database of the index from the catalog query's rows, and the rows of
    instances ``received`` over the network that the catalog may not hold yet (each replaces
    the catalog's row of its SOP Instance UID: it is the newer)."""
    connection = sqlite3.connect(":memory:", check_same_thread=False)
    connection.create_function("fuzzy_name_matches", 2, fuzzy_name_matches, deterministic=True)
    connection.executescript(SCHEMA)
    # One row per SOP Instance UID (the served copy); in path order, as the views' first().
    instances = {row["SOPInstanceUID"]: row for row in sorted(rows, key=lambda r: r["path"])}
    instances.update((row["SOPInstanceUID"], row) for row in received)
    by_series: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in instances.values():
        by_series[(row["StudyInstanceUID"], row["SeriesInstanceUID"])].append(row)
    by_study: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for key in by_series:
        by_study[key[0]].append(key)
    _insert(connection, "instances", [_instance_record(r) for r in instances.values()])
    series_rows = []
    for (study_uid, _series_uid), members in by_series.items():
        series_rows.append(
            {
                "study_uid": study_uid,
                **_read_columns("series", members[0]),
                "n_instances": len(members),
                "json": _first_json(members, "series_json"),
                "first_sop": members[0]["SOPInstanceUID"],
            }
        )
    _insert(connection, "series", series_rows)
    study_rows = []
    for series_keys in by_study.values():
        members = [row for key in series_keys for row in by_series[key]]
        study_rows.append(
            {
                **_read_columns("study", members[0]),
                # Modality is a series attribute (PS3.3 C.7.3.1): each series' first row's.
                "modalities": _modalities(by_series[key][0]["Modality"] for key in series_keys),
                "n_series": len(series_keys),
                "n_instances": len(members),
                "json": _first_json(members, "study_json"),
                "first_sop": members[0]["SOPInstanceUID"],
            }
        )
    _insert(connection, "studies", study_rows)
    connection.commit()
    return connection


def _modalities(values: Iterable[str | None]) -> str:
    """ModalitiesInStudy, backslash-joined as a DICOM multi-value (PS3.5 6.4)."""
    return "\\".join(sorted({value for value in values if value}))


def put_instance(connection: sqlite3.Connection, row: dict[str, Any]) -> None:
    """Put one instance (a catalog query row) into an index database, replacing the instance
    of its SOP Instance UID, and bring its series' and study's counts and ModalitiesInStudy
    up to date, as :func:`build_database` would have made them."""
    sop = row["SOPInstanceUID"]
    touched = {(row["StudyInstanceUID"], row["SeriesInstanceUID"])}
    before = connection.execute(
        "SELECT study_uid, series_uid FROM instances WHERE sop_uid = ?", [sop]
    ).fetchone()
    if before is not None:
        touched.add(tuple(before))
        connection.execute("DELETE FROM instances WHERE sop_uid = ?", [sop])
    _insert(connection, "instances", [_instance_record(row)])
    study_uid, series_uid = row["StudyInstanceUID"], row["SeriesInstanceUID"]
    # A series and a study hold their first instance's attributes (build_database): a new one
    # takes this row's, and so does one whose first instance this row replaces.
    series = {"study_uid": study_uid, **_read_columns("series", row), "json": row["series_json"]}
    study = {**_read_columns("study", row), "json": row["study_json"]}
    first = connection.execute(
        "SELECT first_sop FROM series WHERE study_uid = ? AND series_uid = ?",
        [study_uid, series_uid],
    ).fetchone()
    if first is None:
        _insert(connection, "series", [{**series, "n_instances": 0, "first_sop": sop}])
    elif first[0] == sop:
        _update(connection, "series", series, "study_uid = ? AND series_uid = ?")
    first = connection.execute(
        "SELECT first_sop FROM studies WHERE study_uid = ?", [study_uid]
    ).fetchone()
    if first is None:
        counts = {"modalities": "", "n_series": 0, "n_instances": 0, "first_sop": sop}
        _insert(connection, "studies", [{**study, **counts}])
    elif first[0] == sop:
        _update(connection, "studies", study, "study_uid = ?")
    for study_key, series_key in touched:
        connection.execute(
            "UPDATE series SET n_instances = (SELECT count(*) FROM instances"
            " WHERE study_uid = ?1 AND series_uid = ?2) WHERE study_uid = ?1 AND series_uid = ?2",
            [study_key, series_key],
        )
        connection.execute(
            "DELETE FROM series WHERE study_uid = ? AND series_uid = ? AND n_instances = 0",
            [study_key, series_key],
        )
    for study_key in {study for study, _ in touched}:
        modalities = connection.execute(
            "SELECT modality FROM series WHERE study_uid = ?", [study_key]
        ).fetchall()
        connection.execute(
            "UPDATE studies SET modalities = ?2,"
            " n_series = (SELECT count(*) FROM series WHERE study_uid = ?1),"
            " n_instances = (SELECT count(*) FROM instances WHERE study_uid = ?1)"
            " WHERE study_uid = ?1",
            [study_key, _modalities(m for (m,) in modalities)],
        )
        connection.execute(
            "DELETE FROM studies WHERE study_uid = ? AND n_instances = 0", [study_key]
        )
    connection.commit()


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like(value: str) -> str:
    """A DICOM wildcard value as a LIKE pattern (escape character '\\')."""
    return _escape_like(value).replace("*", "%").replace("?", "_")


def _glob(value: str) -> str:
    """A DICOM wildcard value as a GLOB pattern: '*' and '?' are GLOB's own; '[' is escaped."""
    return "".join(f"[{c}]" if c == "[" else c for c in value)


def _any_of(condition: str, values: list[str]) -> tuple[str, list[Any]]:
    """``condition`` (SQL with ``{value}`` where a value goes) for any of ``values``: one
    parameter whatever their number (a JSON array read with json_each; an OR term per value
    grew SQLite's expression tree past its depth limit, "Expression tree is too large", and
    its variable limit)."""
    if len(values) == 1:
        return condition.format(value="?"), values
    found = condition.format(value="v.value")
    return f"EXISTS (SELECT 1 FROM json_each(?) v WHERE {found})", [json.dumps(values)]


def _text_condition(name: str, values: tuple[str, ...]) -> tuple[str, list[Any]]:
    """Exact values (an index look-up) or wildcard patterns, case-sensitive."""
    exact = [v for v in values if "*" not in v and "?" not in v]
    patterns = [_glob(v) for v in values if "*" in v or "?" in v]
    parts: list[str] = []
    params: list[Any] = []
    if len(exact) == 1:
        parts.append(f"{name} = ?")
        params.append(exact[0])
    elif exact:
        parts.append(f"{name} IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(exact))
    if patterns:
        condition, values_ = _any_of(f"{name} GLOB {{value}}", patterns)
        parts.append(condition)
        params += values_
    return (parts[0] if len(parts) == 1 else f"({' OR '.join(parts)})"), params


def _condition(match: Match) -> tuple[str, list[Any]]:
    """One WHERE condition and its parameters for a match on an index column (column names
    from COLUMNS; keys within a sequence's items: :func:`_item_condition`)."""
    if match.keyword == "ModalitiesInStudy":
        if match.kind is MatchKind.EMPTY:
            return "(st.modalities IS NULL OR st.modalities = '')", []
        # ModalitiesInStudy is made of each series' Modality (build_database): a study matches
        # when one of its series does (one pass over the series, not a look-up per study).
        condition, params = _text_condition("modality", match.values)
        return f"st.study_uid IN (SELECT study_uid FROM series WHERE {condition})", params
    alias, column = COLUMNS[match.keyword]
    return _value_condition(match, f"{alias}.{column}")


def _item_condition(column: tuple[str, str], matches: list[Match]) -> tuple[str, list[Any]]:
    """Sequence matching (PS3.4 C.2.2.2.6): an entity matches when one item of the sequence
    matches every key asked of it. Empty value matching alone also takes a sequence without
    items (no item has a value)."""
    name = f"{column[0]}.{column[1]}"
    conditions, params = [], []
    for match in matches:
        keyword = ITEM_KEYS[match.keyword][1]
        condition, values = _value_condition(match, f"json_extract(item.value, '$.{keyword}')")
        conditions.append(condition)
        params += values
    found = f"EXISTS (SELECT 1 FROM json_each({name}) item WHERE {' AND '.join(conditions)})"
    if all(match.kind is MatchKind.EMPTY for match in matches):
        found = f"({name} IS NULL OR {name} = '[]' OR {found})"
    return found, params


def _value_condition(match: Match, name: str) -> tuple[str, list[Any]]:
    """The condition of ``match`` on the SQL value ``name`` (a column, or a JSON field)."""
    if match.kind is MatchKind.EMPTY:
        return f"({name} IS NULL OR {name} = '')", []
    if match.kind in (MatchKind.UIDS, MatchKind.NUMBER):
        # Both are exact: UIDs as written, integers in the canonical text the index holds.
        return _text_condition(name, tuple(match.values))
    if match.kind is MatchKind.RANGE:
        ranges = match.ranges
        if len(ranges) == 1:
            (low, high), conditions, params = ranges[0], [], []
            if low:
                conditions.append(f"{name} >= ?")
                params.append(low)
            if high:
                conditions.append(f"{name} <= ?")
                params.append(high)
            return " AND ".join(conditions), params
        found = (
            f"EXISTS (SELECT 1 FROM json_each(?) r WHERE"
            f" (json_extract(r.value, '$[0]') = '' OR {name} >= json_extract(r.value, '$[0]'))"
            f" AND (json_extract(r.value, '$[1]') = '' OR {name} <= json_extract(r.value, '$[1]')))"
        )
        return found, [json.dumps(ranges)]
    if match.kind is MatchKind.PERSON_NAME:
        # PS3.4 C.2.2.2.1 lets person names match case-insensitively; SQLite's LIKE is (for
        # ASCII letters; fuzzymatching folds every letter).
        return _any_of(f"{name} LIKE {{value}} ESCAPE '\\'", [_like(v) for v in match.values])
    if match.kind is MatchKind.FUZZY_NAME:
        return _any_of(f"fuzzy_name_matches({name}, {{value}})", list(match.values))
    return _text_condition(name, match.values)


# What each search level selects and from where; the scope conditions bind their UIDs.
_SEARCH_SQL = {
    Level.STUDY: (
        "SELECT st.study_uid, st.json, st.modalities, st.n_series, st.n_instances FROM studies st",
        "st.study_date DESC, st.study_time DESC, st.study_uid",
    ),
    Level.SERIES: (
        "SELECT se.study_uid, se.series_uid, se.json, se.n_instances, st.json, st.modalities,"
        " st.n_series, st.n_instances"
        " FROM series se JOIN studies st ON st.study_uid = se.study_uid",
        "st.study_uid, CAST(se.series_number AS INTEGER), se.series_uid",
    ),
    Level.INSTANCE: (
        "SELECT i.study_uid, i.series_uid, i.sop_uid, i.json, i.transfer_syntax, se.json,"
        " se.n_instances, st.json, st.modalities, st.n_series, st.n_instances"
        " FROM instances i"
        " JOIN series se ON se.study_uid = i.study_uid AND se.series_uid = i.series_uid"
        " JOIN studies st ON st.study_uid = i.study_uid",
        "i.study_uid, i.series_uid, i.instance_order, i.sop_uid",
    ),
}


def _order_term(key: tuple[str, bool]) -> str:
    """An orderby key as an ORDER BY term (column names from COLUMNS, never a request's):
    integers (IS) in numeric order, absent values last."""
    keyword, descending = key
    alias, column = COLUMNS[keyword]
    name = f"{alias}.{column}"
    value = f"CAST({name} AS INTEGER)" if ATTRIBUTES[keyword].vr == "IS" else name
    return f"{name} IS NULL, {value} {'DESC' if descending else 'ASC'}"


class CatalogIndex:
    """The current index, rebuilt from a database's ``object_catalog`` when it changes, with
    the instances received over the network (servers/intake.py) put in the moment they land:
    each is kept over rebuilds until the catalog holds its file as received (same path and
    modification time)."""

    def __init__(self, spark: SparkSession, database: str) -> None:
        self.spark = spark
        self.database = database
        self._connection = build_database([])
        self._lock = threading.Lock()
        self._partitions: tuple[str, ...] | None = None
        self._received: dict[str, dict[str, Any]] = {}
        self.built_at = 0.0
        self.build_seconds = 0.0

    def _catalog_partitions(self) -> tuple[str, ...]:
        if not self.spark.catalog.tableExists(f"{self.database}.object_catalog"):
            return ()
        rows = self.spark.sql(f"SHOW PARTITIONS `{self.database}`.object_catalog").collect()
        return tuple(sorted(row[0] for row in rows))

    def add(self, row: dict[str, Any]) -> None:
        """Put an instance received over the network (an :func:`index_row`) into the index now,
        before the catalog holds it."""
        with self._lock:
            self._received[row["SOPInstanceUID"]] = row
            put_instance(self._connection, row)

    def refresh(self, force: bool = False) -> bool:
        """Rebuild if the catalog's partitions changed (or ``force``); whether it rebuilt."""
        partitions = self._catalog_partitions()
        if not force and partitions == self._partitions:
            return False
        started = time.monotonic()
        rows: list[dict[str, Any]] = []
        if partitions:
            # Runs in other sessions rewrite and drop the catalog's partition folders, and this
            # session caches its listing of their files: read it afresh, or every rebuild
            # after a supersede fails on a removed file (FileNotFoundException) until restart.
            self.spark.catalog.refreshTable(f"`{self.database}`.`object_catalog`")
            if not self.spark.catalog.tableExists(f"{self.database}.{COPIES_VIEW}"):
                # A catalog written before the view existed: create the pipeline's views (a
                # run would), waiting for a run under way.
                from pixels_sql.pipeline import create_views

                create_views(
                    self.spark,
                    self.database,
                    holder="pixels-sql serve (DICOMweb index: the catalog's views)",
                    wait=math.inf,
                    say=log.warning,
                )
            # Partition by partition: one collected result of 100,000 rows could be lost
            # from the driver's block manager (TaskResultLost) on a small driver.
            frame = self.spark.sql(catalog_query(self.database))
            rows = [row.asDict() for row in frame.toLocalIterator(prefetchPartitions=True)]
        held = {(row["SOPInstanceUID"], row["path"], row["modified_ms"]) for row in rows}
        with self._lock:
            received = dict(self._received)
        connection = build_database(rows, received.values())
        with self._lock:
            # What the catalog now holds as it was received needs no keeping; what arrived
            # while the database was built goes into it now.
            for sop, row in list(self._received.items()):
                if (sop, row["path"], row["modified_ms"]) in held:
                    del self._received[sop]
                elif received.get(sop) is not row:
                    put_instance(connection, row)
            previous, self._connection = self._connection, connection
            self._partitions = partitions
        previous.close()
        self.built_at = time.time()
        self.build_seconds = time.monotonic() - started
        return True

    def keep_fresh(self, stop: threading.Event, every: float) -> None:
        """Check the catalog for new partitions every ``every`` seconds until ``stop``, and
        rebuild when it has some (a thread's loop)."""
        failures = 0
        while not stop.wait(every):
            try:
                self.refresh()
            except Exception:
                # A catalog being rewritten by a run: the index keeps serving its last copy and
                # tries again at the next tick (a failed build leaves the partitions it saw
                # unrecorded, so the next tick rebuilds). The traceback once per failure series.
                failures += 1
                if failures == 1:
                    log.warning("DICOMweb index refresh failed; retrying", exc_info=True)
                else:
                    log.warning("DICOMweb index refresh failed again (%d in a row)", failures)
                continue
            if failures:
                log.warning("DICOMweb index refresh recovered after %d failures", failures)
                failures = 0

    def _query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        deadline = time.monotonic() + SEARCH_SECONDS
        with self._lock:
            self._connection.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
            try:
                return self._connection.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if "interrupted" not in str(exc):
                    raise
                raise QueryError(
                    f"the search took more than {SEARCH_SECONDS:g} s and was stopped: narrow it"
                ) from None
            finally:
                self._connection.set_progress_handler(None, 0)

    def search(
        self, search: Search, study_uid: str | None = None, series_uid: str | None = None
    ) -> list[tuple[Any, ...]]:
        select, order = _SEARCH_SQL[search.level]
        conditions: list[str] = []
        params: list[Any] = []
        if study_uid is not None:
            conditions.append("st.study_uid = ?")
            params.append(study_uid)
        if series_uid is not None:
            conditions.append("se.series_uid = ?")
            params.append(series_uid)
        items: dict[tuple[str, str], list[Match]] = defaultdict(list)
        for match in search.matches:
            if match.keyword in ITEM_KEYS:
                items[ITEM_KEYS[match.keyword][0]].append(match)
                continue
            condition, values = _condition(match)
            conditions.append(condition)
            params += values
        for column, matches in items.items():
            condition, values = _item_condition(column, matches)
            conditions.append(condition)
            params += values
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        params += [search.limit, search.offset]
        order = ", ".join([*map(_order_term, search.order), order])
        return self._query(f"{select}{where} ORDER BY {order} LIMIT ? OFFSET ?", params)

    def instances(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> list[Instance]:
        """The catalogued instances of a study, series or one instance, in series order."""
        sql = (
            "SELECT study_uid, series_uid, sop_uid, path, length, modified_ms, transfer_syntax,"
            " sop_class_uid"
            " FROM instances WHERE study_uid = ?"
        )
        params: list[Any] = [study_uid]
        if series_uid is not None:
            sql += " AND series_uid = ?"
            params.append(series_uid)
        if sop_uid is not None:
            sql += " AND sop_uid = ?"
            params.append(sop_uid)
        sql += " ORDER BY series_uid, instance_order, sop_uid"
        return [Instance(*row) for row in self._query(sql, params)]

    def instance(self, sop_uid: str) -> Instance | None:
        """The served copy of an instance by its SOP Instance UID alone (any study)."""
        rows = self._query(
            "SELECT study_uid, series_uid, sop_uid, path, length, modified_ms, transfer_syntax,"
            " sop_class_uid"
            " FROM instances WHERE sop_uid = ?",
            [sop_uid],
        )
        return Instance(*rows[0]) if rows else None

    def counts(self) -> dict[str, int]:
        row = self._query(
            "SELECT (SELECT count(*) FROM studies), (SELECT count(*) FROM series),"
            " (SELECT count(*) FROM instances)",
            [],
        )[0]
        return {"studies": row[0], "series": row[1], "instances": row[2]}


def element_json(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text else {}
