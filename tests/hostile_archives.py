"""Hostile zip archives, built at test time with zipfile (and patched bytes where zipfile will not
write the case), each beside good DICOM members that must still read like the plain files.

One builder per kind of attack or damage. A builder writes its archive into a folder and returns
a :class:`Hostile`: the listing :func:`pixels_sql.io.archives.list_members` must give, the
reason reading each bad member must give, and for every readable member the plain file with
the same bytes (its twin), which it must read exactly like. Nothing is shelled out to zip/unzip
(not on every machine) and nothing is committed but this code; the largest archive is ~200 KB.

Field offsets are those of PKWARE's APPNOTE.TXT 6.3.10: local file header 4.3.7, central
directory file header 4.3.12, end of central directory record 4.3.16.
"""

from __future__ import annotations

import io
import os
import random
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pixels_sql.io.archives import ArchiveLimits, member_path
from tests.corpus import PYDICOM_TEST_FILES, corpus_files

GOOD_SOURCE = PYDICOM_TEST_FILES / "CT_small.dcm"
OTHER_SOURCE = PYDICOM_TEST_FILES / "MR_small.dcm"
GOOD_NAME = "good/CT_small.dcm"
PASSWORD = b"pixels"
# Inflates ~1000x: far over the default ratio cap of 100, still quick to deflate (~0.3 s).
BOMB_BYTES = 32 * 1024 * 1024

_LOCAL_SIGNATURE = b"PK\x03\x04"
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_END_SIGNATURE = b"PK\x05\x06"


@dataclass(frozen=True)
class Hostile:
    """A built archive and what pixels-sql must make of it.

    Paths are member paths (``zip://<member>::file:<archive>``) or, for an archive that cannot
    be opened at all, the archive's own ``file:`` URI, as list_members names them.
    """

    archive: Path
    # Every row list_members must give: path -> reason (None: listed as readable).
    rows: dict[str, str | None]
    # Member paths whose reading (open_member, dicom meta and thumbnail, extract_member) must
    # fail with this reason, whatever the listing said.
    read: dict[str, str] = field(default_factory=dict)
    # Readable member paths -> a plain file with the member's bytes, which must read the same.
    twins: dict[str, Path] = field(default_factory=dict)
    # The limits the archive is judged with, passed explicitly to list_members and open_member;
    # ``environment`` sets the same limits for the readers that take them from the environment.
    limits: ArchiveLimits | None = None
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return uri(self.archive)


def uri(archive: Path) -> str:
    """The archive's path as Spark's file sources give it (``file:/…``, not percent-encoded)."""
    return f"file:{archive}"


def _twin(folder: Path, name: str, data: bytes) -> Path:
    """A plain file holding ``data``: what a member with these bytes must read like."""
    path = folder / "plain" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _good(folder: Path, out: zipfile.ZipFile, archive: Path) -> dict[str, Path]:
    """Write the good member every hostile archive carries; its path -> its twin."""
    out.write(GOOD_SOURCE, GOOD_NAME)
    return {member_path(GOOD_NAME, uri(archive)): GOOD_SOURCE}


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
        for name, data in members.items():
            out.writestr(name, data)
    return buffer.getvalue()


# --- byte patching -------------------------------------------------------------------------


def _end_record(data: bytes | bytearray) -> int:
    """Offset of the end of central directory record (APPNOTE 4.3.16); archives built here
    carry no comment, so it is the last 22 bytes."""
    offset = len(data) - 22
    assert data[offset : offset + 4] == _END_SIGNATURE, "an archive with a comment"
    return offset


def _central_records(data: bytes | bytearray) -> dict[str, tuple[int, int]]:
    """Name -> (offset, length) of each central directory file header (APPNOTE 4.3.12)."""
    end = _end_record(data)
    count, _size, offset = struct.unpack_from("<HII", data, end + 10)
    records = {}
    for _ in range(count):
        assert data[offset : offset + 4] == _CENTRAL_SIGNATURE
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, offset + 28)
        length = 46 + name_length + extra_length + comment_length
        name = bytes(data[offset + 46 : offset + 46 + name_length]).decode("utf-8")
        records[name] = (offset, length)
        offset += length
    return records


