"""The Basic Application Level Confidentiality Profile and its options (PS3.15 E.2, E.3), as one
action per attribute.

:data:`OPTIONS` is the registry of options a user may choose (names as the CLI, the SQL
functions and the docs spell them); :class:`Profile` resolves each attribute's action from the
checked-in Table E.1-1 (:mod:`pixels_sql.deid.standard`) for a set of chosen options.

The table's combined codes leave a choice to the de-identifier (PS3.15 E.1.1); pixels-sql makes
the one that keeps every IOD valid without knowing the IOD: X/Z -> Z (present, empty), X/D, Z/D
and X/Z/D -> D (a dummy value), X/Z/U* -> U (the reference sequence kept, its UIDs replaced).
A sequence is emptied only where the table says Z alone; otherwise (X/Z, D and the rest) its
items are kept with the profile applied inside them — the UIDs they reference replaced, the
identifying attributes in them acted on — and under D the codes in them (Code Value, Code
Meaning) replaced by dummies: an institution's or a person's code identifies them.
Where an option says C (clean) the transform keeps what it can prove is safe: dates shifted
(Modified Dates), sequences kept with the profile applied inside them; any other value is
given the Basic Profile's action — pixels-sql does not clean free text, it removes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

from pixels_sql.deid.standard import (
    ProfileRow,
    SafePrivateRow,
    edition_of,
    read_profile,
    read_safe_private,
)


class Option(NamedTuple):
    """An option of PS3.15 E.3 and its CID 7050 code (keyword in pydicom's ``codes.DCM``)."""

    title: str
    code_keyword: str
    column: str | None  # its column in Table E.1-1; None: not an attribute option


# The options a user may choose, by the name users write. Clean Recognizable Visual Features
# (113102) is not offered: pixels-sql cannot remove faces from head CT/MR (docs say so).
OPTIONS: dict[str, Option] = {
    "retain_safe_private": Option(
        "Retain Safe Private Option", "RetainSafePrivateOption", "retain_safe_private"
    ),
    "retain_uids": Option("Retain UIDs Option", "RetainUidsOption", "retain_uids"),
    "retain_device_identity": Option(
        "Retain Device Identity Option", "RetainDeviceIdentityOption", "retain_device_identity"
    ),
    "retain_institution_identity": Option(
        "Retain Institution Identity Option",
        "RetainInstitutionIdentityOption",
        "retain_institution_identity",
    ),
    "retain_patient_characteristics": Option(
        "Retain Patient Characteristics Option",
        "RetainPatientCharacteristicsOption",
        "retain_patient_characteristics",
    ),
    "retain_longitudinal_full_dates": Option(
        "Retain Longitudinal Temporal Information with Full Dates Option",
        "RetainLongitudinalTemporalInformationFullDatesOption",
        "retain_longitudinal_full_dates",
    ),
    "retain_longitudinal_modified_dates": Option(
        "Retain Longitudinal Temporal Information with Modified Dates Option",
        "RetainLongitudinalTemporalInformationModifiedDatesOption",
        "retain_longitudinal_modified_dates",
    ),
    "clean_descriptors": Option(
        "Clean Descriptors Option", "CleanDescriptorsOption", "clean_descriptors"
    ),
    "clean_structured_content": Option(
        "Clean Structured Content Option",
        "CleanStructuredContentOption",
        "clean_structured_content",
    ),
    "clean_graphics": Option("Clean Graphics Option", "CleanGraphicsOption", "clean_graphics"),
}
BASIC_PROFILE = Option(
    "Basic Application Confidentiality Profile", "BasicApplicationConfidentialityProfile", None
)
# The one profile of PS3.15 E.2 the options are added to: what SQL and the CLI call it.
BASIC = "basic"
# Recorded for a file whose pixels a rule cleaned (pixels.py): not an option users choose, the
# rules file decides.
CLEAN_PIXEL_DATA = Option("Clean Pixel Data Option", "CleanPixelDataOption", None)
# Options that cannot be combined: both say what to do with every date.
EXCLUSIVE = ("retain_longitudinal_full_dates", "retain_longitudinal_modified_dates")
# TCIA's usual choice, offered as one name.
PRESETS: dict[str, tuple[str, ...]] = {
    "tcia": (
        "clean_descriptors",
        "retain_longitudinal_modified_dates",
        "retain_patient_characteristics",
        "retain_device_identity",
        "retain_safe_private",
    ),
}

# A resolved action: the table's single codes, where C is always the option's (clean) and U
# on a sequence means "keep it and replace the UIDs inside".
RESOLVED = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}


