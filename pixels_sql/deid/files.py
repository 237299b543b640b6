"""De-identification of a file: the byte walk (fast.py) where it applies, the pydicom path
(transform.py) for every other file; and the outcome per path that the SQL functions return."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from pixels_sql.deid import ocr
from pixels_sql.deid.fast import deidentify_fast
from pixels_sql.deid.keys import load_key
from pixels_sql.deid.pixels import DEFAULT_POLICY, POLICY_OPTIONS, PixelPolicy
from pixels_sql.deid.profile import Profile, option_key
from pixels_sql.deid.transform import (
    Deidentified,
    DeidError,
    burned_in_text,
    deidentify_with_pydicom,
)
from pixels_sql.dicom.part10 import IMPLEMENTATION_CLASS_UID
from pixels_sql.errors import classify
from pixels_sql.io.sources import display_name, read_content
from pixels_sql.io.writing import UnsafePath, remove_under, write_under


def deidentify(
    data: bytes,
    profile: Profile,
    key: bytes,
    *,
    name: str = "<bytes>",
    policy: PixelPolicy = DEFAULT_POLICY,
) -> Deidentified:
    """De-identify the PS3.10 file (or bare data set) ``data`` (docs/deidentification.md);
    raise :class:`~pixels_sql.errors.DicomReadError` with a reason for a file that is not one
    (``not_dicom``, ``truncated``, ``not_an_instance``, ...), or ``burned_in_unhandled`` for an
    image whose Burned In Annotation is YES and whose text no rule or OCR cleans (unless
    ``policy.allow_burned_in``)."""
    if not data:
        raise DeidError(name, "empty", "the file has zero bytes")
    done = deidentify_fast(data, profile, key, name, policy)
    if done is not None:
        return done
    return deidentify_with_pydicom(data, profile, key, name, policy)


class DeidRow(NamedTuple):
    """One file's outcome: the de-identified file and what the mapping keeps, or the reason it
    was not de-identified (a tuple: it crosses the helper process's pipe). ``new_file`` is the
    new file's bytes (:func:`deidentify_file`), or where its copy was written
    (:func:`deidentify_to`)."""

    new_file: bytes | str | None
    sop_instance_uid: str | None
    original_sop_instance_uid: str | None
    patient_id: str | None
    shift_days: int | None
    uids: dict[str, str] | None
    reason: str | None = None
    message: str | None = None
    cleaned_regions: list[dict[str, object]] | None = None  # pixels.CleanedRegion as dicts

    @classmethod
    def failed(cls, reason: str, message: str) -> DeidRow:
        """The outcome of a file that was not de-identified (or whose copy was not written)."""
        return cls(None, None, None, None, None, None, reason, message)


def profile_of(options: tuple[str, ...] | list[str]) -> tuple[Profile, PixelPolicy]:
    """The profile the option names choose and the :class:`PixelPolicy` its pseudo-options
    set; raises ProfileError for an unknown name, OcrUnavailable for ``ocr`` without
    Tesseract."""
    names = [option_key(option) for option in options]
    policy = PixelPolicy(*(name in names for name in POLICY_OPTIONS))
    profile = Profile.of([n for n in names if n not in POLICY_OPTIONS], also_known=POLICY_OPTIONS)
    if policy.ocr:
        ocr.require()
    return profile, policy


def deidentify_file(path: str, options: tuple[str, ...]) -> DeidRow:
    """:func:`deidentify` of the file at ``path`` (any path io.sources opens) with the key of
    the settings; a file's failure is its reason, never an exception."""
    profile, policy = profile_of(options)
    key = load_key()
    name = display_name(path)
    try:
        data = read_content(path)
        done = deidentify(data, profile, key, name=name, policy=policy)
    except Exception as exc:
        error = classify(name, exc)
        return DeidRow.failed(error.reason, error.message)
    return DeidRow(
        done.data,
        done.sop_instance_uid,
        done.original_sop_instance_uid,
        done.patient_id,
        done.shift_days,
        done.uids,
        cleaned_regions=[region._asdict() for region in done.cleaned_regions],
    )


class TextFound(NamedTuple):
    """The burned-in text of one file (:func:`burned_in_text_file`), or why it was not read."""

    regions: list[dict[str, object]] | None
    reason: str | None = None
    message: str | None = None


def burned_in_text_file(path: str) -> TextFound:
    """The words OCR finds in the image at ``path`` (ocr.TextRegion as dicts); a file's
    failure is its reason, never an exception."""
    name = display_name(path)
    try:
        found = burned_in_text(read_content(path), name)
    except Exception as exc:
        error = classify(name, exc)
        return TextFound(None, error.reason, error.message)
    return TextFound([dataclasses.asdict(region) for region in found])


def output_relative_path(patient_id: str, sop_instance_uid: str) -> str:
    """Where a copy goes under the destination: a folder per pseudonymous patient, a file per
    new SOP Instance UID (the same instance, the same path in every run)."""
    return f"{patient_id}/{sop_instance_uid}.dcm"


def deidentify_to(path: str, destination: str, options: tuple[str, ...]) -> DeidRow:
    """:func:`deidentify_file`, the copy written under ``destination`` whole or not at all
    (io/writing.py) and the outcome naming where (``new_file``); a file's failure is its
    reason, never a partial file."""
    row = deidentify_file(path, options)
    if row.reason is not None or not isinstance(row.new_file, bytes):
        return row  # nothing to write; the row says why
    relative = output_relative_path(row.patient_id or "", row.sop_instance_uid or "")
    try:
        written = write_under(destination, relative, row.new_file)
    except (UnsafePath, OSError) as exc:
        return DeidRow.failed("unwritable", str(exc))
    return row._replace(new_file=written)


def remove_copy(path: str, destination: str) -> bool:
    """Remove a copy :func:`deidentify_to` wrote under ``destination``; False (nothing
    removed) for a path outside it or a file pixels-sql did not write — its File Meta
    Information names pixels-sql's implementation class (part10.py) — so that the function
    cannot delete anything else of the destination's."""
    try:
        with open(path, "rb") as file:
            head = file.read(512)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if head[128:132] != b"DICM" or IMPLEMENTATION_CLASS_UID.encode() not in head:
        return False
    return remove_under(destination, path)