def _patch_member(
    data: bytearray,
    name: str,
    *,
    flags: int | None = None,
    method: int | None = None,
    crc: int | None = None,
    file_size: int | None = None,
) -> None:
    """Overwrite fields of ``name``'s local header (APPNOTE 4.3.7) and central directory record
    (4.3.12) alike, as a writer that means them would have written both."""
    central, _ = _central_records(data)[name]
    (local,) = struct.unpack_from("<I", data, central + 42)
    assert data[local : local + 4] == _LOCAL_SIGNATURE
    # (offset in the local header, offset in the central record, format, value) of each field.
    fields = (
        (6, 8, "<H", flags),  # general purpose bit flag, 4.4.4
        (8, 10, "<H", method),  # compression method, 4.4.5
        (14, 16, "<I", crc),  # CRC-32, 4.4.7
        (22, 24, "<I", file_size),  # uncompressed size, 4.4.9
    )
    for in_local, in_central, fmt, value in fields:
        if value is not None:
            struct.pack_into(fmt, data, local + in_local, value)
            struct.pack_into(fmt, data, central + in_central, value)


def _add_central_alias(data: bytes, name: str, alias: str) -> bytes:
    """A copy of ``name``'s central directory record named ``alias``: a second entry pointing
    at the same local header and data, the end record's counts and size fixed (APPNOTE 4.3.16).
    """
    records = _central_records(data)
    offset, length = records[name]
    record = bytearray(data[offset : offset + length])
    encoded = alias.encode("utf-8")
    struct.pack_into("<H", record, 28, len(encoded))
    record[46 : 46 + len(name.encode("utf-8"))] = encoded
    end = _end_record(data)
    patched = bytearray(data[:end] + record + data[end:])
    end += len(record)
    entries_here, entries, size, start = struct.unpack_from("<HHII", patched, end + 8)
    struct.pack_into(
        "<HHII", patched, end + 8, entries_here + 1, entries + 1, size + len(record), start
    )
    return bytes(patched)


# --- traditional PKWARE encryption (APPNOTE 6.1) -----------------------------------------------