class ProfileError(ValueError):
    """Options that name no option, or that cannot go together."""


class Action(NamedTuple):
    """What to do with one attribute: ``code`` is one of X, Z, D, K, U, C; ``basic`` is the
    Basic Profile's own resolved code (what a C falls back to when the value is not one the
    transform can clean); ``table`` the Basic Profile's code as the table prints it."""

    code: str
    basic: str
    table: str = ""


def option_key(name: str) -> str:
    """An option's name as the registries spell it: any case, '-' or ' ' for '_'."""
    return str(name).strip().lower().replace("-", "_").replace(" ", "_")


@dataclass(frozen=True)
class Profile:
    """The Basic Profile with ``options`` (names from :data:`OPTIONS`)."""

    options: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls, options: list[str] | tuple[str, ...] | None = None, also_known: tuple[str, ...] = ()
    ) -> Profile:
        """A profile from option names (or preset names, :data:`PRESETS`), checked; the
        message for an unknown one lists ``also_known`` too (names the caller takes out)."""
        chosen: set[str] = set()
        for name in options or ():
            key = option_key(name)
            if key in PRESETS:
                chosen.update(PRESETS[key])
            elif key in OPTIONS:
                chosen.add(key)
            else:
                known = ", ".join([*OPTIONS, *PRESETS, *also_known])
                raise ProfileError(f"unknown de-identification option {name!r}; known: {known}")
        if all(name in chosen for name in EXCLUSIVE):
            raise ProfileError(f"choose one of {' and '.join(EXCLUSIVE)}, not both")
        return cls(frozenset(chosen))

    @property
    def edition(self) -> str:
        return _edition()

    def actions(self) -> dict[str, Action]:
        """Each table row's tag pattern (see :class:`ProfileRow`) -> its action here."""
        return _actions(self.options)

    def action_for_row(self, row: ProfileRow) -> Action:
        return _resolve(row, self.options)

    def safe_private(self) -> frozenset[tuple[str, int, int]]:
        """(private creator, group, element byte) kept by Retain Safe Private; empty without
        that option."""
        if "retain_safe_private" not in self.options:
            return frozenset()
        return _safe_private()

    def method_options(self, cleaned_pixels: bool = False) -> list[Option]:
        """The profile and its options, in the order the method sequence lists them; Clean
        Pixel Data when a file's pixels were cleaned (pixels.py)."""
        chosen = [OPTIONS[name] for name in OPTIONS if name in self.options]
        return [BASIC_PROFILE, *([CLEAN_PIXEL_DATA] if cleaned_pixels else []), *chosen]


def _resolve(row: ProfileRow, options: frozenset[str]) -> Action:
    basic = RESOLVED.get(row.basic, row.basic)
    codes = {row.options[name] for name in options if name in row.options}
    # K (keep) wins over C (clean) when two chosen options both name the attribute: the
    # option that keeps it is the one the user asked for this attribute.
    if "K" in codes:
        return Action("K", basic, row.basic)
    if "C" in codes:
        return Action("C", basic, row.basic)
    return Action(basic, basic, row.basic)


@cache
def _rows() -> tuple[ProfileRow, ...]:
    return tuple(read_profile())


@cache
def _edition() -> str:
    from pixels_sql.deid.standard import PROFILE_CSV

    return edition_of(PROFILE_CSV)


@cache
def _actions(options: frozenset[str]) -> dict[str, Action]:
    return {row.tag: _resolve(row, options) for row in _rows()}


@cache
def _safe_private() -> frozenset[tuple[str, int, int]]:
    rows: list[SafePrivateRow] = read_safe_private()
    return frozenset(
        (row.creator.strip(), int(row.element[:4], 16), int(row.element[6:], 16)) for row in rows
    )
