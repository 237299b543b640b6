"""The attribute registry (pixels_sql/dicom/attributes) and the files generated from it.

No JVM: the registry and its generator are pure Python. The pipeline's, dbt's and DICOMweb's
own tests check that what is generated still runs and answers the same.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from pydicom.datadict import DicomDictionary, get_entry, tag_for_keyword

from pixels_sql.dicom import attributes
from pixels_sql.dicom.attributes import (
    ATTRIBUTES,
    CATALOG_COLUMN_NAMES,
    CATALOG_COLUMNS,
    INDEX_COLUMNS,
    MATCH_KINDS,
    PROMOTED,
    QIDO_LEVELS,
    SQL_TYPES_BY_VR,
    by_tag,
    column_sql,
    matching_keys,
    sql_type,
)
from pixels_sql.dicom.attributes import __main__ as command
from pixels_sql.dicom.attributes.generate import (
    REGIONS,
    RegionError,
    differing,
    render_text,
    write,
)

ROOT = Path(__file__).resolve().parents[1]


def test_generated_files_match_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    """Every checked-in generated region is what the registry generates (`--check`)."""
    code = command.main(["--check"])
    out, err = capsys.readouterr()
    assert code == 0, f"{err}\n{out}"
    assert differing() == {}


def test_tag_vr_vm_agree_with_the_ps36_dictionary() -> None:
    for keyword, attribute in ATTRIBUTES.items():
        assert attribute.keyword == keyword
        assert tag_for_keyword(keyword) == attribute.tag, keyword
        vr, vm, _name, retired, dictionary_keyword = get_entry(attribute.tag)
        assert (dictionary_keyword, vr, vm) == (keyword, attribute.vr, attribute.vm), keyword
        assert not retired, f"{keyword} is retired in PS3.6"


def test_every_dictionary_vr_has_an_sql_type() -> None:
    # "NONE": the item and delimitation tags, no attributes (PS3.5 7.5; by_tag gives None).
    vrs = {entry[0] for entry in DicomDictionary.values()} - {"NONE"}
    for vr in vrs:
        for single in vr.split(" or "):
            if single == attributes.SEQUENCE_VR:
                continue
            assert single in SQL_TYPES_BY_VR, vr
            assert sql_type(vr, multiple=True) == f"ARRAY<{sql_type(vr, multiple=False)}>"
    # The mapping (BigQuery's DICOM export), group by group.
    for vr in ("AE", "AS", "CS", "LO", "LT", "SH", "ST", "UC", "UI", "UR", "UT", "DS", "IS"):
        assert SQL_TYPES_BY_VR[vr] == "STRING", vr
    for vr in ("SS", "US", "SL", "UL", "SV", "UV", "AT"):
        assert SQL_TYPES_BY_VR[vr] == "BIGINT", vr
    assert (SQL_TYPES_BY_VR["FL"], SQL_TYPES_BY_VR["FD"]) == ("DOUBLE", "DOUBLE")
    assert (SQL_TYPES_BY_VR["DA"], SQL_TYPES_BY_VR["DT"]) == ("DATE", "TIMESTAMP")
    assert set(attributes.NUMERIC_TWIN_TYPES_BY_VR) == {"DS", "IS"}
    with pytest.raises(attributes.UnknownVRError, match="XX"):
        sql_type("XX", multiple=False)
    with pytest.raises(ValueError, match="sequence_type"):
        sql_type("SQ", multiple=True)


def test_by_tag_falls_back_to_the_dictionary() -> None:
    assert by_tag(0x0020000D) is ATTRIBUTES["StudyInstanceUID"]
    slope = by_tag(0x00281053)
    assert slope is not None and slope.keyword == "RescaleSlope" and slope.vr == "DS"
    assert slope.column is None and slope.qido is None and slope.index is None
    assert by_tag(0x00291010) is None  # private (odd group)
    assert by_tag(0x7FE1FFFF) is None
    assert by_tag(0xFFFEE0DD) is None  # SequenceDelimitationItem: no attribute
    # A repeating-group attribute (60xx: one keyword for 16 groups) is no single attribute.
    assert by_tag(0x60003000) is None and by_tag(0x60023000) is None


def test_catalog_columns() -> None:
    assert len(set(CATALOG_COLUMN_NAMES)) == len(CATALOG_COLUMN_NAMES)
    assert CATALOG_COLUMN_NAMES[-1] == "ingest_run"  # the partition column comes last
    promoted = [c for c in CATALOG_COLUMNS if c.attribute is not None]
    assert [ATTRIBUTES[c.attribute] for c in promoted] == list(PROMOTED)
    for column in promoted:
        attribute = ATTRIBUTES[column.attribute]
        assert attribute.column is column and column.name == attribute.keyword
        assert CATALOG_COLUMNS[column.position] is column
        # A promoted column holds the first value: an attribute of one value.
        assert attribute.vm == "1", attribute.keyword
        assert column.sql_type in ("STRING", "INT", "DATE")
        assert attribute.tag_text in column.description
    assert column_sql(ATTRIBUTES["StudyDate"]) == (
        "try_to_date(regexp_replace(try_variant_get(meta, '$.00080020.Value[0]', 'string'),"
        " '^([0-9]{4})[.]([0-9]{2})[.]([0-9]{2})$', '$1$2$3'), 'yyyyMMdd')"
    )
    with pytest.raises(ValueError, match="not a column"):
        column_sql(ATTRIBUTES["KVP"])


def test_dbt_attribute_view_columns() -> None:
    """dbt's instance_attributes view: an ARRAY for an attribute of several values, a scalar
    (its first value) for one of one value; none is a catalog column already."""
    assert attributes.VIEW_ATTRIBUTES
    for attribute in attributes.VIEW_ATTRIBUTES:
        assert attribute.column is None, attribute.keyword
        assert attribute.view_type.startswith("ARRAY<") == attribute.multiple, attribute.keyword


def test_qido_roles() -> None:
    levels = {"patient": "study", "study": "study", "series": "series", "instance": "instance"}
    keys = set()
    for level in QIDO_LEVELS:
        for key, kind in matching_keys(level).items():
            # A key within a sequence's items is written Sequence.Keyword (PS3.18 8.3.4.1).
            sequence, _, keyword = key.rpartition(".")
            attribute = ATTRIBUTES[keyword]
            assert sequence == (attribute.qido.sequence or ""), key
            if sequence:
                assert ATTRIBUTES[sequence].vr == "SQ" and ATTRIBUTES[sequence].level == level
            assert kind in MATCH_KINDS
            # A matching key is matched at its information level (patient keys with studies).
            assert levels[attribute.level] == level, keyword
            # ... from a column of that level's index table (a key in a sequence's items: the
            # sequence's column).
            column = ATTRIBUTES[sequence].index if sequence else attribute.index
            assert column is not None and column.level == level, keyword
            keys.add(keyword)
        names = [a.index.name for a in INDEX_COLUMNS[level]]
        assert len(set(names)) == len(names)
    # Person names match as names, dates as ranges, UIDs as lists (PS3.4 C.2.2.2).
    for attribute in ATTRIBUTES.values():
        if attribute.keyword in keys:
            kind = attribute.qido.match
            assert (attribute.vr == "PN") == (kind == attributes.PN_MATCH), attribute.keyword
            assert (attribute.vr == "DA") == (kind == attributes.DATE_MATCH), attribute.keyword
            assert (attribute.vr == "TM") == (kind == attributes.TIME_MATCH), attribute.keyword
            assert (attribute.vr == "IS") == (kind == attributes.NUMBER_MATCH), attribute.keyword
            if kind == attributes.UID_MATCH:
                assert attribute.vr == "UI"


def test_consumers_read_the_registry() -> None:
    from pixels_sql.servers.dicomweb import index, query

    for level in query.Level:
        assert query.MATCHING_KEYS[level] == matching_keys(level.value)
    assert set(index.COLUMNS) == {a.keyword for level in QIDO_LEVELS for a in INDEX_COLUMNS[level]}
    keys = {k for level in QIDO_LEVELS for k in matching_keys(level)}
    assert keys == (set(index.COLUMNS) | set(index.ITEM_KEYS)) & keys
    assert set(index.ITEM_KEYS) <= keys
    study_tags = {a.hex for a in ATTRIBUTES.values() if a.qido and a.qido.level == "study"}
    assert set(index.STUDY_TAGS) == study_tags - {
        a.hex for a in ATTRIBUTES.values() if a.qido and a.qido.computed
    }
    for level in QIDO_LEVELS:
        for attribute in INDEX_COLUMNS[level]:
            assert f" {attribute.index.name} TEXT" in index.SCHEMA
    for attribute in PROMOTED:
        assert f" AS {attribute.keyword}" in index.catalog_query("db") or attribute.index is None


def _copy(tmp_path: Path) -> Path:
    for path in {region.path for region in REGIONS}:
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, target)
    return tmp_path


def test_a_hand_edit_is_found_and_rewritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy(tmp_path)
    meta = root / "sql/20_meta.sql"
    text = meta.read_text()
    edited = text.replace(" AS SeriesNumber,", " AS SeriesNo,")
    assert edited != text
    meta.write_text(edited)
    assert command.main(["--check", "--root", str(root)]) == 1
    out, err = capsys.readouterr()
    assert "sql/20_meta.sql" in err and "+  try_variant_get(meta, '$.00200011" in out
    assert write(root) == ["sql/20_meta.sql"]
    assert meta.read_text() == text
    assert command.main(["--check", "--root", str(root)]) == 0


def test_text_outside_the_markers_is_kept_and_markers_are_required(tmp_path: Path) -> None:
    (region,) = [r for r in REGIONS if r.path == "sql/20_meta.sql"]
    begin = f"-- BEGIN generated by pixels_sql.dicom.attributes: {region.name}"
    end = f"-- END generated by pixels_sql.dicom.attributes: {region.name}"
    text = f"SELECT\n  a,\n  {begin}\n  stale,\n  {end}\n  b\n"
    rendered = render_text(text, [region])
    assert rendered.startswith(f"SELECT\n  a,\n  {begin}\n  try_variant_get(meta, '$.0020000D")
    assert rendered.endswith(f"AS NumberOfFrames,\n  {end}\n  b\n")
    assert "stale" not in rendered
    assert render_text(rendered, [region]) == rendered
    with pytest.raises(RegionError, match="no BEGIN marker"):
        render_text("SELECT 1\n", [region])
    with pytest.raises(RegionError, match="no END marker"):
        render_text(f"{begin}\nx\n", [region])
    root = _copy(tmp_path)
    (root / region.path).write_text("SELECT 1\n")
    assert command.main(["--check", "--root", str(root)]) == 2
    assert command.main(["--check", "--root", str(tmp_path / "nowhere")]) == 2


def test_the_catalog_script_creates_the_registry_columns() -> None:
    """sql/10_catalog.sql's CREATE TABLE and 20_meta.sql's SELECT name the registry's columns
    in its order (the INSERT is positional: an order that differed would swap columns)."""
    create = (ROOT / "sql/10_catalog.sql").read_text()
    body = create[create.index("CREATE TABLE IF NOT EXISTS object_catalog") :]
    body = body[: body.index("PARTITIONED BY")]
    found = re.findall(r"^\s+`?(\w+)`?\s+([A-Z][A-Z<>]*)", body, flags=re.MULTILINE)
    assert found == [(c.name, c.sql_type) for c in CATALOG_COLUMNS]
    insert = (ROOT / "sql/20_meta.sql").read_text()
    start = insert.index("INSERT INTO object_catalog")
    select = insert[start : insert.index("\nFROM (", start)]
    aliases = re.findall(r"\bAS `?(\w+)`?,?$|^  (\w+),$", select, flags=re.MULTILINE)
    names = [alias or bare for alias, bare in aliases]
    assert names == list(CATALOG_COLUMN_NAMES)


def test_the_documented_vr_types_are_the_registry_s() -> None:
    """docs/tables.md's VR -> column type table (object_header) says what SQL_TYPES_BY_VR does,
    and names every VR once."""
    text = (ROOT / "docs/tables.md").read_text()
    table = text[text.index("| VR | column type | value |") :].split("\n\n", 1)[0]
    rows = [line.split("|")[1:3] for line in table.splitlines()[2:]]
    seen: list[str] = []
    for vrs, kind in rows:
        for vr in (v.strip() for v in vrs.split(",")):
            seen.append(vr)
            if vr == attributes.SEQUENCE_VR:
                assert kind.strip().startswith("ARRAY<STRUCT<"), vr
                continue
            documented = kind.strip().split(", plus ")[0]  # DS, IS: "STRING, plus a twin"
            expected = SQL_TYPES_BY_VR[vr]
            if vr == "PN":
                expected = re.sub(r": STRING", "", expected)
            assert documented == expected, vr
    assert sorted(seen) == sorted([*SQL_TYPES_BY_VR, attributes.SEQUENCE_VR])