def _crc_byte(crc: int, byte: int) -> int:
    """APPNOTE 6.1.5's crc32(crc, byte): one raw table step, without zlib's pre- and
    post-inversion."""
    return zlib.crc32(bytes((byte,)), crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def pkware_encrypt(plain: bytes, password: bytes, crc: int, seed: int = 0) -> bytes:
    """``plain`` (the member's stored or compressed data) encrypted with the traditional PKWARE
    cipher, behind its 12-byte encryption header (APPNOTE 6.1.3 to 6.1.6)."""
    keys = [0x12345678, 0x23456789, 0x34567890]  # 6.1.5: the initial keys

    def update(byte: int) -> None:
        keys[0] = _crc_byte(keys[0], byte)
        keys[1] = ((keys[1] + (keys[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        keys[2] = _crc_byte(keys[2], keys[1] >> 24)

    def encrypt(data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            temp = (keys[2] | 2) & 0xFFFF  # 6.1.6: decrypt_byte
            out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
            update(byte)
        return bytes(out)

    for byte in password:
        update(byte)
    # 6.1.3: 11 random bytes, then the CRC's high byte, which readers check the password with
    # (bit 3 unset, so the CRC, not the modification time, is known up front: 6.1.6).
    header = random.Random(seed).randbytes(11) + bytes((crc >> 24,))
    return encrypt(header) + encrypt(plain)


# --- one builder per hostile kind --------------------------------------------------------------

# APPNOTE 4.4.17.1: a name is relative, with forward slashes, no drive or device letter. Each of
# these would land outside the destination if a naive extractor joined it to one.
SLIP_NAMES = (
    "../evil.dcm",
    "../../x/evil.dcm",
    "/abs/evil.dcm",
    "C:/evil.dcm",
    "sub\\..\\evil.dcm",
    "sub/../../evil.dcm",
)


def build_zip_slip(folder: Path) -> Hostile:
    """Zip Slip: members whose names climb out of (``..``) or ignore (absolute, drive letter,
    backslash) the destination, each holding a real DICOM file so that a missing check would
    read. Plus a name holding ``::`` (the member path separator), refused when listed: its row
    path is ambiguous, so it is not re-read."""
    archive = folder / "slip.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        twins = _good(folder, out, archive)
        for name in (*SLIP_NAMES, "a::b.dcm"):
            # zipfile keeps the name as given on Linux (it only rewrites os.sep).
            out.writestr(name, GOOD_SOURCE.read_bytes())
    read = {member_path(name, uri(archive)): "unsafe_member" for name in SLIP_NAMES}
    rows: dict[str, str | None] = {path: None for path in twins}
    rows.update(read)
    rows[member_path("a::b.dcm", uri(archive))] = "unsafe_member"
    return Hostile(archive, rows, read, twins)


def build_symlink(folder: Path) -> Hostile:
    """Symbolic link members: Unix mode in the high 16 bits of the external attributes with
    "made by" Unix (APPNOTE 4.4.2, 4.4.15), the content the link's target (an absolute and a
    climbing one). Plus ``escape/evil.dcm``, a plain member under a symlink member's name: an
    extractor that made the link would write through it; here it lands inside the destination.
    """
    archive = folder / "symlink.zip"
    links = {"link.dcm": "/etc/passwd", "up.dcm": "../../../../../../etc/passwd", "escape": "/tmp"}
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        twins = _good(folder, out, archive)
        for name, target in links.items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            out.writestr(info, target)
        out.write(GOOD_SOURCE, "escape/evil.dcm")
    twins[member_path("escape/evil.dcm", uri(archive))] = GOOD_SOURCE
    read = {member_path(name, uri(archive)): "unsafe_member" for name in links}
    return Hostile(archive, {**dict.fromkeys(twins), **read}, read, twins)


def build_ratio_bomb(folder: Path) -> Hostile:
    """A zip bomb by compression ratio: 32 MiB of zeros deflated to ~32 KB (~1000x, the cap is
    100). Plus ``liar.dcm``, the same stream declaring an uncompressed size of 1,000 bytes
    (APPNOTE 4.4.9) so that the ratio check passes: reading must stop at the declared size and
    fail on the CRC, not inflate the 32 MiB."""
    archive = folder / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        twins = _good(folder, out, archive)
        for name in ("bomb.dcm", "liar.dcm"):
            with out.open(name, "w") as member:  # streamed: the zeros are never held whole
                chunk = bytes(1024 * 1024)
                for _ in range(BOMB_BYTES // len(chunk)):
                    member.write(chunk)
    data = bytearray(archive.read_bytes())
    _patch_member(data, "liar.dcm", file_size=1000)
    archive.write_bytes(data)
    bomb, liar = (member_path(name, uri(archive)) for name in ("bomb.dcm", "liar.dcm"))
    rows = {**dict.fromkeys(twins), bomb: "zip_bomb", liar: None}
    return Hostile(archive, rows, {bomb: "zip_bomb", liar: "corrupt_archive"}, twins)


def build_overlap_bomb(folder: Path) -> Hostile:
    """The overlapping-files zip bomb (Fifield, "A better zip bomb", 2019): two central
    directory entries (APPNOTE 4.3.12) pointing at one local header and its data, so the data
    is inflated once per entry. Crafted by duplicating a record under another name."""
    archive = folder / "overlap.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        twins = _good(folder, out, archive)
        out.write(OTHER_SOURCE, "overlap-a.dcm")
    archive.write_bytes(_add_central_alias(archive.read_bytes(), "overlap-a.dcm", "overlap-b.dcm"))
    read = {member_path(n, uri(archive)): "zip_bomb" for n in ("overlap-a.dcm", "overlap-b.dcm")}
    return Hostile(archive, {**dict.fromkeys(twins), **read}, read, twins)


TOTAL_CAP_MB = 1


def build_total_size(folder: Path) -> Hostile:
    """Members that together exceed a total cap of 1 MiB: the good member and two 400 KB
    incompressible fillers fit, the third and fourth filler go past it (the sum is taken in
    archive order). Judged with explicit limits and the same limits in the environment."""
    archive = folder / "total.zip"
    filler = random.Random(4).randbytes(400 * 1024)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        twins = _good(folder, out, archive)
        for index in range(1, 5):
            out.writestr(f"filler-{index}.bin", filler)
    fits = {
        member_path(f"filler-{i}.bin", uri(archive)): _twin(folder, "filler.bin", filler)
        for i in (1, 2)
    }
    past = {member_path(f"filler-{i}.bin", uri(archive)): "too_large" for i in (3, 4)}
    twins.update(fits)
    return Hostile(
        archive,
        {**dict.fromkeys(twins), **past},
        past,
        twins,
        limits=ArchiveLimits(max_total_bytes=TOTAL_CAP_MB * 1024 * 1024),
        environment={"PIXELS_SQL_ZIP_MAX_TOTAL_MB": str(TOTAL_CAP_MB)},
    )


def build_nested(folder: Path) -> Hostile:
    """A zip inside a zip (allowed at the default depth of 2): its members are listed as
    ``zip://x::zip://inner/in.zip::file:…`` and read like the plain files, and a Zip Slip name
    inside it is refused like one at the top. Plus ``fake.zip``, garbage named like an archive:
    one corrupt_archive row for it."""
    archive = folder / "nested.zip"
    inner = _zip_bytes(
        {
            "x/MR_small.dcm": OTHER_SOURCE.read_bytes(),
            "CT_small.dcm": GOOD_SOURCE.read_bytes(),
            "../evil.dcm": GOOD_SOURCE.read_bytes(),
        }
    )
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        twins = _good(folder, out, archive)
        out.writestr("inner/in.zip", inner)
        out.writestr("fake.zip", random.Random(5).randbytes(4096))
    inner_uri = member_path("inner/in.zip", uri(archive))
    twins[member_path("x/MR_small.dcm", inner_uri)] = OTHER_SOURCE
    twins[member_path("CT_small.dcm", inner_uri)] = GOOD_SOURCE
    slip = member_path("../evil.dcm", inner_uri)
    fake = member_path("fake.zip", uri(archive))
    rows = {**dict.fromkeys(twins), slip: "unsafe_member", fake: "corrupt_archive"}
    read = {slip: "unsafe_member", member_path("x.dcm", fake): "corrupt_archive"}
    return Hostile(archive, rows, read, twins)


def build_too_deep(folder: Path) -> Hostile:
    """A zip in a zip in a zip: the middle archive is read (depth 2), the innermost is one row
    with reason too_deep, and a member inside it cannot be read by its path either."""
    archive = folder / "deep.zip"
    deepest = _zip_bytes({"x.dcm": GOOD_SOURCE.read_bytes()})
    middle = _zip_bytes({"mid-good.dcm": GOOD_SOURCE.read_bytes(), "deepest.zip": deepest})
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        twins = _good(folder, out, archive)
        out.writestr("middle.zip", middle)
    middle_uri = member_path("middle.zip", uri(archive))
    twins[member_path("mid-good.dcm", middle_uri)] = GOOD_SOURCE
    deepest_uri = member_path("deepest.zip", middle_uri)
    rows = {**dict.fromkeys(twins), deepest_uri: "too_deep"}
    return Hostile(archive, rows, {member_path("x.dcm", deepest_uri): "too_deep"}, twins)


def build_encrypted(folder: Path) -> Hostile:
    """A member really encrypted with the traditional PKWARE cipher (APPNOTE 6.1), deflated
    first as encrypting writers do: general purpose flag bit 0 set (4.4.4), the CRC and size
    those of the plain bytes, the compressed size counting the 12-byte header (6.1.3). zipfile
    writes the ciphertext as a stored member, then the headers are patched to say what it is.
    """
    archive = folder / "encrypted.zip"
    plain = OTHER_SOURCE.read_bytes()
    crc = zlib.crc32(plain)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate (APPNOTE 4.4.5 method 8)
    sealed = pkware_encrypt(deflate.compress(plain) + deflate.flush(), PASSWORD, crc)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        twins = _good(folder, out, archive)
        out.writestr(zipfile.ZipInfo("secret.dcm"), sealed, zipfile.ZIP_STORED)
    data = bytearray(archive.read_bytes())
    _patch_member(
        data, "secret.dcm", flags=0x1, method=zipfile.ZIP_DEFLATED, crc=crc, file_size=len(plain)
    )
    archive.write_bytes(data)
    # Genuinely encrypted: the password opens it, and no password or a wrong one does not (the
    # header's check byte, 6.1.6, tells a wrong password with odds of 255 in 256: this one).
    with zipfile.ZipFile(archive) as check:
        assert check.read("secret.dcm", pwd=PASSWORD) == plain
        for wrong in (None, b"wrong"):
            try:
                check.read("secret.dcm", pwd=wrong)
            except RuntimeError:
                continue
            raise AssertionError(f"secret.dcm opens with password {wrong!r}")
    secret = member_path("secret.dcm", uri(archive))
    return Hostile(
        archive, {**dict.fromkeys(twins), secret: "encrypted"}, {secret: "encrypted"}, twins
    )


def _archive_failure(archive: Path) -> Hostile:
    """An archive that cannot be opened: one row for itself, and its good member unreadable."""
    good = member_path(GOOD_NAME, uri(archive))
    return Hostile(archive, {uri(archive): "corrupt_archive"}, {good: "corrupt_archive"})


def build_truncated(folder: Path) -> Hostile:
    """The first half of an archive's bytes (an interrupted copy): the central directory and
    its end record (APPNOTE 4.3.12, 4.3.16) are gone, so nothing in it can be found."""
    archive = folder / "truncated.zip"
    data = _zip_bytes({GOOD_NAME: GOOD_SOURCE.read_bytes(), "b.dcm": OTHER_SOURCE.read_bytes()})
    archive.write_bytes(data[: len(data) // 2])
    return _archive_failure(archive)


def build_garbage(folder: Path) -> Hostile:
    """Random bytes named .zip."""
    archive = folder / "garbage.zip"
    archive.write_bytes(random.Random(7).randbytes(8192))
    return _archive_failure(archive)


def build_empty_archive(folder: Path) -> Hostile:
    """A zero-byte .zip (even an archive of no members has a 22-byte end record, 4.3.16)."""
    archive = folder / "empty.zip"
    archive.write_bytes(b"")
    return _archive_failure(archive)


def build_flipped(folder: Path) -> Hostile:
    """One byte flipped in a member's data, with the directory intact so that the listing cannot
    tell and reading must: in the middle of deflated data (wrong bytes out: a bad CRC, APPNOTE
    4.4.7), in the middle of stored data (a bad CRC), and early in deflated data, inside the
    block's Huffman code lengths (RFC 1951 3.2.7: zlib refuses the stream)."""
    archive = folder / "flipped.zip"
    flips = {
        "flipped-deflated.dcm": (zipfile.ZIP_DEFLATED, 0.5),
        "flipped-stored.dcm": (zipfile.ZIP_STORED, 0.5),
        "flipped-codes.dcm": (zipfile.ZIP_DEFLATED, 0.002),
    }
    with zipfile.ZipFile(archive, "w") as out:
        twins = _good(folder, out, archive)
        for name, (method, _) in flips.items():
            out.write(OTHER_SOURCE, name, method)
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as opened:
        for name, (_, where) in flips.items():
            info = opened.getinfo(name)
            # The data follows the local header's 30 bytes, name and extra field (4.3.7).
            start = info.header_offset + 30 + len(info.orig_filename) + len(info.extra)
            data[start + int(info.compress_size * where)] ^= 0xFF
    archive.write_bytes(data)
    read = {member_path(name, uri(archive)): "corrupt_archive" for name in flips}
    return Hostile(archive, {**dict.fromkeys(twins), **dict.fromkeys(read)}, read, twins)


def build_empty_member(folder: Path) -> Hostile:
    """A zero-byte member: listed, extracted as the zero-byte file it is, and read like a
    zero-byte plain file (reason empty)."""
    archive = folder / "empty-member.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        twins = _good(folder, out, archive)
        out.writestr("empty.dcm", b"")
    twins[member_path("empty.dcm", uri(archive))] = _twin(folder, "empty.dcm", b"")
    return Hostile(archive, dict.fromkeys(twins), {}, twins)


CORPUS_MEMBERS = 20


def corpus_sample() -> list[Path]:
    """~20 files spread over the public corpus (every kind: JPEG, JPEG 2000, RLE, deflated,
    big endian, DICOMDIR, broken ones, non-DICOM neighbours), each under 1 MB for speed."""
    small = [path for path in corpus_files() if path.stat().st_size < 1024 * 1024]
    spread = small[:: max(1, len(small) // CORPUS_MEMBERS)][:CORPUS_MEMBERS]
    # Broken ones whatever the spread picks: a truncated file and a non-DICOM neighbour.
    broken = [PYDICOM_TEST_FILES / "rtplan_truncated.dcm", PYDICOM_TEST_FILES / "README.txt"]
    return spread + [path for path in broken if path not in spread]


def build_corpus(folder: Path) -> Hostile:
    """Not hostile: corpus files zipped in a subfolder, which must read exactly like the files
    themselves (meta, thumbnails and the reasons of the broken ones)."""
    archive = folder / "corpus.zip"
    twins = {}
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for index, path in enumerate(corpus_sample()):
            name = f"series/{index:02d}_{path.name}"  # the two corpora share some names
            out.write(path, name)
            twins[member_path(name, uri(archive))] = path
    return Hostile(archive, dict.fromkeys(twins), {}, twins)


BUILDERS: dict[str, Callable[[Path], Hostile]] = {
    "zip_slip": build_zip_slip,
    "symlink": build_symlink,
    "ratio_bomb": build_ratio_bomb,
    "overlap_bomb": build_overlap_bomb,
    "total_size": build_total_size,
    "nested": build_nested,
    "too_deep": build_too_deep,
    "encrypted": build_encrypted,
    "truncated": build_truncated,
    "garbage": build_garbage,
    "empty_archive": build_empty_archive,
    "flipped": build_flipped,
    "empty_member": build_empty_member,
    "corpus": build_corpus,
}


# Kinds whose archive cannot be opened at all: no member of theirs is readable.
UNOPENABLE = frozenset({"truncated", "garbage", "empty_archive"})


def build(kind: str, folder: Path) -> Hostile:
    """Build the archive of ``kind`` in ``folder`` (created if needed)."""
    os.makedirs(folder, exist_ok=True)
    return BUILDERS[kind](folder)
