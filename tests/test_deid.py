"""De-identification (PS3.15 Annex E) of single files: the tables as data, the transform on
marked files for the Basic Profile and every option, consistency across files, valid output
(pydicom, DCMTK's dcmdump, dicom3tools' dciodvfy), pixels untouched, bad input."""

from __future__ import annotations

import datetime as dt
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import config as pydicom_config
from pydicom.data import get_testdata_file
from pydicom.valuerep import validate_value

from pixels_sql.deid import standard
from pixels_sql.deid.files import deidentify
from pixels_sql.deid.keys import DeidKeyError, Pseudonyms, load_key
from pixels_sql.deid.pixels import PixelPolicy
from pixels_sql.deid.profile import EXCLUSIVE, OPTIONS, Action, Profile, ProfileError
from pixels_sql.errors import DicomReadError
from tests.corpus import PYDICOM_TEST_FILES, corpus_files
from tests.deid_markers import ITEM_IDENTIFIER, ITEM_REFERENCE, MarkedFile, marked_file, surviving

ALLOW = PixelPolicy(allow_burned_in=True)  # the corpus has images that say they hold text

KEY = b"a test key of thirty-two bytes!!"
TEMPLATE = PYDICOM_TEST_FILES / "CT_small.dcm"


@pytest.fixture(scope="module")
def marked() -> MarkedFile:
    return marked_file(TEMPLATE)


def run(data: bytes, *options: str, key: bytes = KEY) -> pydicom.Dataset:
    result = deidentify(data, Profile.of(list(options)), key, policy=ALLOW)
    return pydicom.dcmread(io.BytesIO(result.data))


# -- the tables ------------------------------------------------------------------------------


def test_the_tables_are_the_standard_s_rows_with_valid_codes() -> None:
    rows = standard.read_profile()
    assert standard.edition_of(standard.PROFILE_CSV) == "2026c"
    assert standard.edition_of(standard.SAFE_PRIVATE_CSV) == "2026c"
    assert len(rows) == 656 and len({row.tag for row in rows}) == 656
    for row in rows:
        row.check()
    by_tag = {row.tag: row for row in rows}
    # A few rows as PS3.15 2026c prints them.
    assert by_tag["00100010"].basic == "Z"  # Patient's Name
    assert by_tag["00100020"].basic == "Z/D"  # Patient ID
    assert (by_tag["00080018"].basic, by_tag["00080018"].options) == ("U", {"retain_uids": "K"})
    assert by_tag["00081140"].basic == "X/Z/U*"  # Referenced Image Sequence
    assert by_tag[standard.PRIVATE_TAG].options == {"retain_safe_private": "C"}
    assert by_tag["60xx3000"].options == {"clean_graphics": "C"}
    safe = standard.read_safe_private()
    assert len(safe) == 479
    for row in safe:
        row.check()
    # Every option column of the table is an option users can choose, and the reverse.
    assert set(standard.OPTION_COLUMNS) == {option.column for option in OPTIONS.values()}


