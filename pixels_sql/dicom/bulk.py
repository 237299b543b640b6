"""The bulk-data policy of dicom_meta: which values are inlined and how others are referenced."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

# Binary values up to this many bytes are inlined as base64 (1024 base64 characters, pydicom's and
# DICOMweb servers' usual default); longer ones become a BulkDataURI.
INLINE_BINARY_MAX_BYTES = 768
# A header value longer than this is referenced by byte range even when its VR is not binary or
# not known without reading it (a private element in an implicit VR file, a giant text): a
# hostile or broken header must not cost its size in memory.
HUGE_VALUE_BYTES = 4 * 1024 * 1024

BulkUri = Callable[[int | None, int], str]


def bulk_uri_factory(uri: str, deflated: bool) -> BulkUri:
    """``(offset, length) -> URI`` of a value's bytes in the file at ``uri``."""

    def bulk_uri(offset: int | None, length: int) -> str:
        if deflated or offset is None:
            # Offsets inside a deflated stream (PS3.5 A.5) do not address the file's bytes.
            return uri
        return f"{uri}?offset={offset}&length={length}"

    return bulk_uri


def bulk_range(uri: str) -> tuple[int, int] | None:
    """``(offset, length)`` of a BulkDataURI made by :func:`bulk_uri_factory`; None for the bare
    file URI of a deflated file's value."""
    query = parse_qs(urlsplit(uri).query)
    if "offset" not in query or "length" not in query:
        return None
    return int(query["offset"][0]), int(query["length"][0])
