"""The compiled element loop (_fastmeta.c) against its pure-Python twin (fastmeta.py).

The conformance test holds both to pydicom on well-formed files; here both read the same
damaged files — bytes flipped and files cut short, from a fixed seed — and must agree exactly,
failures included, without crashing the process. The compiled module's one-call JSON writer
(``read_json``) is held the same way to the compiled object path's text.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import orjson
import pytest

from pixels_sql.dicom import fastmeta, meta
from pixels_sql.dicom.bulk import bulk_uri_factory
from pixels_sql.dicom.meta import MetaResult, read_result
from pixels_sql.errors import DicomReadError
from pixels_sql.io.paths import to_file_uri
from tests.corpus import EXPECTED_UNREADABLE, corpus_files

MUTANTS_PER_FILE = 12


def fast_corpus() -> list[Path]:
    """Corpus files the fast reader handles (explicit VR little endian, plain character sets)."""
    found = []
    for path in corpus_files():
        if path.name in EXPECTED_UNREADABLE:
            continue
        with open(path, "rb") as handle:
            if fastmeta.read_fast(
                str(path),
                handle,
                path.stat().st_size,
                bulk_uri_factory("file:///x", False),
                handle.fileno(),
            ):
                found.append(path)
    return found


FAST_CORPUS = fast_corpus()


def both_readers(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[MetaResult, MetaResult]:
    monkeypatch.setattr(fastmeta, "COMPILED", True)
    compiled = read_result(str(path)).decoded()
    monkeypatch.setattr(fastmeta, "COMPILED", False)
    python = read_result(str(path)).decoded()
    return compiled, python


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Cut the file short, or flip a few bytes of its header (where the element loop runs)."""
    if rng.random() < 0.3:
        return data[: rng.randrange(132, len(data))]
    mutated = bytearray(data)
    header_end = min(len(data), 4096)
    for _ in range(rng.randrange(1, 4)):
        mutated[rng.randrange(132, header_end)] = rng.randrange(256)
    return bytes(mutated)


def test_the_compiled_loop_is_built() -> None:
    """`pip install` builds it where a C compiler exists, as on every machine the Makefile
    sets up; without it the pure-Python loop runs and everything else still works."""
    assert fastmeta.is_available()


def test_the_fast_corpus_is_large_enough() -> None:
    assert len(FAST_CORPUS) > 100


@pytest.mark.parametrize("path", FAST_CORPUS, ids=[p.name for p in FAST_CORPUS])
def test_compiled_and_python_loops_agree_on_damaged_files(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(path.name)
    data = path.read_bytes()
    compiled, python = both_readers(path, monkeypatch)
    assert compiled == python
    assert compiled.meta is not None
    for index in range(MUTANTS_PER_FILE):
        mutant = tmp_path / f"mutant-{index}.dcm"
        mutant.write_bytes(mutate(data, rng))
        compiled, python = both_readers(mutant, monkeypatch)
        assert compiled == python, f"mutant {index}"


def test_non_ascii_text_and_numbers_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Values the compiled loop hands back to fastmeta.py's converters (odd decimal strings,
    AE, AT, UR) and UTF-8 text (names, multi-valued strings) come out the same."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset.PatientName = "Müller^Jürgen=ミュラー^ユルゲン=myura"
    dataset.add_new(0x00181030, "LO", "Protokoll \\ Ärger  ")
    dataset.add_new(0x00280030, "DS", [" 0.5", "1e-3 "])
    with pytest.warns(UserWarning, match="1_000"):  # invalid DS that Python's float() accepts
        dataset.add_new(0x00201041, "DS", "1_000")
    dataset.add_new(0x00200013, "IS", "  12 ")
    dataset.add_new(0x00080054, "AE", " STORE_SCP ")
    dataset.add_new(0x00209165, "AT", [0x00100010, 0x00200013])
    dataset.add_new(0x00081190, "UR", "http://example.org/studies/1 ")
    dataset.add_new(0x00204000, "LT", "Kommentar\\mit Rückstrich  \x00")
    dataset.add_new(0x00189087, "FD", [1.5, float("inf")])
    dataset.add_new(0x00280106, "SS", -3)
    dataset.add_new(0x00091010, "OB", bytes(range(7)))
    path = tmp_path / "utf8.dcm"
    dataset.save_as(path, enforce_file_format=True)
    compiled, python = both_readers(path, monkeypatch)
    assert compiled == python
    assert compiled.meta is not None and "Jürgen" in compiled.meta


