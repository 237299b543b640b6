"""QIDO-RS query parameters (PS3.18 8.3.4, 10.6.1.2) parsed and checked, before any lookup.

A request's text never reaches SQL: each matching key becomes a :class:`Match` with a kind
(text, person name, range, number, UID list, modalities) and values that the index binds as
parameters. The matching rules of PS3.4 C.2.2.2 live here (how a value, a wildcard, a range,
a list of values is read, what a time range covers, what fuzzy matching of person names is);
index.py turns a Match into SQL, and C-FIND (servers/dimse/find.py) parses its identifiers
with :func:`parse_search` too.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from pixels_sql.dicom.attributes import (
    DATE_MATCH,
    INDEX_COLUMNS,
    MODALITIES_MATCH,
    NUMBER_MATCH,
    PN_MATCH,
    STRING_MATCH,
    TIME_MATCH,
    UID_MATCH,
    matching_keys,
)
from pixels_sql.dicom.typed import Malformed, date_value, time_value
from pixels_sql.servers.dicomweb.limits import DEFAULT_LIMITS, HttpLimits

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
# ASCII digits only: str.isdigit() also takes '²' and other digits int() refuses; at most 12
# (the bounds below are far lower, and int() of thousands of digits is slow or refused).
_NUMBER = re.compile(r"[0-9]{1,12}")
# IS (PS3.5 6.2): an optional sign, at most 12 digits, spaces around.
_INTEGER_STRING = re.compile(r" *([+-]?[0-9]{1,12}) *")
_DATE = re.compile(r"[0-9]{8}")
# TM in a query (PS3.5 6.2): HH, HHMM, HHMMSS, HHMMSS.F{1,6}.
_TIME = re.compile(r"([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:\.([0-9]{1,6}))?)?)?")
_TAG = re.compile(r"[0-9A-Fa-f]{8}")


# Attributes in a dotted key (Sequence.Key): a sequence within a sequence at most.
MAX_KEY_DEPTH = 3


class QueryError(ValueError):
    """A query the service refuses: a 400 with this message."""


class Level(Enum):
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


class MatchKind(Enum):
    TEXT = "text"  # exact values or * ? wildcard patterns, case-sensitive (C.2.2.2.1, .4)
    PERSON_NAME = "person_name"  # the same, case-insensitive (C.2.2.2.1)
    FUZZY_NAME = "fuzzy_name"  # fuzzymatching=true: see fuzzy_name_matches
    RANGE = "range"  # (low, high) pairs of dates or times, '' for an open end (C.2.2.2.5)
    NUMBER = "number"  # IS values compared as integers
    UIDS = "uids"  # a list of UIDs (C.2.2.2.2)
    MODALITIES = "modalities"  # ModalitiesInStudy: a study matches if any series' Modality does
    EMPTY = "empty"  # '""': entities whose value is empty or absent (C.2.2.2.1.1)


@dataclass(frozen=True)
class Match:
    """A matching key's condition: any of ``values`` matches (a list of values, C.2.2.2.8);
    for RANGE each value is a (low, high) pair, flattened."""

    keyword: str
    kind: MatchKind
    values: tuple[str, ...]

    @property
    def ranges(self) -> list[tuple[str, str]]:
        return list(zip(self.values[::2], self.values[1::2], strict=True))


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
# What a search may be ordered by: the index's columns of its levels (orderby).
ORDERING_KEYS: dict[Level, frozenset[str]] = {
    level: frozenset(
        a.keyword
        for above in LEVELS_ABOVE[level]
        for a in INDEX_COLUMNS[above.value]
        if a.keyword != "ModalitiesInStudy" and a.vr != "SQ"
    )
    for level in Level
}
# Empty value matching (PS3.4 C.2.2.2.1.1): two double quotes ask for the entities whose
# attribute is zero-length or absent.
EMPTY_VALUE = '""'
# Parameters that are not matching keys (PS3.18 8.3.4).
CONTROL_PARAMETERS = {"limit", "offset", "includefield", "fuzzymatching", "orderby"}
# What separates the values of a list: QIDO-RS takes commas (PS3.18 8.3.4.1) and DICOM's own
# backslash (PS3.5 6.4); a C-FIND identifier's values only the backslash.
QIDO_SEPARATORS = ",\\"
DIMSE_SEPARATORS = "\\"


@dataclass
class Search:
    level: Level
    matches: list[Match] = field(default_factory=list)
    limit: int = DEFAULT_LIMITS.max_results
    offset: int = 0
    include_tags: list[str] = field(default_factory=list)
    # (keyword, descending) pairs from orderby, first the most significant.
    order: list[tuple[str, bool]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def keyword_of(key: str) -> str:
    """The keyword of a query key given as keyword or as 8 hex digits, or of a key within a
    sequence's items written ``Sequence.Key`` (PS3.18 8.3.4.1); QueryError if neither."""
    if "." in key:
        parts = key.split(".")
        if len(parts) > MAX_KEY_DEPTH or "" in parts:
            raise QueryError(f"{key[:64]!r}: at most {MAX_KEY_DEPTH} attributes, dot-separated")
        return ".".join(map(_keyword, parts))
    return _keyword(key)