DOCBOOK = """<?xml version="1.0" encoding="utf-8"?>
<book xmlns="http://docbook.org/ns/docbook" label="PS3.15">
 <table label="E.1-1"><caption>Application Level Confidentiality Profile Attributes</caption>
  <thead><tr>{heads}</tr></thead>
  <tbody>
   <tr><td><para>Accession Number</para></td><td><para>(0008,0050)</para></td>
    <td><para>N</para></td><td><para>Y</para></td><td><para>Z</para></td>{blank}</tr>
   <tr><td><para>Overlay Data</para></td><td><para>(60xx,3000)</para></td><td><para>N</para></td>
    <td><para>Y</para></td><td><para>X</para></td>{graphics}</tr>
   <tr><td><para>Private Attributes</para></td><td><para>(gggg,eeee) where gggg is odd</para></td>
    <td><para>N</para></td><td><para>N</para></td><td><para>X</para></td>{safe}</tr>
  </tbody></table>
 <table label="E.3.10-1"><thead><tr><th><para>Data Element</para></th>
  <th><para>Private Creator</para></th><th><para>VR</para></th><th><para>VM</para></th>
  <th><para>Meaning</para></th></tr></thead>
  <tbody><tr><td><para>(0019,xx23)</para></td><td><para>GEMS_ACQU_01</para></td>
   <td><para>DS</para></td><td><para>1</para></td><td><para>Table Speed [mm/rotation]</para></td>
  </tr></tbody></table>
</book>
"""
HEADINGS = [
    "Attribute Name",
    "Tag",
    "Retd. (from PS3.6)",
    "In Std. Comp. IOD (from PS3.3)",
    "Basic Prof.",
    "Rtn. Safe Priv. Opt.",
    "Rtn. UIDs Opt.",
    "Rtn. Dev. Id. Opt.",
    "Rtn. Inst. Id. Opt.",
    "Rtn. Pat. Chars. Opt.",
    "Rtn. Long. Full Dates Opt.",
    "Rtn. Long. Modif. Dates Opt.",
    "Clean Desc. Opt.",
    "Clean Struct. Cont. Opt.",
    "Clean Graph. Opt.",
]


def _cells(codes: dict[int, str]) -> str:
    return "".join(f"<td><para>{codes.get(column, '')}</para></td>" for column in range(10))


def test_the_checked_in_tables_are_what_the_tool_writes() -> None:
    """Each table read and written again, its rows in any order, is the checked-in file byte
    for byte: the tool's one CSV writer keeps the format the data was made with."""
    for path, read, write in (
        (standard.PROFILE_CSV, standard.read_profile, standard.profile_csv),
        (standard.SAFE_PRIVATE_CSV, standard.read_safe_private, standard.safe_private_csv),
    ):
        rows = read(path)[::-1]
        assert write(rows, standard.edition_of(path)) == path.read_text(encoding="utf-8")


def test_the_update_tool_reads_the_standard_s_docbook_by_its_headings(tmp_path: Path) -> None:
    heads = "".join(f"<th><para>{heading}</para></th>" for heading in HEADINGS)
    document = tmp_path / "part15.xml"
    document.write_text(
        DOCBOOK.format(
            heads=heads, blank=_cells({}), graphics=_cells({9: "C"}), safe=_cells({0: "C"})
        )
    )
    assert standard.main([str(document), "--edition", "2099z", "--out", str(tmp_path)]) == 0
    profile = standard.read_profile(tmp_path / standard.PROFILE_CSV.name)
    assert [(row.tag, row.basic, row.options) for row in profile] == [
        ("00080050", "Z", {}),
        ("60xx3000", "X", {"clean_graphics": "C"}),
        (standard.PRIVATE_TAG, "X", {"retain_safe_private": "C"}),
    ]
    assert standard.edition_of(tmp_path / standard.PROFILE_CSV.name) == "2099z"
    safe = standard.read_safe_private(tmp_path / standard.SAFE_PRIVATE_CSV.name)
    assert [(row.creator, row.element, row.vr) for row in safe] == [
        ("GEMS_ACQU_01", "0019xx23", "DS")
    ]
    # A column the tool does not know stops it, naming the column.
    document.write_text(
        DOCBOOK.format(
            heads=heads + "<th><para>Rtn. Future Opt.</para></th>",
            blank=_cells({}),
            graphics=_cells({}),
            safe=_cells({}),
        )
    )
    with pytest.raises(standard.TableError, match="rtn future opt"):
        standard.parse_profile(
            __import__("xml.etree.ElementTree").etree.ElementTree.parse(document).getroot()
        )


def test_options_are_checked_and_presets_expand() -> None:
    assert Profile.of(["TCIA"]).options >= {"retain_safe_private", "clean_descriptors"}
    with pytest.raises(ProfileError, match="unknown de-identification option 'retain_faces'"):
        Profile.of(["retain_faces"])
    with pytest.raises(ProfileError, match="choose one of"):
        Profile.of(list(EXCLUSIVE))
    row = standard.ProfileRow(
        "00080018", "SOP Instance UID", False, True, "U", {"retain_uids": "K"}
    )
    assert Profile.of([]).action_for_row(row) == Action("U", "U", "U")
    assert Profile.of(["retain_uids"]).action_for_row(row) == Action("K", "U", "U")