def test_an_empty_character_set_in_a_long_vr_item_is_treated_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(0008,0005) mis-encoded with a 4-byte-length VR and no value, inside a sequence item:
    both loops look at the character set before taking the value as empty."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    item = Dataset()
    item.add_new(0x00080005, "UC", "")
    item.add_new(0x00081150, "UI", "1.2.840.10008.5.1.4.1.1.2")
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.ReferencedImageSequence = Sequence([item])
    path = tmp_path / "item-charset.dcm"
    dataset.save_as(path, enforce_file_format=True)
    found = {}
    for compiled in (True, False):
        monkeypatch.setattr(fastmeta, "COMPILED", compiled)
        with open(path, "rb") as handle:
            found[compiled] = fastmeta.read_fast(
                str(path),
                handle,
                path.stat().st_size,
                bulk_uri_factory("file:///x", False),
                handle.fileno(),
            )
    # A character set inside an item is left to the general reader, even an empty one.
    assert found[True] is None
    assert found[False] is None
    compiled_result, python_result = both_readers(path, monkeypatch)
    assert compiled_result == python_result
    assert compiled_result.meta is not None


def object_path_text(path: Path) -> bytes | None:
    """What the object path (elements as dicts, then orjson) writes of ``path``; None when it
    reports the file unreadable."""
    try:
        return meta.dumps(meta.read_model(str(path)))
    except DicomReadError:
        return None


@pytest.mark.parametrize("path", FAST_CORPUS, ids=[p.name for p in FAST_CORPUS])
def test_the_one_call_text_is_the_object_paths_text(path: Path, tmp_path: Path) -> None:
    """`_fastmeta.read_json` writes the JSON text itself: byte for byte what orjson writes of
    the object path's result, or None (the object path then runs) — on the file and on
    damaged copies of it."""
    expected = object_path_text(path)
    found = fastmeta.read_json(str(path.resolve()))
    if expected is None:  # a truncated pixel data element: the object path says why
        assert found is None
    else:
        assert found == expected
    rng = random.Random(f"json-{path.name}")
    data = path.read_bytes()
    for index in range(MUTANTS_PER_FILE):
        mutant = tmp_path / f"mutant-{index}.dcm"
        mutant.write_bytes(mutate(data, rng))
        found = fastmeta.read_json(str(mutant))
        assert found is None or found == object_path_text(mutant), f"mutant {index}"


def test_the_one_call_path_takes_most_files() -> None:
    """Not a path that returns None for everything (the object path would hide it)."""
    taken = [fastmeta.read_json(str(path.resolve())) is not None for path in FAST_CORPUS]
    assert sum(taken) >= 0.95 * len(FAST_CORPUS)


@pytest.mark.parametrize(
    "folder", ["with space", "ünïcode", "per%cent#hash", "a?b&c=d", "quote'paren(1)"]
)
def test_bulk_data_uris_of_unusual_folder_names(tmp_path: Path, folder: str) -> None:
    """The file URI is percent-encoded as paths.to_file_uri does (RFC 8089 / RFC 3986)."""
    source = next(p for p in FAST_CORPUS if p.name == "CT_small.dcm")
    target = tmp_path / folder / "image.dcm"
    target.parent.mkdir()
    target.write_bytes(source.read_bytes())
    found = fastmeta.read_json(str(target))
    assert found is not None and found == object_path_text(target)
    assert (to_file_uri(str(target)) + "?offset=").encode() in found


