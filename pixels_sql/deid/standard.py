"""PS3.15's de-identification tables as checked-in data, and the tool that makes them.

Two CSV files in ``pixels_sql/deid/data/`` hold what the standard says, row for row:

- ``confidentiality-profile.csv``: Table E.1-1 (Application Level Confidentiality Profile
  Attributes): per attribute its action code in the Basic Profile and in each option's column.
- ``safe-private.csv``: Table E.3.10-1 (Safe Private Attributes), kept by Retain Safe Private.

Their first line names the edition. A new edition is a regeneration, not a code change: download
the DocBook source of PS3.15 (``https://dicom.nema.org/medical/dicom/current/source/docbook/
part15/part15.xml``) and run ``python -m pixels_sql.deid.standard part15.xml --edition 2027a``.
The tables are read by their column headings, so a column the standard adds or renames stops
the tool with the heading it did not expect instead of shifting every code into the wrong
option.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, TypeVar

DATA_DIR = Path(__file__).with_name("data")
PROFILE_CSV = DATA_DIR / "confidentiality-profile.csv"
SAFE_PRIVATE_CSV = DATA_DIR / "safe-private.csv"

# The option columns of Table E.1-1: the heading the standard prints (lower-case, without its
# punctuation) -> the option's name here (profile.OPTIONS keys them the same way).
OPTION_HEADINGS: dict[str, str] = {
    "rtn safe priv opt": "retain_safe_private",
    "rtn uids opt": "retain_uids",
    "rtn dev id opt": "retain_device_identity",
    "rtn inst id opt": "retain_institution_identity",
    "rtn pat chars opt": "retain_patient_characteristics",
    "rtn long full dates opt": "retain_longitudinal_full_dates",
    "rtn long modif dates opt": "retain_longitudinal_modified_dates",
    "clean desc opt": "clean_descriptors",
    "clean struct cont opt": "clean_structured_content",
    "clean graph opt": "clean_graphics",
}
OPTION_COLUMNS = tuple(OPTION_HEADINGS.values())
LEADING_HEADINGS = ("attribute name", "tag", "retd", "in std comp iod", "basic prof")
PROFILE_FIELDS = ("tag", "name", "retired", "in_standard_iod", "basic", *OPTION_COLUMNS)
SAFE_PRIVATE_FIELDS = ("creator", "element", "vr", "vm", "meaning")

# Action codes (PS3.15 E.1.1): the Basic Profile column uses these; option columns K or C.
BASIC_CODES = frozenset({"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"})
OPTION_CODES = frozenset({"K", "C"})
# The row for private attributes names no tag: "(gggg,eeee) where gggg is odd".
PRIVATE_TAG = "odd-group"

_TAG_TEXT = re.compile(r"\(\s*([0-9A-Fa-fxX]{4})\s*,\s*([0-9A-Fa-fxX]{4})\s*\)")
_DOCBOOK = "{http://docbook.org/ns/docbook}"


class TableError(ValueError):
    """The standard's table is not shaped as this tool expects."""


@dataclass(frozen=True)
class ProfileRow:
    """One row of Table E.1-1. ``tag``: 8 hex digits, ``x`` where the standard has a wildcard
    (``60xx3000``), or :data:`PRIVATE_TAG`; ``options``: option name -> K or C."""

    tag: str
    name: str
    retired: bool
    in_standard_iod: bool
    basic: str
    options: dict[str, str] = field(default_factory=dict)
    # The checked-in table: its title, and its heading (read_profile reads it by these names).
    TABLE: ClassVar[str] = "E.1-1 (Application Level Confidentiality Profile Attributes)"
    FIELDS: ClassVar[tuple[str, ...]] = PROFILE_FIELDS

    def check(self) -> None:
        if self.tag != PRIVATE_TAG and not re.fullmatch(r"[0-9A-Fx]{8}", self.tag):
            raise TableError(f"{self.name}: tag {self.tag!r} is not 8 hex digits or x")
        if self.basic not in BASIC_CODES:
            raise TableError(f"{self.name}: Basic Profile code {self.basic!r} is not one of E.1.1")
        for option, code in self.options.items():
            if option not in OPTION_COLUMNS or code not in OPTION_CODES:
                raise TableError(f"{self.name}: option {option}={code!r} is not K or C")

    def order(self) -> tuple[str, str]:
        return self.tag, self.name

    def record(self) -> list[str]:
        """The row's values under :attr:`FIELDS`."""
        flags = ["Y" if self.retired else "N", "Y" if self.in_standard_iod else "N"]
        codes = [self.options.get(name, "") for name in OPTION_COLUMNS]
        return [self.tag, self.name, *flags, self.basic, *codes]