# -- the Basic Profile on a marked file --------------------------------------------------------


def _outcome(profile: Profile, tag: str, vr: str) -> str:
    """What the standard and docs/deidentification.md say happens to an attribute: X gone,
    Z empty, D dummy, K kept, U new UID, S shifted date (Modified Dates), Q sequence kept and
    walked."""
    action = profile.actions()[tag]
    code = action.code
    if code == "C":
        modified = "retain_longitudinal_modified_dates" in profile.options
        if vr == "SQ":
            return "Q"
        if modified and vr in ("DA", "DT"):
            return "S"
        if modified and vr == "TM":
            return "K"
        code = action.basic
    if vr == "SQ":  # emptied where the table says Z alone, else kept and walked
        return "X" if code == "X" else ("Z" if code == action.table == "Z" else "Q")
    if code == "D" and vr == "UI":
        return "U"
    return code


def _check_top_level(marked: MarkedFile, output: pydicom.Dataset, profile: Profile) -> None:
    shift = None
    if "retain_longitudinal_modified_dates" in profile.options:
        shift = Pseudonyms(KEY).shift_days(_patient_of(marked))
    for tag, marker in marked.top().items():
        outcome = _outcome(profile, f"{tag:08X}", marker.vr)
        present = tag in output
        where = f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {marker.vr} {outcome}"
        if outcome == "X":
            assert not present, where
            continue
        assert present, where
        element = output[tag]
        if outcome == "K":
            assert element.value == marker.value or str(element.value) == str(marker.value), where
        elif outcome == "Z":
            if tag == 0x00100010:  # Patient's Name: a pseudonym (Z allows a dummy value)
                assert str(element.value).startswith("PSEUDONYM^"), where
            else:
                assert element.value in ("", None, b"") or element.VR == "SQ", where
                assert element.VR != "SQ" or len(element.value) == 0, where
        elif outcome == "D":
            assert element.value not in (None, "", marker.value), where
            if marker.vr in ("AE", "AS", "CS", "DA", "DT", "TM", "DS", "IS", "LO", "SH", "PN"):
                validate_value(marker.vr, element.value, pydicom_config.RAISE)
        elif outcome == "U":
            assert str(element.value).startswith("2.25."), where
            validate_value("UI", element.value, pydicom_config.RAISE)
        elif outcome == "S":
            original = dt.datetime.strptime(str(marker.value)[:8], "%Y%m%d").date()
            moved = dt.datetime.strptime(str(element.value)[:8], "%Y%m%d").date()
            assert shift is not None and (original - moved).days == shift, where
            assert str(element.value)[8:] == str(marker.value)[8:], where
        elif outcome == "Q":
            assert len(element.value) == 1, where
            item = element.value[0]
            assert ITEM_IDENTIFIER not in item, where  # X inside the kept item
            reference = profile.actions()[f"{ITEM_REFERENCE:08X}"].code
            kept = str(item[ITEM_REFERENCE].value)
            assert kept.startswith("2.25.") if reference == "U" else kept.startswith("1.2.999"), (
                where
            )


def _patient_of(marked: MarkedFile) -> str:
    from pixels_sql.deid.transform import _patient_key

    return _patient_key(pydicom.dcmread(io.BytesIO(marked.data)))


def _expected_survivors(marked: MarkedFile, profile: Profile) -> set[bytes]:
    survivors = set()
    for marker in marked.markers:
        if marker.text is None:
            continue
        if marker.parent is not None and _outcome(profile, f"{marker.parent:08X}", "SQ") != "Q":
            continue  # its sequence is gone or emptied
        if _outcome(profile, f"{marker.tag:08X}", marker.vr) == "K":
            survivors.add(marker.text)
    if "retain_safe_private" in profile.options:
        survivors.add(marked.private_markers["safe"])
    return survivors


