"""QIDO-RS query parameters (PS3.18 8.3.4, 10.6.1.2) parsed and checked, before any lookup.

A request's text never reaches SQL: each matching key becomes a :class:`Match` with a kind
(wildcard, range, UID list, exact) and a value that the index binds as a parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from pixels_sql.dicom.attributes import (
    DATE_MATCH,
    MODALITIES_MATCH,
    PN_MATCH,
    STRING_MATCH,
    UID_MATCH,
    matching_keys,
)
from pixels_sql.servers.dicomweb.limits import DEFAULT_LIMITS, HttpLimits

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
# ASCII digits only: str.isdigit() also takes '²' and other digits int() refuses; at most 12
# (the bounds below are far lower, and int() of thousands of digits is slow or refused).
_NUMBER = re.compile(r"[0-9]{1,12}")
_DATE = re.compile(r"[0-9]{8}")
_TAG = re.compile(r"[0-9A-Fa-f]{8}")


class QueryError(ValueError):
    """A query the service refuses: a 400 with this message."""


class Level(Enum):
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


class MatchKind(Enum):
    EXACT = "exact"  # single value (case-sensitive)
    WILDCARD = "wildcard"  # '*' and '?' (PS3.4 C.2.2.2.4)
    RANGE = "range"  # dates: a-b, -b, a- (PS3.4 C.2.2.2.5)
    UIDS = "uids"  # a list of UIDs (PS3.4 C.2.2.2.2)
    ANY_OF = "any_of"  # ModalitiesInStudy: a study matches if any series has one of them


@dataclass(frozen=True)
class Match:
    keyword: str
    kind: MatchKind
    values: tuple[str, ...]


# Keys each level can match on, with how (keyword -> the kind its values take): the attribute
# registry's QIDO-RS matching keys (PS3.18 Table 10.6.1-5's, plus a few people filter on).
MATCHING_KEYS: dict[Level, dict[str, str]] = {level: matching_keys(level.value) for level in Level}
# The levels whose keys a query at each level may use (PS3.18 10.6.1.2: a query for series
# across all studies may match study attributes too, and so on).
LEVELS_ABOVE = {
    Level.STUDY: (Level.STUDY,),
    Level.SERIES: (Level.STUDY, Level.SERIES),
    Level.INSTANCE: (Level.STUDY, Level.SERIES, Level.INSTANCE),
}
# Parameters that are not matching keys (PS3.18 8.3.4).
CONTROL_PARAMETERS = {"limit", "offset", "includefield", "fuzzymatching", "orderby"}


@dataclass
class Search:
    level: Level
    matches: list[Match] = field(default_factory=list)
    limit: int = DEFAULT_LIMITS.max_results
    offset: int = 0
    include_tags: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def keyword_of(key: str) -> str:
    """The keyword of a query key given as keyword or as 8 hex digits; QueryError if neither."""
    if _TAG.fullmatch(key):
        keyword = keyword_for_tag(int(key, 16))
        if not keyword:
            raise QueryError(f"unknown attribute {key}")
        return keyword
    if tag_for_keyword(key) is None:
        raise QueryError(f"unknown attribute {key[:64]!r}")
    return key


def tag_key(key: str) -> str:
    """The 8-hex-digit key of an attribute given as keyword or tag."""
    if _TAG.fullmatch(key):
        return key.upper()
    tag = tag_for_keyword(key)
    if tag is None:
        raise QueryError(f"unknown attribute {key[:64]!r}")
    return f"{tag:08X}"


def parse_search(
    level: Level, params: list[tuple[str, str]], limits: HttpLimits = DEFAULT_LIMITS
) -> Search:
    """Check and parse a QIDO-RS query string's (name, value) pairs for a search at ``level``.

    Everything a request can make large is bounded here (QueryError, a 400): the number of
    parameters, each value's length, each list's length, offset; limit is capped."""
    if len(params) > limits.max_query_parameters:
        raise QueryError(
            f"{len(params)} query parameters: at most {limits.max_query_parameters} are accepted"
        )
    search = Search(level, limit=limits.max_results)
    allowed = {
        keyword: kind
        for above in LEVELS_ABOVE[level]
        for keyword, kind in MATCHING_KEYS[above].items()
    }
    for name, value in params:
        if name in ("limit", "offset"):
            number = non_negative(name, value)
            if name == "limit":
                search.limit = min(number, limits.max_results)
            elif number > limits.max_offset:
                raise QueryError(f"offset must be at most {limits.max_offset}, got {number}")
            else:
                search.offset = number
        elif name == "includefield":
            items = [part.strip() for part in value.split(",")]
            if len(search.include_tags) + len(items) > limits.max_list_values:
                raise QueryError(
                    f"includefield names more than {limits.max_list_values} attributes"
                )
            for item in filter(None, items):
                # `all`: every attribute the index holds for the level, which every result
                # carries anyway; named ones beyond those are read from a header.
                if item != "all":
                    search.include_tags.append(tag_key(keyword_of(item)))
        elif name == "fuzzymatching":
            if value.lower() == "true":
                search.warnings.append("fuzzymatching is not supported: matching is literal")
        elif name == "orderby":
            search.warnings.append("orderby is not supported: results are in a fixed order")
        else:
            keyword = keyword_of(name)
            kind = allowed.get(keyword)
            if kind is None:
                # PS3.18 10.6.1.2.2: an attribute the service cannot match on is ignored, and
                # the response says so in a Warning header.
                search.warnings.append(f"the attribute {keyword} is not supported for matching")
                continue
            if value == "" or (kind in (STRING_MATCH, PN_MATCH) and set(value) == {"*"}):
                continue  # universal matching (PS3.4 C.2.2.2.3, C.2.2.2.4)
            search.matches.append(_match(keyword, kind, value, limits))
    return search


def non_negative(name: str, value: str) -> int:
    """A non-negative integer written in ASCII digits (at most 12); QueryError if not."""
    if not _NUMBER.fullmatch(value):
        raise QueryError(f"{name} must be a non-negative integer, got {value[:40]!r}")
    return int(value)


def _values(keyword: str, value: str, limits: HttpLimits) -> tuple[str, ...]:
    """The values of a list match (PS3.4 C.2.2.2.2: backslash-separated; PS3.18 8.3.4.1 also
    allows commas), at least one and at most max_list_values."""
    values = tuple(part for part in re.split(r"[,\\]", value) if part)
    if not values:
        raise QueryError(f"{keyword}: the list {value[:40]!r} has no value")
    if len(values) > limits.max_list_values:
        raise QueryError(
            f"{keyword}: {len(values)} values, at most {limits.max_list_values} are accepted"
        )
    for item in values:
        _check_length(keyword, item, limits)
    return values


def _check_length(keyword: str, value: str, limits: HttpLimits) -> None:
    if len(value) > limits.max_value_chars:
        raise QueryError(
            f"{keyword}: a value of {len(value)} characters, at most {limits.max_value_chars}"
            " are accepted"
        )


def _match(keyword: str, kind: str, value: str, limits: HttpLimits) -> Match:
    if kind == UID_MATCH:
        uids = _values(keyword, value, limits)
        for uid in uids:
            check_uid(uid)
        return Match(keyword, MatchKind.UIDS, uids)
    if kind == DATE_MATCH:
        return Match(keyword, MatchKind.RANGE, _date_range(keyword, value))
    if kind == MODALITIES_MATCH:
        return Match(keyword, MatchKind.ANY_OF, _values(keyword, value, limits))
    _check_length(keyword, value, limits)
    if kind == PN_MATCH or "*" in value or "?" in value:
        return Match(keyword, MatchKind.WILDCARD, (value,))
    return Match(keyword, MatchKind.EXACT, (value,))


def _date_range(keyword: str, value: str) -> tuple[str, str]:
    """(low, high) as YYYYMMDD text, '' for an open end (PS3.4 C.2.2.2.5)."""
    low, dash, high = value.partition("-")
    if not dash:
        high = low
    for end in (low, high):
        if end and not _DATE.fullmatch(end):
            raise QueryError(f"{keyword} must be YYYYMMDD or a range of them, got {value[:40]!r}")
    if not low and not high:
        raise QueryError(f"{keyword}: a range needs at least one end")
    return low, high


def check_uid(uid: str) -> str:
    """A UID as PS3.5 9.1 allows (digits and dots, at most 64 characters); QueryError if not."""
    if len(uid) > 64 or not _UID.fullmatch(uid):
        raise QueryError(f"not a valid UID: {uid[:80]!r}")
    return uid