def test_paths_that_need_normalising_take_the_object_path(tmp_path: Path) -> None:
    source = next(p for p in FAST_CORPUS if p.name == "CT_small.dcm")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "image.dcm").write_bytes(source.read_bytes())
    for odd in (f"{tmp_path}/sub/./image.dcm", f"{tmp_path}//sub/image.dcm", "relative.dcm"):
        assert fastmeta.read_json(odd) is None
    # read_json reaches the same text either way.
    expected = object_path_text(tmp_path / "sub" / "image.dcm")
    assert meta.read_json(f"{tmp_path}/sub/./image.dcm") == expected
    assert meta.read_json(f"file://{tmp_path}/sub/image.dcm") == expected


def test_numbers_are_spelled_as_orjson_spells_them(tmp_path: Path) -> None:
    """Doubles of every magnitude (orjson writes 1e-7 and 0.000025 where Python's repr has
    1e-07 and 2.5e-05), integers at the limits of each VR, decimal strings: the one-call
    writer's text equals orjson's of the object path."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = random.Random(13)
    doubles = [0.0, -0.0, 1e-7, -2.5e-5, 1e-5, 9.99999e-5, 1e-4, 1e16, 1.5e16, 5e-324, 1e308]
    doubles += [rng.uniform(-1, 1) * 10 ** rng.randint(-12, 20) for _ in range(2000)]
    doubles += [
        struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(2000)
    ]
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.add_new(0x00091010, "FD", doubles)  # NaN and infinities among the random bits
    dataset.add_new(0x00091011, "FL", [float(f"{d:.6g}") for d in doubles[11:511]])
    dataset.add_new(0x00091012, "SS", [-32768, -1, 0, 32767])
    dataset.add_new(0x00091013, "US", [0, 65535])
    dataset.add_new(0x00091014, "SL", [-(2**31), 2**31 - 1])
    dataset.add_new(0x00091015, "UL", [0, 2**32 - 1])
    dataset.add_new(0x00091016, "SV", [-(2**63), 2**63 - 1])
    dataset.add_new(0x00091017, "UV", [0, 2**64 - 1])
    dataset.add_new(0x00091018, "DS", ["1e-7", "-0.000025", "1E16", " 12.50", "-0"])
    dataset.add_new(0x00091019, "IS", ["-2147483648", "+17", " 0 "])
    path = tmp_path / "numbers.dcm"
    dataset.save_as(path, enforce_file_format=True)
    found = fastmeta.read_json(str(path))
    assert found is not None and found == object_path_text(path)
    assert b"1e-7" in found and b"-0.000025" in found


def decimal_strings(rng: random.Random, count: int) -> list[str]:
    """DS values (at most 16 characters, PS3.5 6.2) of every plain shape: 1 to 16 digits, the
    point anywhere or absent, signs, leading and trailing zeros, spaces around them."""
    found = []
    while len(found) < count:
        digits = str(rng.randrange(10 ** rng.randint(1, 16))).zfill(rng.randint(1, 3))
        at = rng.randint(0, len(digits))
        text = digits if rng.random() < 0.2 else f"{digits[:at]}.{digits[at:]}"
        text = rng.choice(["", "", "-", "+"]) + text + "0" * rng.randint(0, 2)
        text = " " * rng.randint(0, 1) + text + " " * rng.randint(0, 1)
        if len(text) <= 16 and any(c.isdigit() for c in text):
            found.append(text)
    return found


def test_decimal_strings_read_and_spelled_as_python_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiled walk reads a plain DS of up to 15 significant digits without Python's
    float() and spells a double of up to 15 digits without its repr (both faster): each value
    is Python's float() of its text, the DICOM JSON equals the pure-Python loop's and the
    object path's, and the typed row equals typed_json's of it, on thousands of decimal
    strings and on the 16- and 17-digit ones left to Python."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from pixels_sql.dicom import typed

    values = ["0", "-0", "+0.0", ".5", "5.", "-.5", "1.50", "0.0001", "0.00009", "00012"]
    values += ["99999999999999.9", "1234567890123456", "0.1234567890123456", "1e-4", "1.5E3"]
    values += decimal_strings(random.Random(29), 3000)
    paths = []
    for start in range(0, len(values), 1000):
        dataset = Dataset()
        dataset.file_meta = FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        chunk = values[start : start + 1000]
        dataset.add_new(0x00091018, "DS", chunk)  # private: every value in OtherElements
        dataset.add_new(0x00280030, "DS", chunk[:2])  # PixelSpacing: the typed number twin
        dataset.add_new(0x00201041, "DS", chunk[2])  # SliceLocation
        paths.append(tmp_path / f"decimals-{start}.dcm")
        dataset.save_as(paths[-1], enforce_file_format=True)
    for start, path in zip(range(0, len(values), 1000), paths, strict=True):
        found = fastmeta.read_json(str(path))
        assert found is not None and found == object_path_text(path), path
        read = fastmeta.read_typed(str(path))
        assert read is not None and read[1].decode() == typed.typed_json(found, None), path
        spelled = [repr(float(text)) for text in values[start : start + 1000]]
        assert [repr(v) for v in orjson.loads(found)["00091018"]["Value"]] == spelled, path
        compiled, python = both_readers(path, monkeypatch)
        assert compiled == python, path
        monkeypatch.undo()  # both_readers leaves the pure-Python loop on


@pytest.mark.parametrize(("charset", "codec"), [("ISO_IR 100", "latin_1"), ("ISO_IR 192", "utf_8")])
def test_text_is_escaped_as_orjson_escapes_it(tmp_path: Path, charset: str, codec: str) -> None:
    """Quotes, backslashes, control characters and non-ASCII text (Latin-1 and UTF-8)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.SpecificCharacterSet = charset
    control = "".join(chr(c) for c in range(1, 32) if c not in (0x0A, 0x0C, 0x0D, 0x1B))
    dataset.add_new(0x00204000, "LT", f'say "hi" \\ there\t{control}\x7f é ü')
    dataset.add_new(0x00181030, "LO", ['quo"te', "back\\", "ñ"][:2])
    dataset.add_new(0x00100010, "PN", "Ærø^Åse=\\x")
    dataset.add_new(0x00081030, "LO", "Étude")
    path = tmp_path / "text.dcm"
    dataset.save_as(path, enforce_file_format=True)
    found = fastmeta.read_json(str(path))
    assert found is not None and found == object_path_text(path)
    assert "Étude".encode() in found and b"\\u0001" in found