def _all_texts(marked: MarkedFile) -> list[bytes]:
    texts = [marker.text for marker in marked.markers if marker.text is not None]
    return texts + list(marked.private_markers.values())


def test_the_basic_profile_leaves_no_marker_anywhere(marked: MarkedFile) -> None:
    result = deidentify(marked.data, Profile.of([]), KEY)
    found = surviving(result.data, _all_texts(marked))
    assert found == set(), sorted(found)[:20]
    output = pydicom.dcmread(io.BytesIO(result.data))
    _check_top_level(marked, output, Profile.of([]))
    assert output.PatientIdentityRemoved == "YES"
    assert output.LongitudinalTemporalInformationModified == "REMOVED"
    assert [item.CodeValue for item in output.DeidentificationMethodCodeSequence] == ["113100"]
    assert output.file_meta.MediaStorageSOPInstanceUID == output.SOPInstanceUID
    assert result.data[:128] == b"\0" * 128
    assert not any(tag >> 16 & 1 for tag in output.keys())  # noqa: SIM118 (tags: none private)
    # Nested one and two levels down, the same actions.
    outer = output[0x00081115].value[0]
    inner = outer[0x00081115].value[0]
    for item in (outer, inner):
        assert "PatientID" not in item or item.PatientID == "ANONYMIZED"
        assert str(item.SOPInstanceUID).startswith("2.25.")


@pytest.mark.parametrize("option", [*OPTIONS, "tcia"])
def test_each_option_keeps_or_cleans_what_its_column_says(marked: MarkedFile, option: str) -> None:
    profile = Profile.of([option])
    result = deidentify(marked.data, profile, KEY)
    found = surviving(result.data, _all_texts(marked))
    expected = _expected_survivors(marked, profile)
    assert found == expected, (sorted(found - expected)[:10], sorted(expected - found)[:10])
    output = pydicom.dcmread(io.BytesIO(result.data))
    _check_top_level(marked, output, profile)
    codes = [item.CodeValue for item in output.DeidentificationMethodCodeSequence]
    assert codes == [
        "113100",
        *(o.code_keyword and _code(o.code_keyword) for o in profile.method_options()[1:]),
    ]
    kept = [tag for tag in output.keys() if tag >> 16 & 1]  # noqa: SIM118 (tags)
    if option not in ("retain_safe_private", "tcia"):
        assert kept == []
        return
    creator, group, element = marked.safe_private
    assert output[(group << 16) | 0x0011].value == creator
    assert (group << 16) | 0x1100 | element in kept
    safe = {(row.creator, row.element) for row in standard.read_safe_private()}
    for tag in kept:  # the template's own private blocks: only what the table lists stays
        block_element = tag & 0xFFFF
        if block_element > 0xFF:
            block_creator = output[(tag & 0xFFFF0000) | block_element >> 8].value
            assert (block_creator, f"{tag >> 16:04X}xx{tag & 0xFF:02X}") in safe, hex(tag)


def _code(keyword: str) -> str:
    from pydicom.sr.codedict import codes

    return getattr(codes.DCM, keyword).value


# -- consistency ---------------------------------------------------------------------------------


def _pair(tmp_path: Path) -> tuple[bytes, bytes, pydicom.Dataset]:
    first = pydicom.dcmread(TEMPLATE)
    second = pydicom.dcmread(TEMPLATE)
    second.SOPInstanceUID = first.SOPInstanceUID + ".2"
    second.StudyDate = "20040301"
    reference = pydicom.Dataset()
    reference.ReferencedSOPClassUID = first.SOPClassUID
    reference.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.ReferencedImageSequence = [reference]
    return _bytes(first), _bytes(second), first


