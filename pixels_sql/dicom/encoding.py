"""Facts of the DICOM encoding (PS3.5) that both header readers rely on."""

from __future__ import annotations

# (7FE0,0008) Float Pixel Data, (7FE0,0009) Double Float Pixel Data, (7FE0,0010) Pixel Data.
PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
# PS3.5 7.5: item, item delimitation and sequence delimitation tags.
ITEM_TAG = 0xFFFEE000
ITEM_DELIMITER_TAG = 0xFFFEE00D
SEQUENCE_DELIMITER_TAG = 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF
# PS3.5 7.1.2: explicit VRs with a 2-byte reserved field and a 4-byte length.
LONG_LENGTH_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
# PS3.5 7.1.2: explicit VRs with a 2-byte length (all text or numbers).
SHORT_LENGTH_VRS = frozenset(
    {
        b"AE",
        b"AS",
        b"AT",
        b"CS",
        b"DA",
        b"DS",
        b"DT",
        b"FL",
        b"FD",
        b"IS",
        b"LO",
        b"LT",
        b"PN",
        b"SH",
        b"SL",
        b"SS",
        b"ST",
        b"TM",
        b"UI",
        b"UL",
        b"US",
    }
)
# Binary VRs whose value is bytes, described by byte range when long (UN excluded: pydicom
# re-types UN values it knows, PS3.5 6.2.2).
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
# PS3.5 A.5: the whole data set is one deflate stream (no header-only read, no value offsets).
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
# The syntaxes whose data set is not explicit VR little endian as written: the byte walks
# (fastmeta's reader, the de-identifier's) leave these to pydicom.
IMPLICIT_OR_BIG_OR_DEFLATED = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.2", DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN}
)
# Specific Character Set values the byte walks handle, as Python codecs (PS3.3 C.12.1.1.2).
CHARSET_CODECS = {
    "": "latin_1",
    "ISO_IR 6": "latin_1",
    "ISO_IR 100": "latin_1",
    "ISO_IR 192": "utf_8",
}
# Sequences nested deeper than this are reported `too_deep` by every reader. Real files nest a
# handful of levels (structured reports a few dozen); a hostile file can nest thousands, which
# would exhaust the interpreter's recursion limit or the JSON encoders' depth limits.
MAX_SEQUENCE_DEPTH = 128