@dataclass(frozen=True)
class SafePrivateRow:
    """One row of Table E.3.10-1: ``element`` is ``GGGGxxEE`` (the block's element byte)."""

    creator: str
    element: str
    vr: str
    vm: str
    meaning: str
    TABLE: ClassVar[str] = "E.3.10-1 (Safe Private Attributes)"
    FIELDS: ClassVar[tuple[str, ...]] = SAFE_PRIVATE_FIELDS

    def check(self) -> None:
        if not re.fullmatch(r"[0-9A-F]{4}xx[0-9A-F]{2}", self.element):
            raise TableError(f"{self.creator}: element {self.element!r} is not GGGGxxEE")
        if int(self.element[:4], 16) % 2 == 0:
            raise TableError(f"{self.creator}: {self.element} is not in a private (odd) group")

    def order(self) -> tuple[str, str]:
        return self.creator, self.element

    def record(self) -> list[str]:
        """The row's values under :attr:`FIELDS`."""
        return [getattr(self, name) for name in self.FIELDS]


_Row = TypeVar("_Row", ProfileRow, SafePrivateRow)


def tag_pattern(text: str) -> str:
    """The table's ``(gggg,eeee)`` spelling as 8 characters; ``x`` kept for wildcards.

    >>> tag_pattern("(0008,0050)"), tag_pattern("(60XX,3000)")
    ('00080050', '60xx3000')
    """
    if "odd" in text:
        return PRIVATE_TAG
    match = _TAG_TEXT.search(text)
    if match is None:
        raise TableError(f"no tag in {text!r}")
    return (match.group(1) + match.group(2)).upper().replace("X", "x")


# -- reading and writing the checked-in CSV files ------------------------------------------


def edition_of(path: Path) -> str:
    """The edition a checked-in table follows (its first line)."""
    first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    match = re.search(r"PS3\.15 (\S+)", first)
    if match is None:
        raise TableError(f"{path}: the first line names no PS3.15 edition")
    return match.group(1)


def _data_lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8", newline="") as lines:
        for line in lines:
            if not line.startswith("#"):
                yield line


def read_profile(path: Path = PROFILE_CSV) -> list[ProfileRow]:
    """Table E.1-1 as rows, from the checked-in CSV."""
    rows = []
    for record in csv.DictReader(_data_lines(path)):
        rows.append(
            ProfileRow(
                tag=record["tag"],
                name=record["name"],
                retired=record["retired"] == "Y",
                in_standard_iod=record["in_standard_iod"] == "Y",
                basic=record["basic"],
                options={name: record[name] for name in OPTION_COLUMNS if record[name]},
            )
        )
    return rows


def read_safe_private(path: Path = SAFE_PRIVATE_CSV) -> list[SafePrivateRow]:
    """Table E.3.10-1 as rows, from the checked-in CSV."""
    return [
        SafePrivateRow(**{name: record[name] for name in SAFE_PRIVATE_FIELDS})
        for record in csv.DictReader(_data_lines(path))
    ]


def _table_csv(kind: type[_Row], rows: Iterable[_Row], edition: str) -> str:
    """A checked-in table: the line naming the edition and the table, the heading, then each
    row (checked) in the table's order."""
    out = io.StringIO()
    out.write(
        f"# DICOM PS3.15 {edition} Table {kind.TABLE}; made by python -m"
        " pixels_sql.deid.standard, not by hand\n"
    )
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(kind.FIELDS)
    for row in sorted(rows, key=kind.order):
        row.check()
        writer.writerow(row.record())
    return out.getvalue()


def profile_csv(rows: Iterable[ProfileRow], edition: str) -> str:
    return _table_csv(ProfileRow, rows, edition)