def _bytes(dataset: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_references_pseudonyms_and_date_intervals_are_consistent(tmp_path: Path) -> None:
    first, second, original = _pair(tmp_path)
    options = ("retain_longitudinal_modified_dates",)
    a, b = run(first, *options), run(second, *options)
    assert b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID != original.SOPInstanceUID
    assert a.StudyInstanceUID == b.StudyInstanceUID != original.StudyInstanceUID
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID
    assert a.PatientID == b.PatientID != original.PatientID
    days = (dt.date(2004, 3, 1) - dt.date(2004, 1, 19)).days  # the two study dates' interval
    moved = [dt.datetime.strptime(x.StudyDate, "%Y%m%d").date() for x in (a, b)]
    assert (moved[1] - moved[0]).days == days
    # Another run, the same key: the same output, byte for byte.
    again = deidentify(first, Profile.of(list(options)), KEY).data
    assert again == deidentify(first, Profile.of(list(options)), KEY).data
    # Another key: other UIDs and pseudonyms.
    other = run(first, *options, key=b"another key, another 32 bytes!!!")
    assert other.SOPInstanceUID != a.SOPInstanceUID and other.PatientID != a.PatientID


# -- the whole corpus: valid files, pixels untouched ---------------------------------------------


def _dciodvfy_errors(path: Path) -> set[str]:
    done = subprocess.run(
        ["dciodvfy", str(path)], capture_output=True, text=True, errors="replace", timeout=60
    )
    lines = (done.stdout + done.stderr).splitlines()
    # The same error about a UID before and after names another UID: compare without them.
    return {
        re.sub(r"UID <?[\d.]+>?", "UID <uid>", line) for line in lines if line.startswith("Error")
    }


def test_every_corpus_instance_gives_a_valid_file_with_the_same_pixels(tmp_path: Path) -> None:
    assert shutil.which("dciodvfy") and shutil.which("dcmdump"), "run `make dicom-tools`"
    written = refused = 0
    for path in corpus_files():
        data = path.read_bytes()
        try:
            result = deidentify(data, Profile.of(["tcia"]), KEY, name=path.name, policy=ALLOW)
        except DicomReadError as error:
            assert error.reason in {"not_dicom", "truncated", "empty", "not_an_instance", "corrupt"}
            assert "\n" not in str(error)
            refused += 1
            continue
        written += 1
        out = tmp_path / f"{written}.dcm"
        out.write_bytes(result.data)
        before = pydicom.dcmread(path, force=True)
        after = pydicom.dcmread(out)
        if result.cleaned_regions:  # a starter rule's layout (below): cleaned, uncompressed
            assert (after.pixel_array == _blacked(before, result.cleaned_regions)).all()
        elif "PixelData" in before:
            assert after.PixelData == before.PixelData, path.name
        dump = subprocess.run(
            ["dcmdump", str(out)], capture_output=True, text=True, errors="replace", timeout=60
        )
        assert dump.returncode == 0, (path.name, dump.stderr[-500:])
        new_errors = _dciodvfy_errors(out) - _dciodvfy_errors(path)
        assert not new_errors, (path.name, sorted(new_errors)[:5])
    assert written >= 150 and refused >= 10


def _blacked(dataset: pydicom.Dataset, regions) -> np.ndarray:
    """``dataset``'s pixels with ``regions`` black (MONOCHROME2 and RGB: 0)."""
    pixels = dataset.pixel_array.copy()
    for region in regions:
        pixels[..., region.y : region.y + region.height, region.x : region.x + region.width] = 0
    return pixels


def test_a_starter_rule_cleans_a_real_vendor_layout() -> None:
    # pydicom's JPGLosslessP14SV1_1s_1f_8b.dcm is a Philips EPIQ 7C echo, 768x1024: the starter
    # rules (from CTP's library) black out its top band, where the device writes the patient.
    path = Path(get_testdata_file("JPGLosslessP14SV1_1s_1f_8b.dcm"))
    result = deidentify(path.read_bytes(), Profile.of([]), KEY, name=path.name)
    assert [tuple(r) for r in result.cleaned_regions] == [
        (0, 0, 1024, 49, "Philips EPIQ ultrasound, 768 rows: the top band")
    ]
    output = pydicom.dcmread(io.BytesIO(result.data))
    before = pydicom.dcmread(path)
    assert (output.pixel_array[:49] == 0).all()
    assert (output.pixel_array[49:] == before.pixel_array[49:]).all()
    assert output.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


def test_a_big_endian_image_cleaned_by_a_rule_stays_big_endian() -> None:
    # OBXXXX1A_expb.dcm is a Philips CX50 obstetric scan (600 rows, palette colour) in the
    # retired Explicit VR Big Endian: its palettes are copied as read, so the pixels follow.
    path = Path(get_testdata_file("OBXXXX1A_expb.dcm"))
    result = deidentify(path.read_bytes(), Profile.of([]), KEY, name=path.name)
    assert [r.source for r in result.cleaned_regions] == [
        "Philips CX50 ultrasound, 600 rows: the top band"
    ]
    output = pydicom.dcmread(io.BytesIO(result.data))
    before = pydicom.dcmread(path)
    assert output.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRBigEndian
    assert (output.pixel_array == _blacked(before, result.cleaned_regions)).all()
    assert output.RedPaletteColorLookupTableData == before.RedPaletteColorLookupTableData
    little = deidentify(
        Path(get_testdata_file("OBXXXX1A.dcm")).read_bytes(), Profile.of([]), KEY, name="le"
    )
    assert (pydicom.dcmread(io.BytesIO(little.data)).pixel_array == output.pixel_array).all()


def test_uncompressed_and_lossless_images_decode_to_the_same_pixels() -> None:
    for name in ("CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "emri_small_big_endian.dcm"):
        path = Path(get_testdata_file(name))
        output = run(path.read_bytes())
        assert (output.pixel_array == pydicom.dcmread(path).pixel_array).all(), name


# -- bad input and the key -----------------------------------------------------------------------


def _nested(depth: int, implicit: bool) -> bytes:
    """CT_small with a marked name ``depth`` sequences down."""
    dataset = pydicom.dcmread(TEMPLATE)
    inner = pydicom.Dataset()
    inner.PatientName = "DEEP^MARKER"
    for _ in range(depth - 1):
        outer = pydicom.Dataset()
        outer.ReferencedImageSequence = pydicom.Sequence([inner])
        inner = outer
    dataset.ReferencedImageSequence = pydicom.Sequence([inner])
    if implicit:
        dataset.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    written = io.BytesIO()
    dataset.save_as(written, enforce_file_format=True)
    return written.getvalue()


def test_sequences_nest_as_deep_as_every_reader_reads_and_no_deeper() -> None:
    from pixels_sql.dicom.encoding import MAX_SEQUENCE_DEPTH

    for implicit in (False, True):  # the byte walk, the pydicom path
        deepest = deidentify(_nested(MAX_SEQUENCE_DEPTH, implicit), Profile.of([]), KEY)
        assert b"DEEP^MARKER" not in deepest.data
        with pytest.raises(DicomReadError) as refused:
            deidentify(_nested(MAX_SEQUENCE_DEPTH + 1, implicit), Profile.of([]), KEY)
        assert refused.value.reason == "too_deep"


def test_bad_files_get_a_reason_and_no_output(tmp_path: Path) -> None:
    ct = TEMPLATE.read_bytes()
    cases = {
        b"": "empty",
        b"not a dicom file at all" * 10: "not_dicom",
        ct[: len(ct) // 2]: "truncated",
        Path(get_testdata_file("DICOMDIR")).read_bytes(): "not_an_instance",
    }
    for data, reason in cases.items():
        with pytest.raises(DicomReadError) as raised:
            deidentify(data, Profile.of([]), KEY, name="bad.dcm")
        assert raised.value.reason == reason
        assert KEY.decode() not in str(raised.value)
    burned = pydicom.dcmread(TEMPLATE)
    burned.BurnedInAnnotation = "YES"
    with pytest.raises(DicomReadError) as raised:
        deidentify(_bytes(burned), Profile.of([]), KEY, name="burned.dcm")
    assert raised.value.reason == "burned_in_unhandled"
    assert run(_bytes(burned)).BurnedInAnnotation == "YES"  # when the user opts in


def test_the_key_comes_from_the_settings_and_is_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIXELS_SQL_DEID_KEY_FILE", raising=False)
    monkeypatch.delenv("PIXELS_SQL_DEID_KEY", raising=False)
    with pytest.raises(
        DeidKeyError, match="no de-identification key: set PIXELS_SQL_DEID_KEY_FILE"
    ):
        load_key()
    monkeypatch.setenv("PIXELS_SQL_DEID_KEY", "short")
    with pytest.raises(DeidKeyError, match="has 5 bytes") as raised:
        load_key()
    assert "short" not in str(raised.value)
    key_file = tmp_path / "deid.key"
    key_file.write_bytes(KEY + b"\n")
    monkeypatch.setenv("PIXELS_SQL_DEID_KEY_FILE", str(key_file))
    assert load_key() == KEY
    monkeypatch.setenv("PIXELS_SQL_DEID_KEY_FILE", str(tmp_path / "missing.key"))
    with pytest.raises(DeidKeyError, match="cannot read"):
        load_key()


# -- the byte walk and the pydicom path agree ----------------------------------------------------


def _canonical(dataset: pydicom.Dataset) -> list[tuple]:
    """Every element as (tag, VR, value), sequences item by item: equal for two encodings of
    the same data set (defined or undefined lengths)."""
    out = []
    for tag in dataset.keys():  # noqa: SIM118 (tags)
        element = dataset[tag]
        if element.VR == "SQ":
            out.append((int(tag), "SQ", [_canonical(item) for item in element.value]))
        else:
            value = element.value
            out.append((int(tag), element.VR, value if isinstance(value, bytes) else str(value)))
    return out


def _same_result(data: bytes, profile: Profile, name: str) -> bool:
    """Whether the byte walk handled ``data``; when it did, it gave the pydicom path's result."""
    from pixels_sql.deid.fast import deidentify_fast
    from pixels_sql.deid.transform import deidentify_with_pydicom

    try:
        fast = deidentify_fast(data, profile, KEY, name, ALLOW)
    except DicomReadError as fast_error:
        with pytest.raises(DicomReadError) as slow_error:
            deidentify_with_pydicom(data, profile, KEY, name=name, policy=ALLOW)
        assert slow_error.value.reason == fast_error.reason, name
        return True
    if fast is None:
        return False
    slow = deidentify_with_pydicom(data, profile, KEY, name=name, policy=ALLOW)
    assert (fast.sop_instance_uid, fast.patient_id, fast.shift_days, fast.uids) == (
        slow.sop_instance_uid,
        slow.patient_id,
        slow.shift_days,
        slow.uids,
    ), name
    ours, theirs = (pydicom.dcmread(io.BytesIO(x.data)) for x in (fast, slow))
    assert _canonical(ours.file_meta) == _canonical(theirs.file_meta), name
    assert _canonical(ours) == _canonical(theirs), name
    assert fast.data[:128] == b"\0" * 128
    return True


@pytest.mark.parametrize("options", [[], ["tcia"], ["retain_uids", "clean_structured_content"]])
def test_the_byte_walk_gives_the_pydicom_path_s_result(marked: MarkedFile, options: list) -> None:
    profile = Profile.of(options)
    assert _same_result(marked.data, profile, "marked.dcm")
    handled = sum(
        _same_result(path.read_bytes(), profile, path.name)
        for path in corpus_files()
        if path.stat().st_size
    )
    assert handled >= 100  # most of the corpus takes the byte walk


# -- Clean Pixel Data by rules --------------------------------------------------------------------

PIXEL_RULES = """
[[rule]]
name = "test: CT 128x128, a band at the top left"
Modality = "CT"
Rows = 128
Columns = 128
regions = [[0, 0, 40, 20]]

[[rule]]
name = "test: ultrasound (colour, JPEG 2000), a band at the top"
Modality = "us"
ImageType = "*PRIMARY*"
regions = [[0, 0, 100, 30]]

[[rule]]
name = "test: multi-frame MR, a square in every frame"
Modality = "MR"
Manufacturer = "*"
Rows = 64
regions = [[5, 5, 10, 10]]
"""


def test_a_rule_blacks_out_its_regions_in_every_frame_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(PIXEL_RULES)
    monkeypatch.setenv("PIXELS_SQL_DEID_PIXEL_RULES", str(rules_file))
    cases = {"CT_small.dcm": (0, 0, 40, 20), "US1_J2KR.dcm": (0, 0, 100, 30)}
    cases["emri_small.dcm"] = (5, 5, 10, 10)
    for name, (x, y, width, height) in cases.items():
        path = Path(get_testdata_file(name))
        source = pydicom.dcmread(path)
        source.BurnedInAnnotation = "YES"  # covered by a rule: written, not refused
        result = deidentify(_bytes(source), Profile.of([]), KEY)
        output = pydicom.dcmread(io.BytesIO(result.data))
        expected = pydicom.dcmread(path).pixel_array.copy()
        signed = source.PixelRepresentation == 1
        black = -(1 << (source.BitsStored - 1)) if signed else 0
        region = (..., slice(y, y + height), slice(x, x + width))
        if expected.ndim == 3 and expected.shape[-1] == 3:  # colour: rows, columns, samples
            region = (slice(y, y + height), slice(x, x + width))
        expected[region] = black
        assert (output.pixel_array == expected).all(), name
        assert output.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert output.BurnedInAnnotation == "NO"
        codes = [item.CodeValue for item in output.DeidentificationMethodCodeSequence]
        assert codes[:2] == ["113100", "113101"], name
    # An image no rule covers and flagged YES is still refused.
    mr = pydicom.dcmread(PYDICOM_TEST_FILES / "MR_small.dcm")
    mr.Modality, mr.BurnedInAnnotation = "OT", "YES"
    with pytest.raises(DicomReadError) as refused:
        deidentify(_bytes(mr), Profile.of([]), KEY)
    assert refused.value.reason == "burned_in_unhandled"


def test_a_rules_file_that_is_wrong_says_where(tmp_path: Path) -> None:
    from pixels_sql.deid.pixels import RulesError, load_rules

    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "x"\nModality = "CT"\nregions = [[0, 0, -1, 5]]\n')
    with pytest.raises(RulesError, match="x: a region is"):
        load_rules(bad)
    bad.write_text('[[rule]]\nname = "y"\nPatientName = "A*"\nregions = [[0, 0, 1, 5]]\n')
    with pytest.raises(RulesError, match="y: unknown key"):
        load_rules(bad)


def test_copies_are_written_whole_inside_the_destination_and_a_killed_write_is_cleared(
    tmp_path: Path,
) -> None:
    from pixels_sql.io.writing import UnsafePath, remove_under, write_under

    folder = tmp_path / "out" / "P1"
    folder.mkdir(parents=True)
    stale = folder / ".x.dcm.partial-999999"  # what a run killed mid-write leaves
    stale.write_bytes(b"half")
    written = write_under(str(tmp_path / "out"), "P1/x.dcm", b"whole")
    assert Path(written).read_bytes() == b"whole" and not stale.exists()
    for bad in ("../x.dcm", "P1/../../x.dcm", "/etc/x.dcm", "P1/.hidden"):
        with pytest.raises(UnsafePath):
            write_under(str(tmp_path / "out"), bad, b"")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePath, match="is a link"):
        write_under(str(tmp_path / "out"), "link/x.dcm", b"")
    assert not remove_under(str(tmp_path / "out"), str(tmp_path / "elsewhere" / "y"))
    assert remove_under(str(tmp_path / "out"), written) and not Path(written).exists()
