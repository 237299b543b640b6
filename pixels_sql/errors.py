"""Why a file could not be read, as data: a short reason code plus a human message."""

from __future__ import annotations

import struct
import zlib

from pydicom.errors import InvalidDicomError

# Reason codes are part of the public contract: they land in the errors view and users filter on
# them. Keep them short, lower-case and stable. docs/sql-functions.md gives an example input for
# each; tests/test_docs.py checks that every code is there.
REASONS: dict[str, str] = {
    "not_found": "the path does not exist (deleted or moved after listing, or a dangling link)",
    "unreadable": "the operating system refused to read the file or folder (permissions, I/O)",
    "not_regular": "a named pipe, socket or device: not a file to read (reading could block)",
    "empty": "the file has zero bytes",
    "not_dicom": "no DICOM preamble ('DICM' at byte 128) and no recognisable data set",
    "truncated": "the file ends before a value it declares (partial copy or upload)",
    "corrupt": "the bytes do not form a valid DICOM data set",
    "too_deep": "sequences or zip archives nested deeper than the limit (MAX_SEQUENCE_DEPTH,"
    " PIXELS_SQL_ZIP_MAX_DEPTH)",
    "too_large": "too large to process within the configured budget (JSON, pixels or memory)",
    "no_pixel_data": "the data set has no Pixel Data, Float Pixel Data or Double Float Pixel Data",
    "undecodable": "no installed codec decodes the pixel data (the message names the syntax)",
    "decoder_crash": "the process reading the file died (a native decoder crash or abort)",
    "timeout": "reading the file took longer than the per-file time limit",
    "corrupt_archive": "a zip archive or member zipfile cannot read (damaged directory, bad CRC,"
    " unknown compression)",
    "unsafe_member": "a zip member named outside its destination (absolute, '..') or a symlink",
    "encrypted": "an encrypted zip member (no password is ever tried)",
    "zip_bomb": "a zip member that inflates beyond the ratio cap or overlaps another member",
    "not_an_instance": "de-identification: no SOP Class UID or SOP Instance UID (a DICOMDIR or"
    " another data set that is not a stored instance)",
    "unwritable": "de-identification: the copy could not be written under the destination"
    " (permissions, a full disk, a link where a folder should be)",
    "burned_in_unhandled": "de-identification: Burned In Annotation is YES and no pixel cleaning"
    " covers the image, so no copy is written",
    "ocr_failed": "burned-in text detection: the OCR engine failed on the image or took too long",
}

# Warnings: the file was read (its header is returned) but something about it is off. A
# warning is not a reason: dicom_meta_result gives it as the message of a result whose reason
# is NULL, written "<code>: <detail>" (and the catalog as meta_error_message with
# meta_error_reason NULL). Stable like the reasons; documented in docs/sql-functions.md.
WARNINGS: dict[str, str] = {
    "trailing_bytes": "bytes after the last complete data element (padding, garbage, a second"
    " data set) are not read; the header before them is",
}


def warning_message(code: str, detail: str) -> str:
    """The message of a warning: its code, then what it is about."""
    if code not in WARNINGS:
        raise ValueError(f"unknown warning code {code!r}")
    return f"{code}: {detail}"


class DicomReadError(Exception):
    """A file that is not a readable DICOM file; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, path: str, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason code {reason!r}")
        self.path = path
        self.reason = reason
        self.message = message
        super().__init__(f"{path}: {reason}: {message}")


class FunctionReadError(DicomReadError):
    """The failure a SQL function (``dicom_meta``, ``file_content``, ``dicom_thumbnail``)
    raises for a file it cannot read: one line naming the function, the file and the reason,
    which is all a JDBC or Spark Connect client is shown (the session hides Python
    tracebacks)."""

    def __init__(self, function: str, path: str, reason: str, message: str) -> None:
        super().__init__(path, reason, message)
        self.function = function
        self.args = (f"{function}: {path}: {reason}: {message}",)


def classify(path: str, exc: BaseException) -> DicomReadError:
    """Map any exception raised while reading ``path`` to a :class:`DicomReadError`.

    ``unreadable`` is kept for errors the operating system reported (an ``OSError`` carrying an
    errno); parsers also raise ``OSError`` without one (pydicom's "No tag to read at file
    position …") and that describes the bytes, not the file system.
    """
    if isinstance(exc, DicomReadError):
        return exc
    # One line: pydicom puts a whole traceback in some messages ("With tag ... got exception").
    text = str(exc).strip()
    detail = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
    if isinstance(exc, FileNotFoundError):
        return DicomReadError(path, "not_found", detail)
    if isinstance(exc, (PermissionError, IsADirectoryError)):
        return DicomReadError(path, "unreadable", detail)
    if isinstance(exc, InvalidDicomError):
        return DicomReadError(path, "not_dicom", detail)
    if isinstance(exc, (EOFError, struct.error)):
        return DicomReadError(path, "truncated", detail)
    if isinstance(exc, RecursionError):
        return DicomReadError(path, "too_deep", detail)
    if isinstance(exc, MemoryError):
        return DicomReadError(path, "too_large", f"MemoryError: out of memory {exc}".strip())
    if isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc, zlib.error):
        return DicomReadError(path, "unreadable", detail)
    return DicomReadError(path, "corrupt", detail)
