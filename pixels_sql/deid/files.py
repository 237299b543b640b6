"""De-identification of a file: the byte walk (fast.py) where it applies, the pydicom path
(transform.py) for every other file; and the outcome per path that the SQL functions return."""

from __future__ import annotations

from typing import NamedTuple

from pixels_sql.deid.fast import deidentify_fast
from pixels_sql.deid.keys import load_key
from pixels_sql.deid.profile import Profile
from pixels_sql.deid.transform import Deidentified, DeidError, deidentify_with_pydicom
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
    allow_burned_in: bool = False,
) -> Deidentified:
    """De-identify the PS3.10 file (or bare data set) ``data`` (docs/deidentification.md);
    raise :class:`~pixels_sql.errors.DicomReadError` with a reason for a file that is not one
    (``not_dicom``, ``truncated``, ``not_an_instance``, ...), or ``burned_in_unhandled`` for an
    image whose Burned In Annotation is YES (unless ``allow_burned_in``)."""
    if not data:
        raise DeidError(name, "empty", "the file has zero bytes")
    done = deidentify_fast(data, profile, key, name, allow_burned_in)
    if done is not None:
        return done
    return deidentify_with_pydicom(data, profile, key, name=name, allow_burned_in=allow_burned_in)


class DeidRow(NamedTuple):
    """One file's outcome (:func:`deidentify_file`): the new file and its mapping, or the
    reason it was not de-identified (a tuple: it crosses the helper process's pipe)."""

    data: bytes | None
    sop_instance_uid: str | None
    original_sop_instance_uid: str | None
    patient_id: str | None
    shift_days: int | None
    uids: dict[str, str] | None
    reason: str | None = None
    message: str | None = None


# A pseudo-option, not PS3.15's: write images whose Burned In Annotation is YES as they are.
ALLOW_BURNED_IN = "allow_burned_in"


def profile_of(options: tuple[str, ...] | list[str]) -> tuple[Profile, bool]:
    """The profile the option names choose, and whether :data:`ALLOW_BURNED_IN` is among
    them; raises ProfileError for an unknown name."""
    names = [str(option) for option in options]
    allow = any(name.strip().lower() == ALLOW_BURNED_IN for name in names)
    return Profile.of([n for n in names if n.strip().lower() != ALLOW_BURNED_IN]), allow


def deidentify_file(path: str, options: tuple[str, ...]) -> DeidRow:
    """:func:`deidentify` of the file at ``path`` (any path io.sources opens) with the key of
    the settings; a file's failure is its reason, never an exception."""
    profile, allow_burned_in = profile_of(options)
    key = load_key()
    name = display_name(path)
    try:
        data = read_content(path)
        done = deidentify(data, profile, key, name=name, allow_burned_in=allow_burned_in)
    except Exception as exc:
        error = classify(name, exc)
        return DeidRow(None, None, None, None, None, None, error.reason, error.message)
    return DeidRow(
        done.data,
        done.sop_instance_uid,
        done.original_sop_instance_uid,
        done.patient_id,
        done.shift_days,
        done.uids,
    )


class WrittenRow(NamedTuple):
    """One file's outcome (:func:`deidentify_to`): where its de-identified copy is and what
    the mapping keeps, or the reason no copy was written."""

    output_path: str | None
    sop_instance_uid: str | None
    original_sop_instance_uid: str | None
    patient_id: str | None
    shift_days: int | None
    uids: dict[str, str] | None
    reason: str | None = None
    message: str | None = None


def output_relative_path(patient_id: str, sop_instance_uid: str) -> str:
    """Where a copy goes under the destination: a folder per pseudonymous patient, a file per
    new SOP Instance UID (the same instance, the same path in every run)."""
    return f"{patient_id}/{sop_instance_uid}.dcm"


def deidentify_to(path: str, destination: str, options: tuple[str, ...]) -> WrittenRow:
    """:func:`deidentify_file`, the copy written under ``destination`` whole or not at all
    (io/writing.py); a file's failure is its reason, never a partial file."""
    row = deidentify_file(path, options)
    if row.reason is not None or row.data is None:
        return WrittenRow(None, None, None, None, None, None, row.reason, row.message)
    relative = output_relative_path(row.patient_id or "", row.sop_instance_uid or "")
    try:
        written = write_under(destination, relative, row.data)
    except (UnsafePath, OSError) as exc:
        return WrittenRow(None, None, None, None, None, None, "unwritable", str(exc))
    return WrittenRow(written, *row[1:6])


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