def safe_private_csv(rows: Iterable[SafePrivateRow], edition: str) -> str:
    return _table_csv(SafePrivateRow, rows, edition)


# -- the DocBook source of PS3.15 ----------------------------------------------------------


def _text(element: ElementTree.Element) -> str:
    return " ".join("".join(element.itertext()).split())


def _heading_key(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def _table(root: ElementTree.Element, label: str) -> ElementTree.Element:
    for table in root.iter(f"{_DOCBOOK}table"):
        if table.get("label") == label:
            return table
    raise TableError(f"no table labelled {label} in the document")


def _headings(table: ElementTree.Element) -> list[str]:
    head = table.find(f"{_DOCBOOK}thead")
    if head is None:
        raise TableError(f"table {table.get('label')} has no heading row")
    return [_heading_key(_text(cell)) for cell in head.iter(f"{_DOCBOOK}th")]


def _body_rows(table: ElementTree.Element) -> Iterator[list[str]]:
    for row in table.iter(f"{_DOCBOOK}tr"):
        cells = row.findall(f"{_DOCBOOK}td")
        if cells:
            yield [_text(cell) for cell in cells]


def parse_profile(root: ElementTree.Element) -> list[ProfileRow]:
    """Table E.1-1 of a PS3.15 DocBook document."""
    table = _table(root, "E.1-1")
    headings = _headings(table)
    leading = tuple(headings[: len(LEADING_HEADINGS)])
    # "Retd. (from PS3.6)": the standard adds where a column comes from after its name.
    if not all(map(str.startswith, leading, LEADING_HEADINGS)) or len(leading) < 5:
        raise TableError(f"Table E.1-1 starts with {leading}, expected {LEADING_HEADINGS}")
    options = []
    for heading in headings[len(LEADING_HEADINGS) :]:
        if heading not in OPTION_HEADINGS:
            raise TableError(f"Table E.1-1 has a column this tool does not know: {heading!r}")
        options.append(OPTION_HEADINGS[heading])
    rows = []
    for cells in _body_rows(table):
        if len(cells) != len(headings):
            raise TableError(f"Table E.1-1 row {cells[:2]} has {len(cells)} cells")
        name, tag, retired, in_iod, basic = cells[: len(LEADING_HEADINGS)]
        codes = cells[len(LEADING_HEADINGS) :]
        row = ProfileRow(
            tag=tag_pattern(tag),
            name=name,
            retired=retired.upper().startswith("Y"),
            in_standard_iod=in_iod.upper().startswith("Y"),
            basic=basic,
            options={option: code for option, code in zip(options, codes, strict=True) if code},
        )
        row.check()
        rows.append(row)
    return rows


def parse_safe_private(root: ElementTree.Element) -> list[SafePrivateRow]:
    """Table E.3.10-1 of a PS3.15 DocBook document."""
    table = _table(root, "E.3.10-1")
    headings = _headings(table)
    expected = ("data element", "private creator", "vr", "vm", "meaning")
    if tuple(headings[:5]) != expected:
        raise TableError(f"Table E.3.10-1 starts with {tuple(headings[:5])}, expected {expected}")
    rows = []
    for cells in _body_rows(table):
        element, creator, vr, vm, meaning = cells[:5]
        row = SafePrivateRow(creator, tag_pattern(element), vr, vm, meaning)
        row.check()
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pixels_sql.deid.standard",
        description="Rewrite the checked-in PS3.15 tables from the standard's DocBook source.",
    )
    parser.add_argument("part15", type=Path, help="part15.xml from dicom.nema.org")
    parser.add_argument("--edition", required=True, help="the document's edition, e.g. 2026c")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="folder of the CSV files")
    args = parser.parse_args(argv)
    try:
        root = ElementTree.parse(args.part15).getroot()
        profile, safe = parse_profile(root), parse_safe_private(root)
    except (TableError, ElementTree.ParseError, OSError) as error:
        print(f"pixels_sql.deid.standard: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / PROFILE_CSV.name).write_text(profile_csv(profile, args.edition), encoding="utf-8")
    (args.out / SAFE_PRIVATE_CSV.name).write_text(
        safe_private_csv(safe, args.edition), encoding="utf-8"
    )
    print(f"{len(profile)} attributes, {len(safe)} safe private attributes -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