def _keyword(key: str) -> str:
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
    level: Level,
    params: list[tuple[str, str]],
    limits: HttpLimits = DEFAULT_LIMITS,
    separators: str = QIDO_SEPARATORS,
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
    fuzzy = any(name == "fuzzymatching" and _boolean(name, value) for name, value in params)
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
            continue  # read above: it changes how every person name key matches
        elif name == "orderby":
            _order(search, value, limits)
        else:
            keyword = keyword_of(name)
            kind = allowed.get(keyword)
            if kind is None:
                # PS3.18 10.6.1.2.2: an attribute the service cannot match on is ignored, and
                # the response says so in a Warning header.
                search.warnings.append(f"the attribute {keyword} is not supported for matching")
                continue
            match = _match(keyword, kind, value, limits, separators, fuzzy)
            if match is not None:
                search.matches.append(match)
    return search


def _boolean(name: str, value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise QueryError(f"{name} must be true or false, got {value[:40]!r}")
    return value.lower() == "true"


def _order(search: Search, value: str, limits: HttpLimits) -> None:
    """orderby: attributes, each optionally prefixed by '-' for descending order."""
    items = [part.strip() for part in value.split(",") if part.strip()]
    if len(search.order) + len(items) > limits.max_list_values:
        raise QueryError(f"orderby names more than {limits.max_list_values} attributes")
    for item in items:
        descending = item.startswith("-")
        keyword = keyword_of(item.lstrip("+-"))
        if keyword in ORDERING_KEYS[search.level]:
            search.order.append((keyword, descending))
        else:
            search.warnings.append(f"results cannot be ordered by {keyword}: ignored")


def non_negative(name: str, value: str) -> int:
    """A non-negative integer written in ASCII digits (at most 12); QueryError if not."""
    if not _NUMBER.fullmatch(value):
        raise QueryError(f"{name} must be a non-negative integer, got {value[:40]!r}")
    return int(value)


def _values(keyword: str, value: str, limits: HttpLimits, separators: str) -> tuple[str, ...]:
    """The values of a list (PS3.4 C.2.2.2.8), at least one and at most max_list_values."""
    pattern = "[" + re.escape(separators) + "]"
    values = tuple(part for part in re.split(pattern, value) if part)
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


def _universal(kind: str, value: str) -> bool:
    """Universal matching (PS3.4 C.2.2.2.3): an empty value, or only '*' where wildcards apply
    (C.2.2.2.4): every entity matches, those with the attribute empty included."""
    wildcards = kind in (STRING_MATCH, PN_MATCH, MODALITIES_MATCH)
    return value == "" or (wildcards and set(value) == {"*"})


def _match(
    keyword: str, kind: str, value: str, limits: HttpLimits, separators: str, fuzzy: bool
) -> Match | None:
    if _universal(kind, value):
        return None
    if value == EMPTY_VALUE:
        return Match(keyword, MatchKind.EMPTY, ())
    values = _values(keyword, value, limits, separators)
    if EMPTY_VALUE in values:
        raise QueryError(f'{keyword}: "" (empty value matching) stands alone, not in a list')
    if any(_universal(kind, item) for item in values):
        return None  # one value of the list matches everything
    if kind == UID_MATCH:
        for uid in values:
            check_uid(uid)
        return Match(keyword, MatchKind.UIDS, values)
    if kind == DATE_MATCH:
        return Match(keyword, MatchKind.RANGE, _ranges(keyword, values, date_bounds))
    if kind == TIME_MATCH:
        return Match(keyword, MatchKind.RANGE, _ranges(keyword, values, time_bounds))
    if kind == NUMBER_MATCH:
        return Match(keyword, MatchKind.NUMBER, tuple(_integer(keyword, v) for v in values))
    if kind == MODALITIES_MATCH:
        return Match(keyword, MatchKind.MODALITIES, values)
    if kind == PN_MATCH:
        return Match(keyword, MatchKind.FUZZY_NAME if fuzzy else MatchKind.PERSON_NAME, values)
    return Match(keyword, MatchKind.TEXT, values)


def _integer(keyword: str, value: str) -> str:
    match = _INTEGER_STRING.fullmatch(value)
    if match is None:
        raise QueryError(f"{keyword} is an integer (IS), got {value[:40]!r}")
    return str(int(match.group(1)))


def _ranges(
    keyword: str, values: tuple[str, ...], bounds: Callable[[str], tuple[str, str]]
) -> tuple[str, ...]:
    """Each value's (low, high) keys, flattened; a value without '-' is the range of itself."""
    flat: list[str] = []
    for value in values:
        low, dash, high = value.partition("-")
        if not dash:
            high = low
        if not low and not high:
            raise QueryError(f"{keyword}: a range needs at least one end, got {value[:40]!r}")
        try:
            flat += [bounds(low)[0] if low else "", bounds(high)[1] if high else ""]
        except ValueError as exc:
            raise QueryError(f"{keyword}: {exc}") from None
    return tuple(flat)


def date_bounds(text: str) -> tuple[str, str]:
    """The first and last key of a DA query value (YYYYMMDD; a day is its own range)."""
    if not _DATE.fullmatch(text):
        raise ValueError(f"a date is YYYYMMDD, got {text[:40]!r}")
    return text, text


def time_bounds(text: str) -> tuple[str, str]:
    """The first and last :func:`time_key` a TM query value covers: a value stands for every
    time within its precision (PS3.5 6.2 lets a TM stop after the hour, the minute or a
    fraction's digit), so ``12`` is 12:00:00 to 12:59:59.999999 and ``-1200`` ends at
    12:00:59.999999."""
    match = _TIME.fullmatch(text)
    if match is None or not _valid_time(match):
        raise ValueError(f"a time is HHMMSS.FFFFFF (HH, HHMM, HHMMSS at least), got {text[:40]!r}")
    hour, minute, second, fraction = match.groups()
    fraction = fraction or ""
    low = f"{hour}{minute or '00'}{second or '00'}.{fraction.ljust(6, '0')}"
    high = f"{hour}{minute or '59'}{second or '59'}.{fraction.ljust(6, '9')}"
    if second is None:
        high = f"{hour}{minute or '59'}59.999999"
    return low, high


def _valid_time(match: re.Match[str]) -> bool:
    hour, minute, second, _ = match.groups()
    # A second of 60: a leap second (PS3.5 6.2).
    return int(hour) < 24 and int(minute or 0) < 60 and int(second or 0) <= 60


def time_key(text: str | None) -> str | None:
    """A stored TM as the text the index compares and sorts: ``HHMMSS.FFFFFF``, the missing
    components zero; None for a value that is no time (dicom/typed.py's rule for TM)."""
    if text is None:
        return None
    try:
        iso = time_value(text.strip())
    except Malformed:
        return None
    whole, _, fraction = iso.partition(".")
    return f"{whole.replace(':', '')}.{fraction.ljust(6, '0')}"


def date_key(text: str | None) -> str | None:
    """A stored DA as the index compares it (YYYYMMDD); None for a value that is no date
    (dicom/typed.py's rule for DA, as the catalog's DATE columns read it)."""
    if text is None:
        return None
    try:
        return date_value(text.strip()).replace("-", "")
    except Malformed:
        return None


def fold(text: str) -> str:
    """Text compared without case or accents: NFKD, combining marks dropped, case-folded."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


_NAME_WORDS = re.compile(r"[\^=\s,.\-]+")


def fuzzy_name_matches(name: str | None, query: str) -> bool:
    """Fuzzy semantic matching of person names (PS3.4 C.2.2.2.1, fuzzymatching=true in
    PS3.18 8.3.4.5), as this service does it: case and accents are ignored, and every word of
    the query (split on '^', spaces, commas, dots and hyphens; '*' and '?' wildcards allowed)
    must begin a different word of the name, in any order. So ``john doe``, ``DOE^J`` and
    ``jose`` match ``Doe^John`` and ``José^Doe``; ``jo do`` matches ``Doe^John``."""
    if not name:
        return False
    name_words = [w for w in _NAME_WORDS.split(fold(name)) if w]
    return _assign(name_words, _query_words(query))


@functools.lru_cache(maxsize=256)
def _query_words(query: str) -> list[str]:
    """A fuzzy query's words as prefix patterns (each ending in '*', runs of '*' as one): read
    once per search, not once per name it is compared with."""
    words = [re.sub(r"\*+", "*", w) + "*" for w in _NAME_WORDS.split(fold(query)) if w]
    return [w for w in words if w != "**"]


def wildcard_matches(pattern: str, text: str) -> bool:
    """Whether ``pattern`` ('*' any run of characters, '?' one, PS3.4 C.2.2.2.4) matches all
    of ``text``: greedy with one backtrack point, at most len(pattern) x len(text) steps
    (a regular expression of many '*' backtracks exponentially)."""
    p = t = 0
    star, resume = -1, 0
    while t < len(text):
        if p < len(pattern) and pattern[p] in ("?", text[t]) and pattern[p] != "*":
            p, t = p + 1, t + 1
        elif p < len(pattern) and pattern[p] == "*":
            star, resume, p = p, t, p + 1
        elif star >= 0:
            resume += 1
            p, t = star + 1, resume
        else:
            return False
    return all(c == "*" for c in pattern[p:])


def _assign(words: list[str], patterns: list[str]) -> bool:
    """Whether each pattern can match a different word: a bipartite matching, by augmenting
    paths (polynomial, whatever a hostile name or query holds)."""
    if len(patterns) > len(words):
        return False
    owner: dict[int, int] = {}  # word index -> pattern index

    def place(pattern: int, seen: set[int]) -> bool:
        for index, word in enumerate(words):
            if index in seen or not wildcard_matches(patterns[pattern], word):
                continue
            seen.add(index)
            if index not in owner or place(owner[index], seen):
                owner[index] = pattern
                return True
        return False

    return all(place(pattern, set()) for pattern in range(len(patterns)))


def check_uid(uid: str) -> str:
    """A UID as PS3.5 9.1 allows (digits and dots, at most 64 characters); QueryError if not."""
    if len(uid) > 64 or not _UID.fullmatch(uid):
        raise QueryError(f"not a valid UID: {uid[:80]!r}")
    return uid


@dataclass(frozen=True)
class Resource:
    """What a DICOMweb path names (PS3.18 10.4.1.1): a study, a series of it or an instance
    of that. Its UIDs are checked as it is made, study first, so that no view meets one that
    PS3.5 9.1 refuses (a QueryError: a 400)."""

    study: str
    series: str | None = None
    instance: str | None = None

    def __post_init__(self) -> None:
        for uid in (self.study, self.series, self.instance):
            if uid is not None:
                check_uid(uid)

    @property
    def level(self) -> Level:
        """The level of what it names: the narrowest UID given."""
        if self.instance is not None:
            return Level.INSTANCE
        return Level.SERIES if self.series is not None else Level.STUDY
