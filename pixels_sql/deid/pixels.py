"""Clean Pixel Data (PS3.15 E.3.1) by rules: rectangles blacked out in every frame of the images
a rule matches, in the spirit of CTP's pixel scrubber.

A rules file is TOML, a ``[[rule]]`` table per rule (the starter file,
``pixels_sql/deid/data/pixel-rules.toml``, restates layouts of CTP's burned-in annotation
library; ``PIXELS_SQL_DEID_PIXEL_RULES`` names another)::

    [[rule]]
    name = "a vendor's ultrasound header band"
    Modality = "US"                  # any of the MATCH_KEYS, a glob (fnmatch), any case
    Manufacturer = "ACME*"
    Rows = 480                       # Rows and Columns: exact numbers
    Columns = 640
    regions = [[0, 0, 640, 60]]      # x, y, width, height, in pixels from the top left

A file matches a rule when every key the rule names matches (ImageType: any of its values);
the first matching rule is applied. The cleaned image is written uncompressed (in its own
syntax when that is native, else Explicit VR Little Endian): lossless whatever it was, so
nothing is lost twice; Lossy Image Compression and its ratio stay as they were, true of the
pixels' history (PS3.3 C.7.6.1.1.5). Images no rule covers may have their text found by OCR
instead (ocr.py, the option ``ocr``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any, NamedTuple

import tomllib

from pixels_sql import config

STARTER_RULES = Path(__file__).with_name("data") / "pixel-rules.toml"
MATCH_KEYS = ("Modality", "Manufacturer", "ManufacturerModelName", "SOPClassUID", "ImageType")
SIZE_KEYS = ("Rows", "Columns")


class PixelPolicy(NamedTuple):
    """What happens to an image no rule covers: pseudo-options (:data:`POLICY_OPTIONS`), not
    PS3.15's, named among the options."""

    allow_burned_in: bool = False  # written as it is, even when Burned In Annotation is YES
    ocr: bool = False  # its burned-in text found by OCR (ocr.py) and blacked out


# The option names of :class:`PixelPolicy`'s fields.
POLICY_OPTIONS = PixelPolicy._fields
DEFAULT_POLICY = PixelPolicy()


class DecodedImage(NamedTuple):
    """An image's pixels as pydicom decodes them, and how to read them."""

    pixels: Any  # pydicom's pixel_array: frames first when several, samples last, YBR as RGB
    frames: int
    samples: int
    photometric: str


class RulesError(ValueError):
    """A rules file that does not parse or names what a rule cannot hold."""


@dataclass(frozen=True)
class Region:
    x: int
    y: int
    width: int
    height: int


class CleanedRegion(NamedTuple):
    """A rectangle blacked out in every frame, and what found it: a rule's name, or
    :data:`OCR_SOURCE`."""

    x: int
    y: int
    width: int
    height: int
    source: str


OCR_SOURCE = "ocr"


@dataclass(frozen=True)
class PixelRule:
    name: str
    patterns: tuple[tuple[str, str], ...]  # (keyword, glob)
    sizes: tuple[tuple[str, int], ...]  # (Rows | Columns, number)
    regions: tuple[Region, ...]

    def matches(self, values: dict[str, Any]) -> bool:
        """Whether a header's ``values`` (MATCH_KEYS as text or lists, SIZE_KEYS as numbers)
        match every key this rule names."""
        if not all(values.get(keyword) == number for keyword, number in self.sizes):
            return False
        for keyword, pattern in self._compiled:
            value = values.get(keyword)
            candidates = value if isinstance(value, list | tuple) else [value]
            texts = ("" if item is None else str(item).strip() for item in candidates)
            if not any(pattern.fullmatch(text) for text in texts):
                return False
        return True

    @cached_property
    def _compiled(self) -> tuple[tuple[str, re.Pattern[str]], ...]:
        """The globs as case-blind regular expressions, made once (every file is matched)."""
        return tuple(
            (keyword, re.compile(fnmatch.translate(pattern), re.IGNORECASE | re.DOTALL))
            for keyword, pattern in self.patterns
        )


def load_rules(path: Path) -> tuple[PixelRule, ...]:
    """The rules of a TOML file; RulesError naming the rule and the key that is wrong."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise RulesError(f"{path}: {error}") from None
    rules = []
    for number, table in enumerate(document.get("rule", []), start=1):
        name = str(table.get("name") or f"rule {number}")
        unknown = set(table) - {"name", "regions", *MATCH_KEYS, *SIZE_KEYS}
        if unknown:
            raise RulesError(f"{path}: {name}: unknown key(s) {', '.join(sorted(unknown))}")
        regions = []
        for region in table.get("regions", []):
            if len(region) != 4 or not all(isinstance(v, int) and v >= 0 for v in region):
                raise RulesError(f"{path}: {name}: a region is [x, y, width, height] >= 0")
            regions.append(Region(*region))
        if not regions:
            raise RulesError(f"{path}: {name}: no regions")
        rules.append(
            PixelRule(
                name,
                tuple((key, str(table[key])) for key in MATCH_KEYS if key in table),
                tuple((key, int(table[key])) for key in SIZE_KEYS if key in table),
                tuple(regions),
            )
        )
    return tuple(rules)


def rules() -> tuple[PixelRule, ...]:
    """The rules in force: the file PIXELS_SQL_DEID_PIXEL_RULES names, else the starter."""
    return _rules_of(config.settings.deid_pixel_rules or STARTER_RULES)


@cache
def _rules_of(path: Path) -> tuple[PixelRule, ...]:
    return load_rules(path)


def matching_rule(values: dict[str, Any]) -> PixelRule | None:
    return next((rule for rule in rules() if rule.matches(values)), None)


def blackout(
    pixels: Any, regions: Iterable[Region | CleanedRegion], black: int, frames: int
) -> Any:
    """``pixels`` as pydicom's pixel_array gives them (frames first when there are several,
    samples last for colour) with every region set to ``black`` in every frame, in place."""
    view = pixels if frames > 1 else pixels[None, ...]
    for region in regions:
        view[:, region.y : region.y + region.height, region.x : region.x + region.width] = black
    return pixels


def black_value(photometric: str, bits_stored: int, signed: bool) -> int:
    """The stored value a viewer shows black (PS3.3 C.7.6.3.1.2): the lowest for MONOCHROME2
    and colour, the highest for MONOCHROME1."""
    if photometric.strip().upper() == "MONOCHROME1":
        return (1 << (bits_stored - 1)) - 1 if signed else (1 << bits_stored) - 1
    return -(1 << (bits_stored - 1)) if signed else 0