def raw_file(path: Path, elements: bytes) -> Path:
    """A Part 10 file in explicit VR little endian with these data set bytes as they are."""
    syntax = b"1.2.840.10008.1.2.1\x00"
    meta_group = struct.pack("<HH2sH", 0x0002, 0x0010, b"UI", len(syntax)) + syntax
    path.write_bytes(b"\0" * 128 + b"DICM" + meta_group + elements)
    return path


def short_element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


@pytest.mark.parametrize("vr", [b"US", b"PN", b"DS", b"AT"])
def test_a_character_set_with_another_vr_takes_the_object_path(tmp_path: Path, vr: bytes) -> None:
    """(0008,0005) whose bytes name a supported set but whose VR is not CS: the object path
    decides what the file is (found by a reviewer's fuzzing: the one-call writer read it)."""
    path = raw_file(
        tmp_path / "charset.dcm",
        short_element(0x0008, 0x0005, vr, b"ISO_IR 192")
        + short_element(0x0010, 0x0010, b"PN", b"A^B"),
    )
    assert fastmeta.read_json(str(path)) is None
    assert read_result(str(path)).decoded() == read_meta_result_of_object_path(path)


def read_meta_result_of_object_path(path: Path) -> MetaResult:
    try:
        return MetaResult(meta.dumps(meta.read_model(str(path))).decode())
    except DicomReadError as error:
        return MetaResult(None, error.reason, error.message)


def test_a_relative_path_through_a_symlink_reads_what_the_kernel_resolves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "link/../x.dcm" is x.dcm next to the link's target, not next to the link: the relative
    path is not normalised as text before the one-call writer reads it."""
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    raw_file(real / "x.dcm", short_element(0x0010, 0x0010, b"PN", b"REAL"))
    raw_file(tmp_path / "x.dcm", short_element(0x0010, 0x0010, b"PN", b"DECOY"))
    (tmp_path / "link").symlink_to(real / "sub")
    monkeypatch.chdir(tmp_path)
    assert b"REAL" in meta.read_json("link/../x.dcm")
