"""Damaged and hostile DICOM files made from the public corpus, reproducibly (seeded).

Used by the hostile-input tests and the fuzzing run through SQL (`make fuzz`): byte flips,
truncation, huge and undefined lengths, deep sequence nesting, VR swaps, fragment lengths and
garbage after the preamble.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests.corpus import new_dataset

# (0040,A730) Content Sequence: an SQ in the dictionary, so implicit VR files nest it too.
_CONTENT_SEQUENCE = 0x0040A730
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF


def _tag(tag: int) -> bytes:
    return struct.pack("<HH", tag >> 16, tag & 0xFFFF)


def _sequence_header(length: int, implicit: bool) -> bytes:
    if implicit:
        return _tag(_CONTENT_SEQUENCE) + struct.pack("<I", length)
    return _tag(_CONTENT_SEQUENCE) + b"SQ\0\0" + struct.pack("<I", length)


def nested_sequences(depth: int, *, undefined: bool, implicit: bool) -> bytes:
    """Element bytes of ``depth`` Content Sequences nested one inside the other's only item,
    the innermost item holding one Code Value; written without recursion, so any depth works."""
    code_value = b"X "
    if implicit:
        inner = _tag(0x00080100) + struct.pack("<I", len(code_value)) + code_value
    else:
        inner = _tag(0x00080100) + b"SH" + struct.pack("<H", len(code_value)) + code_value
    if undefined:
        opening = (
            _sequence_header(_UNDEFINED, implicit) + _tag(_ITEM) + struct.pack("<I", _UNDEFINED)
        )
        closing = _tag(_ITEM_END) + b"\0\0\0\0" + _tag(_SEQUENCE_END) + b"\0\0\0\0"
        return opening * depth + inner + closing * depth
    header = 12 if not implicit else 8
    openings = []
    content = len(inner)  # bytes inside the current item
    for _ in range(depth):
        openings.append(
            _sequence_header(8 + content, implicit) + _tag(_ITEM) + struct.pack("<I", content)
        )
        content = header + 8 + content
    return b"".join(reversed(openings)) + inner


def write_nested(path: Path, depth: int, *, undefined: bool, implicit: bool = False) -> Path:
    """A valid Part 10 file whose data set ends with ``depth`` nested sequences."""
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    dataset = new_dataset("1.2.840.10008.5.1.4.1.1.88.11", syntax)  # Basic Text SR
    dataset.PatientName = "Deep^Nesting"
    dataset.Modality = "SR"
    dataset.save_as(path, enforce_file_format=True)
    with open(path, "ab") as handle:  # (0040,A730) sorts after every element written above
        handle.write(nested_sequences(depth, undefined=undefined, implicit=implicit))
    return path


def _flip_bytes(data: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(132, len(data)) if len(data) > 132 else rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)


def _truncate(data: bytearray, rng: random.Random) -> None:
    del data[rng.randrange(1, len(data)) :]


def _huge_length(data: bytearray, rng: random.Random) -> None:
    """A 4-byte length somewhere after the preamble set to a huge or undefined value."""
    position = rng.randrange(132, max(133, len(data) - 4))
    value = rng.choice([_UNDEFINED, 0x7FFFFFFE, 0xFFFFFFF0, 0x10000000])
    data[position : position + 4] = struct.pack("<I", value)


def _vr_swap(data: bytearray, rng: random.Random) -> None:
    """Replace one explicit VR with another (a short-length VR with a long one or back)."""
    vrs = [b"SQ", b"OB", b"UN", b"US", b"UL", b"DS", b"PN", b"UT", b"FD", b"AT"]
    offsets = [i for i in range(132, len(data) - 2) if bytes(data[i : i + 2]) in vrs]
    if offsets:
        position = rng.choice(offsets)
        data[position : position + 2] = rng.choice(vrs)


def _fragment_length(data: bytearray, rng: random.Random) -> None:
    """Corrupt the length of an encapsulated fragment item (FFFE,E000)."""
    marker = b"\xfe\xff\x00\xe0"
    offsets = [i for i in range(132, len(data) - 8) if data[i : i + 4] == marker]
    if offsets:
        position = rng.choice(offsets) + 4
        value = rng.choice([0, 1, 0x7FFFFFFE, _UNDEFINED, rng.randrange(1 << 32)])
        data[position : position + 4] = struct.pack("<I", value)
    else:
        _huge_length(data, rng)


def _garbage_after_preamble(data: bytearray, rng: random.Random) -> None:
    start = 132 if len(data) > 132 else 0
    data[start : start + 64] = rng.randbytes(64)


MUTATIONS: dict[str, Callable[[bytearray, random.Random], None]] = {
    "flip": _flip_bytes,
    "truncate": _truncate,
    "huge_length": _huge_length,
    "vr_swap": _vr_swap,
    "fragment_length": _fragment_length,
    "garbage": _garbage_after_preamble,
}


# Bytes after the last element of a whole file: what a faulty transfer or writer appends.
TRAILING_KINDS = ("zeros", "random", "copy", "short")


def with_trailing_bytes(source: bytes, kind: str, seed: int) -> bytes:
    """``source`` with bytes appended after its last element: 1-299 zero bytes (padding), 1-299
    random bytes, a second copy of the whole file, or 1-7 random bytes (shorter than an element
    header). The same (kind, seed) always gives the same bytes."""
    rng = random.Random(f"trailing:{kind}:{seed}")
    appended = {
        "zeros": lambda: bytes(rng.randrange(1, 300)),
        "random": lambda: rng.randbytes(rng.randrange(1, 300)),
        "copy": lambda: source,
        "short": lambda: rng.randbytes(rng.randrange(1, 8)),
    }[kind]()
    return source + appended


def mutant(source: bytes, kind: str, seed: int) -> bytes:
    """One damaged copy of ``source``; the same (kind, seed) always gives the same bytes."""
    data = bytearray(source)
    if data:
        MUTATIONS[kind](data, random.Random(f"{kind}:{seed}"))
    return bytes(data)


def write_mutants(
    target: Path, sources: list[Path], count: int, seed: int = 8, max_source_bytes: int = 600_000
) -> list[Path]:
    """``count`` mutants of the ``sources`` (each under ``max_source_bytes``) into ``target``,
    plus nested-sequence files from 100 to 5,000 levels, defined and undefined lengths."""
    rng = random.Random(seed)
    usable = sorted(p for p in sources if 0 < p.stat().st_size <= max_source_bytes)
    kinds = sorted(MUTATIONS)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(count):
        source = rng.choice(usable)
        kind = kinds[index % len(kinds)]
        path = target / f"m{index:05d}_{kind}_{source.name}"
        path.write_bytes(mutant(source.read_bytes(), kind, seed * 1_000_003 + index))
        written.append(path)
    for depth in (100, 128, 129, 250, 1000, 5000):
        for undefined in (False, True):
            name = f"nested_{depth}_{'undefined' if undefined else 'defined'}.dcm"
            written.append(write_nested(target / name, depth, undefined=undefined))
    return written


def readable_by_pydicom(path: Path) -> bool:
    """Whether pydicom reads the whole file (used to pick 'good' files)."""
    try:
        pydicom.dcmread(path)
    except Exception:
        return False
    return True
